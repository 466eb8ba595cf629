//! The admin commands of the CLI against a running binary.

use serde_json::Value;

use crate::common::{ADMIN_TOKEN, Backend, BinApp, TestDb, run_binary, run_binary_with_input};

fn cli(app: &BinApp, cwd: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let env = vec![
        ("TOLLGATE_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ("TOLLGATE_URL".to_owned(), app.api.base.clone()),
    ];
    let out = run_binary(cwd, &env, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(args: &[&str], app: &BinApp, cwd: &std::path::Path) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (ok, out, err) = cli(app, cwd, &args);
    assert!(ok, "{args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("{args:?} printed no JSON: {out}"))
}

#[tokio::test]
async fn admin_commands_manage_users_plans_and_keys() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cwd = db.dir.path();
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    let mut app = BinApp::start(cwd, &env, &[], "cli");

    let plan = json_of(
        &["plans", "create", "team", "--limit", "tokens=5000", "--limit", "requests=unlimited", "--rpm", "30"],
        &app,
        cwd,
    );
    assert_eq!(plan["limits"]["tokens"], 5000);
    assert!(plan["limits"]["requests"].is_null());
    let (ok, table, _) = cli(&app, cwd, &["plans", "list"]);
    assert!(ok);
    assert!(table.starts_with("SLUG"), "a table with a header: {table}");
    assert!(table.lines().any(|l| l.starts_with("team ")));

    let user = json_of(&["users", "create", "u_7", "--plan", "team", "--email", "u7@example.com"], &app, cwd);
    assert_eq!(user["plan"], "team");
    let (ok, table, _) = cli(&app, cwd, &["users", "list"]);
    assert!(ok && table.contains("u_7") && table.contains("team"), "{table}");
    assert_eq!(json_of(&["users", "show", "u_7"], &app, cwd)["email"], "u7@example.com");

    let (ok, created, _) = cli(&app, cwd, &["keys", "create", "u_7", "--name", "laptop", "--scope", "proxy"]);
    assert!(ok);
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("key (shown once, store it now): "))
        .expect("the key is shown")
        .to_owned();
    assert_eq!(app.api.me(&secret).await.expect(200)["user_id"], "u_7");
    let listed = json_of(&["keys", "list", "u_7"], &app, cwd);
    let key_id = listed["keys"][0]["id"].as_str().unwrap().to_owned();
    assert!(!listed.to_string().contains(&secret));

    let rotated = json_of(&["keys", "rotate", &key_id], &app, cwd);
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    app.api.me(&secret).await.expect(401);
    app.api.me(&new_secret).await.expect(200);
    let (ok, out, _) = cli(&app, cwd, &["keys", "revoke", rotated["id"].as_str().unwrap()]);
    assert!(ok && out.contains("revoked"));
    app.api.me(&new_secret).await.expect(401);

    // Usage, grants and the ledger export.
    let events: Vec<Value> = (0..1500)
        .map(|i| serde_json::json!({"id": format!("e{i}"), "user_id": "u_7", "input_tokens": 2, "model": "gpt-4o"}))
        .collect();
    app.api
        .admin(reqwest::Method::POST, "/v1/usage/events", Some(serde_json::json!({ "events": events })))
        .await
        .expect(200);
    let grant = json_of(&["grants", "add", "u_7", "--meter", "tokens", "--amount", "500"], &app, cwd);
    assert_eq!(grant["amount"], 500);
    let usage = json_of(&["usage", "show", "u_7"], &app, cwd);
    assert_eq!(usage["meters"]["tokens"]["used"], 3000);
    assert_eq!(usage["meters"]["tokens"]["limit"], 5500);
    let (ok, table, _) = cli(&app, cwd, &["usage", "show", "u_7"]);
    assert!(ok && table.contains("plan team"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("tokens") && l.contains("3000") && l.contains("5500")), "{table}");
    let file = cwd.join("ledger.csv");
    let (ok, _, err) = cli(
        &app,
        cwd,
        &["usage", "export", "u_7", "--from", "2000-01-01T00:00:00Z", "--output", file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(err.contains("wrote 1500 events"), "{err}");
    let csv = std::fs::read_to_string(&file).unwrap();
    assert_eq!(csv.lines().count(), 1501);
    assert!(csv.starts_with("id,user_id,"));
    let (ok, stdout, _) = cli(&app, cwd, &["usage", "export", "u_7", "--from", "2000-01-01T00:00:00Z"]);
    assert!(ok && stdout.lines().count() == 1501);

    let (ok, _, err) = cli(&app, cwd, &["users", "show", "nobody"]);
    assert!(!ok && err.contains("404"), "errors say what happened: {err}");
    let no_token = run_binary(cwd, &[("TOLLGATE_URL".into(), app.api.base.clone())], &["users", "list"]);
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("TOLLGATE_ADMIN_TOKEN"));
    assert!(app.terminate());
}

#[tokio::test]
async fn credentials_commands_set_list_and_delete_a_users_provider_keys() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cwd = db.dir.path();
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    let mut app = BinApp::start(cwd, &env, &[], "credentials");
    app.api.create_user("u_7", "free").await;
    let remote = vec![
        ("TOLLGATE_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ("TOLLGATE_URL".to_owned(), app.api.base.clone()),
    ];
    let secret = "sk-from-standard-input-7777";
    let args = ["credentials", "set", "u_7", "openai", "--label", "work"];
    let out = run_binary_with_input(cwd, &remote, &args, &format!("{secret}\n"));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.starts_with("PROVIDER") && printed.contains("openai") && printed.contains("7777"), "{printed}");
    assert!(!printed.contains(secret), "the secret is not printed back");

    let (ok, table, _) = cli(&app, cwd, &["credentials", "list", "u_7"]);
    assert!(
        ok && table.lines().any(|l| l.starts_with("openai") && l.contains("work") && l.contains("7777")),
        "{table}"
    );
    let listed = json_of(&["credentials", "list", "u_7"], &app, cwd);
    assert_eq!(listed["credentials"][0]["last4"], "7777");
    assert!(!listed.to_string().contains(secret));

    let bad =
        run_binary_with_input(cwd, &remote, &["credentials", "set", "u_7", "anthropic"], "sk-proj-not-anthropic\n");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("400"), "{}", String::from_utf8_lossy(&bad.stderr));
    let empty = run_binary_with_input(cwd, &remote, &["credentials", "set", "u_7", "groq"], "");
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("standard input"));

    let (ok, out, _) = cli(&app, cwd, &["credentials", "delete", "u_7", "openai"]);
    assert!(ok && out.contains("deleted"), "{out}");
    assert_eq!(json_of(&["credentials", "list", "u_7"], &app, cwd)["credentials"], serde_json::json!([]));
    let (ok, _, err) = cli(&app, cwd, &["credentials", "delete", "u_7", "openai"]);
    assert!(!ok && err.contains("404"), "{err}");
    assert!(app.terminate());
    assert!(!app.output().contains(secret));
}
