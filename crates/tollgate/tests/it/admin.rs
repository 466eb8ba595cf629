//! Plans and users through the admin API.

use reqwest::Method;
use serde_json::json;

use crate::both_stores;
use crate::common::{Backend, TestApp};

both_stores!(
    default_plans_exist_after_the_first_start,
    plans_can_be_created_read_updated_and_deleted,
    a_plan_in_use_cannot_be_deleted,
    users_can_be_created_listed_updated_and_deleted,
    a_user_changes_plan_and_reset_usage_moves_the_anchor,
    malformed_json_and_wrong_types_get_400_naming_the_field,
    concurrent_changes_to_one_user_keep_each_other,
    a_plan_change_between_kinds_of_period_uses_the_new_plans_period,
);

/// Counters are kept per period: a move between plans that count different
/// kinds of period goes to the new plan's own period (and back again); a
/// plan with users keeps its kind of period, since changing it would start
/// every one of them over.
async fn a_plan_change_between_kinds_of_period_uses_the_new_plans_period(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let api = &app.api;
    let plan = json!({ "slug": "once", "period": "lifetime", "limits": { "tokens": 1000 } });
    api.admin(Method::POST, "/admin/v1/plans", Some(plan)).await.expect(201);
    api.create_user("u_1", "free").await;
    let record = |id: &str, tokens: i64| {
        let event = json!({ "id": id, "user_id": "u_1", "input_tokens": tokens });
        api.admin(Method::POST, "/v1/usage/events", Some(json!({ "events": [event] })))
    };
    let used = || async {
        let usage = api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
        (usage["plan"].as_str().unwrap().to_owned(), usage["meters"]["tokens"]["used"].as_i64().unwrap())
    };
    record("evt_1", 40).await.expect(200);
    api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({ "plan": "once" }))).await.expect(200);
    assert_eq!(used().await, ("once".to_owned(), 0), "the lifetime period has its own counters");
    record("evt_2", 10).await.expect(200);
    assert_eq!(used().await.1, 10);
    api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({ "plan": "free" }))).await.expect(200);
    assert_eq!(used().await, ("free".to_owned(), 40), "the month's counters are as they were");
    let lifetime = api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200)["lifetime"].clone();
    assert_eq!(lifetime["tokens"], 50, "{lifetime}");

    let change = json!({ "period": "month" });
    api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({ "plan": "once" }))).await.expect(200);
    let conflict = api.admin(Method::PATCH, "/admin/v1/plans/once", Some(change.clone())).await.expect(409);
    assert!(conflict["error"]["message"].as_str().unwrap().starts_with("period: "), "{conflict}");
    assert_eq!(api.admin(Method::GET, "/admin/v1/plans/once", None).await.expect(200)["period"], "lifetime");
    api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({ "plan": "free" }))).await.expect(200);
    let changed = api.admin(Method::PATCH, "/admin/v1/plans/once", Some(change)).await.expect(200);
    assert_eq!(changed["period"], "month");
}

/// A change to one field never writes back another field as it was read
/// before a concurrent change (a plan change amid e-mail edits).
async fn concurrent_changes_to_one_user_keep_each_other(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..5 {
        let user = format!("u_{round}");
        app.api.create_user(&user, "free").await;
        let path = format!("/admin/v1/users/{user}");
        let edits = (0..20).map(|i| {
            let (api, path) = (app.api.clone(), path.clone());
            tokio::spawn(async move {
                let body = json!({ "email": format!("a{i}@example.com") });
                api.admin(Method::PATCH, &path, Some(body)).await.expect(200);
            })
        });
        let edits: Vec<_> = edits.collect();
        let body = json!({ "plan": "pro" });
        app.api.admin(Method::PUT, &format!("{path}/plan"), Some(body)).await.expect(200);
        for edit in edits {
            edit.await.unwrap();
        }
        let stored = app.api.admin(Method::GET, &path, None).await.expect(200);
        assert_eq!(stored["plan"], "pro", "round {round}: the plan change was kept: {stored}");
        assert!(stored["email"].as_str().unwrap().ends_with("@example.com"));
    }
}

async fn default_plans_exist_after_the_first_start(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plans = app.api.admin(Method::GET, "/admin/v1/plans", None).await.expect(200);
    let slugs: Vec<&str> = plans["plans"].as_array().unwrap().iter().map(|p| p["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["free", "pro", "enterprise"]);
    let enterprise = app.api.admin(Method::GET, "/admin/v1/plans/enterprise", None).await.expect(200);
    assert!(enterprise["limits"].as_object().unwrap().values().all(|v| v.is_null()), "{enterprise}");
    assert!(enterprise["rpm"].is_null() && enterprise["tpm"].is_null());
    let free = app.api.admin(Method::GET, "/admin/v1/plans/free", None).await.expect(200);
    assert!(free["limits"]["tokens"].as_i64().unwrap() > 0);
}

async fn plans_can_be_created_read_updated_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"slug":"team","name":"Team","period":"anchored","limits":{"tokens":100000,"requests":null},
                      "rpm":60,"tpm":null,"byok_counts":true,"stripe_price_id":"price_team"});
    let plan = app.api.admin(Method::POST, "/admin/v1/plans", Some(body.clone())).await.expect(201);
    assert_eq!(plan["slug"], "team");
    assert_eq!(plan["period"], "anchored");
    assert_eq!(plan["limits"], json!({"tokens":100000,"requests":null}));
    assert_eq!(plan["rpm"], 60);
    assert_eq!(plan["byok_counts"], true);
    assert_eq!(plan["stripe_price_id"], "price_team");
    assert_eq!(plan["alert_thresholds"], json!([75, 90, 100]));

    let again = app.api.admin(Method::POST, "/admin/v1/plans", Some(body)).await;
    assert_eq!(again.expect(409)["error"]["type"], "conflict");

    let patched = app
        .api
        .admin(Method::PATCH, "/admin/v1/plans/team", Some(json!({"limits":{"tokens":5},"rpm":null})))
        .await
        .expect(200);
    assert_eq!(patched["limits"], json!({"tokens":5}));
    assert!(patched["rpm"].is_null());
    assert_eq!(patched["stripe_price_id"], "price_team", "PATCH keeps what it was not given");

    let replaced = app.api.admin(Method::PUT, "/admin/v1/plans/team", Some(json!({"name":"Team 2"}))).await.expect(200);
    assert_eq!(replaced["name"], "Team 2");
    assert!(replaced["stripe_price_id"].is_null(), "PUT replaces the whole plan");
    assert_eq!(replaced["period"], "month");

    assert_eq!(app.api.admin(Method::GET, "/admin/v1/plans/team", None).await.expect(200)["name"], "Team 2");
    app.api.admin(Method::DELETE, "/admin/v1/plans/team", None).await.expect(204);
    app.api.admin(Method::GET, "/admin/v1/plans/team", None).await.expect(404);
    app.api.admin(Method::DELETE, "/admin/v1/plans/team", None).await.expect(404);
}

async fn a_plan_in_use_cannot_be_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "pro").await;
    let refused = app.api.admin(Method::DELETE, "/admin/v1/plans/pro", None).await.expect(409);
    assert!(refused["error"]["message"].as_str().unwrap().contains("in use"));
    app.api.admin(Method::GET, "/admin/v1/plans/pro", None).await.expect(200);
    app.api.admin(Method::DELETE, "/admin/v1/users/u_1", None).await.expect(204);
    app.api.admin(Method::DELETE, "/admin/v1/plans/pro", None).await.expect(204);
}

async fn users_can_be_created_listed_updated_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .api
        .admin(Method::POST, "/admin/v1/users", Some(json!({"id":"u_42","plan":"free","email":"a@b.c"})))
        .await
        .expect(201);
    assert_eq!(created["id"], "u_42");
    assert_eq!(created["plan"], "free");
    assert_eq!(created["status"], "active");
    assert_eq!(created["email"], "a@b.c");

    // The app's own ids may hold characters that need encoding in a path.
    app.api.create_user("auth0|a/b", "pro").await;
    let odd = app.api.admin(Method::GET, "/admin/v1/users/auth0%7Ca%2Fb", None).await.expect(200);
    assert_eq!(odd["id"], "auth0|a/b");

    app.api.admin(Method::POST, "/admin/v1/users", Some(json!({"id":"u_42"}))).await.expect(409);
    let unknown_plan = app.api.admin(Method::POST, "/admin/v1/users", Some(json!({"id":"u_9","plan":"gold"}))).await;
    assert_eq!(unknown_plan.expect(400)["error"]["field"], "plan");

    let page = app.api.admin(Method::GET, "/admin/v1/users?limit=1", None).await.expect(200);
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest =
        app.api.admin(Method::GET, &format!("/admin/v1/users?cursor={}", urlencode(&cursor)), None).await.expect(200);
    assert_eq!(rest["users"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    let pro = app.api.admin(Method::GET, "/admin/v1/users?plan=pro", None).await.expect(200);
    assert_eq!(pro["users"][0]["id"], "auth0|a/b");

    let updated = app
        .api
        .admin(Method::PATCH, "/admin/v1/users/u_42", Some(json!({"email":null,"stripe_customer_id":"cus_1"})))
        .await
        .expect(200);
    assert!(updated["email"].is_null());
    assert_eq!(updated["stripe_customer_id"], "cus_1");
    app.api.admin(Method::DELETE, "/admin/v1/users/u_42", None).await.expect(204);
    app.api.admin(Method::GET, "/admin/v1/users/u_42", None).await.expect(404);
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn a_user_changes_plan_and_reset_usage_moves_the_anchor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.api.create_user("u_1", "free").await;
    let kept = app.api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({"plan":"pro"}))).await.expect(200);
    assert_eq!(kept["plan"], "pro");
    assert_eq!(kept["billing_anchor"], user["billing_anchor"]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let reset = app
        .api
        .admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({"plan":"enterprise","reset_usage":true})))
        .await
        .expect(200);
    assert_eq!(reset["plan"], "enterprise");
    assert!(reset["billing_anchor"].as_str().unwrap() > user["billing_anchor"].as_str().unwrap());
    let missing = app.api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({"plan":"nope"}))).await;
    assert_eq!(missing.expect(400)["error"]["field"], "plan");
}

/// Every admin route that takes a body, with broken bodies: always 400 with
/// the field at fault named, never 500.
async fn malformed_json_and_wrong_types_get_400_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = app.api.create_key("u_1", json!({})).await;
    let key_id = key["id"].as_str().unwrap();
    let rotate = format!("/admin/v1/keys/{key_id}/rotate");
    let cases: Vec<(Method, &str, &str, &str)> = vec![
        (Method::POST, "/admin/v1/plans", "{\"slug\":", "body"),
        (Method::POST, "/admin/v1/plans", "[]", "body"),
        (Method::POST, "/admin/v1/plans", "{}", "slug"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"Bad Slug"}"#, "slug"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","limits":{"tokens":"many"}}"#, "limits.tokens"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","limits":{"tokens":-1}}"#, "limits"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","period":"weekly"}"#, "period"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","rpm":"fast"}"#, "rpm"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","rpm":0}"#, "rpm"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","byok_counts":"yes"}"#, "byok_counts"),
        (Method::POST, "/admin/v1/plans", r#"{"slug":"x","colour":"red"}"#, "colour"),
        (Method::PUT, "/admin/v1/plans/free", r#"{"limits":[1]}"#, "limits"),
        (Method::PATCH, "/admin/v1/plans/free", r#"{"alert_thresholds":[150]}"#, "alert_thresholds"),
        (Method::PATCH, "/admin/v1/plans/free", "not json", "body"),
        (Method::POST, "/admin/v1/users", "", "body"),
        (Method::POST, "/admin/v1/users", r#"{"plan":"free"}"#, "id"),
        (Method::POST, "/admin/v1/users", r#"{"id":42}"#, "id"),
        (Method::POST, "/admin/v1/users", r#"{"id":""}"#, "id"),
        (Method::POST, "/admin/v1/users", r#"{"id":"u_2","email":"nope"}"#, "email"),
        (Method::PATCH, "/admin/v1/users/u_1", r#"{"status":"gone"}"#, "status"),
        (Method::PATCH, "/admin/v1/users/u_1", r#"{"email":7}"#, "email"),
        (Method::PUT, "/admin/v1/users/u_1/plan", "{}", "plan"),
        (Method::PUT, "/admin/v1/users/u_1/plan", r#"{"plan":"pro","reset_usage":"yes"}"#, "reset_usage"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"scopes":["admin"]}"#, "scopes[0]"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"scopes":"proxy"}"#, "scopes"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"scopes":[]}"#, "scopes"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"scopes":["credentials:read"]}"#, "scopes"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"expires_at":"tomorrow"}"#, "expires_at"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"expires_at":"2001-01-01T00:00:00Z"}"#, "expires_at"),
        (Method::POST, "/admin/v1/users/u_1/keys", r#"{"name":""}"#, "name"),
        (Method::POST, &rotate, r#"{"grace_seconds":-5}"#, "grace_seconds"),
        (Method::POST, &rotate, r#"{"grace_seconds":"soon"}"#, "grace_seconds"),
        (Method::POST, "/admin/v1/service-keys", "{}", "scopes"),
        (Method::POST, "/admin/v1/service-keys", r#"{"scopes":["proxy"]}"#, "scopes"),
        (Method::POST, "/admin/v1/service-keys", r#"{"scopes":["meter"],"name":5}"#, "name"),
    ];
    for (method, path, body, field) in cases {
        let reply = app.api.raw(method.clone(), path, Some(crate::common::ADMIN_TOKEN), Some(body.to_owned())).await;
        assert_eq!(reply.status.as_u16(), 400, "{method} {path} {body}: {}", reply.body);
        assert_eq!(reply.body["error"]["type"], "invalid_request", "{method} {path} {body}");
        assert_eq!(reply.body["error"]["field"], field, "{method} {path} {body}: {}", reply.body);
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Nothing stored was changed by any of them.
    let free = app.api.admin(Method::GET, "/admin/v1/plans/free", None).await.expect(200);
    assert_eq!(free["alert_thresholds"], json!([75, 90, 100]));
    let keys = app.api.admin(Method::GET, "/admin/v1/users/u_1/keys", None).await.expect(200);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    // Bad path parameters too.
    let bad_key = app.api.admin(Method::DELETE, "/admin/v1/keys/nonsense", None).await.expect(400);
    assert_eq!(bad_key["error"]["field"], "key_id");
    let bad_slug = app.api.admin(Method::GET, "/admin/v1/plans/NOT%20A%20SLUG", None).await.expect(400);
    assert_eq!(bad_slug["error"]["field"], "slug");
}
