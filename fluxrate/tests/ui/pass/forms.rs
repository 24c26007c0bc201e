use fluxrate::{rate_limit, Quota, RateLimited, RateLimiter, TimeoutExceeded};
use std::sync::LazyLock;

#[derive(Debug)]
enum Error {
    Limited,
    Timeout,
}

impl From<RateLimited> for Error {
    fn from(_: RateLimited) -> Self {
        Error::Limited
    }
}

impl From<TimeoutExceeded> for Error {
    fn from(_: TimeoutExceeded) -> Self {
        Error::Timeout
    }
}

/// A documented function.
#[rate_limit(calls = 10, period = 60)]
#[inline]
pub fn seconds() -> Result<(), Error> {
    Ok(())
}

#[rate_limit(calls = 5, period = "500ms", algorithm = "fixed_window")]
fn duration_string() -> Result<u8, RateLimited> {
    Ok(1)
}

#[rate_limit(calls = 5, period = 0.5, algorithm = "leaky_bucket", burst = 2)]
fn float_period() -> Result<u8, RateLimited> {
    Ok(1)
}

#[rate_limit("100/minute")]
fn rate_string() -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit(calls = 100, period = 60, algorithm = "sliding_window", burst = 150, key = user.0,
             on_limit = "wait", timeout = 5)]
fn everything(user: &(u64, String)) -> Result<(), Error> {
    Ok(())
}

#[rate_limit("1/s", on_limit = "wait")]
fn wait_forever() {}

static API: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::direct(Quota::per_second(1)).unwrap());

#[rate_limit(limiter = API)]
fn shared() -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit("3/s", key = name, on_limit = "none")]
fn by_name(name: &str) -> Option<usize> {
    Some(name.len())
}

trait Service {
    fn call(&self, n: u32) -> Result<u32, RateLimited>;
}

struct S;

impl Service for S {
    #[rate_limit("10/s", key = n)]
    fn call(&self, n: u32) -> Result<u32, RateLimited> {
        Ok(n)
    }
}

#[rate_limit("10/s")]
async fn asynchronous() -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit("10/s", key = item)]
fn generic<T: std::hash::Hash + Eq + Clone + Send + Sync + 'static>(item: T) -> Result<T, RateLimited> {
    Ok(item)
}

fn main() {
    let _ = seconds();
    let _ = duration_string();
    let _ = float_period();
    let _ = rate_string();
    let _ = everything(&(1, "x".into()));
    wait_forever();
    let _ = shared();
    let _ = by_name("a");
    let _ = S.call(1);
    let _ = asynchronous();
    let _ = generic(1u8);
}
