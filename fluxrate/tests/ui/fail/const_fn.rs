use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 10, period = 60)]
const fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
