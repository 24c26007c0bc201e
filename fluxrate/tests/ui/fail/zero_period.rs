use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 10, period = 0)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
