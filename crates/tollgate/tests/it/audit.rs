//! Issue #4, the audit log: who did what, to which thing, from where, for
//! keys, plans, plan changes, usage resets and credentials; filtered by
//! user, action and time, a page at a time; never a secret.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_domain::Timestamp;

use crate::both_stores;
use crate::common::{Api, Backend, TestApp, service_key};

both_stores!(the_audit_log_records_who_did_what_from_where_and_filters_by_user_action_and_time);

async fn audit(api: &Api, query: &str) -> Value {
    api.admin(Method::GET, &format!("/admin/v1/audit{query}"), None).await.expect(200)
}

fn actions(page: &Value) -> Vec<String> {
    page["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

async fn the_audit_log_records_who_did_what_from_where_and_filters_by_user_action_and_time(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let api = &app.api;
    let before = Timestamp::now();
    assert_eq!(audit(api, "").await["entries"], json!([]));

    api.admin(Method::POST, "/admin/v1/plans", Some(json!({"slug":"team"}))).await.expect(201);
    api.admin(Method::PATCH, "/admin/v1/plans/team", Some(json!({"rpm":60}))).await.expect(200);
    api.admin(Method::POST, "/admin/v1/plans", Some(json!({"slug":"scratch"}))).await.expect(201);
    api.admin(Method::DELETE, "/admin/v1/plans/scratch", None).await.expect(204);
    api.create_user("u_1", "free").await;
    api.create_user("u_2", "free").await;
    let body = json!({"plan":"team","reset_usage":true});
    api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(body)).await.expect(200);
    api.admin(Method::POST, "/admin/v1/users/u_1/usage/reset", None).await.expect(200);
    let first = api.create_key("u_1", json!({"scopes":["proxy","keys:manage","credentials:manage"]})).await;
    let rotated = api
        .admin(Method::POST, &format!("/admin/v1/keys/{}/rotate", first["id"].as_str().unwrap()), None)
        .await
        .expect(201);
    let user_key = rotated["key"].as_str().unwrap().to_owned();
    let own = api.call(Method::POST, "/v1/me/keys", Some(&user_key), Some(json!({"name":"laptop"}))).await.expect(201);
    let own_id = own["id"].as_str().unwrap().to_owned();
    api.call(Method::DELETE, &format!("/v1/me/keys/{own_id}"), Some(&user_key), None).await.expect(204);
    let secret = json!({"secret":"sk-audited-secret-0001"});
    api.call(Method::PUT, "/v1/me/credentials/openai", Some(&user_key), Some(secret)).await.expect(200);
    let service = service_key(api, &["credentials:read"]).await;
    let body = json!({"user_id":"u_1","provider":"openai"});
    api.call(Method::POST, "/v1/credentials/resolve", Some(&service), Some(body)).await.expect(200);
    api.admin(Method::DELETE, "/admin/v1/users/u_1/credentials/openai", None).await.expect(204);
    api.create_key("u_2", json!({})).await;

    let all = audit(api, "?limit=1000").await;
    assert_eq!(
        actions(&all),
        [
            "key.created",
            "credential.removed",
            "credential.resolved",
            "key.created",
            "credential.set",
            "key.revoked",
            "key.created",
            "key.rotated",
            "key.created",
            "usage.reset",
            "user.plan_changed",
            "plan.deleted",
            "plan.created",
            "plan.updated",
            "plan.created",
        ],
        "every audited action, newest first"
    );
    assert!(all["next_cursor"].is_null());
    let entries = all["entries"].as_array().unwrap();
    let by = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap().clone();
    let user_key_id = rotated["id"].as_str().unwrap();
    assert_eq!(by("credential.set")["actor"], user_key_id, "a user acting with their key is named by it");
    assert_eq!(by("credential.set")["target"], "credential:u_1/openai");
    assert_eq!(by("credential.removed")["actor"], "admin");
    assert_eq!(by("key.revoked")["target"], format!("key:{own_id}"));
    assert_eq!(by("key.revoked")["actor"], user_key_id);
    assert_eq!(by("key.rotated")["details"]["replaces"], first["id"]);
    assert_eq!(by("user.plan_changed")["details"], json!({"from":"free","to":"team","reset_usage":"true"}));
    assert_eq!(by("usage.reset")["target"], "user:u_1");
    assert_eq!(by("plan.updated")["target"], "plan:team");
    let service_created = &entries[3];
    assert!(service_created["user_id"].is_null() && service_created["details"]["kind"] == "service");
    for entry in entries {
        assert_eq!(entry["client_ip"], "127.0.0.1", "{entry}");
        let time = Timestamp::parse_rfc3339(entry["time"].as_str().unwrap()).unwrap();
        assert!(time >= before);
    }
    let text = all.to_string();
    for secret in ["sk-audited-secret-0001", &user_key, &service, first["key"].as_str().unwrap()] {
        assert!(!text.contains(&secret[3..]), "a secret in the audit log");
    }

    // Filters: user, action (or family), time.
    let mine = audit(api, "?user=u_1&limit=1000").await;
    assert_eq!(mine["entries"].as_array().unwrap().len(), 9);
    assert!(mine["entries"].as_array().unwrap().iter().all(|e| e["user_id"] == "u_1"));
    assert!(!actions(&mine).iter().any(|a| a.starts_with("plan.")));
    assert!(actions(&audit(api, "?action=key").await).iter().all(|a| a.starts_with("key.")));
    assert_eq!(actions(&audit(api, "?action=key").await).len(), 6);
    assert_eq!(actions(&audit(api, "?action=credential.set").await), ["credential.set"]);
    assert_eq!(actions(&audit(api, "?user=u_2&action=key.created").await), ["key.created"]);
    let later = Timestamp::now().plus_seconds(60).to_rfc3339();
    assert_eq!(audit(api, &format!("?since={later}")).await["entries"], json!([]));
    assert_eq!(audit(api, &format!("?until={}", before.to_rfc3339())).await["entries"], json!([]));
    assert_eq!(actions(&audit(api, &format!("?since={}&until={later}", before.to_rfc3339())).await).len(), 15);

    // Pages follow the cursor to the end, each entry once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = audit(api, &format!("?limit=4{cursor}")).await;
        seen.extend(page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, ids);

    for (query, field) in [
        ("?action=key.stolen", "action"),
        ("?limit=0", "limit"),
        ("?cursor=abc", "cursor"),
        ("?since=yesterday", "query"),
        ("?color=red", "query"),
    ] {
        let reply = api.admin(Method::GET, &format!("/admin/v1/audit{query}"), None).await.expect(400);
        assert_eq!(reply["error"]["field"], field, "{query}: {reply}");
    }
}
