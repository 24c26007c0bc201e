use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 10, period = 60, timeout = 5)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
