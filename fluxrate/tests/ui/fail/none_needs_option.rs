use fluxrate::rate_limit;

#[rate_limit(calls = 10, period = 60, on_limit = "none")]
fn f() -> u32 {
    1
}

fn main() {}
