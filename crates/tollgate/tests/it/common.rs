//! Test harness: `TestApp` (the server in this process, zero2prod's
//! `spawn_app`) and `BinApp` (the `tollgate` binary as a child process),
//! each on a SQLite temp file or a Postgres database made for the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_server::{Config, Server};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per store from `async fn name(backend)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Postgres).await }) *
        }
    };
}

/// A database for one test: a temp dir (SQLite) or a Postgres database
/// with a random name, dropped when the test ends.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("a temp dir");
        let pg_name = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let name = format!("tollgate_test_{}", tollgate_domain::base62::random(12).to_lowercase());
                let admin = sqlx::PgPool::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
                    panic!("Postgres must run at 127.0.0.1:5432 for these tests (start it with pg_ctlcluster): {e}")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
                admin.close().await;
                Some(name)
            }
        };
        TestDb { dir, pg_name }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn database_url(&self) -> Option<String> {
        self.pg_name.as_ref().map(|n| format!("postgres://postgres@127.0.0.1:5432/{n}"))
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir().join("tollgate.db")
    }

    /// Every byte the store holds, as text: the SQLite file with its WAL,
    /// or `pg_dump` of the database.
    pub fn dump(&self) -> String {
        match &self.pg_name {
            None => {
                let mut bytes = Vec::new();
                for suffix in ["", "-wal"] {
                    let mut path = self.sqlite_path().into_os_string();
                    path.push(suffix);
                    bytes.extend(std::fs::read(&path).unwrap_or_default());
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Some(name) => {
                let out = Command::new("pg_dump")
                    .args(["-h", "127.0.0.1", "-U", "postgres", name])
                    .output()
                    .expect("pg_dump runs");
                assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8(out.stdout).unwrap()
            }
        }
    }

    /// Runs one SQL statement on the database directly (as an attacker with
    /// write access to it would); returns the rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.database_url() {
            None => {
                let url = format!("sqlite://{}", self.sqlite_path().display());
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                let done = sqlx::query(sql).execute(&pool).await.unwrap().rows_affected();
                pool.close().await;
                done
            }
            Some(url) => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let done = sqlx::query(sql).execute(&pool).await.unwrap().rows_affected();
                pool.close().await;
                done
            }
        }
    }

    /// Environment for a server on this database.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("TOLLGATE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("TOLLGATE_DATA_DIR".to_owned(), self.data_dir().display().to_string()),
        ];
        if let Some(url) = self.database_url() {
            env.push(("TOLLGATE_DATABASE_URL".to_owned(), url));
        }
        env
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside async; a thread with its own runtime does it.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                        let q = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(q)).execute(&admin).await;
                    }
                });
            })
            .join();
        }
    }
}

/// An HTTP client for one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self.body
    }
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api { base: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    /// A request with `token` as a bearer credential (if any) and `body`
    /// sent as raw text (if any), so tests can send malformed JSON.
    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<String>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, headers, body }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.raw(method, path, token, body.map(|b| b.to_string())).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    pub async fn create_user(&self, id: &str, plan: &str) -> Value {
        self.admin(Method::POST, "/admin/v1/users", Some(json!({ "id": id, "plan": plan }))).await.expect(201)
    }

    /// Creates a key for `user` and returns the whole reply (`key` holds the secret).
    pub async fn create_key(&self, user: &str, body: Value) -> Value {
        self.admin(Method::POST, &format!("/admin/v1/users/{user}/keys"), Some(body)).await.expect(201)
    }

    pub async fn me(&self, key: &str) -> Reply {
        self.call(Method::GET, "/v1/me", Some(key), None).await
    }
}

/// The server running in this process.
pub struct TestApp {
    pub api: Api,
    pub db: TestDb,
    server: Option<Server>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, &[]).await
    }

    /// With extra `TOLLGATE_*` settings.
    pub async fn spawn_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
        let db = TestDb::new(backend).await;
        let server = TestApp::start_on(&db, extra).await;
        TestApp { api: Api::new(server.addr), db, server: Some(server) }
    }

    pub async fn start_on(db: &TestDb, extra: &[(&str, &str)]) -> Server {
        TestApp::start_with_file(db, extra, None).await
    }

    /// With extra settings and a configuration file's text.
    pub async fn spawn_with_file(backend: Backend, extra: &[(&str, &str)], file: &str) -> TestApp {
        let db = TestDb::new(backend).await;
        let server = TestApp::start_with_file(&db, extra, Some(file)).await;
        TestApp { api: Api::new(server.addr), db, server: Some(server) }
    }

    async fn start_with_file(db: &TestDb, extra: &[(&str, &str)], file: Option<&str>) -> Server {
        let mut env = db.env();
        env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let path = file.map(|text| {
            let path = db.dir.path().join("tollgate.toml");
            std::fs::write(&path, text).expect("the config file is written");
            path
        });
        let config = Config::from_sources(path.as_deref(), &env).expect("a valid test configuration");
        tollgate_server::start(config).await.expect("the server starts")
    }

    /// A second server on the same store, as another instance would be.
    pub async fn sibling(&self, extra: &[(&str, &str)]) -> (Api, Server) {
        let server = TestApp::start_on(&self.db, extra).await;
        (Api::new(server.addr), server)
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("a clean shutdown");
        }
    }
}

/// Polls `check` until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The `tollgate` binary as a child process, its output kept in files.
pub struct BinApp {
    pub child: Child,
    pub api: Api,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

impl BinApp {
    /// Starts `tollgate serve` with `env` (and nothing inherited that
    /// starts with TOLLGATE_) in `cwd`, and waits until it listens.
    pub fn start(cwd: &Path, env: &[(String, String)], args: &[&str], tag: &str) -> BinApp {
        let stdout = cwd.join(format!("{tag}.stdout"));
        let stderr = cwd.join(format!("{tag}.stderr"));
        let mut command = Command::new(binary());
        command.arg("serve").args(args).current_dir(cwd);
        clear_inherited_settings(&mut command);
        let child = command
            .envs(env.iter().cloned())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("the binary starts");
        // Owned by a `BinApp` at once, so that `Drop` reaps it on any panic.
        let mut app = BinApp { child, api: Api::new(([127, 0, 0, 1], 0).into()), stdout, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&app.stdout).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.starts_with("Tollgate is listening on http://")) {
                app.api = Api::new(line.trim_start_matches("Tollgate is listening on http://").parse().unwrap());
                return app;
            }
            assert!(
                Instant::now() < deadline,
                "the binary did not start: {}",
                std::fs::read_to_string(&app.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }

    /// The admin token printed at first start.
    pub fn printed_admin_token(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let mut lines = text.lines();
        lines.find(|l| l.starts_with("Admin token"))?;
        lines.next().map(|l| l.trim().to_owned())
    }

    /// Sends SIGTERM and waits; returns whether the exit was clean.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the binary ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes what the test process inherited that would configure the
/// binary: `TOLLGATE_*` and the providers' platform key variables.
fn clear_inherited_settings(command: &mut Command) {
    let platform_keys = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY", "GITHUB_API_KEY"];
    for (k, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        if k.starts_with("TOLLGATE_") || platform_keys.contains(&k.as_str()) {
            command.env_remove(k);
        }
    }
}

/// Runs `tollgate` with `args`, writing `input` to its standard input.
pub fn run_binary_with_input(cwd: &Path, env: &[(String, String)], args: &[&str], input: &str) -> std::process::Output {
    let mut command = Command::new(binary());
    command.args(args).current_dir(cwd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    clear_inherited_settings(&mut command);
    let mut child = command.envs(env.iter().cloned()).spawn().expect("the binary runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// A new random master key, base64.
pub fn new_master_key() -> String {
    tollgate_vault::MasterKey::generate().to_base64().to_string()
}

/// A service key (the app's own) with `scopes`; returns the secret.
pub async fn service_key(api: &Api, scopes: &[&str]) -> String {
    let body = json!({ "name": "backend", "scopes": scopes });
    let created = api.admin(Method::POST, "/admin/v1/service-keys", Some(body)).await.expect(201);
    created["key"].as_str().unwrap().to_owned()
}

/// Runs `tollgate` with `args` to completion (for config errors and the CLI).
pub fn run_binary(cwd: &Path, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(binary());
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    clear_inherited_settings(&mut command);
    command.envs(env.iter().cloned()).output().expect("the binary runs")
}

/// `tollgate mock-llm` in this process, accepting only `api_keys` (any
/// non-empty key when empty).
pub async fn mock_llm(api_keys: &[&str]) -> tollgate_mock::MockServer {
    let config = tollgate_mock::MockConfig {
        api_keys: api_keys.iter().map(|k| k.to_string()).collect(),
        ..tollgate_mock::MockConfig::default()
    };
    tollgate_mock::start(config).await.expect("the mock starts")
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a client-SDK script printed, and whether it exited 0.
pub struct ScriptRun {
    pub script: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptRun {
    /// The JSON on the script's last line of output, once it is known to
    /// have succeeded (the script's output otherwise).
    #[track_caller]
    pub fn json(&self) -> Value {
        assert!(self.success, "{} failed\n--- stdout\n{}\n--- stderr\n{}", self.script, self.stdout, self.stderr);
        let line = self.stdout.lines().last().unwrap_or_else(|| panic!("{} printed nothing", self.script));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{} printed no JSON last ({e}): {line}", self.script))
    }
}

/// Runs `tests/sdk/python/<script>` with the Python of `.venv/` (the
/// official SDKs, installed by `scripts/test.sh`). The script sees only
/// `env`, `PATH` and `HOME`, so no provider key or base URL leaks in.
pub async fn python(script: &str, env: &[(&str, &str)]) -> ScriptRun {
    let interpreter = repo_root().join(".venv/bin/python");
    assert!(
        interpreter.exists(),
        "the Python SDKs are not installed ({} is missing): run scripts/test.sh",
        interpreter.display()
    );
    run_script(interpreter, repo_root().join("tests/sdk/python").join(script), env).await
}

/// Runs `tests/sdk/node/<script>` with Node and the packages of
/// `tests/sdk/node_modules` (installed by `scripts/test.sh`).
pub async fn node(script: &str, env: &[(&str, &str)]) -> ScriptRun {
    let modules = repo_root().join("tests/sdk/node_modules");
    assert!(
        modules.join("ai").exists(),
        "the Node SDKs are not installed ({} is missing): run scripts/test.sh",
        modules.display()
    );
    run_script(PathBuf::from("node"), repo_root().join("tests/sdk/node").join(script), env).await
}

async fn run_script(program: PathBuf, script: PathBuf, env: &[(&str, &str)]) -> ScriptRun {
    assert!(script.exists(), "no script at {}", script.display());
    let mut command = tokio::process::Command::new(&program);
    command.arg(&script).current_dir(repo_root().join("tests/sdk")).env_clear().stdin(Stdio::null()).kill_on_drop(true);
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in 180 s", script.display()))
        .unwrap_or_else(|e| panic!("{} could not start: {e}", program.display()));
    ScriptRun {
        script: script.display().to_string(),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts `tests/sdk/python/<script>` with the Python of `.venv/` and lets
/// it run (a server such as the SMTP sink); it is killed when dropped.
/// Returns once it printed its first line (`ready`).
pub async fn python_background(script: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let interpreter = repo_root().join(".venv/bin/python");
    assert!(interpreter.exists(), "the Python packages are not installed: run scripts/test.sh");
    let path = repo_root().join("tests/sdk/python").join(script);
    let mut command = tokio::process::Command::new(&interpreter);
    command.arg(&path).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).kill_on_drop(true);
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{script} could not start: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{script} printed nothing in 60 s"))
        .unwrap();
    assert_eq!(first.as_deref(), Some("ready"), "{script} did not start");
    child
}

/// A port nobody listens on right now, for a server that must be told its
/// port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
