//! The breaker against its reference model: random histories of calls, outcomes, abandoned
//! probes and time, and the liveness bound after each.

use super::*;
use crate::ManualClock;
use proptest::prelude::*;

const MS: u64 = 1_000_000;

fn manual(threshold: u32, open_for: Duration) -> (Breaker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    (
        Breaker::with_clock(threshold, open_for, clock.clone()),
        clock,
    )
}

#[test]
fn breaker_opens_after_threshold_and_probes_once() {
    let (b, clock) = manual(2, Duration::from_millis(30));
    b.admit().unwrap().failure();
    b.admit()
        .expect("one failure is below the threshold")
        .failure();
    assert!(b.is_open());
    assert_eq!(b.admit().err(), Some(Duration::from_millis(30)));
    clock.advance(Duration::from_millis(40));
    let probe = b
        .admit()
        .expect("the first caller after the open time probes");
    assert!(probe.probe);
    assert_eq!(
        b.admit().err(),
        Some(Duration::from_millis(30)),
        "a second caller waits for the probe"
    );
    probe.failure();
    assert!(b.admit().is_err(), "a failed probe opens it again");
    assert_eq!(b.trips(), 1, "still open: one trip");
    clock.advance(Duration::from_millis(40));
    b.admit().unwrap().success();
    assert!(!b.is_open());
    let (x, y) = (b.admit().unwrap(), b.admit().unwrap());
    assert!(!x.probe && !y.probe, "closed: no probes");
}

/// Issue 11, defect 2, at the breaker: an abandoned probe re-opens the breaker for
/// `open_for`, after which the next caller probes again.
#[test]
fn breaker_abandoned_probe_reopens_and_probes_again() {
    let (b, clock) = manual(1, Duration::from_millis(50));
    b.admit().unwrap().failure();
    clock.advance(Duration::from_millis(60));
    let probe = b.admit().unwrap();
    assert!(probe.probe);
    drop(probe);
    assert!(b.is_open());
    assert_eq!(
        b.admit().err(),
        Some(Duration::from_millis(50)),
        "re-armed from the drop"
    );
    clock.advance(Duration::from_millis(50));
    let again = b.admit().expect("a new probe after open_for");
    assert!(again.probe);
    again.success();
    assert!(!b.is_open());
    assert_eq!(b.trips(), 1);
    // A call admitted while closed and dropped reports nothing: no evidence either way.
    drop(b.admit().unwrap());
    assert!(!b.is_open() && b.failures.load(Ordering::Relaxed) == 0);
}

/// The reference model: the breaker's specification, one step at a time.
#[derive(Debug, Clone)]
struct Model {
    threshold: u32,
    open_for: u64,
    mode: Mode,
    probe_in_flight: bool,
    trips: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed {
        failures: u32,
    },
    /// Refusing until `until`, half-open from then on.
    Open {
        until: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Refused(Duration),
    Call,
    Probe,
}

/// How an admitted call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Success,
    Failure,
    /// Its future was dropped at an await.
    Abandoned,
}

impl Model {
    fn new(threshold: u32, open_for: u64) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            mode: Mode::Closed { failures: 0 },
            probe_in_flight: false,
            trips: 0,
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open { .. })
    }

    fn start(&mut self, now: u64) -> Start {
        match self.mode {
            Mode::Closed { .. } => Start::Call,
            Mode::Open { until } if now < until => {
                Start::Refused(Duration::from_nanos(until - now))
            }
            Mode::Open { .. } if self.probe_in_flight => {
                Start::Refused(Duration::from_nanos(self.open_for))
            }
            Mode::Open { .. } => {
                self.probe_in_flight = true;
                Start::Probe
            }
        }
    }

    fn end(&mut self, probe: bool, end: End, now: u64) {
        let failed = match end {
            End::Success => false,
            End::Failure => true,
            // A dropped call tells nothing about Redis; a dropped probe counts as failed.
            End::Abandoned if probe => true,
            End::Abandoned => return,
        };
        if probe {
            self.probe_in_flight = false;
        }
        if !failed {
            self.mode = Mode::Closed { failures: 0 };
            return;
        }
        let reopen = Mode::Open {
            until: now.saturating_add(self.open_for).max(1),
        };
        self.mode = match self.mode {
            Mode::Closed { failures } if !probe && failures + 1 < self.threshold => Mode::Closed {
                failures: failures + 1,
            },
            Mode::Closed { .. } => {
                self.trips += 1;
                reopen
            }
            Mode::Open { .. } => reopen,
        };
    }
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    /// End the `pick`-th call in flight (modulo their number).
    End(usize, End),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let end = prop_oneof![
        2 => Just(End::Success),
        3 => Just(End::Failure),
        2 => Just(End::Abandoned),
    ];
    prop_oneof![
        4 => Just(Op::Start),
        4 => (any::<usize>(), end).prop_map(|(i, e)| Op::End(i, e)),
        1 => Just(Op::Advance(0)),
        2 => (1..3 * MS).prop_map(Op::Advance),
        2 => (1..400 * MS).prop_map(Op::Advance),
    ]
}

/// Drives the real breaker and the model with the same steps; returns a description of the
/// first disagreement.
struct Run<'a> {
    b: &'a Breaker<ManualClock>,
    clock: ManualClock,
    model: Model,
    /// Calls in flight: the real ticket and whether the model admitted it as the probe.
    calls: Vec<(Ticket<'a, ManualClock>, bool)>,
}

impl<'a> Run<'a> {
    /// Start a call in both; whether it was admitted.
    fn start(&mut self) -> Result<bool, String> {
        let now = self.clock.now();
        let want = self.model.start(now);
        let got = match self.b.admit() {
            Err(wait) => Start::Refused(wait),
            Ok(t) => {
                let s = if t.probe { Start::Probe } else { Start::Call };
                self.calls.push((t, want == Start::Probe));
                s
            }
        };
        if got != want {
            return Err(format!("start at {now}: breaker {got:?}, model {want:?}"));
        }
        Ok(!matches!(got, Start::Refused(_)))
    }

    fn end(&mut self, i: usize, end: End) {
        let (t, probe) = self.calls.swap_remove(i);
        self.model.end(probe, end, self.clock.now());
        match end {
            End::Success => t.success(),
            End::Failure => t.failure(),
            End::Abandoned => drop(t),
        }
    }

    fn check(&self) -> Result<(), String> {
        let b = self.b;
        let probes = self.calls.iter().filter(|(t, _)| t.probe).count();
        let (open, trips) = (b.is_open(), b.trips());
        let probing = b.probing.load(Ordering::Acquire);
        let m = &self.model;
        if probes > 1 {
            return Err(format!("{probes} probes in flight"));
        }
        if open != m.is_open() || trips != m.trips || probing != m.probe_in_flight {
            return Err(format!(
                "at {}: breaker open {open} trips {trips} probing {probing}, model {m:?}",
                self.clock.now()
            ));
        }
        Ok(())
    }
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One history, then the liveness phase: from `t0`, every call in flight succeeds within
/// one `budget`, and new calls arrive every `gap` and succeed within one `budget`. The
/// breaker must be closed from `t0 + open_for + budget + gap` on (`gap`: a probe needs a
/// caller).
fn run_history(
    threshold: u32,
    open_for: u64,
    budget: u64,
    gap: u64,
    ops: &[Op],
    seed: u64,
) -> Result<(), String> {
    let clock = ManualClock::new();
    let b = Breaker::with_clock(threshold, Duration::from_nanos(open_for), clock.clone());
    let mut run = Run {
        b: &b,
        clock,
        model: Model::new(threshold, open_for),
        calls: Vec::new(),
    };
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Start => {
                run.start().map_err(|e| format!("step {step}: {e}"))?;
            }
            Op::End(i, end) => {
                if !run.calls.is_empty() {
                    let i = i % run.calls.len();
                    run.end(i, end);
                }
            }
            Op::Advance(d) => run.clock.advance_ns(d),
        }
        run.check()
            .map_err(|e| format!("step {step} ({op:?}): {e}"))?;
    }
    // Liveness.
    let mut rng = XorShift(seed | 1);
    let t0 = run.clock.now();
    let closed_by = t0 + open_for + budget + gap;
    let mut done_at: Vec<u64> = run
        .calls
        .iter()
        .map(|_| t0 + rng.below(budget + 1))
        .collect();
    let mut arrival = t0;
    loop {
        let next = done_at
            .iter()
            .enumerate()
            .min_by_key(|(_, &d)| d)
            .map(|(i, &d)| (i, d));
        let now = match next {
            Some((_, d)) if d <= arrival => d,
            _ => arrival,
        };
        if now > closed_by + gap {
            break;
        }
        run.clock.set(now);
        match next {
            Some((i, d)) if d == now => {
                done_at.swap_remove(i);
                run.end(i, End::Success);
            }
            _ => {
                if run.start().map_err(|e| format!("liveness: {e}"))? {
                    done_at.push(now + rng.below(budget + 1));
                }
                arrival += gap;
            }
        }
        run.check().map_err(|e| format!("liveness: {e}"))?;
        if now >= closed_by && b.is_open() {
            return Err(format!(
                "still open at {now}, {} ns after the calls began to succeed \
                 (bound: open_for {open_for} + budget {budget} + gap {gap}); model {:?}",
                now - t0,
                run.model
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// The breaker agrees with its reference model on every step of random histories
    /// (calls admitted, refused or probing, successes, failures, calls abandoned at an
    /// await, time passing): refused or not and for how long, open or not, trips, the probe
    /// slot; never more than one probe in flight; and after any history, once calls
    /// succeed, it is closed within `open_for` + one budget.
    #[test]
    fn breaker_agrees_with_its_model_and_always_closes_again(
        threshold in 1u32..5,
        open_for in prop_oneof![Just(0u64), 1..200 * MS],
        budget in 1..300 * MS,
        gap in prop_oneof![MS / 10..MS, MS..5 * MS],
        ops in prop::collection::vec(op(), 0..120),
        seed in any::<u64>(),
    ) {
        if let Err(e) = run_history(threshold, open_for, budget, gap, &ops, seed) {
            return Err(TestCaseError::fail(e));
        }
    }
}
