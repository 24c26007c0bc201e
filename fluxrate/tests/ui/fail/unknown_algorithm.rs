use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 10, period = 60, algorithm = "sliding_windw")]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
