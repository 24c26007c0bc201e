use fluxrate::rate_limit;

#[derive(Debug)]
struct MyError;

#[rate_limit(calls = 10, period = 60)]
fn f() -> Result<(), MyError> {
    Ok(())
}

fn main() {}
