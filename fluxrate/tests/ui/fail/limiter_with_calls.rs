use fluxrate::{rate_limit, Quota, RateLimited, RateLimiter};
use std::sync::LazyLock;

static API: LazyLock<RateLimiter> = LazyLock::new(|| RateLimiter::direct(Quota::per_second(1)).unwrap());

#[rate_limit(limiter = API, calls = 10, period = 60)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
