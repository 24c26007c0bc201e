use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = -5, period = 60)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
