use fluxrate::{rate_limit, RateLimited};

#[rate_limit("100 every minute")]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
