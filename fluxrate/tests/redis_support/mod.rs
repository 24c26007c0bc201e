//! Real `redis-server` processes for the Redis tests: started on free loopback ports, killed on
//! drop. Without `redis-server` (or `redis-cli`) on the PATH each test says, once, that it was
//! skipped, and fails instead when `FLUXRATE_REQUIRE_REDIS=1`.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The start of the line a skipped test prints, once, on the real standard error: `.ci/test`
/// counts these lines (`^\*\*\* SKIPPED <test>: `) and reports those tests as skipped, not
/// passed.
pub const SKIPPED: &str = "*** SKIPPED";

/// Whether the Redis tests can run. If not, panics when `FLUXRATE_REQUIRE_REDIS=1`, and
/// otherwise prints `*** SKIPPED <test>: …` once and returns false (call it once per test,
/// first thing, and return at once on false).
pub fn available(test: &str) -> bool {
    let runs = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = ["redis-server", "redis-cli"]
        .into_iter()
        .filter(|p| !runs(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    if std::env::var("FLUXRATE_REQUIRE_REDIS").as_deref() == Ok("1") {
        panic!("{test}: {missing} not found but FLUXRATE_REQUIRE_REDIS=1");
    }
    // Straight to the process's standard error, in one write: the test harness captures
    // `eprintln!` and shows it only for failing tests, so a skip would be silent.
    let line = format!(
        "\n{SKIPPED} {test}: {missing} not found (install redis-server, or set \
         FLUXRATE_REQUIRE_REDIS=1 to fail instead)\n"
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `redis-server` on 127.0.0.1, without persistence.
pub struct Server {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        for _ in 0..20 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("fluxrate-redis-{}-{port}", std::process::id()));
            let mut s = Server {
                port,
                dir,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            if s.launch() {
                return s;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn launch(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("redis-server on {} exited: {status}", self.port);
                self.child = None;
                return false;
            }
            if self.try_cli(&["PING"]).as_deref() == Some("PONG") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Run a command with redis-cli and return its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed on port {}", self.port))
    }

    /// A field of `INFO`, e.g. `("commandstats", "cmdstat_evalsha")`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info = self.cli(&["INFO", section]);
        info.lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
    }

    /// Every call of a command, including rejected and failed ones.
    pub fn command_calls(&self, command: &str) -> u64 {
        let Some(v) = self.info_field("commandstats", &format!("cmdstat_{command}")) else {
            return 0;
        };
        v.split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| matches!(*k, "calls" | "rejected_calls" | "failed_calls"))
            .map(|(k, v)| {
                // `failed_calls` are also in `calls`; `rejected_calls` are not.
                let n: u64 = v.parse().unwrap();
                if k == "failed_calls" {
                    0
                } else {
                    n
                }
            })
            .sum()
    }

    pub fn dbsize(&self) -> u64 {
        self.cli(&["DBSIZE"]).parse().unwrap()
    }

    /// `kill -9`, and check that the port is closed.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "the server still accepts connections after kill -9"
        );
    }

    /// Start again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(Instant::now() < deadline, "could not restart redis-server");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Whether the server answers a PING within `wait` (raw RESP, no client library).
    pub fn answers_within(&self, wait: Duration) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) =
            TcpStream::connect_timeout(&format!("127.0.0.1:{}", self.port).parse().unwrap(), wait)
        else {
            return false;
        };
        s.set_read_timeout(Some(wait)).unwrap();
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 3-node Redis Cluster (masters only) on loopback.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                Server::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                n.info_field("cluster", "cluster_state").as_deref() == Some("ok")
                    || n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Cluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}
