use fluxrate::rate_limit;

#[rate_limit(calls = 10, period = 60, on_limit = "wait")]
async fn f() {}

fn main() {}
