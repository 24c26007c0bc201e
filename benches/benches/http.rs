//! The HTTP layer's own cost: an axum hello-world behind one per-IP limit, each variant served
//! on loopback by its own current-thread tokio runtime (one server worker) and driven by
//! `wrk -t1 -c32` in interleaved rounds (every variant once per round, so a slow period on a
//! shared machine hits them alike). Prints a markdown table of requests per second and the
//! ratio to the app without a limiter, per round, with the median and range of the ratios; and
//! (on Linux) a table of the server thread's CPU time per request (from
//! `/proc/<pid>/task/<tid>/schedstat`), with each variant's excess over the app without a
//! limiter: the layer's own cost, which other load on the machine barely changes (throughput
//! does).
//!
//! ```text
//! cargo bench -p fluxrate-benches --bench http              # 3 rounds of 6 s per variant (1.5 min)
//! cargo bench -p fluxrate-benches --bench http -- --quick   # 1 round of 1 s (CI smoke)
//! cargo bench -p fluxrate-benches --bench http -- --rounds 5 --secs 10
//! cargo bench -p fluxrate-benches --bench http -- --only none,fluxrate   # some variants
//! ```
//!
//! The first variant run is the baseline of the ratios (`none` unless `--only` leaves it out).
//!
//! Without `wrk` on the `PATH` it prints `skipped: wrk not found` and succeeds.

#[path = "common/http_apps.rs"]
mod http_apps;

use http_apps::{app, Variant};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

/// A server: its address and, on Linux, its thread's `schedstat` (CPU time in ns first).
struct Server {
    addr: SocketAddr,
    schedstat: Option<PathBuf>,
}

/// The CPU time the thread of `schedstat` has run, in ns.
fn cpu_ns(schedstat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(schedstat).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Serve `v`'s app on a free loopback port from a thread of its own with a current-thread
/// runtime (one worker); the thread serves until the process exits.
fn serve(v: Variant) -> Server {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let schedstat = std::fs::read_link("/proc/thread-self")
            .ok()
            .map(|p| Path::new("/proc").join(p).join("schedstat"))
            .filter(|p| cpu_ns(p).is_some());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("its address");
            tx.send(Server { addr, schedstat })
                .expect("the bench waits for the address");
            let svc = app(v).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, svc).await.expect("the server runs");
        });
    });
    rx.recv().expect("the server's address")
}

/// What one `wrk` run reported.
struct Run {
    requests_per_sec: f64,
    requests: u64,
    /// Responses other than 2xx/3xx (none expected: the quota never refuses).
    non_2xx: u64,
}

/// `wrk -t1 -c32 -d{secs}s` against `addr`.
fn wrk(addr: SocketAddr, secs: u32) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            &format!("http://{addr}/"),
        ])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    let number_after = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| rest.trim().parse::<f64>().expect("a number"))
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .expect("wrk reports the requests it sent");
    Run {
        requests,
        requests_per_sec: number_after("Requests/sec:").expect("wrk reports Requests/sec"),
        non_2xx: number_after("Non-2xx or 3xx responses:").map_or(0, |n| n as u64),
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u32>().expect("a whole number"))
    };
    let variants: Vec<Variant> = match args.iter().position(|a| a == "--only") {
        Some(i) => args
            .get(i + 1)
            .map(|list| {
                list.split(',')
                    .map(|name| {
                        Variant::named(name).unwrap_or_else(|| panic!("unknown variant {name:?}"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        None => Variant::ALL.to_vec(),
    };
    assert!(!variants.is_empty(), "--only names no variant");
    let rounds = value_of("--rounds").unwrap_or(if quick { 1 } else { 3 });
    let secs = value_of("--secs").unwrap_or(if quick { 1 } else { 6 });
    if Command::new("wrk").arg("--version").output().is_err() {
        println!(
            "skipped: wrk not found (install it, e.g. `apt-get install wrk`, to run this bench)"
        );
        return;
    }
    let servers: Vec<(Variant, Server)> = variants.iter().map(|&v| (v, serve(v))).collect();
    // rps[variant][round], and the server's CPU ns per request
    let mut rps = vec![Vec::new(); servers.len()];
    let mut cpu = vec![Vec::new(); servers.len()];
    let mut refused = 0;
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        for (i, (v, server)) in servers.iter().enumerate() {
            let before = server.schedstat.as_deref().and_then(cpu_ns);
            let run = wrk(server.addr, secs);
            let after = server.schedstat.as_deref().and_then(cpu_ns);
            let per_request = before
                .zip(after)
                .map(|(b, a)| (a - b) as f64 / run.requests.max(1) as f64);
            eprintln!(
                "  {:<17} {:>10.0} requests/s, server CPU {} ns per request",
                v.name(),
                run.requests_per_sec,
                per_request.map_or("?".into(), |ns| format!("{ns:.0}"))
            );
            refused += run.non_2xx;
            rps[i].push(run.requests_per_sec);
            cpu[i].extend(per_request);
        }
    }
    println!(
        "\naxum hello-world, one per-IP limit; wrk -t1 -c32 -d{secs}s, 1 server worker, {rounds} \
         interleaved round(s)\n"
    );
    let mut head = String::from("| variant |");
    let mut rule = String::from("|---|");
    for r in 1..=rounds {
        head.push_str(&format!(" round {r} |"));
        rule.push_str("---|");
    }
    println!("{head} median ratio | range |\n{rule}---|---|");
    for (i, (v, _)) in servers.iter().enumerate() {
        let ratios: Vec<f64> = (0..rps[i].len()).map(|r| rps[i][r] / rps[0][r]).collect();
        let mut row = format!("| {} |", v.name());
        for (x, ratio) in rps[i].iter().zip(&ratios) {
            row.push_str(&format!(" {:.1} k ({ratio:.2}×) |", x / 1_000.0));
        }
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!("{row} {:.2}× | {lo:.2}–{hi:.2}× |", median(&ratios));
    }
    if cpu.iter().all(|c| c.len() == rounds as usize) {
        println!(
            "\nserver thread CPU time per request (ns), and the excess over {} (the layer's own)\n",
            servers[0].0.name()
        );
        println!("{head} median | median excess |\n{rule}---|---|");
        for (i, (v, _)) in servers.iter().enumerate() {
            let mut row = format!("| {} |", v.name());
            for ns in &cpu[i] {
                row.push_str(&format!(" {ns:.0} |"));
            }
            let excess: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(x, b)| x - b).collect();
            println!(
                "{row} {:.0} | {:+.0} |",
                median(&cpu[i]),
                if i == 0 { 0.0 } else { median(&excess) }
            );
        }
    }
    if refused > 0 {
        println!("\nwarning: {refused} responses were not 2xx (the quota should never refuse)");
    }
}
