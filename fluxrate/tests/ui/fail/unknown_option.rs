use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 1, period = 1, algoritm = "fixed_window")]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
