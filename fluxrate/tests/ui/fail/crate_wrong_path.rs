use fluxrate::{rate_limit, RateLimited};

mod elsewhere {}

// A path that is not fluxrate: the generated code names its versioned module there.
#[rate_limit(calls = 1, period = 1, crate = elsewhere)]
fn f() -> Result<(), RateLimited> {
    Ok(())
}

fn main() {}
