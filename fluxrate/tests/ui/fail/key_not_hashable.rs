use fluxrate::{rate_limit, RateLimited};

#[rate_limit(calls = 10, period = 60, key = score)]
fn f(score: f64) -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
