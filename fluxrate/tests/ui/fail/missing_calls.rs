use fluxrate::{rate_limit, RateLimited};

#[rate_limit(period = 60)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
