//! The blocking wait under every `acquire*` and `wait*`: sleep exactly as long as the algorithm
//! says, or fail at once when the wait would pass the timeout.

use crate::algorithm::{Admitted, Refusal};
use crate::clock::{nanos_saturating, Clock};
use crate::error::{AcquireError, TimeoutExceeded};
use std::time::Duration;

use super::engine::Attempt;
use super::RateLimiter;

impl<K, C: Clock, H> RateLimiter<K, C, H> {
    /// Block until `attempt` admits, sleeping exactly as long as the algorithm says, or fail at
    /// once if the wait would exceed `timeout`. Nothing is consumed by a refusal.
    pub(super) fn acquire_loop(
        &self,
        n: u64,
        timeout: Duration,
        mut attempt: impl FnMut(u64, u64) -> Attempt,
    ) -> Result<Admitted, AcquireError> {
        let timeout_ns = nanos_saturating(timeout);
        let deadline = self.now().saturating_add(timeout_ns);
        loop {
            let now = self.now();
            let budget = deadline.saturating_sub(now);
            match attempt(now, budget) {
                Ok(admitted) => {
                    self.record(true);
                    if admitted.delay > 0 {
                        self.clock.sleep_until(admitted.at);
                    }
                    return Ok(admitted);
                }
                Err(Refusal::Never) => {
                    self.record(false);
                    return Err(AcquireError::Never(self.never(n)));
                }
                Err(Refusal::Limited { retry_after, .. }) => {
                    if retry_after > budget {
                        self.record(false);
                        return Err(AcquireError::Timeout(TimeoutExceeded {
                            timeout,
                            retry_after,
                        }));
                    }
                    self.clock
                        .sleep_until(now.saturating_add(retry_after.max(1)));
                }
            }
        }
    }
}
