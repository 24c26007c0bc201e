//! The one all-or-nothing routine for several limits (the HTTP layer's, in-process and in Redis,
//! and the local fallback of `RedisRateLimiter::check_all`): decide in order, stop at the first
//! refusal, give back what the earlier limits took.

use core::future::Future;

/// The outcome of deciding several limits all or nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AllOrNothing<T, E> {
    /// Every limit admitted: what each took, in order.
    Admitted(Vec<T>),
    /// Limit `index` refused with `refusal`. The limits before it admitted, and what each took
    /// was given back (newest first): `given_back[j]` is limit `j`'s admission and whether it
    /// came back (a limit may keep it, e.g. a bucket that admitted another request since).
    Refused {
        index: usize,
        refusal: E,
        given_back: Vec<(T, bool)>,
    },
}

/// Decide limits `0..count` in order with `decide`, all or nothing: at the first refusal, stop
/// (the later limits are not decided, so they take nothing) and give back with `give_back`,
/// newest first, what each earlier limit took (`give_back(j, taken)` answers with it and
/// whether it came back).
///
/// What the limits decided so far took waits in `taken`, which the caller owns: if the routine's
/// future is dropped half-way (a caller that stops waiting on a remote limit), the caller gives
/// back what is still there. The routine leaves `taken` empty when it completes.
///
/// A limit decided in process answers with a future that is ready at once (no await point), so
/// the whole routine completes on its first poll when every limit is local (see
/// [`poll_once`]).
pub(crate) async fn all_or_nothing<T, E, D, G>(
    taken: &mut Vec<T>,
    count: usize,
    mut decide: impl FnMut(usize) -> D,
    mut give_back: impl FnMut(usize, T) -> G,
) -> AllOrNothing<T, E>
where
    D: Future<Output = Result<T, E>>,
    G: Future<Output = (T, bool)>,
{
    taken.clear();
    taken.reserve(count);
    for index in 0..count {
        match decide(index).await {
            Ok(t) => taken.push(t),
            Err(refusal) => {
                let mut given_back = Vec::with_capacity(taken.len());
                while let Some(t) = taken.pop() {
                    given_back.push(give_back(taken.len(), t).await);
                }
                given_back.reverse();
                return AllOrNothing::Refused {
                    index,
                    refusal,
                    given_back,
                };
            }
        }
    }
    AllOrNothing::Admitted(core::mem::take(taken))
}

#[cfg(any(feature = "tower", test))]
pub(crate) use poll::poll_once;

/// Polling without a task (the HTTP service decides in `call`).
#[cfg(any(feature = "tower", test))]
mod poll {
    use core::future::Future;
    use core::pin::Pin;
    use core::task::{Context, Poll, Waker};
    use std::sync::{Arc, LazyLock};
    use std::task::Wake;

    /// A waker that does nothing: for a poll whose caller does not wait on the future (a pending
    /// future is polled again later, with a real waker).
    struct Noop;

    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    static NOOP: LazyLock<Waker> = LazyLock::new(|| Waker::from(Arc::new(Noop)));

    /// Poll `fut` once, without a task to wake: `Ready` if it completed without waiting (every
    /// in-process limit), else `Pending`, and the caller polls it again from its own task.
    pub(crate) fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(&NOOP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::task::Poll;
    use std::cell::RefCell;

    /// The routine against a sequential model, for every history of up to six limits, each
    /// admitting or refusing and each admission coming back or kept: the limits decided, the
    /// order of the give-backs and the outcome.
    #[test]
    fn matches_the_sequential_model_on_every_small_history() {
        for count in 0..=6usize {
            for admits in 0..(1u32 << count) {
                for kept in 0..(1u32 << count) {
                    let admits_at = |i: usize| admits >> i & 1 == 1;
                    let log = RefCell::new(Vec::new());
                    let mut taken = Vec::new();
                    let fut = all_or_nothing(
                        &mut taken,
                        count,
                        |i| {
                            log.borrow_mut().push(format!("decide {i}"));
                            let r = if admits_at(i) { Ok(i * 10) } else { Err(i) };
                            std::future::ready(r)
                        },
                        |i, t: usize| {
                            log.borrow_mut().push(format!("give back {i}"));
                            assert_eq!(t, i * 10, "limit {i} gets its own admission back");
                            std::future::ready((t, kept >> i & 1 == 0))
                        },
                    );
                    let mut fut = Box::pin(fut);
                    let Poll::Ready(got) = poll_once(fut.as_mut()) else {
                        panic!("ready futures only: the routine must complete at once");
                    };
                    // The model: the first refusal stops, and unwinds what came before.
                    let first_refusal = (0..count).find(|&i| !admits_at(i));
                    let (want, want_log) = match first_refusal {
                        None => (
                            AllOrNothing::Admitted((0..count).map(|i| i * 10).collect()),
                            (0..count)
                                .map(|i| format!("decide {i}"))
                                .collect::<Vec<_>>(),
                        ),
                        Some(r) => {
                            let mut l: Vec<_> = (0..=r).map(|i| format!("decide {i}")).collect();
                            l.extend((0..r).rev().map(|i| format!("give back {i}")));
                            (
                                AllOrNothing::Refused {
                                    index: r,
                                    refusal: r,
                                    given_back: (0..r)
                                        .map(|i| (i * 10, kept >> i & 1 == 0))
                                        .collect(),
                                },
                                l,
                            )
                        }
                    };
                    assert_eq!(
                        got, want,
                        "{count} limits, admits {admits:b}, kept {kept:b}"
                    );
                    assert_eq!(*log.borrow(), want_log);
                }
            }
        }
    }

    /// Dropped while a later limit is pending, the routine leaves what the earlier limits took
    /// with the caller (who gives it back).
    #[test]
    fn a_dropped_decision_leaves_what_was_taken_with_the_caller() {
        let mut taken = Vec::new();
        {
            let mut pending_at_1 = Some(());
            let fut = all_or_nothing(
                &mut taken,
                3,
                |i| {
                    let wait = i == 1 && pending_at_1.take().is_some();
                    std::future::poll_fn(move |_| {
                        if wait {
                            Poll::Pending
                        } else {
                            Poll::Ready(Ok::<_, ()>(i))
                        }
                    })
                },
                |_, t: usize| std::future::ready((t, true)),
            );
            let mut fut = Box::pin(fut);
            assert!(poll_once(fut.as_mut()).is_pending());
        }
        assert_eq!(taken, [0], "limit 0's admission stays with the caller");
    }

    /// A future that waits is reported pending, and completes when polled again.
    #[test]
    fn poll_once_reports_a_waiting_future_as_pending() {
        let mut polled = 0;
        let mut fut = std::pin::pin!(std::future::poll_fn(|_| {
            polled += 1;
            if polled == 1 {
                Poll::Pending
            } else {
                Poll::Ready(7)
            }
        }));
        assert_eq!(poll_once(fut.as_mut()), Poll::Pending);
        assert_eq!(poll_once(fut.as_mut()), Poll::Ready(7));
    }
}
