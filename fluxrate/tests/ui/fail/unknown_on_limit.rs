use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 10, period = 60, on_limit = "retry")]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
