use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 1, period = 1, crate = 5)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit(calls = 1, period = 1, crate = "not a path")]
fn g() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
