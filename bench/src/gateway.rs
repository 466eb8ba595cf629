//! The gateway against `mock-llm` directly, in one run, printed (never
//! asserted; targets in DESIGN §7):
//! * throughput at a fixed concurrency (closed loop), the ratio, and the
//!   CPU each answering process (the mock, the bare proxy, the gateway)
//!   spends per call;
//! * for scale, the same through a bare proxy (hyper's server and client,
//!   nothing else): what one more hop costs on this machine;
//! * latency percentiles at a fixed request rate (open loop, corrected for
//!   coordinated omission: a request that had to wait for the one before it
//!   on its connection is timed from when it should have been sent), and
//!   the latency the gateway adds at each percentile;
//! * time to the first byte of a streamed answer, and what the gateway adds,
//!   eight streams at a time (closed loop) and at a fixed rate (open loop);
//! * where a call's time went inside the gateway at the fixed rate (means of
//!   its own timings, from its `/metrics`);
//! * the gateway's resident memory idle, after the load, and holding 5,000
//!   concurrent streams.
//!
//! Each comparison is taken in rounds, the targets in turn ([`ROUNDS`]);
//! each open-loop round starts with an untimed [`WARM_UP`] at its rate.
//!
//! The mock and the gateway (full metering on SQLite, as shipped: WAL,
//! `synchronous=NORMAL`; its log at `info`, a line per request, to a file)
//! run as child processes of this one, which is the
//! load generator: its own HTTP/1.1 connections over loopback, one request
//! at a time each. All three share the machine's cores, so the figures are
//! a floor. Run: `cargo run --release -p tollgate-bench --bin gateway --
//! [--seconds 3] [--concurrency 32] [--rate 2000] [--streams 5000]
//! [--data-dir /dev/shm]`; `TOLLGATE_LOG` in the environment is passed on to
//! the gateway (`warn` shows what its access log costs).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

const ADMIN: &str = "bench-admin-token-0123456789";
const PLATFORM_KEY: &str = "sk-bench-platform-key";
const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Tell me about toll gates [mock tokens=16]"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me about toll gates [mock tokens=16]"}]}"#;
/// Held open for the memory figure: 30 tokens at 2 per second.
const SLOW_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hold on [mock tokens=30 tps=2]"}]}"#;

const USAGE: &str = "usage: gateway [--seconds 3] [--concurrency 32] [--rate 2000] [--streams 5000] [--data-dir DIR]
  --seconds      each target's time per figure, in all (split into rounds)
  --concurrency  connections of the closed-loop throughput figure
  --rate         requests per second of the open-loop latency figure
  --streams      streams held open for the memory figure
  --data-dir     where the gateway's SQLite database goes (/dev/shm: tmpfs)
TOLLGATE_LOG in the environment reaches the gateway (warn turns its access log off).";

/// `value` of `flag` as a number, or an error naming both.
fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value.parse().map_err(|_| anyhow::anyhow!("{flag}: expected a number, got {value:?}\n{USAGE}"))
}

struct Settings {
    seconds: f64,
    concurrency: usize,
    rate: f64,
    streams: usize,
    /// Where the gateway's SQLite database goes (a temporary directory of
    /// its own inside); on tmpfs (`/dev/shm`) its fsyncs cost nothing, which
    /// shows what they cost on disk.
    data_parent: Option<std::path::PathBuf>,
}

fn settings() -> anyhow::Result<Settings> {
    let mut s = Settings { seconds: 3.0, concurrency: 32, rate: 2000.0, streams: 5000, data_parent: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--seconds" => s.seconds = number(&flag, &value)?,
            "--concurrency" => s.concurrency = number(&flag, &value)?,
            "--rate" => s.rate = number(&flag, &value)?,
            "--streams" => s.streams = number(&flag, &value)?,
            "--data-dir" => s.data_parent = Some(value.into()),
            other => anyhow::bail!("unknown option {other}\n{USAGE}"),
        }
    }
    Ok(s)
}

/// Where requests go: the mock directly, or the gateway.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    key: String,
}

/// A child process that printed `listening ADDR`.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `--role role` with `env`; its standard error goes to `log`
    /// (a file) if given.
    fn spawn(role: &str, env: &[(&str, String)], log: Option<&std::path::Path>) -> anyhow::Result<Process> {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", role])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let addr = line.trim().strip_prefix("listening ").with_context(|| format!("{role} said {line:?}"))?.parse()?;
        Ok(Process { child, addr })
    }

    /// Resident memory now and at its peak, in MB.
    fn rss_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        (field("VmRSS:").unwrap_or(0.0) / 1024.0, field("VmHWM:").unwrap_or(0.0) / 1024.0)
    }

    /// CPU seconds used so far (user + system).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        fields.get(11..13).into_iter().flatten().filter_map(|f| f.parse::<f64>().ok()).sum::<f64>() / 100.0
    }
}

/// `--role mock`: mock-llm, recording nothing.
async fn run_mock() -> anyhow::Result<()> {
    let mock = tollgate_mock::start(tollgate_mock::MockConfig { record_limit: 0, ..Default::default() }).await?;
    println!("listening {}", mock.addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// `--role passthrough`: the floor a proxy hop costs on this machine, for
/// scale: hyper's server and pooled client in front of the mock at `MOCK`,
/// passing each request on as it came (no keys, no metering, no headers).
async fn run_passthrough() -> anyhow::Result<()> {
    let mock: SocketAddr = std::env::var("MOCK")?.parse()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let client = client.clone();
        tokio::spawn(async move {
            let forward = service_fn(move |req| pass_on(client.clone(), mock, req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), forward).await;
        });
    }
}

async fn pass_on(
    client: Client<HttpConnector, Incoming>,
    mock: SocketAddr,
    mut req: hyper::Request<Incoming>,
) -> anyhow::Result<hyper::Response<Incoming>> {
    *req.uri_mut() = format!("http://{mock}{}", req.uri().path()).parse()?;
    Ok(client.request(req).await?)
}

/// `--role gateway`: `tollgate serve` in front of the mock at `MOCK`.
async fn run_gateway() -> anyhow::Result<()> {
    let mock = std::env::var("MOCK")?;
    let data = std::env::var("DATA")?;
    let env: Vec<(String, String)> = [
        ("TOLLGATE_LISTEN", "127.0.0.1:0".to_owned()),
        ("TOLLGATE_DATA_DIR", data),
        ("TOLLGATE_ADMIN_TOKEN", ADMIN.to_owned()),
        ("TOLLGATE_OPENAI_BASE_URL", format!("http://{mock}/v1")),
        ("OPENAI_API_KEY", PLATFORM_KEY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    // `TOLLGATE_LOG=warn` shows what the access log costs.
    .chain(std::env::var("TOLLGATE_LOG").ok().map(|level| ("TOLLGATE_LOG".to_owned(), level)))
    .collect();
    let config = tollgate_server::Config::from_sources(None, &env)?;
    // Its log as `tollgate serve` writes it (by default a line per request),
    // to the file the bench gave as standard error.
    tollgate_server::logging::init(&config)?;
    let server = tollgate_server::start(config).await?;
    println!("listening {}", server.addr);
    std::future::pending::<()>().await;
    Ok(())
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn request(target: &Target, body: &'static str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/v1/chat/completions")
        .header("host", target.addr.to_string())
        .header("authorization", format!("Bearer {}", target.key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid request")
}

/// One call: its time to the first body byte, and to the end.
async fn call(sender: &mut Sender, target: &Target, body: &'static str) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    sender.ready().await?;
    let response = sender.send_request(request(target, body)).await?;
    anyhow::ensure!(response.status() == 200, "{} answered {}", target.name, response.status());
    let mut body = response.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if frame?.is_data() && first.is_none() {
            first = Some(start.elapsed());
        }
    }
    Ok((first.unwrap_or_else(|| start.elapsed()), start.elapsed()))
}

/// Each comparison is measured in this many rounds, its targets taking
/// turns, so that a stretch in which the shared machine runs slower falls
/// on all of them alike instead of on whichever ran then. `--seconds` is
/// the time each target gets in all.
const ROUNDS: u32 = 3;

/// `measure` of each of `targets` in turn, [`ROUNDS`] times; each target's
/// samples merged, sorted.
async fn in_rounds<F, Fut>(targets: &[&Target], mut measure: F) -> anyhow::Result<Vec<Vec<u64>>>
where
    F: FnMut(Target) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<u64>>>,
{
    let mut samples = vec![Vec::new(); targets.len()];
    for _ in 0..ROUNDS {
        for (all, target) in samples.iter_mut().zip(targets) {
            all.extend(measure((*target).clone()).await?);
        }
    }
    for all in &mut samples {
        all.sort_unstable();
    }
    Ok(samples)
}

/// Calls completed through `target` by `concurrency` connections, each
/// sending as soon as the last answer arrived, in about `seconds`; and the
/// seconds they took.
async fn throughput(target: &Target, concurrency: usize, seconds: f64) -> anyhow::Result<(u64, f64)> {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        let mut sender = connect(target.addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                call(&mut sender, &target, CHAT).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// What an open-loop run times: each whole answer, or its first byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    Answer,
    FirstByte,
}

/// The untimed start of each open-loop run, at the same rate: a process
/// that sat idle for the other targets' rounds answers its first calls
/// slowly on these machines (the first call after two idle seconds took
/// 12–30 ms through the gateway and 4–10 ms straight to the mock, against
/// well under 1 ms once going), and a steady 2,000 calls a second never
/// leaves it idle.
const WARM_UP: Duration = Duration::from_millis(200);

/// Latencies (µs) of `body` at `rate` requests per second over
/// `connections`, each connection sending on its own schedule, after
/// [`WARM_UP`]. A request sent late because its connection was still busy
/// is timed from its scheduled time (coordinated omission corrected); one
/// sent late only by the timer's granularity is timed from when it left.
async fn open_loop(
    target: &Target,
    (body, until): (&'static str, Until),
    rate: f64,
    connections: usize,
    seconds: f64,
) -> anyhow::Result<Vec<u64>> {
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let timed_from = start + WARM_UP;
    let end = timed_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for k in 0..connections {
        let target = target.clone();
        let mut sender = connect(target.addr).await?;
        let offset = Duration::from_secs_f64(k as f64 / rate);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut scheduled = start + offset;
            let mut previous_done = start;
            while scheduled < end {
                tokio::time::sleep_until(scheduled).await;
                let sent = tokio::time::Instant::now();
                let from = if previous_done > scheduled { scheduled } else { sent };
                let (first, _) = call(&mut sender, &target, body).await?;
                let done = tokio::time::Instant::now();
                let timed = if until == Until::FirstByte { sent + first } else { done };
                if scheduled >= timed_from {
                    latencies.push((timed - from).as_micros() as u64);
                }
                previous_done = done;
                scheduled += interval;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable();
    Ok(all)
}

/// Times to first byte (µs) of `n` streamed answers, eight at a time.
async fn first_bytes(target: &Target, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let target = target.clone();
        let mut sender = connect(target.addr).await?;
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for _ in 0..n / 8 {
                let (first, _) = call(&mut sender, &target, STREAM).await?;
                times.push(first.as_micros() as u64);
            }
            anyhow::Ok(times)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable();
    Ok(all)
}

/// Opens `n` slow streams through `target` and waits until every one has
/// its first byte; returns them, still open.
async fn hold_streams(target: &Target, n: usize) -> anyhow::Result<Vec<hyper::body::Incoming>> {
    let target = Arc::new(target.clone());
    let mut tasks = Vec::new();
    for _ in 0..n {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await?;
            let response = sender.send_request(request(&target, SLOW_STREAM)).await?;
            anyhow::ensure!(response.status() == 200, "a held stream was answered {}", response.status());
            let mut body = response.into_body();
            loop {
                match body.frame().await {
                    Some(Ok(frame)) if frame.is_data() => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("a held stream ended early"),
                }
            }
            // The connection task keeps running while the sender lives.
            std::mem::forget(sender);
            anyhow::Ok(body)
        }));
    }
    let mut bodies = Vec::with_capacity(n);
    for task in tasks {
        bodies.push(task.await??);
    }
    Ok(bodies)
}

/// The gateway's own timings of its calls (sum of seconds, count) from
/// its `/metrics`: the provider's first byte, then the wait for the usage
/// commit (the journal's append on SQLite).
struct GatewayTimings([(f64, f64); 2]);

impl GatewayTimings {
    const NAMES: [&str; 2] = ["tollgate_gateway_upstream_first_byte_seconds", "tollgate_gateway_commit_seconds"];

    async fn read(gateway: SocketAddr) -> anyhow::Result<GatewayTimings> {
        let text = reqwest::get(format!("http://{gateway}/metrics")).await?.text().await?;
        let value = |name: String| {
            text.lines()
                .find_map(|l| l.strip_prefix(&name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .with_context(|| format!("no {name} in /metrics"))
        };
        let mut read = [(0.0, 0.0); 2];
        for (slot, name) in read.iter_mut().zip(Self::NAMES) {
            *slot = (value(format!("{name}_sum"))?, value(format!("{name}_count"))?);
        }
        Ok(GatewayTimings(read))
    }

    fn since(&self, before: &GatewayTimings) -> GatewayTimings {
        GatewayTimings([0, 1].map(|i| (self.0[i].0 - before.0[i].0, self.0[i].1 - before.0[i].1)))
    }

    /// The mean of timing `i`, in µs.
    fn mean(&self, i: usize) -> u64 {
        let (sum, count) = self.0[i];
        (sum / count.max(1.0) * 1e6) as u64
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

async fn seed(gateway: SocketAddr) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let base = format!("http://{gateway}");
    let admin =
        |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).bearer_auth(ADMIN).json(&body).send();
    let plan = json!({"slug": "bench", "limits": {"tokens": 1_000_000_000_000i64, "requests": 1_000_000_000}});
    admin("/admin/v1/plans", plan).await?.error_for_status()?;
    admin("/admin/v1/users", json!({"id": "bench_user", "plan": "bench"})).await?.error_for_status()?;
    let key: serde_json::Value = admin("/admin/v1/users/bench_user/keys", json!({"scopes": ["proxy"]}))
        .await?
        .error_for_status()?
        .json()
        .await?;
    key["key"].as_str().map(str::to_owned).context("no key in the answer")
}

async fn bench(s: Settings) -> anyhow::Result<()> {
    let data = match &s.data_parent {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let mock = Process::spawn("mock", &[], None)?;
    let gateway_env = [("MOCK", mock.addr.to_string()), ("DATA", data.path().display().to_string())];
    let gateway = Process::spawn("gateway", &gateway_env, Some(&data.path().join("gateway.log")))?;
    let passthrough = Process::spawn("passthrough", &[("MOCK", mock.addr.to_string())], None)?;
    let (idle_rss, _) = gateway.rss_mb();
    let key = seed(gateway.addr).await?;
    let direct = Target { name: "mock-llm directly", addr: mock.addr, key: PLATFORM_KEY.into() };
    let bare = Target { name: "a bare proxy", addr: passthrough.addr, key: PLATFORM_KEY.into() };
    let through = Target { name: "through the gateway", addr: gateway.addr, key };
    println!(
        "gateway benchmark: {} s per figure; mock-llm and the gateway (SQLite in {}, full metering) as child processes",
        s.seconds,
        data.path().display()
    );
    println!("idle gateway RSS: {idle_rss:.1} MB (before any request)");

    // Warm both paths (connections, the tokenizer, the price table).
    throughput(&direct, 4, 0.5).await?;
    throughput(&through, 4, 0.5).await?;
    throughput(&bare, 4, 0.5).await?;

    let round = s.seconds / f64::from(ROUNDS);
    // Each target's calls, seconds, and the CPU of the process that
    // answers them (the mock; the bare proxy; the gateway) meanwhile.
    let (mut calls, mut took, mut cpu) = ([0u64; 3], [0.0; 3], [0.0; 3]);
    for _ in 0..ROUNDS {
        for (i, (target, process)) in
            [(&direct, &mock), (&bare, &passthrough), (&through, &gateway)].into_iter().enumerate()
        {
            let cpu_before = process.cpu_seconds();
            let (n, seconds) = throughput(target, s.concurrency, round).await?;
            cpu[i] += process.cpu_seconds() - cpu_before;
            calls[i] += n;
            took[i] += seconds;
        }
    }
    let [direct_rps, bare_rps, gateway_rps] = [0, 1, 2].map(|i| calls[i] as f64 / took[i]);
    let [mock_cpu, bare_cpu, gateway_cpu] = [0, 1, 2].map(|i| cpu[i] / calls[i].max(1) as f64 * 1e6);
    println!("\nthroughput, {} connections, closed loop (non-streamed chat completions):", s.concurrency);
    println!("  mock-llm directly    {direct_rps:>9.0} req/s   (the mock's CPU per call {mock_cpu:.0} µs)");
    println!(
        "  through the gateway  {gateway_rps:>9.0} req/s   ratio {:.1} % (target ≥ 50 %)",
        100.0 * gateway_rps / direct_rps
    );
    println!("  gateway CPU per call {gateway_cpu:>9.0} µs");
    println!(
        "  for scale, a bare proxy (hyper's server and client, nothing else) {bare_rps:.0} req/s, ratio {:.1} %, \
         its CPU per call {bare_cpu:.0} µs",
        100.0 * bare_rps / direct_rps
    );

    let connections = 64;
    // Only the gateway's rounds move its timings.
    let timings_before = GatewayTimings::read(gateway.addr).await?;
    let rate = s.rate;
    let [direct_lat, gateway_lat, bare_lat]: [Vec<u64>; 3] =
        in_rounds(&[&direct, &through, &bare], |target| async move {
            open_loop(&target, (CHAT, Until::Answer), rate, connections, round).await
        })
        .await?
        .try_into()
        .expect("three targets");
    let timings = GatewayTimings::read(gateway.addr).await?.since(&timings_before);
    println!(
        "\nlatency at {:.0} req/s, open loop over {connections} connections (corrected for coordinated omission):",
        s.rate
    );
    println!("  {:<6} {:>12} {:>12} {:>12} {:>18}", "", "direct", "gateway", "added", "added by bare proxy");
    for p in [50.0, 90.0, 99.0, 99.9] {
        let (d, g, b) = (percentile(&direct_lat, p), percentile(&gateway_lat, p), percentile(&bare_lat, p));
        println!(
            "  p{p:<5} {:>12} {:>12} {:>12} {:>18}",
            ms(d),
            ms(g),
            ms(g.saturating_sub(d)),
            ms(b.saturating_sub(d))
        );
    }
    let (dmax, gmax) = (direct_lat.last().copied().unwrap_or(0), gateway_lat.last().copied().unwrap_or(0));
    println!("  {:<6} {:>12} {:>12}", "max", ms(dmax), ms(gmax));
    println!("  (targets: added p50 ≤ 0.050 ms, p99 ≤ 1 ms; {} and {} requests)", direct_lat.len(), gateway_lat.len());
    println!(
        "  where a call's time went in the gateway at this rate (means, from its /metrics): from its start to the provider's \
         answer {}, the wait for the usage commit {}",
        ms(timings.mean(0)),
        ms(timings.mean(1))
    );

    let n = ((s.seconds * 400.0) as usize).max(80);
    let [direct_ttfb, gateway_ttfb]: [Vec<u64>; 2] =
        in_rounds(&[&direct, &through], |target| async move { first_bytes(&target, n / ROUNDS as usize).await })
            .await?
            .try_into()
            .expect("two targets");
    println!("\ntime to first byte of a streamed answer ({} streams, 8 at a time, closed loop):", direct_ttfb.len());
    print_added(&direct_ttfb, &gateway_ttfb);
    // The same at a fixed rate that leaves the cores some room: the
    // gateway's own first-byte overhead rather than a queue for the CPU.
    let (stream_rate, stream_connections) = (200.0, 16);
    let [direct_ttfb, gateway_ttfb]: [Vec<u64>; 2] = in_rounds(&[&direct, &through], |target| async move {
        open_loop(&target, (STREAM, Until::FirstByte), stream_rate, stream_connections, round).await
    })
    .await?
    .try_into()
    .expect("two targets");
    println!(
        "\ntime to first byte of a streamed answer at {stream_rate:.0} streams/s, open loop over {stream_connections} connections:"
    );
    print_added(&direct_ttfb, &gateway_ttfb);

    let (after_load, _) = gateway.rss_mb();
    let held = hold_streams(&through, s.streams).await?;
    let (with_streams, peak) = gateway.rss_mb();
    let (mock_rss, _) = mock.rss_mb();
    println!("\ngateway memory (RSS):");
    println!("  idle                         {idle_rss:>7.1} MB   (target ≤ 30 MB)");
    println!("  after the load above         {after_load:>7.1} MB");
    println!(
        "  holding {:>5} open streams   {with_streams:>7.1} MB   (peak {peak:.1} MB; target ≤ 300 MB)",
        held.len()
    );
    println!("  (mock-llm meanwhile: {mock_rss:.1} MB)");
    drop(held);
    let (bare_before, _) = passthrough.rss_mb();
    let held = hold_streams(&bare, s.streams).await?;
    let (bare_with, _) = passthrough.rss_mb();
    println!(
        "  (for scale, the bare proxy: {bare_before:.1} MB after its load, {bare_with:.1} MB holding {} streams)",
        held.len()
    );
    Ok(())
}

/// p50 and p99 of first-byte times direct and through the gateway, and
/// what the gateway adds.
fn print_added(direct: &[u64], gateway: &[u64]) {
    for p in [50.0, 99.0] {
        let (d, g) = (percentile(direct, p), percentile(gateway, p));
        println!("  p{p:<5} direct {:>11}  gateway {:>11}  added {:>11}", ms(d), ms(g), ms(g.saturating_sub(d)));
    }
    println!("  (target: added ≤ 1 ms)");
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--role") {
        let role = args.next().unwrap_or_default();
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(async {
            match role.as_str() {
                "mock" => run_mock().await,
                "gateway" => run_gateway().await,
                "passthrough" => run_passthrough().await,
                other => anyhow::bail!("unknown role {other}"),
            }
        });
    }
    let settings = settings()?;
    tokio::runtime::Runtime::new()?.block_on(bench(settings))
}
