//! Issue #7: webhooks out (outbox, retries, signatures checked by the
//! `standardwebhooks` package), usage alerts fired once per user, meter,
//! period and threshold, e-mail alerts to a local SMTP sink (`aiosmtpd`),
//! and Stripe's events in (signed by the official `stripe` package).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::both_stores;
use crate::common::{
    ADMIN_TOKEN, Api, Backend, BinApp, TestApp, TestDb, eventually, free_port, new_master_key, python,
    python_background,
};

both_stores!(
    webhook_endpoints_show_their_secret_once_and_store_it_sealed,
    bad_webhook_settings_are_refused_naming_the_field,
    usage_thresholds_fire_once_per_period_and_standardwebhooks_verifies_them,
    a_threshold_fires_once_per_period_even_when_the_limit_moves,
    a_receiver_that_fails_three_times_still_gets_the_event_and_every_attempt_is_listed,
    admin_actions_emit_their_events,
    alert_emails_reach_the_smtp_sink,
    stripe_events_signed_by_the_stripe_package_are_applied_once,
    bad_stale_and_tampered_stripe_events_are_refused,
    kill_9_between_commit_and_delivery_still_delivers_after_restart,
    concurrent_commits_on_two_instances_fire_each_threshold_once,
    webhook_secrets_are_rotated_with_the_master_key_and_still_sign,
    webhooks_are_managed_and_redelivered_in_the_dashboard,
);

/// What a test receiver got: the signature headers and the raw body.
#[derive(Clone, Debug)]
struct Received {
    headers: Value,
    body: String,
}

impl Received {
    fn payload(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Requests to refuse (503) before accepting.
    fail_first: Mutex<usize>,
    /// Refuse everything while set.
    down: Mutex<bool>,
}

/// An HTTP endpoint in this process that records what it is sent.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start() -> Receiver {
        async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: String) -> StatusCode {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let received = Received {
                headers: json!({
                    "webhook-id": header("webhook-id"),
                    "webhook-timestamp": header("webhook-timestamp"),
                    "webhook-signature": header("webhook-signature"),
                }),
                body,
            };
            let mut fail = state.fail_first.lock().unwrap();
            if *state.down.lock().unwrap() || *fail > 0 {
                *fail = fail.saturating_sub(1);
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            state.got.lock().unwrap().push(received);
            StatusCode::NO_CONTENT
        }
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    fn of_type(&self, kind: &str) -> Vec<Received> {
        self.got().into_iter().filter(|r| r.payload()["type"] == kind).collect()
    }

    /// Waits until `n` events of `kind` arrived; returns them.
    async fn wait_for(&self, kind: &str, n: usize) -> Vec<Received> {
        let arrived = eventually(Duration::from_secs(30), || async { self.of_type(kind).len() >= n }).await;
        assert!(arrived, "{n} {kind} events did not arrive; got {:?}", self.got());
        self.of_type(kind)
    }
}

/// Adds an endpoint for `events`; returns its id and secret.
async fn add_endpoint(api: &Api, url: &str, events: Value) -> (String, String) {
    let created =
        api.admin(Method::POST, "/admin/v1/webhooks", Some(json!({ "url": url, "events": events }))).await.expect(201);
    (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

/// Checks every delivery with the `standardwebhooks` package; returns the
/// payloads it verified.
async fn verify_with_standardwebhooks(secret: &str, received: &[Received]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.json");
    let deliveries: Vec<Value> = received.iter().map(|r| json!({ "headers": r.headers, "body": r.body })).collect();
    std::fs::write(&file, serde_json::to_string(&deliveries).unwrap()).unwrap();
    let out = python("verify_webhooks.py", &[("WEBHOOK_SECRET", secret), ("DELIVERIES", file.to_str().unwrap())])
        .await
        .json();
    assert_eq!(out["tampered_refused"], 2 * received.len(), "a changed body or another secret is refused");
    out["verified"].as_array().unwrap().clone()
}

/// A plan limited to `tokens` a month with the default thresholds, and a user on it.
async fn limited_user(api: &Api, user: &str, tokens: i64) {
    let plan = json!({ "slug": "metered", "limits": { "tokens": tokens } });
    let reply = api.admin(Method::POST, "/admin/v1/plans", Some(plan)).await;
    assert!(reply.status == 201 || reply.status == 409, "{}", reply.body);
    let body = json!({ "id": user, "plan": "metered", "email": format!("{user}@example.com") });
    api.admin(Method::POST, "/admin/v1/users", Some(body)).await.expect(201);
}

async fn spend(api: &Api, user: &str, id: &str, tokens: i64) {
    let events = json!({ "events": [{ "id": id, "user_id": user, "input_tokens": tokens }] });
    let reply = api.admin(Method::POST, "/v1/usage/events", Some(events)).await.expect(200);
    assert_eq!(reply["accepted"], 1, "{reply}");
}

async fn webhook_endpoints_show_their_secret_once_and_store_it_sealed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let api = &app.api;
    let created = api
        .admin(
            Method::POST,
            "/admin/v1/webhooks",
            Some(json!({ "url": "https://hooks.example.com/tollgate?token=abc", "events": ["usage.threshold", "key.created"], "description": "billing" })),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(id.starts_with("whk_") && secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["events"], json!(["usage.threshold", "key.created"]));
    assert_eq!(created["enabled"], true);

    let shown = api.admin(Method::GET, &format!("/admin/v1/webhooks/{id}"), None).await.expect(200);
    assert!(shown.get("secret").is_none(), "never again: {shown}");
    let listed = api.admin(Method::GET, "/admin/v1/webhooks", None).await.expect(200);
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(secret));

    let patched = api
        .admin(Method::PATCH, &format!("/admin/v1/webhooks/{id}"), Some(json!({ "events": ["*"], "enabled": false })))
        .await
        .expect(200);
    assert_eq!((patched["events"].clone(), patched["enabled"].clone()), (json!(["*"]), json!(false)));

    let audit = api.admin(Method::GET, "/admin/v1/audit?action=webhook", None).await.expect(200);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["webhook.updated", "webhook.created"]);
    assert!(!audit.to_string().contains("token=abc"), "the audit log names the host, not the URL: {audit}");

    let dump = app.db.dump();
    assert!(!dump.contains(secret), "the signing secret is stored sealed");
    assert!(!dump.contains(secret.trim_start_matches("whsec_")), "not even its key");

    api.admin(Method::DELETE, &format!("/admin/v1/webhooks/{id}"), None).await.expect(204);
    api.admin(Method::GET, &format!("/admin/v1/webhooks/{id}"), None).await.expect(404);
}

async fn bad_webhook_settings_are_refused_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let check = |body: Value, field: &'static str| {
        let api = app.api.clone();
        async move {
            let reply = api.admin(Method::POST, "/admin/v1/webhooks", Some(body.clone())).await.expect(400);
            assert_eq!(reply["error"]["field"], field, "{body}: {reply}");
        }
    };
    check(json!({ "url": "ftp://example.com/x" }), "url").await;
    check(json!({ "url": "not a url" }), "url").await;
    check(json!({ "events": ["*"] }), "url").await;
    check(json!({ "url": "https://example.com", "events": ["key.created", "key.creatd"] }), "events[1]").await;
    check(json!({ "url": "https://example.com", "events": [] }), "events").await;
    check(json!({ "url": "https://example.com", "secret": "whsec_mine" }), "secret").await;
    let listed = app.api.admin(Method::GET, "/admin/v1/webhooks", None).await.expect(200);
    assert_eq!(listed["webhooks"], json!([]), "nothing was stored");
    let reply = app.api.admin(Method::GET, "/admin/v1/webhooks/whk_nope", None).await.expect(400);
    assert_eq!(reply["error"]["field"], "id");
}

async fn usage_thresholds_fire_once_per_period_and_standardwebhooks_verifies_them(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")]).await;
    let api = &app.api;
    let (_, secret) = add_endpoint(api, &receiver.url, json!(["usage.threshold", "quota.exceeded"])).await;
    limited_user(api, "u_1", 1000).await;

    spend(api, "u_1", "e1", 700).await; // 70 %: nothing
    spend(api, "u_1", "e2", 100).await; // 80 %: 75
    let first = receiver.wait_for("usage.threshold", 1).await;
    assert_eq!(first[0].payload()["data"]["threshold"], 75);
    spend(api, "u_1", "e3", 150).await; // 95 %: 90
    let again = json!({ "events": [{ "id": "e3", "user_id": "u_1", "input_tokens": 150 }] });
    let reply = api.admin(Method::POST, "/v1/usage/events", Some(again)).await.expect(200);
    assert_eq!(reply["duplicates"], 1, "the same event again adds nothing");
    spend(api, "u_1", "e4", 100).await; // 105 %: 100 and exhaustion
    spend(api, "u_1", "e5", 500).await; // nothing more this period
    let thresholds = receiver.wait_for("usage.threshold", 3).await;
    let exceeded = receiver.wait_for("quota.exceeded", 1).await;

    let verified = verify_with_standardwebhooks(&secret, &receiver.got()).await;
    assert_eq!(verified.len(), 4);
    let data: Vec<Value> = thresholds.iter().map(|r| r.payload()["data"].clone()).collect();
    // Deliveries are attempted concurrently: no order is promised.
    let mut marks: Vec<(i64, i64)> =
        data.iter().map(|d| (d["threshold"].as_i64().unwrap(), d["used"].as_i64().unwrap())).collect();
    marks.sort();
    assert_eq!(marks, [(75, 800), (90, 950), (100, 1050)]);
    for d in &data {
        assert_eq!(
            (d["user_id"].as_str(), d["meter"].as_str(), d["limit"].as_i64()),
            (Some("u_1"), Some("tokens"), Some(1000))
        );
        assert!(d["period_end"].is_string(), "{d}");
    }
    let payload = exceeded[0].payload();
    assert_eq!((payload["data"]["used"].as_i64(), payload["data"]["limit"].as_i64()), (Some(1050), Some(1000)));
    for r in receiver.got() {
        let p = r.payload();
        assert!(p["timestamp"].is_string() && p["type"].is_string(), "{p}");
        assert!(r.headers["webhook-id"].as_str().unwrap().starts_with("msg_"));
    }

    // A new period (a manual reset): each threshold fires again.
    api.admin(Method::POST, "/admin/v1/users/u_1/usage/reset", None).await.expect(200);
    spend(api, "u_1", "e6", 760).await;
    let again = receiver.wait_for("usage.threshold", 4).await;
    let last = again[3].payload()["data"].clone();
    assert_eq!((last["threshold"].as_i64(), last["used"].as_i64()), (Some(75), Some(760)));
    assert_ne!(last["period_start"], data[0]["period_start"], "a new period");
    // Nothing else fired meanwhile (and nothing fires twice).
    assert!(
        !eventually(Duration::from_millis(500), || async { receiver.got().len() > 5 }).await,
        "{:?}",
        receiver.got()
    );
}

async fn a_threshold_fires_once_per_period_even_when_the_limit_moves(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")]).await;
    let api = &app.api;
    add_endpoint(api, &receiver.url, json!(["usage.threshold"])).await;
    limited_user(api, "u_1", 1000).await;
    spend(api, "u_1", "e1", 800).await; // 80 % of 1000: 75 fires
    receiver.wait_for("usage.threshold", 1).await;
    // A grant doubles the limit: 800 is 40 %; crossing 75 % of 2000 again
    // does not fire 75 a second time in this period, but 90 fires.
    api.admin(Method::POST, "/admin/v1/users/u_1/grants", Some(json!({ "meter": "tokens", "amount": 1000 })))
        .await
        .expect(201);
    spend(api, "u_1", "e2", 800).await; // 1600 of 2000: 80 %
    spend(api, "u_1", "e3", 250).await; // 1850 of 2000: 92.5 %
    let fired = receiver.wait_for("usage.threshold", 2).await;
    let marks: Vec<(i64, i64, i64)> = fired
        .iter()
        .map(|r| {
            let d = r.payload()["data"].clone();
            (d["threshold"].as_i64().unwrap(), d["used"].as_i64().unwrap(), d["limit"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(marks, [(75, 800, 1000), (90, 1850, 2000)]);
    // Restarting on the same store changes nothing: the store remembers.
    let (sibling, server) = app.sibling(&[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")]).await;
    spend(&sibling, "u_1", "e4", 1).await;
    assert!(!eventually(Duration::from_millis(500), || async { receiver.got().len() > 2 }).await);
    server.shutdown().await.unwrap();
}

async fn a_receiver_that_fails_three_times_still_gets_the_event_and_every_attempt_is_listed(backend: Backend) {
    let receiver = Receiver::start().await;
    *receiver.state.fail_first.lock().unwrap() = 3;
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")]).await;
    let api = &app.api;
    let (endpoint, secret) = add_endpoint(api, &receiver.url, json!(["key.created"])).await;
    api.create_user("u_1", "free").await;
    let key = api.create_key("u_1", json!({ "name": "ci" })).await;

    let got = receiver.wait_for("key.created", 1).await;
    assert_eq!(got[0].payload()["data"]["key_id"], key["id"]);
    verify_with_standardwebhooks(&secret, &got).await;

    let path = format!("/admin/v1/webhooks/{endpoint}/deliveries");
    let settled = eventually(Duration::from_secs(10), || async {
        api.admin(Method::GET, &path, None).await.body["deliveries"][0]["status"] == "delivered"
    })
    .await;
    assert!(settled);
    let listed = api.admin(Method::GET, &path, None).await.expect(200);
    let delivery = &listed["deliveries"][0];
    assert_eq!((delivery["event_type"].as_str(), delivery["attempt_count"].as_i64()), (Some("key.created"), Some(4)));
    let attempts = delivery["attempts"].as_array().unwrap();
    let codes: Vec<i64> = attempts.iter().map(|a| a["status_code"].as_i64().unwrap()).collect();
    assert_eq!(codes, [503, 503, 503, 204]);
    assert!(attempts[..3].iter().all(|a| a["error"].as_str().unwrap().contains("503")));
    assert!(attempts.iter().all(|a| a["at"].is_string() && a["duration_ms"].is_i64() && a["manual"] == false));
    assert_eq!(delivery["event_id"], got[0].headers["webhook-id"]);

    // By hand, once more: the same message id, a manual attempt.
    let id = delivery["id"].as_str().unwrap();
    let again = api.admin(Method::POST, &format!("{path}/{id}/redeliver"), None).await.expect(202);
    assert_eq!(again["id"], id);
    let twice = receiver.wait_for("key.created", 2).await;
    assert_eq!(twice[1].headers["webhook-id"], twice[0].headers["webhook-id"]);
    let manual = eventually(Duration::from_secs(10), || async {
        let one = api.admin(Method::GET, &format!("{path}/{id}"), None).await.body;
        one["attempts"].as_array().is_some_and(|a| a.len() == 5 && a[4]["manual"] == true)
    })
    .await;
    assert!(manual);
    let one = api.admin(Method::GET, &format!("{path}/{id}"), None).await.expect(200);
    assert_eq!(one["payload"]["type"], "key.created");
    let audit = api.admin(Method::GET, "/admin/v1/audit?action=webhook.redelivered", None).await.expect(200);
    assert_eq!(audit["entries"][0]["details"]["delivery"], id);
    api.admin(Method::POST, &format!("{path}/dlv_nothing/redeliver"), None).await.expect(404);
    let reply = api.admin(Method::GET, &format!("{path}?status=lost"), None).await.expect(400);
    assert_eq!(reply["error"]["field"], "status");

    // Sent events are pruned after 30 days (here: with a cut-off tomorrow),
    // with their deliveries and attempts.
    let config = tollgate_server::Config::from_sources(None, &app.db.env()).unwrap();
    let store = tollgate_server::app::open_store(&config).await.unwrap();
    let tomorrow = chrono::Utc::now().timestamp_millis() + 86_400_000;
    assert_eq!(store.prune_outbox(tomorrow).await.unwrap(), 1);
    store.close().await;
    assert_eq!(api.admin(Method::GET, &path, None).await.expect(200)["deliveries"], json!([]));
}

/// The same in `/ui`, in Chromium (`tests/browser/admin_webhooks.mjs`): the
/// secret shown once is the one the deliveries are signed with, and every
/// change made there is audited as the admin's.
async fn webhooks_are_managed_and_redelivered_in_the_dashboard(backend: Backend) {
    let receiver = Receiver::start().await;
    *receiver.state.fail_first.lock().unwrap() = 1;
    // No retry by itself during the test: the second attempt is the one by hand.
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "600000")]).await;
    let api = &app.api;
    api.create_user("u_hook", "free").await;
    let env = [("TG_RECEIVER_URL", receiver.url.clone()), ("TG_USER", "u_hook".to_owned())];
    let printed = crate::web::browser("admin_webhooks", backend, api, &env).await;
    let secret = printed.lines().find_map(|l| l.strip_prefix("secret: ")).expect("the script prints the secret");

    let got = receiver.wait_for("key.created", 1).await;
    assert_eq!(got.len(), 1, "one delivery by hand after one refusal");
    assert_eq!(verify_with_standardwebhooks(secret, &got).await.len(), 1);
    let audit = api.admin(Method::GET, "/admin/v1/audit?action=webhook", None).await.expect(200);
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("webhook.deleted", "admin"),
            ("webhook.updated", "admin"),
            ("webhook.redelivered", "admin"),
            ("webhook.created", "admin")
        ]
    );
    assert_eq!(api.admin(Method::GET, "/admin/v1/webhooks", None).await.expect(200)["webhooks"], json!([]));
}

async fn admin_actions_emit_their_events(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")]).await;
    let api = &app.api;
    let (_, secret) = add_endpoint(api, &receiver.url, json!(["*"])).await;
    api.create_user("u_1", "free").await;
    let key = api.create_key("u_1", json!({ "name": "ci" })).await;
    let key_id = key["id"].as_str().unwrap();
    let rotated =
        api.admin(Method::POST, &format!("/admin/v1/keys/{key_id}/rotate"), Some(json!({}))).await.expect(201);
    api.admin(Method::DELETE, &format!("/admin/v1/keys/{}", rotated["id"].as_str().unwrap()), None).await.expect(204);
    let credential = json!({ "secret": "sk-user-own-key-0123456789", "label": "work" });
    api.admin(Method::PUT, "/admin/v1/users/u_1/credentials/openai", Some(credential)).await.expect(200);
    api.admin(Method::DELETE, "/admin/v1/users/u_1/credentials/openai", None).await.expect(204);
    api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({ "plan": "pro", "reset_usage": true })))
        .await
        .expect(200);
    api.admin(Method::POST, "/admin/v1/users/u_1/usage/reset", None).await.expect(200);

    let expected = [
        "key.created",
        "key.created",
        "key.revoked",
        "key.revoked",
        "credential.updated",
        "credential.updated",
        "plan.changed",
        "usage.reset",
        "usage.reset",
    ];
    let all = eventually(Duration::from_secs(30), || async { receiver.got().len() >= expected.len() }).await;
    assert!(all, "{:?}", receiver.got());
    let verified = verify_with_standardwebhooks(&secret, &receiver.got()).await;
    let mut types: Vec<&str> = verified.iter().map(|p| p["type"].as_str().unwrap()).collect();
    types.sort();
    let mut sorted = expected.to_vec();
    sorted.sort();
    assert_eq!(types, sorted);
    let find =
        |kind: &str| verified.iter().filter(|p| p["type"] == kind).map(|p| p["data"].clone()).collect::<Vec<_>>();
    assert!(find("key.created").iter().any(|d| d["replaces"] == key_id), "a rotation names what it replaces");
    let credentials = find("credential.updated");
    let mut actions: Vec<&str> = credentials.iter().map(|d| d["action"].as_str().unwrap()).collect();
    actions.sort();
    assert_eq!(actions, ["removed", "set"]);
    assert!(credentials.iter().all(|d| d["provider"] == "openai" && d["user_id"] == "u_1"));
    let plan = &find("plan.changed")[0];
    assert_eq!(
        (plan["from"].as_str(), plan["to"].as_str(), plan["source"].as_str()),
        (Some("free"), Some("pro"), Some("admin"))
    );
    let resets = find("usage.reset");
    let reasons: Vec<&str> = resets.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"plan_change") && reasons.contains(&"manual"), "{reasons:?}");
    let text = receiver.got().iter().map(|r| r.body.clone()).collect::<String>();
    assert!(!text.contains("sk-user-own-key") && !text.contains(key["key"].as_str().unwrap()), "no secret in events");
}

async fn alert_emails_reach_the_smtp_sink(backend: Backend) {
    let port = free_port().to_string();
    let mail = tempfile::tempdir().unwrap();
    let _sink = python_background(
        "smtp_sink.py",
        &[("SMTP_PORT", &port), ("MAIL_DIR", mail.path().to_str().unwrap()), ("SINK_SECONDS", "120")],
    )
    .await;
    let url = format!("smtp://127.0.0.1:{port}");
    let app = TestApp::spawn_with(
        backend,
        &[
            ("TOLLGATE_SMTP_URL", &url),
            ("TOLLGATE_SMTP_FROM", "Tollgate <alerts@example.com>"),
            ("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50"),
        ],
    )
    .await;
    let api = &app.api;
    limited_user(api, "u_1", 1000).await;
    api.create_user("u_silent", "metered").await; // no e-mail address: no mail
    spend(api, "u_1", "e1", 800).await; // 75 %
    spend(api, "u_silent", "s1", 800).await;
    spend(api, "u_1", "e2", 300).await; // 90 %, 100 % and exhaustion: two mails (90 %, used up)
    let count = || {
        std::fs::read_dir(mail.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert!(eventually(Duration::from_secs(30), || async { count() >= 3 }).await, "{} mails", count());
    assert!(!eventually(Duration::from_millis(500), || async { count() > 3 }).await, "one mail per alert");
    let mails: Vec<Value> = (1..=count())
        .map(|n| {
            serde_json::from_str(&std::fs::read_to_string(mail.path().join(format!("{n}.json"))).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(mails.len(), 3, "no mail for the 100 % threshold besides the exhaustion one: {mails:?}");
    for m in &mails {
        assert_eq!(m["rcpt_tos"], json!(["u_1@example.com"]));
        assert_eq!(m["mail_from"], "alerts@example.com");
        let data = m["data"].as_str().unwrap();
        assert!(data.contains("Content-Type: text/plain"), "{data}");
        assert!(data.contains("Your usage resets on") && data.contains("What to do"), "{data}");
    }
    let texts: Vec<&str> = mails.iter().map(|m| m["data"].as_str().unwrap()).collect();
    assert!(
        texts.iter().any(|t| t.contains("used 75% of your tokens") && t.contains("800 of 1,000 tokens")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("used 90% of your tokens") && t.contains("1,100 of 1,000 tokens")));
    assert!(texts.iter().any(|t| t.contains("used all of your tokens allowance")));
}

/// Stripe's shape of the events Tollgate reads.
fn stripe_event(id: &str, kind: &str, object: Value) -> String {
    json!({ "id": id, "object": "event", "type": kind, "api_version": "2024-06-20", "data": { "object": object } })
        .to_string()
}

/// `Stripe-Signature` headers for `events` (body, timestamp or None for
/// now), made by the official `stripe` package.
async fn stripe_signatures(secret: &str, events: &[(&str, Option<i64>)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    let list: Vec<Value> = events.iter().map(|(p, t)| json!({ "payload": p, "timestamp": t })).collect();
    std::fs::write(&file, serde_json::to_string(&list).unwrap()).unwrap();
    let out = python("stripe_sign.py", &[("STRIPE_SECRET", secret), ("EVENTS", file.to_str().unwrap())]).await.json();
    out.as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_owned()).collect()
}

async fn post_stripe(api: &Api, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut request = api.http.post(format!("{}/webhooks/stripe", api.base)).body(body.to_owned());
    if let Some(s) = signature {
        request = request.header("Stripe-Signature", s);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret_0123";

async fn stripe_events_signed_by_the_stripe_package_are_applied_once(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(
        backend,
        &[("TOLLGATE_STRIPE_WEBHOOK_SECRET", STRIPE_SECRET), ("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")],
    )
    .await;
    let api = &app.api;
    add_endpoint(api, &receiver.url, json!(["plan.changed", "usage.reset"])).await;
    api.admin(Method::PATCH, "/admin/v1/plans/pro", Some(json!({ "stripe_price_id": "price_pro_monthly" })))
        .await
        .expect(200);
    let user = json!({ "id": "u_1", "plan": "free", "stripe_customer_id": "cus_A1" });
    api.admin(Method::POST, "/admin/v1/users", Some(user)).await.expect(201);
    let before = api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200);

    let subscription = |price: &str| {
        json!({ "id": "sub_1", "object": "subscription", "customer": "cus_A1", "status": "active",
        "items": { "object": "list", "data": [{ "id": "si_1", "price": { "id": price, "object": "price" } }] } })
    };
    let created = stripe_event("evt_created", "customer.subscription.created", subscription("price_pro_monthly"));
    let paid =
        stripe_event("evt_paid", "invoice.paid", json!({ "id": "in_1", "object": "invoice", "customer": "cus_A1" }));
    let stranger = stripe_event("evt_stranger", "invoice.paid", json!({ "id": "in_2", "customer": "cus_unknown" }));
    let odd_price = stripe_event("evt_odd", "customer.subscription.updated", subscription("price_nobody_has"));
    let other = stripe_event("evt_other", "charge.succeeded", json!({ "id": "ch_1", "customer": "cus_A1" }));
    let deleted = stripe_event("evt_deleted", "customer.subscription.deleted", subscription("price_pro_monthly"));
    let bodies = [&created, &paid, &stranger, &odd_price, &other, &deleted];
    let signatures =
        stripe_signatures(STRIPE_SECRET, &bodies.iter().map(|b| (b.as_str(), None)).collect::<Vec<_>>()).await;

    let (status, reply) = post_stripe(api, &created, Some(&signatures[0])).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("applied")), "{reply}");
    let user = api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200);
    assert_eq!(user["plan"], "pro");

    let (status, reply) = post_stripe(api, &paid, Some(&signatures[1])).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("applied")));
    let user = api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200);
    assert!(user["usage_reset_at"].is_string() && user["billing_anchor"] != before["billing_anchor"], "{user}");
    let usage = api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
    assert_eq!(usage["period"]["start"], user["usage_reset_at"], "a new period began");

    // A replay is acknowledged and changes nothing.
    let (status, reply) = post_stripe(api, &paid, Some(&signatures[1])).await;
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(
        api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200)["usage_reset_at"],
        user["usage_reset_at"]
    );

    for (i, why) in [(2, "Stripe customer"), (3, "Stripe price"), (4, "changes nothing")] {
        let (status, reply) = post_stripe(api, bodies[i], Some(&signatures[i])).await;
        assert_eq!((status, reply["outcome"].as_str()), (200, Some("ignored")), "{reply}");
        assert!(reply["reason"].as_str().unwrap().contains(why), "{reply}");
    }
    assert_eq!(api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200)["plan"], "pro");

    let (status, _) = post_stripe(api, &deleted, Some(&signatures[5])).await;
    assert_eq!(status, 200);
    assert_eq!(api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200)["plan"], "free");

    let changes = receiver.wait_for("plan.changed", 2).await;
    let mut moves: Vec<(String, String, String)> = changes
        .iter()
        .map(|r| {
            let d = r.payload()["data"].clone();
            (d["from"].as_str().unwrap().into(), d["to"].as_str().unwrap().into(), d["source"].as_str().unwrap().into())
        })
        .collect();
    moves.sort();
    assert_eq!(moves, [("free".into(), "pro".into(), "stripe".into()), ("pro".into(), "free".into(), "stripe".into())]);
    let resets = receiver.wait_for("usage.reset", 1).await;
    assert_eq!(resets[0].payload()["data"]["reason"], "invoice.paid");
    assert!(!eventually(Duration::from_millis(300), || async { receiver.got().len() > 3 }).await, "applied once");

    let audit = api.admin(Method::GET, "/admin/v1/audit?user=u_1", None).await.expect(200);
    let by_stripe: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["details"]["stripe_event"].is_string()).collect();
    assert_eq!(by_stripe.len(), 3);
    assert!(by_stripe.iter().all(|e| e["actor"] == "system"));
}

async fn bad_stale_and_tampered_stripe_events_are_refused(backend: Backend) {
    let unconfigured = TestApp::spawn(backend).await;
    let (status, reply) = post_stripe(&unconfigured.api, "{}", Some("t=1,v1=00")).await;
    assert_eq!(status, 404, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("TOLLGATE_STRIPE_WEBHOOK_SECRET"));

    let app = TestApp::spawn_with(backend, &[("TOLLGATE_STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)]).await;
    let api = &app.api;
    let user = json!({ "id": "u_1", "plan": "free", "stripe_customer_id": "cus_A1" });
    api.admin(Method::POST, "/admin/v1/users", Some(user)).await.expect(201);
    let paid = stripe_event("evt_paid", "invoice.paid", json!({ "id": "in_1", "customer": "cus_A1" }));
    let stale_at = chrono::Utc::now().timestamp() - 400;
    let signed = stripe_signatures(STRIPE_SECRET, &[(&paid, None), (&paid, Some(stale_at))]).await;
    let by_another = stripe_signatures("whsec_someone_elses_secret_000000", &[(&paid, None)]).await;

    let refused = |status: u16, reply: &Value| {
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["field"], "Stripe-Signature", "{reply}");
        assert!(!reply.to_string().contains(STRIPE_SECRET));
    };
    let (s, r) = post_stripe(api, &paid, None).await;
    refused(s, &r);
    let (s, r) = post_stripe(api, &paid, Some(&by_another[0])).await;
    refused(s, &r);
    let (s, r) = post_stripe(api, &paid, Some(&signed[1])).await;
    refused(s, &r);
    assert!(r["error"]["message"].as_str().unwrap().contains("300 seconds"), "{r}");
    let tampered = paid.replace("cus_A1", "cus_B2");
    let (s, r) = post_stripe(api, &tampered, Some(&signed[0])).await;
    refused(s, &r);
    let (s, r) = post_stripe(api, &paid, Some("v1=deadbeef")).await;
    refused(s, &r);
    let user = api.admin(Method::GET, "/admin/v1/users/u_1", None).await.expect(200);
    assert!(user["usage_reset_at"].is_null(), "nothing refused was applied");

    // Several v1: the one that matches is enough.
    let good = signed[0].split("v1=").nth(1).unwrap();
    let t = signed[0].split(',').next().unwrap();
    let both = format!("{t},v1={},v1={good}", "0".repeat(64));
    let (s, r) = post_stripe(api, &paid, Some(&both)).await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("applied")), "{r}");
}

/// A usage alert committed but not yet delivered survives `kill -9`: the
/// receiver is down while the first process runs, and gets the event from
/// the second.
async fn kill_9_between_commit_and_delivery_still_delivers_after_restart(backend: Backend) {
    let receiver = Receiver::start().await;
    *receiver.state.down.lock().unwrap() = true;
    let db = TestDb::new(backend).await;
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_WEBHOOK_RETRY_BASE_MS".into(), "100".into()));
    let mut first = BinApp::start(db.dir.path(), &env, &[], "before");
    let (endpoint, secret) = add_endpoint(&first.api, &receiver.url, json!(["usage.threshold"])).await;
    limited_user(&first.api, "u_1", 100).await;
    spend(&first.api, "u_1", "e1", 80).await; // committed: the alert is in the outbox
    std::process::Command::new("kill").args(["-KILL", &first.child.id().to_string()]).status().unwrap();
    let _ = first.child.wait();
    assert!(receiver.got().is_empty(), "nothing was delivered before the kill");

    *receiver.state.down.lock().unwrap() = false;
    let second = BinApp::start(db.dir.path(), &env, &[], "after");
    let got = receiver.wait_for("usage.threshold", 1).await;
    let verified = verify_with_standardwebhooks(&secret, &got).await;
    assert_eq!(verified[0]["data"]["threshold"], 75);
    assert_eq!(verified[0]["data"]["used"], 80);
    let listed =
        second.api.admin(Method::GET, &format!("/admin/v1/webhooks/{endpoint}/deliveries"), None).await.expect(200);
    assert_eq!(listed["deliveries"].as_array().unwrap().len(), 1, "one delivery, however many attempts");
    let output = format!("{}{}", first.output(), second.output());
    assert!(!output.contains(&secret) && !output.contains(secret.trim_start_matches("whsec_")), "no secret logged");
    assert!(!output.contains(&receiver.url), "no webhook URL logged");
}

/// Two instances share the store and commit usage of one user at the same
/// time: each threshold still fires exactly once (the alert's unique key
/// and the counter's row lock make it exact).
async fn concurrent_commits_on_two_instances_fire_each_threshold_once(backend: Backend) {
    let receiver = Receiver::start().await;
    let settings = [("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50")];
    let app = TestApp::spawn_with(backend, &settings).await;
    let (sibling, server) = app.sibling(&settings).await;
    add_endpoint(&app.api, &receiver.url, json!(["usage.threshold", "quota.exceeded"])).await;
    limited_user(&app.api, "u_1", 1000).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let api = if i % 2 == 0 { app.api.clone() } else { sibling.clone() };
        tasks.push(tokio::spawn(async move { spend(&api, "u_1", &format!("e{i}"), 25).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fired = receiver.wait_for("usage.threshold", 3).await;
    receiver.wait_for("quota.exceeded", 1).await;
    assert!(
        !eventually(Duration::from_millis(500), || async { receiver.got().len() > 4 }).await,
        "{:?}",
        receiver.got()
    );
    let mut marks: Vec<i64> = fired.iter().map(|r| r.payload()["data"]["threshold"].as_i64().unwrap()).collect();
    marks.sort();
    assert_eq!(marks, [75, 90, 100]);
    let usage = app.api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
    assert_eq!(usage["meters"]["tokens"]["used"], 1000);
    server.shutdown().await.unwrap();
}

/// `tollgate vault rotate` re-encrypts webhook signing secrets too; a start
/// with a master key that opens none of them is refused.
async fn webhook_secrets_are_rotated_with_the_master_key_and_still_sign(backend: Backend) {
    let receiver = Receiver::start().await;
    let db = TestDb::new(backend).await;
    let (a, b, c) = (new_master_key(), new_master_key(), new_master_key());
    let fast = ("TOLLGATE_WEBHOOK_RETRY_BASE_MS", "50");
    let under_a = TestApp::start_on(&db, &[("TOLLGATE_MASTER_KEY", &a), fast]).await;
    let (_, secret) = add_endpoint(&Api::new(under_a.addr), &receiver.url, json!(["key.created"])).await;
    under_a.shutdown().await.unwrap();

    let config = |current: &str, old: Option<&str>| {
        let mut env = db.env();
        env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        env.push(("TOLLGATE_MASTER_KEY".into(), current.into()));
        if let Some(old) = old {
            env.push(("TOLLGATE_MASTER_KEYS_OLD".into(), old.into()));
        }
        tollgate_server::Config::from_sources(None, &env).unwrap()
    };
    let refused = tollgate_server::start(config(&c, None)).await.err().expect("a key that opens no secret is refused");
    assert!(refused.to_string().contains("master key does not match"), "{refused}");

    let rotating = config(&b, Some(&a));
    let (keyring, _) = tollgate_server::app::load_keyring(&rotating).unwrap();
    let store = tollgate_server::app::open_store(&rotating).await.unwrap();
    let mut progress = Vec::new();
    let report = tollgate_server::vault::rotate(&store, &keyring, 1, |done| progress.push(done)).await.unwrap();
    assert_eq!((report.webhooks_total, report.webhooks_resealed, report.total), (1, 1, 0), "{report:?}");
    assert_eq!(progress, [1]);
    let again = tollgate_server::vault::rotate(&store, &keyring, 1, |_| {}).await.unwrap();
    assert_eq!((again.webhooks_total, again.webhooks_resealed), (0, 0), "nothing left for a second run");
    store.close().await;

    let under_b = TestApp::start_on(&db, &[("TOLLGATE_MASTER_KEY", &b), fast]).await;
    let api = Api::new(under_b.addr);
    api.create_user("u_1", "free").await;
    api.create_key("u_1", json!({ "name": "after rotation" })).await;
    let got = receiver.wait_for("key.created", 1).await;
    verify_with_standardwebhooks(&secret, &got).await;
    assert!(!db.dump().contains(&secret));
    under_b.shutdown().await.unwrap();
}
