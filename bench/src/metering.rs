//! Metering throughput, printed (never asserted):
//! * events committed per second through `POST /v1/usage/events`, batches
//!   of 100 and of 1, on SQLite and on Postgres;
//! * quota checks with reservations per second through `POST
//!   /v1/quota/check`, and through the engine alone (no HTTP).
//!
//! The server runs in this process on a fresh database; the load comes
//! from the same machine over loopback. Run: `cargo run --release -p
//! tollgate-bench --bin metering [seconds] [sqlite|postgres]… [events|checks|engine]…`
//! (everything when nothing is named).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_server::Config;

const ADMIN: &str = "bench-admin-token-0123456789";

struct Target {
    name: &'static str,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
    pg: Option<String>,
}

async fn sqlite() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("TOLLGATE_DATA_DIR".into(), dir.path().display().to_string())];
    Target { name: "sqlite", env, _dir: dir, pg: None }
}

async fn postgres() -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let name = format!("tollgate_bench_{}", tollgate_domain::base62::random(10).to_lowercase());
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
    let env = vec![
        ("TOLLGATE_DATA_DIR".into(), dir.path().display().to_string()),
        ("TOLLGATE_DATABASE_URL".into(), format!("postgres://postgres@127.0.0.1:5432/{name}")),
    ];
    Ok(Target { name: "postgres", env, _dir: dir, pg: Some(name) })
}

async fn drop_pg(name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&admin)
            .await;
    }
}

/// CPU seconds used so far by this whole process, and by its SQLite worker
/// threads alone (Linux `/proc`; clock ticks of 10 ms).
fn cpu_seconds() -> (f64, f64) {
    let (mut all, mut sqlite) = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = fields.get(11..13).into_iter().flatten().filter_map(|f| f.parse::<f64>().ok()).sum();
        all += ticks / 100.0;
        if stat[open + 1..close].starts_with("sqlx-sqlite") {
            sqlite += ticks / 100.0;
        }
    }
    (all, sqlite)
}

/// What one `drive` measured.
struct Rate {
    per_second: f64,
    /// CPU time per unit, of the whole process (server and load generator).
    cpu_us: f64,
    /// CPU time per unit of the SQLite worker threads.
    sqlite_us: f64,
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>9.0}   (CPU {:>5.1} µs each", self.per_second, self.cpu_us)?;
        if self.sqlite_us > 0.0 {
            write!(f, ", SQLite thread {:.1} µs", self.sqlite_us)?;
        }
        f.write_str(")")
    }
}

/// Runs `concurrency` loops of `call(sequence number, loop index)` for
/// `seconds`; `call` returns how many units it did.
async fn drive<F, Fut>(seconds: f64, concurrency: usize, call: F) -> Rate
where
    F: Fn(u64, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let call = Arc::new(call);
    let done = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let cpu_before = cpu_seconds();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (call, done, seq) = (call.clone(), done.clone(), seq.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    done.fetch_add(call(n, task).await, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let cpu_after = cpu_seconds();
    let units = done.load(Ordering::Relaxed).max(1) as f64;
    Rate {
        per_second: units / start.elapsed().as_secs_f64(),
        cpu_us: (cpu_after.0 - cpu_before.0) * 1e6 / units,
        sqlite_us: (cpu_after.1 - cpu_before.1) * 1e6 / units,
    }
}

/// What to measure: stores (`sqlite`, `postgres`) and parts (`events`,
/// `checks`, `engine`), from the command line; all when none is named.
struct Choice(Vec<String>);

const USAGE: &str = "usage: metering [seconds] [sqlite|postgres]… [events|checks|engine]… (5 s, everything by default)";

/// The seconds per figure (5 unless a number is given) and what to measure.
fn arguments(args: impl Iterator<Item = String>) -> anyhow::Result<(f64, Choice)> {
    let mut seconds = 5.0;
    let mut words = Vec::new();
    for arg in args {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "sqlite" | "postgres" | "events" | "checks" | "engine" => words.push(arg),
            number => match number.parse::<f64>() {
                Ok(s) if s > 0.0 => seconds = s,
                _ => anyhow::bail!("{arg:?} is neither a number of seconds nor a part to measure\n{USAGE}"),
            },
        }
    }
    Ok((seconds, Choice(words)))
}

impl Choice {
    fn wants(&self, group: &[&str], name: &str) -> bool {
        !self.0.iter().any(|a| group.contains(&a.as_str())) || self.0.iter().any(|a| a == name)
    }

    fn store(&self, name: &str) -> bool {
        self.wants(&["sqlite", "postgres"], name)
    }

    fn part(&self, name: &str) -> bool {
        self.wants(&["events", "checks", "engine"], name)
    }
}

async fn run(target: Target, seconds: f64, choice: &Choice) -> anyhow::Result<()> {
    let mut env = target.env.clone();
    env.push(("TOLLGATE_LISTEN".into(), "127.0.0.1:0".into()));
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN.into()));
    env.push(("TOLLGATE_LOG".into(), "warn".into()));
    let server = tollgate_server::start(Config::from_sources(None, &env)?).await?;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let users = 100;
    for u in 0..users {
        http.post(format!("{base}/admin/v1/users"))
            .bearer_auth(ADMIN)
            .json(&json!({"id": format!("u{u}"), "plan": "enterprise"}))
            .send()
            .await?
            .error_for_status()?;
    }
    http.post(format!("{base}/admin/v1/plans"))
        .bearer_auth(ADMIN)
        .json(&json!({"slug": "bench", "limits": {"tokens": i64::MAX / 4}}))
        .send()
        .await?
        .error_for_status()?;
    http.put(format!("{base}/admin/v1/users/u0/plan"))
        .bearer_auth(ADMIN)
        .json(&json!({"plan": "bench"}))
        .send()
        .await?;

    let batches: &[(usize, usize)] = if choice.part("events") { &[(100, 48), (1, 64)] } else { &[] };
    for &(batch, concurrency) in batches {
        // Bodies are built before the clock starts, so that the load
        // generator spends its share of the cores on sending, not on
        // formatting JSON.
        let count = (1_500_000 / batch).min(200_000);
        let bodies: Arc<Vec<bytes_body::Body>> = Arc::new(
            (0..count).map(|n| bytes_body::batch(&format!("{}_{batch}_{n}", target.name), batch, users, n)).collect(),
        );
        let requests: Arc<Vec<bytes::Bytes>> =
            Arc::new(bodies.iter().map(|b| raw::request("POST", "/v1/usage/events", ADMIN, b)).collect());
        let conns = raw::connections(server.addr, concurrency).await?;
        let rate = drive(seconds, concurrency, move |n, task| {
            let (conns, requests) = (conns.clone(), requests.clone());
            async move {
                let Some(request) = requests.get(n as usize) else { return 0 };
                match conns[task].lock().await.send(request).await {
                    Ok(status) if (200..300).contains(&status) => batch as u64,
                    _ => 0,
                }
            }
        })
        .await;
        println!("{:<9} events committed/s, batches of {batch:>3} ({concurrency} clients): {rate}", target.name);
    }

    if choice.part("checks") {
        checks(server.addr, target.name, seconds).await?;
    }
    server.shutdown().await?;
    if choice.part("engine") {
        engine_commits(&target, seconds).await?;
    }
    if let Some(name) = &target.pg {
        drop_pg(name).await;
    }
    Ok(())
}

/// Quota checks with reservations per second over HTTP.
async fn checks(addr: std::net::SocketAddr, name: &str, seconds: f64) -> anyhow::Result<()> {
    let body = json!({"user_id": "u0", "meter": "tokens", "amount": 1, "reserve": true, "ttl_seconds": 1});
    let request = raw::request("POST", "/v1/quota/check", ADMIN, body.to_string().as_bytes());
    let conns = raw::connections(addr, 64).await?;
    let rate = drive(seconds, 64, move |_, task| {
        let (conns, request) = (conns.clone(), request.clone());
        async move { u64::from(matches!(conns[task].lock().await.send(&request).await, Ok(200))) }
    })
    .await;
    println!("{name:<9} quota checks with reservation/s over HTTP (64 clients):     {rate}");
    Ok(())
}

/// The load generator: keep-alive HTTP/1.1 connections that send requests
/// made before the clock starts and read whole responses, as `wrk` does, so
/// that its share of the cores goes to sending and reading, not to a client
/// library's bookkeeping.
mod raw {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use bytes::{Buf, Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Mutex;

    /// A whole request, ready to send.
    pub fn request(method: &str, path: &str, token: &str, body: &[u8]) -> Bytes {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut out = BytesMut::with_capacity(head.len() + body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
        out.freeze()
    }

    pub struct Conn {
        stream: TcpStream,
        buf: BytesMut,
    }

    /// `n` connections, one per load loop.
    pub async fn connections(addr: SocketAddr, n: usize) -> std::io::Result<Arc<Vec<Mutex<Conn>>>> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            conns.push(Mutex::new(Conn { stream, buf: BytesMut::with_capacity(16 * 1024) }));
        }
        Ok(Arc::new(conns))
    }

    impl Conn {
        /// Sends `request` and reads its response; the response's status.
        pub async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
            self.stream.write_all(request).await?;
            loop {
                if let Some((status, len)) = parse(&self.buf)? {
                    self.buf.advance(len);
                    return Ok(status);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }

    /// The status and whole length of the response at the start of `buf`,
    /// once it is all there.
    fn parse(buf: &[u8]) -> std::io::Result<Option<(u16, usize)>> {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(None) };
        let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
        let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))?;
        let body = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .ok_or_else(|| std::io::Error::other("no content-length"))?;
        Ok((buf.len() >= end + 4 + body).then_some((status, end + 4 + body)))
    }
}

mod bytes_body {
    /// A request body, cheap to clone (reference-counted).
    pub type Body = bytes::Bytes;

    pub fn batch(tag: &str, size: usize, users: usize, n: usize) -> Body {
        let mut body = String::with_capacity(size * 110 + 16);
        body.push_str("{\"events\":[");
        for i in 0..size {
            if i > 0 {
                body.push(',');
            }
            let user = (n + i) % users;
            body.push_str(&format!(
                "{{\"id\":\"{tag}_{i}\",\"user_id\":\"u{user}\",\"model\":\"gpt-4o-mini\",\"input_tokens\":100,\"output_tokens\":20}}"
            ));
        }
        body.push_str("]}");
        Body::from(body)
    }
}

/// Events committed per second through the engine (prepare, group-commit
/// writer, store), without HTTP: what the store path can take.
async fn engine_commits(target: &Target, seconds: f64) -> anyhow::Result<()> {
    use tollgate_domain::usage::Amounts;
    use tollgate_server::metering::{Metering, MeteringConfig};
    use tollgate_store::{EventRow, NewUser, Store, StoreConfig};
    let config = match &target.pg {
        Some(name) => StoreConfig::Postgres { url: format!("postgres://postgres@127.0.0.1:5432/{name}") },
        None => StoreConfig::Sqlite { path: target._dir.path().join("engine.db"), fsync_each_commit: false },
    };
    let store = Arc::new(Store::open(&config).await?);
    store.migrate().await?;
    store.seed_default_plans().await?;
    let users = 100;
    for u in 0..users {
        let id = tollgate_domain::UserId::parse(&format!("e{u}"))?;
        let plan = tollgate_domain::PlanSlug::parse("enterprise")?;
        let _ =
            store.insert_user(NewUser { id, plan, email: None, stripe_customer_id: None, billing_anchor: None }).await;
    }
    let config = MeteringConfig { account_ttl: Duration::from_secs(60), reservation_ttl: Duration::from_secs(600) };
    let metering = Metering::start(store.clone(), config, Vec::new());
    let m = metering.clone();
    let rate = drive(seconds, 16, move |n, _| {
        let m = m.clone();
        async move {
            let mut events = Vec::with_capacity(100);
            for i in 0..100 {
                let user = tollgate_domain::UserId::parse(&format!("e{}", (n as usize + i) % users)).unwrap();
                let account = m.account(&user).await.unwrap();
                let row = EventRow {
                    id: format!("eng_{n}_{i}"),
                    user_id: user.to_string(),
                    ts: tollgate_domain::Timestamp::now().millis(),
                    model: Some("gpt-4o-mini".into()),
                    ..EventRow::default()
                };
                let amounts = Amounts { input_tokens: 100, output_tokens: 20, requests: 1, ..Amounts::default() };
                events.push(m.prepare(&account, row, &amounts));
            }
            m.commit(events, None).await.map(|f| f.len() as u64).unwrap_or(0)
        }
    })
    .await;
    println!("{:<9} events committed/s through the engine, no HTTP (16 × 100):  {rate}", target.name);
    metering.shutdown().await;
    store.close().await;
    Ok(())
}

/// The engine alone: reservations per second, no HTTP, one counter.
fn engine_only(seconds: f64) {
    use tollgate_domain::quota::{Ask, CounterKey, Counters};
    let mut counters = Counters::default();
    let key = CounterKey { user: "u".into(), meter: "tokens".into(), period_start: 0 };
    counters.load(key.clone(), 0);
    let mutex = std::sync::Mutex::new(counters);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..1000 {
            let id = format!("res_{n}");
            let mut c = mutex.lock().unwrap();
            let ok = c.reserve(&id, &[Ask { key: key.clone(), amount: 1, limit: Some(i64::MAX) }], 0, 1).is_ok();
            c.release(&id);
            n += u64::from(ok);
        }
    }
    println!(
        "engine    reserve + release/s, one thread, no HTTP:               {:>9.0}",
        n as f64 / start.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (seconds, choice) = arguments(std::env::args().skip(1))?;
    println!("tollgate metering benchmark, {seconds} s per figure, {} cores", std::thread::available_parallelism()?);
    if choice.store("sqlite") {
        run(sqlite().await, seconds, &choice).await?;
    }
    if choice.store("postgres") {
        run(postgres().await?, seconds, &choice).await?;
    }
    if choice.part("engine") {
        engine_only(seconds);
    }
    Ok(())
}
