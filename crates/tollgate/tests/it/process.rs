//! The real binary: zero-configuration start, restart, strict
//! configuration, graceful shutdown, logs.

use std::os::unix::fs::PermissionsExt;

use reqwest::Method;
use serde_json::json;

use crate::both_stores;
use crate::common::{Backend, BinApp, TestDb, run_binary};

both_stores!(
    first_start_creates_the_data_dir_master_key_and_admin_token_and_restart_keeps_everything,
    sigterm_shuts_down_cleanly,
    json_logs_never_contain_a_key_or_token,
    migrate_applies_migrations_and_exits,
    kill_9_after_acknowledged_batches_loses_nothing,
    kill_9_during_gateway_traffic_loses_no_answered_call_and_counts_none_twice,
);

/// The environment of `db` minus what would make the start non-default.
fn env_of(db: &TestDb, relative_data_dir: bool) -> Vec<(String, String)> {
    let mut env = db.env();
    if relative_data_dir {
        env.retain(|(k, _)| k != "TOLLGATE_DATA_DIR");
    }
    env
}

async fn first_start_creates_the_data_dir_master_key_and_admin_token_and_restart_keeps_everything(backend: Backend) {
    let db = TestDb::new(backend).await;
    // No data dir setting: ./tollgate-data in the working directory.
    let cwd = db.dir.path();
    let env = env_of(&db, true);
    let mut first = BinApp::start(cwd, &env, &[], "first");
    let token = first.printed_admin_token().expect("the admin token is printed at first start");
    let data = cwd.join("tollgate-data");
    let master = std::fs::metadata(data.join("master.key")).expect("a master key file");
    assert_eq!(master.permissions().mode() & 0o777, 0o600);
    if backend == Backend::Sqlite {
        let db_path = data.join("tollgate.db");
        assert!(db_path.exists());
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db_path.display())).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");
        pool.close().await;
    }
    let api = first.api.clone();
    let t = Some(token.as_str());
    api.call(Method::POST, "/admin/v1/users", t, Some(json!({"id":"u_1","plan":"pro"}))).await.expect(201);
    api.call(Method::POST, "/admin/v1/plans", t, Some(json!({"slug":"team","limits":{"tokens":5}}))).await.expect(201);
    let key = api.call(Method::POST, "/admin/v1/users/u_1/keys", t, Some(json!({"name":"ci"}))).await.expect(201);
    let secret = key["key"].as_str().unwrap().to_owned();
    first.api.me(&secret).await.expect(200);
    assert!(first.terminate(), "a clean exit");
    let output = first.output();
    assert_eq!(output.matches(&token).count(), 1, "the admin token is printed once and logged nowhere");
    assert!(!output.contains(&secret));
    let dump = db.dump();
    assert!(!dump.contains(&token), "only the admin token's hash is stored");

    let second = BinApp::start(cwd, &env, &[], "second");
    assert!(second.printed_admin_token().is_none(), "no new admin token on restart");
    let api = second.api.clone();
    assert_eq!(api.me(&secret).await.expect(200)["user_id"], "u_1");
    let user = api.call(Method::GET, "/admin/v1/users/u_1", Some(&token), None).await.expect(200);
    assert_eq!(user["plan"], "pro");
    api.call(Method::GET, "/admin/v1/plans/team", Some(&token), None).await.expect(200);
    let keys = api.call(Method::GET, "/admin/v1/users/u_1/keys", Some(&token), None).await.expect(200);
    assert!(keys["keys"][0]["last_used_at"].is_string(), "last use was written at shutdown");
    let master_again = std::fs::read(data.join("master.key")).unwrap();
    assert!(!master_again.is_empty());
}

async fn sigterm_shuts_down_cleanly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut app = BinApp::start(db.dir.path(), &env_of(&db, false), &[], "serve");
    app.api.call(Method::GET, "/healthz", None, None).await.expect(200);
    assert!(app.terminate(), "exit status 0 after SIGTERM");
    assert!(app.output().contains("tollgate stopped"));
}

async fn json_logs_never_contain_a_key_or_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut env = env_of(&db, false);
    env.push(("TOLLGATE_LOG_FORMAT".into(), "json".into()));
    env.push(("TOLLGATE_LOG".into(), "debug".into()));
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), crate::common::ADMIN_TOKEN.into()));
    let mut app = BinApp::start(db.dir.path(), &env, &[], "json");
    app.api.create_user("u_1", "free").await;
    let key = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    // Every place a key can travel, including the query string.
    app.api.http.get(format!("{}/v1/me?key={key}", app.api.base)).send().await.unwrap();
    app.api.http.get(format!("{}/v1/me", app.api.base)).header("x-api-key", &key).send().await.unwrap();
    app.api.http.get(format!("{}/v1/me?key={}x", app.api.base, &key[..40])).send().await.unwrap();
    app.api.admin(Method::GET, "/admin/v1/users/u_1/keys", None).await.expect(200);
    assert!(app.terminate());
    let stderr = std::fs::read_to_string(&app.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 5, "there are log lines: {stderr}");
    for line in &lines {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(parsed["level"].is_string());
    }
    assert!(stderr.contains("\"route\":\"/v1/me\""));
    let all = app.output();
    assert!(!all.contains(&key[3..]), "a key in the logs");
    assert!(!all.contains(crate::common::ADMIN_TOKEN), "the admin token in the logs");
}

async fn migrate_applies_migrations_and_exits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let out = run_binary(db.dir.path(), &env_of(&db, false), &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    let again = run_binary(db.dir.path(), &env_of(&db, false), &["migrate"]);
    assert!(again.status.success(), "migrating twice is harmless");
}

fn start_fails(cwd: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    let out = run_binary(cwd, &env, &full);
    assert!(!out.status.success(), "the start should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn strict_configuration_stops_the_start_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let file = cwd.join("tollgate.toml");
    let check = |toml: &str, env: &[(&str, &str)], expected: &str| {
        std::fs::write(&file, toml).unwrap();
        let stderr = start_fails(cwd, env, &["--config", file.to_str().unwrap()]);
        assert!(stderr.contains(expected), "{stderr:?} should name {expected:?}");
    };
    check("lissen = \"127.0.0.1:0\"\n", &[], "lissen");
    check("listen = 8787\n", &[], "listen");
    check("key_cache_ttl_seconds = \"five\"\n", &[], "key_cache_ttl_seconds");
    check("listen = \"127.0.0.1:0\"\n[extra]\nx = 1\n", &[], "extra");
    check(
        "listen = \"127.0.0.1:0\"\n",
        &[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "soon")],
        "TOLLGATE_KEY_CACHE_TTL_SECONDS",
    );
    check("listen = \"127.0.0.1:0\"\n", &[("TOLLGATE_LISTEN", "everywhere")], "listen");
    check("listen = \"127.0.0.1:0\"\n", &[("TOLLGATE_DATABASE_URL", "mysql://db")], "TOLLGATE_DATABASE_URL");
    check("listen = \"127.0.0.1:0\"\n", &[("TOLLGATE_LISTNE", "x")], "TOLLGATE_LISTNE");
    check("listen = \"127.0.0.1:0\"\n", &[("TOLLGATE_MASTER_KEY", "bm90IDMyIGJ5dGVz")], "TOLLGATE_MASTER_KEY");
    check("this is not toml", &[], "line 1");
    let missing = start_fails(cwd, &[], &["--config", "/nonexistent/tollgate.toml"]);
    assert!(missing.contains("/nonexistent/tollgate.toml"));
    // A refused start leaves nothing behind.
    assert!(!cwd.join("tollgate-data").join("tollgate.db").exists());
}

#[test]
fn env_wins_over_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\nlog_format = \"text\"\n").unwrap();
    let env = vec![("TOLLGATE_LISTEN".to_owned(), "127.0.0.1:0".to_owned())];
    let mut app = BinApp::start(dir.path(), &env, &["--config", file.to_str().unwrap()], "env");
    assert_ne!(app.api.base, "http://127.0.0.1:1");
    assert!(app.terminate());
}

/// Kills `app` with SIGKILL once `count` (of answers its clients got)
/// reaches `n`, clients still sending.
async fn kill_9_once(app: &mut BinApp, count: &std::sync::Arc<std::sync::atomic::AtomicI64>, n: i64) {
    let counted = count.clone();
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(60), || {
            let counted = counted.clone();
            async move { counted.load(std::sync::atomic::Ordering::SeqCst) >= n }
        })
        .await,
        "{n} answers within a minute"
    );
    std::process::Command::new("kill").args(["-KILL", &app.child.id().to_string()]).status().unwrap();
    let _ = app.child.wait();
}

/// Issue #3: a 2xx from the metering API means committed. Batches are sent
/// concurrently; the binary is killed with SIGKILL while more are in
/// flight; after a restart every acknowledged event is there.
async fn kill_9_after_acknowledged_batches_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut env = env_of(&db, false);
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), crate::common::ADMIN_TOKEN.into()));
    let mut app = BinApp::start(db.dir.path(), &env, &[], "before");
    app.api.create_user("u_1", "enterprise").await;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let api = app.api.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            for batch in 0..10_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let events: Vec<_> = (0..20)
                    .map(|i| json!({"id": format!("w{worker}_b{batch}_e{i}"), "user_id": "u_1", "input_tokens": 1}))
                    .collect();
                let sent = api
                    .http
                    .post(format!("{}/v1/usage/events", api.base))
                    .bearer_auth(crate::common::ADMIN_TOKEN)
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        acked.fetch_add(body["accepted"].as_i64().unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    // Kill once a good number of batches is acknowledged, with more in flight.
    kill_9_once(&mut app, &acked, 2_000).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in senders {
        let _ = s.await;
    }
    let acknowledged = acked.load(std::sync::atomic::Ordering::SeqCst);
    let second = BinApp::start(db.dir.path(), &env, &[], "after");
    let usage = second.api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
    let stored = usage["meters"]["tokens"]["used"].as_i64().unwrap();
    assert!(stored >= acknowledged, "{acknowledged} acknowledged, {stored} stored");
    // Events in flight at the kill may have been committed without their
    // answer arriving; nothing is counted twice either.
    let ledger = second.api.admin(Method::GET, "/admin/v1/users/u_1/usage/events?limit=1", None).await.expect(200);
    assert_eq!(ledger["total"].as_i64().unwrap(), stored, "counters agree with the ledger");
}

/// Issue #5: a proxied call's answer completes only once its usage is
/// durable. On SQLite it goes through the usage journal beside the
/// database, which the restart commits (events already in the ledger count
/// once); on Postgres straight into the ledger. Eight clients call at once;
/// SIGKILL lands with calls in flight.
async fn kill_9_during_gateway_traffic_loses_no_answered_call_and_counts_none_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = crate::common::mock_llm(&[]).await;
    let mut env = env_of(&db, false);
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), crate::common::ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_OPENAI_BASE_URL".into(), mock.openai_base_url()));
    env.push(("OPENAI_API_KEY".into(), format!("sk-{}", "platform-kill-test")));
    let mut app = BinApp::start(db.dir.path(), &env, &[], "before");
    app.api.create_user("u_1", "enterprise").await;
    let key = app.api.create_key("u_1", json!({"scopes": ["proxy"]})).await["key"].as_str().unwrap().to_owned();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    const CLIENTS: i64 = 8;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (api, key, answered) = (app.api.clone(), key.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi [mock tokens=3]"}]});
            loop {
                let sent =
                    api.http.post(format!("{}/v1/chat/completions", api.base)).bearer_auth(&key).json(&body).send();
                let Ok(reply) = sent.await else { break };
                // The whole answer, not just its head.
                if reply.status() != 200 || reply.bytes().await.is_err() {
                    break;
                }
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
    }
    kill_9_once(&mut app, &answered, 1_500).await;
    for c in clients {
        let _ = c.await;
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    let journal = db.data_dir().join("tollgate.db-usage-journal");
    if backend == Backend::Sqlite {
        let left = std::fs::metadata(&journal).expect("the usage journal beside the database").len();
        assert!(left > 0, "the killed run left its journal");
    } else {
        assert!(!journal.exists(), "Postgres commits to the ledger directly");
    }
    let second = BinApp::start(db.dir.path(), &env, &[], "after");
    if backend == Backend::Sqlite {
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0, "the restart committed and emptied the journal");
    }
    let usage = second.api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
    let stored = usage["meters"]["requests"]["used"].as_i64().unwrap();
    assert!(stored >= answered, "{answered} answered, {stored} recorded");
    // Calls in flight at the kill (one per client at most) may have been
    // recorded without their answer arriving; none is recorded twice.
    assert!(stored <= answered + CLIENTS, "{answered} answered, {stored} recorded");
    let ledger = second.api.admin(Method::GET, "/admin/v1/users/u_1/usage/events?limit=1", None).await.expect(200);
    assert_eq!(ledger["total"].as_i64().unwrap(), stored, "the counter agrees with the ledger");
    assert_eq!(usage["meters"]["tokens"]["used"].as_i64().unwrap() % stored, 0, "every call's tokens, once");
}

/// Issue #5: calls to the providers go through the proxy the environment
/// names (`HTTP_PROXY`, as curl's and the SDKs' do). A second mock stands
/// in for the proxy: it gets the absolute-form request a proxy gets,
/// answers it as a provider would, and records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_named_in_the_environment_carries_the_calls_to_the_providers() {
    let db = TestDb::new(Backend::Sqlite).await;
    let provider = crate::common::mock_llm(&[]).await;
    let proxy = crate::common::mock_llm(&[]).await;
    let platform_key = format!("sk-{}", "platform-proxy-test");
    let mut env = env_of(&db, false);
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), crate::common::ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_OPENAI_BASE_URL".into(), provider.openai_base_url()));
    env.push(("OPENAI_API_KEY".into(), platform_key.clone()));
    env.push(("HTTP_PROXY".into(), format!("http://{}", proxy.addr())));
    let app = BinApp::start(db.dir.path(), &env, &[], "proxied");
    app.api.create_user("u_1", "enterprise").await;
    let key = app.api.create_key("u_1", json!({"scopes": ["proxy"]})).await["key"].as_str().unwrap().to_owned();
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi [mock tokens=3]"}]});
    let reply = app.api.call(Method::POST, "/v1/chat/completions", Some(&key), Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["usage"]["completion_tokens"], 3);
    let through = proxy.requests();
    assert_eq!(through.len(), 1, "the call went through the proxy");
    assert_eq!(
        (through[0].path.as_str(), through[0].credential.as_deref()),
        ("/v1/chat/completions", Some(&*platform_key))
    );
    assert!(provider.requests().is_empty(), "and not around it");
}
