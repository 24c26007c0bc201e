//! The protocol against `decide.lua`'s own text (its code table), and the encoding and decoding
//! on their own.

use super::*;
use crate::ConfigError;
use std::collections::BTreeMap;

/// `decide.lua`'s code table: every `local NAME = integer` line with an upper-case name.
fn lua_codes() -> BTreeMap<&'static str, i64> {
    SCRIPT
        .lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("local ")?.split_once(" = ")?;
            let upper = name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
            Some((name, value.trim().parse().ok()?)).filter(|_| upper)
        })
        .collect()
}

fn lua_name(a: ScriptAlgorithm) -> &'static str {
    match a {
        ScriptAlgorithm::TokenBucket => "TOKEN_BUCKET",
        ScriptAlgorithm::LeakyBucket => "LEAKY_BUCKET",
        ScriptAlgorithm::FixedWindow => "FIXED_WINDOW",
        ScriptAlgorithm::SlidingWindowCounter => "SLIDING_WINDOW_COUNTER",
        ScriptAlgorithm::SlidingLog => "SLIDING_LOG",
    }
}

const MODES: [(Mode, &str); 5] = [
    (Mode::Decide, "DECIDE"),
    (Mode::DryRun, "DRY_RUN"),
    (Mode::Snapshot, "SNAPSHOT"),
    (Mode::Reset, "RESET"),
    (Mode::Refund, "REFUND"),
];

const STATUSES: [(Status, &str); 3] = [
    (Status::Admitted, "ADMITTED"),
    (Status::Limited, "LIMITED"),
    (Status::Never, "NEVER"),
];

/// The script's code table and the Rust enums agree, both ways: every Rust code is in the
/// table with the same value, and the table has no code Rust does not know.
#[test]
fn the_scripts_code_table_matches_the_enums() {
    let lua = lua_codes();
    let mut rust: BTreeMap<&str, i64> = BTreeMap::new();
    for a in Algorithm::ALL.map(ScriptAlgorithm::of) {
        rust.insert(lua_name(a), a as i64);
    }
    for (m, name) in MODES {
        rust.insert(name, m as i64);
    }
    for (s, name) in STATUSES {
        rust.insert(name, s as i64);
    }
    assert_eq!(rust.len(), 5 + 5 + 3, "a name is used twice");
    assert_eq!(
        lua, rust,
        "decide.lua's code table (left) against script.rs (right)"
    );
}

/// The script compares algorithms and modes with the table's names only, never with a bare
/// number (which the table test above could not see).
#[test]
fn the_script_names_its_codes() {
    for (i, line) in SCRIPT.lines().enumerate() {
        let code = line.split("--").next().unwrap_or("");
        for var in ["alg", "mode"] {
            for op in ["==", "~=", "<=", ">=", "<", ">"] {
                let mut rest = code;
                let pat = format!("{var} {op} ");
                while let Some(at) = rest.find(&pat) {
                    let before = rest[..at].chars().last();
                    let after = &rest[at + pat.len()..];
                    let word = before.map_or(true, |c| !c.is_alphanumeric() && c != '_');
                    assert!(
                        !(word && after.starts_with(|c: char| c.is_ascii_digit() || c == '-')),
                        "decide.lua:{}: `{}` compares `{var}` with a number",
                        i + 1,
                        line.trim()
                    );
                    rest = after;
                }
            }
        }
    }
}

#[test]
fn arguments_are_laid_out_as_the_script_reads_them() {
    let tb = Params::new(&Quota::per_second(4).with_burst(3), Algorithm::TokenBucket).unwrap();
    let log = Params::new(&Quota::per_minute(10), Algorithm::SlidingLog).unwrap();
    assert_eq!(
        tb,
        Params {
            algorithm: ScriptAlgorithm::TokenBucket,
            t: 250_000,
            cap: 3
        }
    );
    assert_eq!(
        log,
        Params {
            algorithm: ScriptAlgorithm::SlidingLog,
            t: 60_000_000,
            cap: 10
        }
    );
    let mut args = Args::new(Now::Micros(7), Mode::Refund, 3_600_000);
    args.push(&tb, 2, MaxWait::Any, 99);
    args.push(&log, u64::MAX, MaxWait::up_to(Duration::from_millis(5)), 0);
    assert_eq!(args.limits(), 2);
    assert_eq!(
        args.as_slice(),
        [
            7,
            4,
            2,
            3_600_000,
            1,
            250_000,
            3,
            2,
            -1,
            99,
            5,
            60_000_000,
            10,
            i64::MAX,
            5000,
            0
        ]
    );
    assert_eq!(
        Args::new(Now::Server, Mode::Decide, 0).as_slice(),
        [-1, 0, 0, 0]
    );
}

#[test]
fn only_the_leaky_bucket_checks_with_any_wait() {
    for a in Algorithm::ALL {
        let want = if a == Algorithm::LeakyBucket {
            MaxWait::Any
        } else {
            MaxWait::Micros(0)
        };
        assert_eq!(ScriptAlgorithm::of(a).check_wait(), want, "{a}");
        assert_eq!(
            ScriptAlgorithm::of(a).has_aux_key(),
            a == Algorithm::SlidingLog,
            "{a}"
        );
    }
}

#[test]
fn the_reply_is_decoded_once_with_its_length_checked() {
    let reply = Reply::decode(
        vec![10, 0, 1, 5, 2, 30, 40, 0, 7, 0, 8, 0, -1, 0, 0, 0, 0],
        3,
    );
    let reply = reply.unwrap();
    assert_eq!(reply.now, 10);
    let statuses: Vec<Status> = reply.rows.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Status::Admitted, Status::Limited, Status::Never]);
    let r = reply.rows[0];
    assert_eq!(
        (r.wait, r.remaining, r.reset_after, r.tat_after),
        (5, 2, 30, 40)
    );
    let a = r.decision(reply.now, 1, 9).unwrap();
    assert_eq!(
        (a.delay(), a.remaining(), a.limit()),
        (Duration::from_micros(5), 2, 9)
    );
    assert_eq!((a.admitted_at(), a.tat_after()), (15_000, 40_000));
    let Err(RedisDenied::Limited(l)) = reply.rows[1].decision(reply.now, 1, 9) else {
        panic!("limited")
    };
    assert_eq!(l.retry_after(), Duration::from_micros(7));
    assert!(matches!(
        reply.rows[2].decision(reply.now, 10, 9),
        Err(RedisDenied::Never(_))
    ));
    for bad in [
        vec![],
        vec![1],
        vec![1, 1, 1, 0, 0, 0],
        vec![1, 1, 1, 0, 0, 0, 0, 0],
    ] {
        let e = Reply::decode(bad.clone(), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("unexpected reply of {} integers", bad.len())
        );
    }
    let e = Reply::decode(vec![1, 1, 2, 0, 0, 0, 0], 1).unwrap_err();
    assert_eq!(e.to_string(), "unexpected status 2 in a reply");
}

#[test]
fn the_emission_interval_is_rounded_up_to_whole_microseconds() {
    assert_eq!(emission_interval_us(&Quota::per_second(3)), 333_334);
    assert_eq!(emission_interval_us(&Quota::per_second(1_000_000)), 1);
    assert_eq!(emission_interval_us(&Quota::per_minute(7)), 8_571_429);
    let q = Quota::per_second(3);
    let p = Params::new(&q, Algorithm::LeakyBucket).unwrap();
    assert_eq!(p.t, emission_interval_us(&q));
}

#[test]
fn a_huge_sliding_log_is_valid_and_the_core_checks_come_first() {
    let huge = Quota::per_second(1 << 20);
    let p = Params::new(&huge, Algorithm::SlidingLog).unwrap();
    assert_eq!((p.t, p.cap), (1_000_000, 1 << 20));
    let too_many = Params::new(&Quota::per_second((1 << 20) + 1), Algorithm::SlidingLog);
    assert_eq!(
        too_many,
        Err(RedisConfigError::Quota(ConfigError::TooManyCalls {
            algorithm: Algorithm::SlidingLog,
            calls: (1 << 20) + 1,
            max: crate::MAX_LOG_CALLS,
        }))
    );
    assert_eq!(
        too_many.unwrap_err().to_string(),
        "sliding log supports at most 1048576 calls per window, got 1048577"
    );
    assert_eq!(
        Params::new(&Quota::per_second(2_000_000), Algorithm::TokenBucket),
        Err(RedisConfigError::TooFast {
            calls: 2_000_000,
            period_us: 1_000_000
        })
    );
}
