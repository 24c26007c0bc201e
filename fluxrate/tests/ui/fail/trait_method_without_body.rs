use fluxrate::{rate_limit, RateLimited};

trait Api {
    #[rate_limit(calls = 10, period = 60)]
    fn call(&self) -> Result<(), RateLimited>;
}

fn main() {}
