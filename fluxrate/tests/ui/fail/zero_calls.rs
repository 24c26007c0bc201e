use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 0, period = 60)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
