//! A real nginx (Debian's `nginx` binary, started here with its own configuration on loopback)
//! as the reverse proxy in front of a real axum server, queried by real HTTP clients bound to
//! distinct loopback addresses (issue 12, "Real parts in the tests").
//!
//! nginx is configured the way its documentation recommends for a reverse proxy
//! (`X-Forwarded-For $proxy_add_x_forwarded_for`, `X-Real-IP $remote_addr`, `Host $host`), which
//! passes a client's own `Forwarded` header through untouched; a second location also appends
//! its own `Forwarded` element. Without an `nginx` binary each test prints
//! `*** SKIPPED <test>: nginx not found …` once on the standard error and returns (`.ci/test`
//! counts it as skipped); with `FLUXRATE_REQUIRE_NGINX=1` it fails instead. `FLUXRATE_NGINX`
//! names the binary when it is not `nginx` on the `PATH` (Debian installs `/usr/sbin/nginx`).
#![cfg(feature = "tower")]

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use fluxrate::http::{
    ForwardedIp, IpNet, KeyExtractor, PeerIp, RateLimitLayer, RequestInfo, RequestKey,
};
use fluxrate::Quota;
use http::{HeaderMap, HeaderName};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Skips
// ---------------------------------------------------------------------------------------------

/// The start of the line a skipped test prints, once, on the real standard error: `.ci/test`
/// counts these lines (`^\*\*\* SKIPPED <test>: `) as skipped tests, never as passed ones.
const SKIPPED: &str = "*** SKIPPED";

/// The first client and the second one: two real, distinct sources on Linux's loopback
/// (127.0.0.0/8 is all local there).
const CLIENT_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const CLIENT_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const LOOPBACK_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Skip `test` for `reason` (then `help`, if any): one line, straight to the process's
/// standard error (the test harness captures `eprintln!` and shows it only for failing tests),
/// or panic when `FLUXRATE_REQUIRE_NGINX=1`.
fn skip(test: &str, reason: &str, help: &str) {
    if std::env::var("FLUXRATE_REQUIRE_NGINX").as_deref() == Ok("1") {
        panic!("{test}: {reason} but FLUXRATE_REQUIRE_NGINX=1");
    }
    let line =
        format!("\n{SKIPPED} {test}: {reason} ({help}FLUXRATE_REQUIRE_NGINX=1 fails instead)\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The nginx binary: `FLUXRATE_NGINX`, or `nginx` on the `PATH`, if it runs.
fn nginx_binary() -> Option<PathBuf> {
    let candidate = match std::env::var_os("FLUXRATE_NGINX") {
        Some(p) => PathBuf::from(p),
        None => std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())?,
    };
    Command::new(&candidate)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then_some(candidate)
}

/// Whether a socket can be bound to `ip` (a local address of this machine).
fn is_local(ip: IpAddr) -> bool {
    TcpListener::bind((ip, 0)).is_ok()
}

/// What the tests need, or `None` after saying once why `test` is skipped (call it first thing
/// and return at once on `None`): the nginx binary, the loopback addresses the clients use, and
/// `::1`.
fn prerequisites(test: &str) -> Option<PathBuf> {
    let Some(nginx) = nginx_binary() else {
        skip(
            test,
            "nginx not found",
            "install Debian's nginx or name the binary in FLUXRATE_NGINX; ",
        );
        return None;
    };
    for ip in [CLIENT_A, CLIENT_B] {
        if !is_local(ip) {
            skip(
                test,
                &format!("{ip} is not a local address here"),
                "Linux's loopback has all of 127.0.0.0/8; ",
            );
            return None;
        }
    }
    if !is_local(LOOPBACK_V6) {
        skip(test, "no IPv6 loopback (::1)", "");
        return None;
    }
    Some(nginx)
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The configuration: one server on `127.0.0.1:v4` and `[::1]:v6` proxying to `upstream`.
///
/// `/` is nginx's documented reverse-proxy setup; it leaves a client's `Forwarded` header as
/// the client wrote it. `/forwarded/` adds nginx's own `Forwarded` element after whatever the
/// client sent (RFC 7239: `for=` an IPv4 address as is, an IPv6 address bracketed and quoted).
/// Every path nginx writes (pid, logs, temporary files) is inside `dir`; it runs in the
/// foreground as one process (`daemon off; master_process off;`), as the current user.
fn nginx_conf(dir: &Path, v4: u16, v6: u16, upstream: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    map $remote_addr $fluxrate_forwarded_for {{
        ~:      "for=\"[$remote_addr]\"";
        default "for=$remote_addr";
    }}
    map $http_forwarded $fluxrate_add_forwarded {{
        ""      $fluxrate_forwarded_for;
        default "$http_forwarded, $fluxrate_forwarded_for";
    }}

    server {{
        listen 127.0.0.1:{v4};
        listen [::1]:{v6};

        location / {{
            proxy_pass http://{upstream};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Host $host;
        }}

        location /forwarded/ {{
            proxy_pass http://{upstream};
            proxy_set_header Forwarded $fluxrate_add_forwarded;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Host $host;
        }}
    }}
}}
"#
    )
}

/// One nginx process on free loopback ports, killed (and its directory removed) on drop.
struct Nginx {
    /// Its IPv4 listener, `127.0.0.1:<port>`.
    v4: SocketAddr,
    /// Its IPv6 listener, `[::1]:<port>`.
    v6: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// Start `binary` in front of `upstream` (retrying on fresh ports if one was taken between
    /// choosing it and nginx binding it), and wait until both listeners accept connections.
    fn start(binary: &Path, upstream: SocketAddr) -> Nginx {
        let mut last_error = String::new();
        for attempt in 0..10 {
            let v4 = SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                free_port(Ipv4Addr::LOCALHOST.into()),
            );
            let v6 = SocketAddr::new(LOOPBACK_V6, free_port(LOOPBACK_V6));
            let dir = std::env::temp_dir().join(format!(
                "fluxrate-nginx-{}-{}-{attempt}",
                std::process::id(),
                v4.port()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&dir, v4.port(), v6.port(), upstream)).unwrap();
            let child = Command::new(binary)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                // The error log from the start: without `-e` nginx first opens its
                // compiled-in /var/log/nginx/error.log.
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut nginx = Nginx { v4, v6, dir, child };
            match nginx.wait_ready() {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start nginx: {last_error}");
    }

    /// Poll (every 10 ms, at most 10 s) until nginx has written its pid file and both
    /// listeners accept, or nginx exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("nginx exited ({status}): {}", self.error_log()));
            }
            let accepts =
                |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(100)).is_ok();
            // nginx writes its pid file once it has bound every listener (and it retries a
            // taken port for a while before exiting): a connection before that could reach
            // whoever took the port.
            if self.dir.join("nginx.pid").exists() && accepts(&self.v4) && accepts(&self.v6) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen within 10 s: {}",
                    self.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream: a real axum server
// ---------------------------------------------------------------------------------------------

/// The headers the upstream saw that say where a request came from, one `name: value` line
/// each, and the peer it saw (nginx's side of the upstream connection).
async fn echo(ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> String {
    let mut out = format!("peer: {}\n", peer.ip());
    for name in ["forwarded", "x-forwarded-for", "x-real-ip", "host"] {
        for v in headers.get_all(name) {
            out.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
    }
    out
}

/// An axum server on `bind` (port 0), `layer` around both routes, aborted on drop.
struct Upstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(bind: SocketAddr, layer: Option<RateLimitLayer>) -> Upstream {
        let mut app = Router::new()
            .route("/", get(echo))
            .route("/forwarded/", get(echo));
        if let Some(layer) = layer {
            app = app.layer(layer);
        }
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Upstream { addr, task }
    }

    /// Where nginx connects to: the bound address, or 127.0.0.1 for a server on `[::]`.
    fn target(&self) -> SocketAddr {
        if self.addr.ip().is_unspecified() {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
        } else {
            self.addr
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The client: HTTP/1.1 by hand, from a chosen source address
// ---------------------------------------------------------------------------------------------

/// A response: status, headers (lowercase names) and body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name: ` among the lines the upstream echoed.
    fn echoed(&self, name: &str) -> Vec<&str> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .collect()
    }
}

/// `GET path` from a socket bound to `from` to `to`, with `headers` written exactly as given
/// (so a test can send duplicates and anything a real client could), one request per
/// connection.
async fn get_from(from: IpAddr, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let socket = match from {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connect timed out")
        .unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: fluxrate.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = stream.into_std().unwrap();
    tokio::task::spawn_blocking(move || {
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        parse_reply(&raw)
    })
    .await
    .unwrap()
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

fn connect_info() -> PeerIp {
    PeerIp::from_extension(|c: &ConnectInfo<SocketAddr>| c.0.ip())
}

/// nginx's address as the upstream sees it, the only trusted proxy.
fn nginx_net() -> IpNet {
    "127.0.0.1".parse().unwrap()
}

/// One way to read the client behind nginx: a header nginx writes, the location that writes
/// it, and the extractor.
#[derive(Clone, Copy)]
struct Via {
    name: &'static str,
    path: &'static str,
    extractor: fn() -> ForwardedIp,
}

/// The three headers nginx writes (in its docs' setup, plus its own `Forwarded` element on
/// `/forwarded/`), each read by the extractor made for it.
const VIAS: [Via; 3] = [
    Via {
        name: "X-Forwarded-For",
        path: "/",
        extractor: || ForwardedIp::x_forwarded_for(connect_info(), [nginx_net()]),
    },
    Via {
        name: "X-Real-IP",
        path: "/",
        extractor: || {
            ForwardedIp::single(
                connect_info(),
                HeaderName::from_static("x-real-ip"),
                [nginx_net()],
            )
        },
    },
    Via {
        name: "Forwarded",
        path: "/forwarded/",
        extractor: || ForwardedIp::forwarded(connect_info(), [nginx_net()]),
    },
];

/// The keys a limit used, in request order.
type Keys = Arc<Mutex<Vec<RequestKey>>>;

/// A layer with one limit, `Quota::per_hour(1)` keyed by `extractor`, and a record of the key
/// of every request it decided.
fn one_per_hour(extractor: impl KeyExtractor) -> (RateLimitLayer, Keys) {
    let keys = Keys::default();
    let record = keys.clone();
    let spy = move |req: &RequestInfo<'_>| {
        let key = extractor.key(req);
        record
            .lock()
            .unwrap()
            .push(key.clone().unwrap_or(RequestKey::Unknown));
        key
    };
    let layer = RateLimitLayer::new()
        .limit("per-client", Quota::per_hour(1), spy)
        .unwrap();
    (layer, keys)
}

fn ip_key(ip: &str) -> RequestKey {
    RequestKey::Ip(ip.parse().unwrap())
}

/// Forged forwarding headers, a different set for each request: other addresses, lists, the
/// trusted proxy's own address, IPv6 with ports and quotes, garbage and unbalanced quotes,
/// and several field lines of each.
const FORGERIES: [&[(&str, &str)]; 7] = [
    &[
        ("Forwarded", "for=198.51.100.1"),
        ("X-Forwarded-For", "203.0.113.1"),
        ("X-Real-IP", "192.0.2.1"),
    ],
    &[
        ("Forwarded", "for=198.51.100.2, for=198.51.100.3"),
        ("X-Forwarded-For", "203.0.113.2, 203.0.113.3"),
        ("X-Real-IP", "192.0.2.2"),
    ],
    &[
        ("Forwarded", "for=127.0.0.1"),
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Real-IP", "127.0.0.1"),
    ],
    &[
        ("Forwarded", "for=\"[2001:db8::1]:4711\";proto=https"),
        ("X-Forwarded-For", "[2001:db8::2]:80"),
        ("X-Real-IP", "2001:db8::3"),
    ],
    &[
        ("Forwarded", "for=\"198.51.100.9"),
        ("X-Forwarded-For", "203.0.113.9, , garbage,"),
        ("X-Real-IP", "not-an-address"),
    ],
    &[
        ("Forwarded", "for=198.51.100.10"),
        ("Forwarded", "for=198.51.100.11"),
        ("X-Forwarded-For", "203.0.113.10"),
        ("X-Forwarded-For", "203.0.113.11"),
        ("X-Real-IP", "192.0.2.10"),
        ("X-Real-IP", "192.0.2.11"),
    ],
    &[],
];

/// The tests, in one module so that `.ci/test` can leave them out of the `--all-features` run
/// (`-- --skip behind_nginx::`) after running them with `--features tower`.
mod behind_nginx {
    use super::*;

    /// The premise of every other test: what nginx, configured as its documentation recommends,
    /// really sends upstream. It appends the peer to the client's `X-Forwarded-For`, replaces the
    /// client's `X-Real-IP`, and passes the client's `Forwarded` through untouched (on `/`) or with
    /// its own element appended (on `/forwarded/`); over IPv6 it writes `::1`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nginx_sends_upstream_what_its_docs_say() {
        let Some(binary) = prerequisites("nginx_sends_upstream_what_its_docs_say") else {
            return;
        };
        let upstream = Upstream::start("127.0.0.1:0".parse().unwrap(), None).await;
        let nginx = Nginx::start(&binary, upstream.target());
        let forged = [
            ("Forwarded", "for=198.51.100.7"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Real-IP", "192.0.2.1"),
        ];

        let r = get_from(CLIENT_A, nginx.v4, "/", &forged).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.echoed("peer"), ["127.0.0.1"], "{r:?}");
        assert_eq!(
            r.echoed("x-forwarded-for"),
            ["203.0.113.9, 127.0.0.2"],
            "{r:?}"
        );
        assert_eq!(r.echoed("x-real-ip"), ["127.0.0.2"], "{r:?}");
        assert_eq!(r.echoed("forwarded"), ["for=198.51.100.7"], "{r:?}");
        assert_eq!(r.echoed("host"), ["fluxrate.test"], "{r:?}");

        let r = get_from(CLIENT_B, nginx.v4, "/forwarded/", &forged).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.echoed("forwarded"),
            ["for=198.51.100.7, for=127.0.0.3"],
            "{r:?}"
        );
        assert_eq!(
            r.echoed("x-forwarded-for"),
            ["203.0.113.9, 127.0.0.3"],
            "{r:?}"
        );
        let r = get_from(CLIENT_B, nginx.v4, "/forwarded/", &[]).await;
        assert_eq!(r.echoed("forwarded"), ["for=127.0.0.3"], "{r:?}");

        // Two X-Forwarded-For lines from the client: nginx joins them before its own entry.
        let r = get_from(
            CLIENT_A,
            nginx.v4,
            "/",
            &[
                ("X-Forwarded-For", "10.1.1.1"),
                ("X-Forwarded-For", "10.2.2.2"),
            ],
        )
        .await;
        assert_eq!(
            r.echoed("x-forwarded-for"),
            ["10.1.1.1, 10.2.2.2, 127.0.0.2"],
            "{r:?}"
        );

        let r = get_from(LOOPBACK_V6, nginx.v6, "/forwarded/", &forged).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.echoed("x-forwarded-for"), ["203.0.113.9, ::1"], "{r:?}");
        assert_eq!(r.echoed("x-real-ip"), ["::1"], "{r:?}");
        assert_eq!(
            r.echoed("forwarded"),
            ["for=198.51.100.7, for=\"[::1]\""],
            "{r:?}"
        );

        // A dual-stack upstream (`[::]`) sees nginx's IPv4 connection as an IPv4-mapped address.
        let dual = Upstream::start("[::]:0".parse().unwrap(), None).await;
        let nginx = Nginx::start(&binary, dual.target());
        let r = get_from(CLIENT_A, nginx.v4, "/", &[]).await;
        assert_eq!(r.echoed("peer"), ["::ffff:127.0.0.1"], "{r:?}");
        assert_eq!(r.echoed("x-forwarded-for"), ["127.0.0.2"], "{r:?}");
        assert!(
            r.header("server").is_some_and(|s| s.starts_with("nginx")),
            "{r:?}"
        );
    }

    /// (a) Behind nginx, forged `Forwarded`, `X-Forwarded-For` and `X-Real-IP` headers cannot
    /// change a client's key, whichever of the three headers nginx writes the limit reads: the
    /// first request (already forged) gets 200, every further one, each with other forged
    /// values, 429, and every request was keyed by the client's real address. Another client
    /// still gets 200: the 429s were this client's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_headers_cannot_change_the_key_behind_nginx() {
        let Some(binary) = prerequisites("forged_headers_cannot_change_the_key_behind_nginx")
        else {
            return;
        };
        for via in VIAS {
            let (layer, keys) = one_per_hour((via.extractor)());
            let upstream = Upstream::start("127.0.0.1:0".parse().unwrap(), Some(layer)).await;
            let nginx = Nginx::start(&binary, upstream.target());
            let mut statuses = Vec::new();
            for forged in FORGERIES {
                let r = get_from(CLIENT_A, nginx.v4, via.path, forged).await;
                if r.status == 429 {
                    // The refusal comes back through nginx with its Retry-After.
                    assert!(r.header("retry-after").is_some(), "{r:?}");
                }
                statuses.push(r.status);
            }
            assert_eq!(
                statuses,
                [200, 429, 429, 429, 429, 429, 429],
                "via {}",
                via.name
            );
            assert_eq!(
                *keys.lock().unwrap(),
                vec![ip_key("127.0.0.2"); FORGERIES.len()],
                "via {}",
                via.name
            );
            let r = get_from(CLIENT_B, nginx.v4, via.path, FORGERIES[0]).await;
            assert_eq!(r.status, 200, "via {}: {r:?}", via.name);
        }
    }

    /// (b) Two real clients (127.0.0.2 and 127.0.0.3) behind nginx get separate buckets: both
    /// get 200 first, then both 429, each keyed by its own address, whichever header nginx
    /// writes is read. Keyed by the peer instead, both count against nginx's address: the
    /// second client's first request already gets 429.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_clients_behind_nginx_get_separate_buckets() {
        let Some(binary) = prerequisites("two_clients_behind_nginx_get_separate_buckets") else {
            return;
        };
        for via in VIAS {
            let (layer, keys) = one_per_hour((via.extractor)());
            let upstream = Upstream::start("127.0.0.1:0".parse().unwrap(), Some(layer)).await;
            let nginx = Nginx::start(&binary, upstream.target());
            let mut statuses = Vec::new();
            for client in [CLIENT_A, CLIENT_B, CLIENT_A, CLIENT_B] {
                statuses.push(get_from(client, nginx.v4, via.path, &[]).await.status);
            }
            assert_eq!(statuses, [200, 200, 429, 429], "via {}", via.name);
            let (a, b) = (ip_key("127.0.0.2"), ip_key("127.0.0.3"));
            assert_eq!(
                *keys.lock().unwrap(),
                [a.clone(), b.clone(), a, b],
                "via {}",
                via.name
            );
        }

        let (layer, keys) = one_per_hour(connect_info());
        let upstream = Upstream::start("127.0.0.1:0".parse().unwrap(), Some(layer)).await;
        let nginx = Nginx::start(&binary, upstream.target());
        let a = get_from(CLIENT_A, nginx.v4, "/", &[]).await;
        let b = get_from(CLIENT_B, nginx.v4, "/", &[]).await;
        assert_eq!((a.status, b.status), (200, 429), "{a:?} {b:?}");
        assert_eq!(
            *keys.lock().unwrap(),
            [ip_key("127.0.0.1"), ip_key("127.0.0.1")]
        );
    }

    /// (c) An IPv6 client on `[::1]` through nginx's `[::1]` listener is keyed by its /64
    /// (`::/64`, the key `::`), and with `ipv6_prefix(128)` by its address; forged headers do
    /// not move it out of its bucket, and the IPv4 clients of the same nginx keep theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ipv6_client_through_nginx_is_keyed_by_its_64() {
        let Some(binary) = prerequisites("ipv6_client_through_nginx_is_keyed_by_its_64") else {
            return;
        };
        for (bits, key) in [(64, "::"), (128, "::1")] {
            for via in VIAS {
                let extractor = (via.extractor)().ipv6_prefix(bits).unwrap();
                let (layer, keys) = one_per_hour(extractor);
                let upstream = Upstream::start("127.0.0.1:0".parse().unwrap(), Some(layer)).await;
                let nginx = Nginx::start(&binary, upstream.target());
                let mut statuses = Vec::new();
                for forged in [&[][..], FORGERIES[3], FORGERIES[0]] {
                    statuses.push(
                        get_from(LOOPBACK_V6, nginx.v6, via.path, forged)
                            .await
                            .status,
                    );
                }
                let v4 = get_from(CLIENT_A, nginx.v4, via.path, &[]).await;
                statuses.push(v4.status);
                assert_eq!(statuses, [200, 429, 429, 200], "/{bits} via {}", via.name);
                assert_eq!(
                    *keys.lock().unwrap(),
                    [ip_key(key), ip_key(key), ip_key(key), ip_key("127.0.0.2")],
                    "/{bits} via {}",
                    via.name
                );
            }
        }
    }

    /// (c) An axum server bound on `[::]` (dual-stack) sees nginx's IPv4 connection as
    /// `::ffff:127.0.0.1`, which still matches the trusted `127.0.0.1`: the clients behind
    /// nginx (127.0.0.2, 127.0.0.3 and `::1`) stay separate, keyed by their canonical
    /// addresses, whichever header is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dual_stack_upstream_still_trusts_nginx_and_keeps_clients_apart() {
        let test = "dual_stack_upstream_still_trusts_nginx_and_keeps_clients_apart";
        let Some(binary) = prerequisites(test) else {
            return;
        };
        for via in VIAS {
            let (layer, keys) = one_per_hour((via.extractor)());
            let upstream = Upstream::start("[::]:0".parse().unwrap(), Some(layer)).await;
            let nginx = Nginx::start(&binary, upstream.target());
            let first = get_from(CLIENT_A, nginx.v4, via.path, &[]).await;
            assert_eq!(first.echoed("peer"), ["::ffff:127.0.0.1"], "{first:?}");
            let mut statuses = vec![first.status];
            for (client, to) in [
                (CLIENT_B, nginx.v4),
                (LOOPBACK_V6, nginx.v6),
                (CLIENT_A, nginx.v4),
                (CLIENT_B, nginx.v4),
                (LOOPBACK_V6, nginx.v6),
            ] {
                statuses.push(get_from(client, to, via.path, &[]).await.status);
            }
            assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "via {}", via.name);
            let want: Vec<RequestKey> = ["127.0.0.2", "127.0.0.3", "::"]
                .repeat(2)
                .into_iter()
                .map(ip_key)
                .collect();
            assert_eq!(*keys.lock().unwrap(), want, "via {}", via.name);
        }
    }

    /// The other side of choosing the header explicitly: on `/`, nginx (as its docs configure
    /// it) writes `X-Forwarded-For` and `X-Real-IP` but passes the client's `Forwarded`
    /// through untouched, so a limit that reads `Forwarded` there is keyed by whatever the
    /// client wrote: every forged value is a fresh bucket. Read the header your proxy writes
    /// (`ForwardedHeader` docs); this test pins why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reading_a_header_nginx_does_not_write_lets_the_client_choose() {
        let test = "reading_a_header_nginx_does_not_write_lets_the_client_choose";
        let Some(binary) = prerequisites(test) else {
            return;
        };
        let (layer, keys) = one_per_hour(ForwardedIp::forwarded(connect_info(), [nginx_net()]));
        let upstream = Upstream::start("127.0.0.1:0".parse().unwrap(), Some(layer)).await;
        let nginx = Nginx::start(&binary, upstream.target());
        let mut statuses = Vec::new();
        for i in 1..=3 {
            let forged = format!("for=198.51.100.{i}");
            let r = get_from(CLIENT_A, nginx.v4, "/", &[("Forwarded", &forged)]).await;
            statuses.push(r.status);
        }
        assert_eq!(statuses, [200, 200, 200]);
        let want: Vec<RequestKey> = (1..=3)
            .map(|i| ip_key(&format!("198.51.100.{i}")))
            .collect();
        assert_eq!(*keys.lock().unwrap(), want);
    }
}
