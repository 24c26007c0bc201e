//! Checks per second against a loopback Redis, next to `redis-benchmark` on the same server as
//! the ceiling. Starts its own `redis-server` on a free port (or uses `FLUXRATE_REDIS_URL`).
//!
//! ```text
//! cargo run --release --example redis_bench --features redis [-- --quick]
//! ```

use fluxrate::redis::{RedisBackend, RedisRateLimiter};
use fluxrate::{Algorithm, Quota};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)"),
        port,
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not start");
}

/// `redis-benchmark`'s requests per second for `args` (its `-q` output).
fn redis_benchmark(port: u16, n: u64, clients: u32, args: &[&str]) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(["-n", &n.to_string(), "-c", &clients.to_string()])
        .args(args)
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // "PING_INLINE: 61538.46 requests per second, p50=0.407 msec" (after \r progress lines)
    let last = text.rsplit('\r').next().unwrap_or("");
    last.split(" requests per second")
        .next()
        .and_then(|head| head.split_whitespace().last())
        .and_then(|w| w.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u64 = if quick { 2_000 } else { 50_000 };
    let server;
    let (url, port) = match std::env::var("FLUXRATE_REDIS_URL") {
        Ok(url) => {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(6379);
            (url, port)
        }
        Err(_) => {
            server = start();
            (format!("redis://127.0.0.1:{}", server.1), server.1)
        }
    };
    let backend = RedisBackend::connect(&url).await?;
    println!("| workload | checks/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for alg in [
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingLog,
    ] {
        let l = RedisRateLimiter::builder(&backend, "bench", Quota::per_second(1_000_000 / 4))
            .algorithm(alg)
            .timeout(Duration::from_secs(1))
            .build()?;
        // Sequential: one request in flight.
        let mut lat = Vec::with_capacity(n as usize);
        let t0 = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            let _ = l.check_key(&(i % 1000)).await;
            lat.push(t.elapsed());
        }
        let seq = n as f64 / t0.elapsed().as_secs_f64();
        lat.sort();
        println!(
            "| fluxrate {alg}, 1 in flight | {seq:.0} | {:.0} µs | {:.0} µs |",
            lat[lat.len() / 2].as_secs_f64() * 1e6,
            lat[lat.len() * 99 / 100].as_secs_f64() * 1e6
        );
        // Concurrent: 64 requests in flight on the one multiplexed connection (pipelined).
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..64u64 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = task;
                while i < n {
                    let _ = l.check_key(&(i % 1000)).await;
                    i += 64;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let conc = n as f64 / t0.elapsed().as_secs_f64();
        println!("| fluxrate {alg}, 64 in flight | {conc:.0} | | |");
    }
    // The ceiling: redis-benchmark on the same server, PING and the token bucket script itself
    // (EVALSHA with the arguments fluxrate sends), without any client library in the way.
    let script = backend.script_hash().to_owned();
    let evalsha = [
        "EVALSHA",
        &script,
        "2",
        "fluxrate:{rb}:bench:tb",
        "fluxrate:{rb}:bench:tb:seq",
        "-1",
        "0",
        "1",
        "0",
        "1",
        "4",
        "1000000",
        "1",
        "0",
        "0",
    ];
    for clients in [1, 64] {
        let ping = redis_benchmark(port, n, clients, &["-t", "ping"]);
        let script = redis_benchmark(port, n, clients, &evalsha);
        println!("| redis-benchmark PING, {clients} clients | {ping:.0} | | |");
        println!("| redis-benchmark EVALSHA token bucket, {clients} clients | {script:.0} | | |");
    }
    Ok(())
}
