//! Issue #4, the credential vault: users' own provider keys encrypted at
//! rest, the one resolution rule, validation against the provider,
//! isolation, master key rotation and the start-up key check, and no
//! plaintext anywhere.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_server::Config;

use crate::both_stores;
use crate::common::{
    ADMIN_TOKEN, Api, Backend, BinApp, TestApp, TestDb, mock_llm, new_master_key, run_binary, service_key,
};

both_stores!(
    a_credential_is_stored_encrypted_and_only_its_status_is_ever_shown,
    secret_formats_are_checked_per_provider_and_bad_input_changes_nothing,
    resolution_takes_the_users_key_then_the_platform_key_then_says_no_credential,
    a_plan_that_requires_byok_refuses_the_platform_key,
    resolve_needs_credentials_read_and_every_read_is_audited,
    a_ciphertext_moved_to_another_row_fails_to_decrypt_and_says_so,
    user_b_can_never_read_or_change_user_as_credentials,
    validation_asks_the_provider_through_its_base_url_and_stores_the_outcome,
    rotation_goes_in_batches_takes_only_what_is_left_and_a_second_run_finds_nothing,
    rotation_end_to_end_with_the_real_binary,
    a_wrong_master_key_at_start_is_reported_clearly,
    instances_sharing_a_database_must_share_its_master_key_before_anything_is_sealed,
    no_plaintext_in_the_store_logs_or_audit_log_after_set_validate_resolve_and_rotate,
);

fn path(user: &str, provider: &str) -> String {
    format!("/admin/v1/users/{user}/credentials/{provider}")
}

async fn set(api: &Api, user: &str, provider: &str, secret: &str) -> Value {
    api.admin(Method::PUT, &path(user, provider), Some(json!({ "secret": secret }))).await.expect(200)
}

async fn resolve(api: &Api, key: &str, user: &str, provider: &str) -> crate::common::Reply {
    let body = json!({ "user_id": user, "provider": provider });
    api.call(Method::POST, "/v1/credentials/resolve", Some(key), Some(body)).await
}

fn key_id(base64_key: &str) -> String {
    tollgate_vault::MasterKey::from_base64(base64_key).unwrap().id().to_string()
}

async fn a_credential_is_stored_encrypted_and_only_its_status_is_ever_shown(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.api.create_user("u_42", "free").await;
    let first = "sk-proj-FirstSecret0123456789abcdWXYZ";
    let body = json!({ "secret": first, "label": "work" });
    let stored = app.api.admin(Method::PUT, &path("u_42", "openai"), Some(body)).await.expect(200);
    assert_eq!(stored["provider"], "openai");
    assert_eq!(stored["user_id"], "u_42");
    assert_eq!(stored["label"], "work");
    assert_eq!(stored["last4"], "WXYZ");
    assert!(stored["created_at"].is_string() && stored["updated_at"].is_string());
    assert!(stored["last_used_at"].is_null() && stored["validation"].is_null());
    assert!(stored.get("secret").is_none() && !stored.to_string().contains("FirstSecret"));

    let status = app.api.admin(Method::GET, &path("u_42", "openai"), None).await.expect(200);
    assert_eq!(status, stored);
    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_42/credentials", None).await.expect(200);
    assert_eq!(listed["credentials"], json!([stored]));

    // One per (user, provider): a second PUT replaces the secret, keeps the creation time.
    let second = "sk-proj-SecondSecret0123456789abcd9876";
    let replaced = set(&app.api, "u_42", "openai", second).await;
    assert_eq!(replaced["created_at"], stored["created_at"]);
    assert_eq!(replaced["last4"], "9876");
    assert!(replaced["label"].is_null(), "PUT replaces the whole credential");
    set(&app.api, "u_42", "groq", "gsk_GroqSecret0123456789").await;
    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_42/credentials", None).await.expect(200);
    let providers: Vec<&str> =
        listed["credentials"].as_array().unwrap().iter().map(|c| c["provider"].as_str().unwrap()).collect();
    assert_eq!(providers, ["groq", "openai"]);

    app.api.admin(Method::GET, &path("u_42", "anthropic"), None).await.expect(404);
    app.api.admin(Method::GET, &path("nobody", "openai"), None).await.expect(404);
    app.api.admin(Method::PUT, &path("nobody", "openai"), Some(json!({"secret": second}))).await.expect(404);
    app.api.admin(Method::DELETE, &path("u_42", "groq"), None).await.expect(204);
    app.api.admin(Method::DELETE, &path("u_42", "groq"), None).await.expect(404);
    app.api.admin(Method::GET, &path("u_42", "groq"), None).await.expect(404);

    app.stop().await;
    let dump = app.db.dump();
    assert!(dump.contains("u_42"), "the dump holds the data");
    for secret in [first, second, "gsk_GroqSecret0123456789"] {
        assert!(!dump.contains(secret), "a plaintext credential in the store");
        assert!(!dump.contains(&secret[..secret.len() - 4]), "most of a credential in the store");
    }
}

async fn secret_formats_are_checked_per_provider_and_bad_input_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    set(&app.api, "u_1", "openai", "sk-original-key-0001").await;
    for (provider, secret) in [
        ("anthropic", "sk-ant-api03-abcdefgh"),
        ("gemini", "AIzaSyA-0123456789abcdefghijklmnopqrs"),
        ("groq", "gsk_0123456789abcdef"),
        ("github", "ghp_0123456789abcdef"),
        ("github", "github_pat_11ABCDEFG_0123456789"),
        ("together-ai", "any-printable-secret"),
    ] {
        set(&app.api, "u_1", provider, secret).await;
    }

    let refused = |provider: &str, query: &str, body: String, field: &str| {
        let (api, provider, query, field) = (app.api.clone(), provider.to_owned(), query.to_owned(), field.to_owned());
        async move {
            let reply = api
                .raw(Method::PUT, &format!("{}{query}", path("u_1", &provider)), Some(ADMIN_TOKEN), Some(body.clone()))
                .await;
            let error = reply.expect(400);
            assert_eq!(error["error"]["type"], "invalid_request", "{provider} {body}");
            assert_eq!(error["error"]["field"], field.as_str(), "{provider} {body}: {error}");
            assert!(!error.to_string().contains("0123456789"), "the secret is not echoed: {error}");
            error["error"]["message"].as_str().unwrap().to_owned()
        }
    };
    let secret = |s: &str| json!({ "secret": s }).to_string();
    assert!(refused("openai", "", secret("pk-0123456789"), "secret").await.contains("sk-"));
    assert!(refused("openai", "", secret("sk-ant-api03-0123456789"), "secret").await.contains("Anthropic"));
    assert!(refused("anthropic", "", secret("sk-proj-0123456789"), "secret").await.contains("sk-ant-"));
    assert!(refused("gemini", "", secret("key-0123456789"), "secret").await.contains("AIza"));
    assert!(refused("groq", "", secret("sk-0123456789"), "secret").await.contains("gsk_"));
    assert!(refused("github", "", secret("gho_0123456789"), "secret").await.contains("ghp_"));
    refused("openai", "", secret("sk-0123"), "secret").await;
    refused("openai", "", secret("sk-0123456789 with spaces"), "secret").await;
    refused("openai", "", secret(""), "secret").await;
    refused("openai", "", json!({ "secret": 123456789 }).to_string(), "secret").await;
    refused("openai", "", json!({ "label": "x" }).to_string(), "secret").await;
    refused("openai", "", json!({ "secret": "sk-0123456789", "label": "" }).to_string(), "label").await;
    refused("openai", "", json!({ "secret": "sk-0123456789", "label": "a\u{7}b" }).to_string(), "label").await;
    refused("openai", "", json!({ "secret": "sk-0123456789", "lable": "x" }).to_string(), "lable").await;
    refused("openai", "", "{\"secret\": \"sk-0123456789\"".into(), "body").await;
    refused("openai", "?validate=maybe", secret("sk-0123456789"), "query").await;
    refused("OpenAI", "", secret("sk-0123456789"), "provider").await;
    refused("my%7Cprovider", "", secret("sk-0123456789"), "provider").await;

    let kept = app.api.admin(Method::GET, &path("u_1", "openai"), None).await.expect(200);
    assert_eq!(kept["last4"], "0001", "refused input changed nothing stored");
}

async fn resolution_takes_the_users_key_then_the_platform_key_then_says_no_credential(backend: Backend) {
    let platform = "sk-platform-openai-000000000001";
    let app = TestApp::spawn_with(backend, &[("OPENAI_API_KEY", platform)]).await;
    app.api.create_user("u_1", "free").await;
    let service = service_key(&app.api, &["credentials:read"]).await;

    let got = resolve(&app.api, &service, "u_1", "openai").await.expect(200);
    assert_eq!(got, json!({ "user_id": "u_1", "provider": "openai", "source": "platform", "secret": platform }));

    set(&app.api, "u_1", "openai", "sk-users-own-key-0001").await;
    let got = resolve(&app.api, &service, "u_1", "openai").await.expect(200);
    assert_eq!((got["source"].as_str(), got["secret"].as_str()), (Some("byok"), Some("sk-users-own-key-0001")));
    let status = app.api.admin(Method::GET, &path("u_1", "openai"), None).await.expect(200);
    assert!(status["last_used_at"].is_string(), "a resolution is a use: {status}");
    set(&app.api, "u_1", "openai", "sk-users-new-key-0002").await;
    let replaced = app.api.admin(Method::GET, &path("u_1", "openai"), None).await.expect(200);
    assert!(replaced["last_used_at"].is_null(), "a new secret has not been used: {replaced}");
    assert_eq!(resolve(&app.api, &service, "u_1", "openai").await.expect(200)["secret"], "sk-users-new-key-0002");

    let none = resolve(&app.api, &service, "u_1", "anthropic").await.expect(400);
    assert_eq!(none["error"]["type"], "no_credential");
    assert_eq!(none["error"]["provider"], "anthropic");
    let message = none["error"]["message"].as_str().unwrap();
    assert!(message.contains("anthropic") && message.contains("ANTHROPIC_API_KEY"), "{message}");

    // A provider Tollgate has no settings for still resolves a user's own key.
    let unknown = resolve(&app.api, &service, "u_1", "together").await.expect(400);
    assert_eq!(unknown["error"]["type"], "no_credential");
    set(&app.api, "u_1", "together", "together-secret-0001").await;
    assert_eq!(resolve(&app.api, &service, "u_1", "together").await.expect(200)["source"], "byok");

    app.api.admin(Method::DELETE, &path("u_1", "openai"), None).await.expect(204);
    assert_eq!(resolve(&app.api, &service, "u_1", "openai").await.expect(200)["secret"], platform);

    resolve(&app.api, &service, "nobody", "openai").await.expect(404);
    let bad =
        app.api.call(Method::POST, "/v1/credentials/resolve", Some(&service), Some(json!({"user_id":"u_1"}))).await;
    assert_eq!(bad.expect(400)["error"]["field"], "provider");
    assert_eq!(resolve(&app.api, &service, "u_1", "Open AI").await.expect(400)["error"]["field"], "provider");
}

async fn a_plan_that_requires_byok_refuses_the_platform_key(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("OPENAI_API_KEY", "sk-platform-openai-000000000001")]).await;
    let plan = json!({ "slug": "bring-your-own", "byok_required": true });
    app.api.admin(Method::POST, "/admin/v1/plans", Some(plan)).await.expect(201);
    app.api.create_user("u_1", "bring-your-own").await;
    let service = service_key(&app.api, &["credentials:read"]).await;
    let refused = resolve(&app.api, &service, "u_1", "openai").await.expect(400);
    assert_eq!(refused["error"]["type"], "no_credential");
    assert!(refused["error"]["message"].as_str().unwrap().contains("bring-your-own"), "{refused}");
    assert!(!refused.to_string().contains("sk-platform"));
    set(&app.api, "u_1", "openai", "sk-users-own-key-0001").await;
    assert_eq!(resolve(&app.api, &service, "u_1", "openai").await.expect(200)["source"], "byok");
}

async fn resolve_needs_credentials_read_and_every_read_is_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    set(&app.api, "u_1", "openai", "sk-users-own-key-0001").await;
    let user_key = app.api.create_key("u_1", json!({"scopes":["proxy","credentials:manage","keys:manage"]})).await;
    let user_key = user_key["key"].as_str().unwrap();
    let meter_only = service_key(&app.api, &["meter"]).await;
    let service = service_key(&app.api, &["credentials:read"]).await;

    resolve(&app.api, user_key, "u_1", "openai").await.expect(403);
    resolve(&app.api, &meter_only, "u_1", "openai").await.expect(403);
    let anonymous = app
        .api
        .call(Method::POST, "/v1/credentials/resolve", None, Some(json!({"user_id":"u_1","provider":"openai"})))
        .await;
    anonymous.expect(401);
    let audit = app.api.admin(Method::GET, "/admin/v1/audit?action=credential.resolved", None).await.expect(200);
    assert_eq!(audit["entries"], json!([]), "refused attempts hand out nothing");

    resolve(&app.api, &service, "u_1", "openai").await.expect(200);
    resolve(&app.api, ADMIN_TOKEN, "u_1", "openai").await.expect(200);
    let audit = app.api.admin(Method::GET, "/admin/v1/audit?action=credential.resolved", None).await.expect(200);
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    let services = app.api.admin(Method::GET, "/admin/v1/service-keys", None).await.expect(200);
    let service_id =
        services["keys"].as_array().unwrap().iter().find(|k| k["scopes"] == json!(["credentials:read"])).unwrap()["id"]
            .clone();
    assert_eq!(entries[0]["actor"], "admin", "newest first");
    assert_eq!(entries[1]["actor"], service_id);
    for entry in entries {
        assert_eq!(entry["action"], "credential.resolved");
        assert_eq!(entry["target"], "credential:u_1/openai");
        assert_eq!(entry["user_id"], "u_1");
        assert_eq!(entry["client_ip"], "127.0.0.1");
        assert_eq!(entry["details"]["source"], "byok");
        assert!(entry["time"].is_string());
    }
    assert!(!audit.to_string().contains("sk-users-own-key"));

    app.api.admin(Method::POST, "/admin/v1/users/u_1/suspend", None).await.expect(200);
    resolve(&app.api, &service, "u_1", "openai").await.expect(403);
}

async fn a_ciphertext_moved_to_another_row_fails_to_decrypt_and_says_so(backend: Backend) {
    // No cache: every resolution reads the row as it is now.
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "0")]).await;
    let service = service_key(&app.api, &["credentials:read"]).await;
    for user in ["u_a", "u_b"] {
        app.api.create_user(user, "free").await;
    }
    set(&app.api, "u_a", "openai", "sk-alice-secret-0001").await;
    set(&app.api, "u_a", "groq", "gsk_alice-secret-0002").await;
    set(&app.api, "u_b", "openai", "sk-bob-secret-0003").await;
    assert_eq!(resolve(&app.api, &service, "u_b", "openai").await.expect(200)["secret"], "sk-bob-secret-0003");

    let copy = |to_user: &str, to_provider: &str| {
        let from = "FROM credentials WHERE user_id = 'u_a' AND provider = 'openai'";
        format!(
            "UPDATE credentials SET key_id = (SELECT key_id {from}), nonce = (SELECT nonce {from}), \
             ciphertext = (SELECT ciphertext {from}) WHERE user_id = '{to_user}' AND provider = '{to_provider}'"
        )
    };
    // Another owner's row, and another provider's row of the same owner.
    for (user, provider) in [("u_b", "openai"), ("u_a", "groq")] {
        assert_eq!(app.db.execute(&copy(user, provider)).await, 1);
        let refused = resolve(&app.api, &service, user, provider).await.expect(500);
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("cannot be decrypted"), "{message}");
        assert!(message.contains("another owner") && message.contains("moved"), "{message}");
        assert!(!refused.to_string().contains("sk-alice") && !refused.to_string().contains("sk-bob"));
    }
    assert_eq!(resolve(&app.api, &service, "u_a", "openai").await.expect(200)["secret"], "sk-alice-secret-0001");

    // A key id no configured key has is named as such.
    app.db.execute("UPDATE credentials SET key_id = '00000000' WHERE user_id = 'u_a' AND provider = 'openai'").await;
    let refused = resolve(&app.api, &service, "u_a", "openai").await.expect(500);
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("00000000") && message.contains("not configured"), "{message}");
}

async fn user_b_can_never_read_or_change_user_as_credentials(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut keys = Vec::new();
    for user in ["u_a", "u_b"] {
        app.api.create_user(user, "free").await;
        let key = app.api.create_key(user, json!({"scopes":["proxy","credentials:manage","keys:manage"]})).await;
        keys.push(key["key"].as_str().unwrap().to_owned());
    }
    let (a, b) = (keys[0].as_str(), keys[1].as_str());
    let mine = |key: &str, method: Method, provider: &str, body: Option<Value>| {
        let (api, key, provider) = (app.api.clone(), key.to_owned(), provider.to_owned());
        async move { api.call(method, &format!("/v1/me/credentials/{provider}"), Some(&key), body).await }
    };
    let stored =
        mine(a, Method::PUT, "openai", Some(json!({"secret":"sk-alice-secret-0001","label":"a"}))).await.expect(200);
    assert_eq!(stored["user_id"], "u_a");

    // B sees and changes only B's own.
    let listed = app.api.call(Method::GET, "/v1/me/credentials", Some(b), None).await.expect(200);
    assert_eq!(listed["credentials"], json!([]));
    mine(b, Method::GET, "openai", None).await.expect(404);
    mine(b, Method::DELETE, "openai", None).await.expect(404);
    mine(b, Method::PUT, "openai", Some(json!({"secret":"sk-bob-secret-0003"}))).await.expect(200);
    // B cannot reach A's through the admin routes, the resolver or the audit log.
    for (method, route) in [
        (Method::GET, "/admin/v1/users/u_a/credentials"),
        (Method::GET, "/admin/v1/users/u_a/credentials/openai"),
        (Method::DELETE, "/admin/v1/users/u_a/credentials/openai"),
        (Method::GET, "/admin/v1/audit"),
    ] {
        app.api.call(method, route, Some(b), None).await.expect(403);
    }
    let overwrite = json!({"secret":"sk-bob-overwrites-0004"});
    app.api.call(Method::PUT, "/admin/v1/users/u_a/credentials/openai", Some(b), Some(overwrite)).await.expect(403);
    resolve(&app.api, b, "u_a", "openai").await.expect(403);
    // Nor mint a key that could.
    let escalate = json!({"scopes":["credentials:read"]});
    app.api.call(Method::POST, "/v1/me/keys", Some(b), Some(escalate)).await.expect(400);
    // Nor slip another user in through the provider segment.
    mine(b, Method::GET, "..%2Fu_a", None).await.expect(400);

    let a_status = mine(a, Method::GET, "openai", None).await.expect(200);
    assert_eq!((a_status["last4"].as_str(), a_status["label"].as_str()), (Some("0001"), Some("a")));
    let service = service_key(&app.api, &["credentials:read"]).await;
    assert_eq!(resolve(&app.api, &service, "u_a", "openai").await.expect(200)["secret"], "sk-alice-secret-0001");
    assert_eq!(resolve(&app.api, &service, "u_b", "openai").await.expect(200)["secret"], "sk-bob-secret-0003");

    // The self-service routes need credentials:manage, on a user's own key.
    let plain = app.api.create_key("u_a", json!({"scopes":["proxy"]})).await;
    let plain = plain["key"].as_str().unwrap();
    app.api.call(Method::GET, "/v1/me/credentials", Some(plain), None).await.expect(403);
    app.api.call(Method::GET, "/v1/me/credentials", Some(ADMIN_TOKEN), None).await.expect(403);
    app.api.call(Method::GET, "/v1/me/credentials", Some(&service), None).await.expect(403);
}

async fn validation_asks_the_provider_through_its_base_url_and_stores_the_outcome(backend: Backend) {
    let good =
        ["sk-good-openai-0001", "sk-ant-good-0002", "AIzaGoodGeminiKey0003", "ghp_good-github-0004", "local-good-0005"];
    let mock = mock_llm(&good).await;
    let (v1, base) = (mock.openai_base_url(), mock.base_url());
    let app = TestApp::spawn_with(
        backend,
        &[
            ("TOLLGATE_OPENAI_BASE_URL", &v1),
            ("TOLLGATE_GROQ_BASE_URL", &mock.groq_base_url()),
            ("TOLLGATE_ANTHROPIC_BASE_URL", &base),
            ("TOLLGATE_GEMINI_BASE_URL", &base),
            ("TOLLGATE_GITHUB_BASE_URL", &base),
            ("TOLLGATE_LOCAL_BASE_URL", &v1),
            ("TOLLGATE_DEAD_BASE_URL", "http://127.0.0.1:1/v1"),
        ],
    )
    .await;
    app.api.create_user("u_1", "free").await;
    let validate = |provider: &str, secret: &str| {
        let (api, provider, secret) = (app.api.clone(), provider.to_owned(), secret.to_owned());
        async move {
            let route = format!("{}?validate=true", path("u_1", &provider));
            api.admin(Method::PUT, &route, Some(json!({ "secret": secret }))).await.expect(200)
        }
    };
    // Each request the mock received: method, path, and how the key came.
    let seen = || -> Vec<String> {
        let requests = mock.requests();
        requests
            .iter()
            .map(|r| {
                let how = match (r.header("x-goog-api-key"), r.header("x-api-key"), r.header("anthropic-version")) {
                    (Some(_), _, _) => "x-goog-api-key",
                    (None, Some(_), Some(_)) => "x-api-key+anthropic-version",
                    (None, Some(_), None) => "x-api-key",
                    _ => "bearer",
                };
                format!("{} {} {how}", r.method, r.path)
            })
            .collect()
    };

    let accepted = validate("openai", good[0]).await;
    assert_eq!(accepted["validation"]["outcome"], "valid", "{accepted}");
    assert!(accepted["validation"]["checked_at"].is_string());
    assert_eq!(seen().last().unwrap(), "GET /v1/models bearer");
    let status = app.api.admin(Method::GET, &path("u_1", "openai"), None).await.expect(200);
    assert_eq!(status["validation"], accepted["validation"], "the outcome is stored");

    let refused = validate("openai", "sk-bad-openai-0009").await;
    assert_eq!(refused["validation"]["outcome"], "invalid", "{refused}");
    let message = refused["validation"]["message"].as_str().unwrap();
    assert!(message.contains("401"), "{message}");
    assert!(!message.contains("Incorrect API key"), "the provider's body is not repeated");
    assert_eq!(
        app.api.admin(Method::GET, &path("u_1", "openai"), None).await.expect(200)["validation"]["outcome"],
        "invalid"
    );

    for (provider, secret, request) in [
        ("anthropic", good[1], "GET /v1/models x-api-key+anthropic-version"),
        ("gemini", good[2], "GET /v1beta/models x-goog-api-key"),
        ("github", good[3], "GET /user bearer"),
        ("local", good[4], "GET /v1/models bearer"),
    ] {
        assert_eq!(validate(provider, secret).await["validation"]["outcome"], "valid", "{provider}");
        assert_eq!(seen().last().unwrap(), request, "{provider}");
    }
    assert_eq!(validate("groq", "gsk_bad-groq-0008").await["validation"]["outcome"], "invalid");
    let dead = validate("dead", "dead-key-000000").await;
    assert_eq!(dead["validation"]["outcome"], "unreachable", "{dead}");

    let calls = seen().len();
    assert!(set(&app.api, "u_1", "openai", good[0]).await["validation"].is_null(), "no check unless asked");
    assert_eq!(seen().len(), calls);
    let route = format!("{}?validate=true", path("u_1", "nowhere"));
    let nowhere = app.api.admin(Method::PUT, &route, Some(json!({"secret":"nowhere-key-0001"}))).await.expect(400);
    assert_eq!(nowhere["error"]["field"], "validate");

    let audit = app.api.admin(Method::GET, "/admin/v1/audit?action=credential.set&limit=1000", None).await.expect(200);
    let outcomes: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["details"]["validation"].as_str()).collect();
    assert!(outcomes.contains(&"valid") && outcomes.contains(&"invalid") && outcomes.contains(&"unreachable"));
}

/// The store opened as `tollgate vault rotate` opens it.
async fn rotating_store(db: &TestDb, current: &str, old: &str) -> (tollgate_store::Store, tollgate_vault::Keyring) {
    let mut env = db.env();
    env.push(("TOLLGATE_MASTER_KEY".into(), current.into()));
    env.push(("TOLLGATE_MASTER_KEYS_OLD".into(), old.into()));
    let config = Config::from_sources(None, &env).unwrap();
    let (keyring, new_key) = tollgate_server::app::load_keyring(&config).unwrap();
    assert!(new_key.is_none());
    (tollgate_server::app::open_store(&config).await.unwrap(), keyring)
}

async fn rotation_goes_in_batches_takes_only_what_is_left_and_a_second_run_finds_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, b) = (new_master_key(), new_master_key());
    let under_a = TestApp::start_on(&db, &[("TOLLGATE_MASTER_KEY", &a)]).await;
    let api = Api::new(under_a.addr);
    for i in 1..=5 {
        api.create_user(&format!("u_{i}"), "free").await;
        set(&api, &format!("u_{i}"), "openai", &format!("sk-secret-of-user-{i}")).await;
    }
    under_a.shutdown().await.unwrap();
    // Half-way through a move to B: instances run with B and the old A, so
    // a new credential is sealed under B while the others are still under A.
    let both = TestApp::start_on(&db, &[("TOLLGATE_MASTER_KEY", &b), ("TOLLGATE_MASTER_KEYS_OLD", &a)]).await;
    let api = Api::new(both.addr);
    api.create_user("u_6", "free").await;
    set(&api, "u_6", "openai", "sk-secret-of-user-6").await;
    let service = service_key(&api, &["credentials:read"]).await;
    assert_eq!(resolve(&api, &service, "u_1", "openai").await.expect(200)["secret"], "sk-secret-of-user-1");
    both.shutdown().await.unwrap();

    let (store, keyring) = rotating_store(&db, &b, &a).await;
    let mut progress = Vec::new();
    let report = tollgate_server::vault::rotate(&store, &keyring, 2, |done| progress.push(done)).await.unwrap();
    assert_eq!((report.total, report.resealed, report.changed_meanwhile), (5, 5, 0), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(progress, [2, 4, 5], "batches of two");
    let mut again = Vec::new();
    let second = tollgate_server::vault::rotate(&store, &keyring, 2, |done| again.push(done)).await.unwrap();
    assert_eq!((second.total, second.resealed), (0, 0), "nothing is left for a second run");
    assert!(again.is_empty());
    store.close().await;

    let only_b = TestApp::start_on(&db, &[("TOLLGATE_MASTER_KEY", &b)]).await;
    let api = Api::new(only_b.addr);
    for i in 1..=6 {
        let got = resolve(&api, &service, &format!("u_{i}"), "openai").await.expect(200);
        assert_eq!(got["secret"], format!("sk-secret-of-user-{i}"));
    }
    let audit = api.admin(Method::GET, "/admin/v1/audit?action=credential.rotated", None).await.expect(200);
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e["actor"] == "system" && e["details"]["to_key"] == key_id(&b)), "{audit}");
    only_b.shutdown().await.unwrap();
}

fn with_keys(db: &TestDb, current: &str, old: Option<&str>) -> Vec<(String, String)> {
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_MASTER_KEY".into(), current.into()));
    if let Some(old) = old {
        env.push(("TOLLGATE_MASTER_KEYS_OLD".into(), old.into()));
    }
    env
}

fn output_of(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn rotation_end_to_end_with_the_real_binary(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cwd = db.dir.path();
    let (a, b) = (new_master_key(), new_master_key());
    let mut first = BinApp::start(cwd, &with_keys(&db, &a, None), &[], "key-a");
    first.api.create_user("u_42", "free").await;
    set(&first.api, "u_42", "openai", "sk-rotated-secret-0042").await;
    set(&first.api, "u_42", "anthropic", "sk-ant-rotated-secret-0043").await;
    let service = service_key(&first.api, &["credentials:read"]).await;
    assert!(first.terminate());

    let rotate = ["vault", "rotate", "--batch-size", "1"];
    let out = run_binary(cwd, &with_keys(&db, &b, Some(&a)), &rotate);
    assert!(out.status.success(), "{}", output_of(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("re-encrypted 2 of 2 credentials under master key {}", key_id(&b))), "{printed}");
    assert!(printed.contains("no longer needed"), "{printed}");
    let again = run_binary(cwd, &with_keys(&db, &b, Some(&a)), &rotate);
    assert!(String::from_utf8_lossy(&again.stdout).contains("re-encrypted 0 of 0"), "{}", output_of(&again));

    let second = BinApp::start(cwd, &with_keys(&db, &b, None), &[], "key-b");
    let got = resolve(&second.api, &service, "u_42", "openai").await.expect(200);
    assert_eq!((got["source"].as_str(), got["secret"].as_str()), (Some("byok"), Some("sk-rotated-secret-0042")));
    let got = resolve(&second.api, &service, "u_42", "anthropic").await.expect(200);
    assert_eq!(got["secret"], "sk-ant-rotated-secret-0043");
    let output = format!("{}{}", output_of(&out), second.output());
    for secret in [a.as_str(), b.as_str(), "sk-rotated-secret", "sk-ant-rotated"] {
        assert!(!output.contains(secret), "the output shows a secret");
    }
}

async fn a_wrong_master_key_at_start_is_reported_clearly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cwd = db.dir.path();
    let (a, c) = (new_master_key(), new_master_key());
    let mut first = BinApp::start(cwd, &with_keys(&db, &a, None), &[], "key-a");
    first.api.create_user("u_1", "free").await;
    set(&first.api, "u_1", "openai", "sk-set-under-key-a-0001").await;
    assert!(first.terminate());

    let refused = run_binary(cwd, &with_keys(&db, &c, None), &["serve"]);
    assert!(!refused.status.success(), "a start with the wrong key fails");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for expected in
        ["master key does not match", &key_id(&a), &key_id(&c), "TOLLGATE_MASTER_KEY", "TOLLGATE_MASTER_KEYS_OLD"]
    {
        assert!(stderr.contains(expected), "{stderr:?} should say {expected:?}");
    }
    assert!(!stderr.contains(&a) && !stderr.contains(&c), "the keys themselves are not shown");

    // Without TOLLGATE_MASTER_KEY a new key file would be made: it does not
    // fit either, the start is refused, and no key file is left behind.
    let mut no_key = with_keys(&db, &c, None);
    no_key.retain(|(k, _)| k != "TOLLGATE_MASTER_KEY");
    let refused = run_binary(cwd, &no_key, &["serve"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("master key does not match"));
    assert!(!db.data_dir().join("master.key").exists(), "a refused start leaves no key file");

    // With the old key listed as retired, it starts and reads the credential.
    let second = BinApp::start(cwd, &with_keys(&db, &c, Some(&a)), &[], "retired-a");
    let service = service_key(&second.api, &["credentials:read"]).await;
    assert_eq!(resolve(&second.api, &service, "u_1", "openai").await.expect(200)["secret"], "sk-set-under-key-a-0001");
}

/// Two instances that each made their own key file (no
/// TOLLGATE_MASTER_KEY) would seal secrets the other cannot open: the
/// database remembers the key it was set up with, and a start with another
/// is refused even while nothing is sealed yet.
async fn instances_sharing_a_database_must_share_its_master_key_before_anything_is_sealed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (a, c) = (new_master_key(), new_master_key());
    let first = TestApp::start_on(&db, &[("TOLLGATE_MASTER_KEY", &a)]).await;
    let config = |key: &str| {
        let mut env = db.env();
        env.push(("TOLLGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        env.push(("TOLLGATE_MASTER_KEY".into(), key.into()));
        tollgate_server::Config::from_sources(None, &env).unwrap()
    };
    let refused = tollgate_server::start(config(&c)).await.err().expect("another key is refused");
    let message = refused.to_string();
    for expected in ["master key does not match the database", &key_id(&a), &key_id(&c), "TOLLGATE_MASTER_KEY"] {
        assert!(message.contains(expected), "{message:?} should say {expected:?}");
    }
    assert!(!message.contains(&a) && !message.contains(&c), "the keys themselves are not shown");
    // The same key is welcome.
    let second = tollgate_server::start(config(&a)).await.expect("the same key starts");
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
}

async fn no_plaintext_in_the_store_logs_or_audit_log_after_set_validate_resolve_and_rotate(backend: Backend) {
    let good = "sk-validated-byok-0001";
    let mock = mock_llm(&[good]).await;
    let db = TestDb::new(backend).await;
    let cwd = db.dir.path();
    let (a, b) = (new_master_key(), new_master_key());
    let platform = "sk-platform-key-of-the-app-0002";
    let with_logs = |key: &str, old: Option<&str>| {
        let mut env = with_keys(&db, key, old);
        env.push(("TOLLGATE_LOG_FORMAT".into(), "json".into()));
        env.push(("TOLLGATE_LOG".into(), "debug".into()));
        env.push(("TOLLGATE_OPENAI_BASE_URL".into(), mock.openai_base_url()));
        env.push(("OPENAI_API_KEY".into(), platform.into()));
        env
    };
    let secrets = [good, "sk-refused-byok-0003", "gsk_unvalidated-byok-0004", "sk-via-self-service-0005"];

    let mut first = BinApp::start(cwd, &with_logs(&a, None), &[], "first");
    for user in ["u_1", "u_2", "u_3"] {
        first.api.create_user(user, "free").await;
    }
    let route = format!("{}?validate=true", path("u_1", "openai"));
    let valid = first.api.admin(Method::PUT, &route, Some(json!({"secret": secrets[0]}))).await.expect(200);
    assert_eq!(valid["validation"]["outcome"], "valid");
    let route = format!("{}?validate=true", path("u_2", "openai"));
    let invalid = first.api.admin(Method::PUT, &route, Some(json!({"secret": secrets[1]}))).await.expect(200);
    assert_eq!(invalid["validation"]["outcome"], "invalid");
    set(&first.api, "u_1", "groq", secrets[2]).await;
    let own = first.api.create_key("u_2", json!({"scopes":["credentials:manage"]})).await;
    let own = own["key"].as_str().unwrap().to_owned();
    let body = json!({ "secret": secrets[3] });
    first
        .api
        .call(
            Method::PUT,
            "/v1/me/credentials/anthropic",
            Some(&own),
            Some(json!({"secret":"sk-ant-via-self-service-0005"})),
        )
        .await
        .expect(200);
    first.api.call(Method::PUT, "/v1/me/credentials/together", Some(&own), Some(body)).await.expect(200);
    let service = service_key(&first.api, &["credentials:read"]).await;
    assert_eq!(resolve(&first.api, &service, "u_1", "openai").await.expect(200)["secret"], secrets[0]);
    let platform_reply = resolve(&first.api, &service, "u_3", "openai").await.expect(200);
    assert_eq!(
        (platform_reply["source"].as_str(), platform_reply["secret"].as_str()),
        (Some("platform"), Some(platform))
    );
    assert!(first.terminate());

    let rotated = run_binary(cwd, &with_logs(&b, Some(&a)), &["vault", "rotate"]);
    assert!(rotated.status.success(), "{}", output_of(&rotated));

    let mut second = BinApp::start(cwd, &with_logs(&b, None), &[], "second");
    assert_eq!(resolve(&second.api, &service, "u_2", "together").await.expect(200)["secret"], secrets[3]);
    let audit = second.api.admin(Method::GET, "/admin/v1/audit?limit=1000", None).await.expect(200);
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["credential.set", "credential.resolved", "credential.rotated", "key.created"] {
        assert!(actions.contains(&action), "{action} is audited: {actions:?}");
    }
    assert!(second.terminate());

    let logs = format!("{}{}{}", first.output(), output_of(&rotated), second.output());
    assert!(logs.contains("\"level\":\"DEBUG\""), "the logs are at debug level");
    let audit = audit.to_string();
    let dump = db.dump();
    assert!(dump.contains("credential.resolved"), "the dump holds the audit log");
    let mut everything = secrets.to_vec();
    everything.extend([
        "sk-ant-via-self-service-0005",
        platform,
        a.as_str(),
        b.as_str(),
        ADMIN_TOKEN,
        own.as_str(),
        service.as_str(),
    ]);
    for secret in everything {
        let middle = &secret[2..secret.len() - 4];
        for (place, text) in [("the store", &dump), ("the logs", &logs), ("the audit log", &audit)] {
            assert!(!text.contains(middle), "a secret ({}…) in {place}", &secret[..4]);
        }
    }
}
