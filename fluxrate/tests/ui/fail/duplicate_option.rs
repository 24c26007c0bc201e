use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 1, period = 1, calls = 2)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
