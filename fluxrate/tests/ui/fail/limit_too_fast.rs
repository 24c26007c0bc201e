use fluxrate::{rate_limit, RateLimited};

#[rate_limit("2000000000/s")]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
