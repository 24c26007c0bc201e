use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = "ten", period = 60)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
