use fluxrate::rate_limit;

#[rate_limit(calls = 10, period = 60)]
struct Api;

fn main() {}
