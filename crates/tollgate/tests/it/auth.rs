//! Authentication: where credentials come from, what each may reach, and
//! how repeated failures are slowed down.

use reqwest::Method;
use serde_json::json;

use crate::both_stores;
use crate::common::{Backend, TestApp};

both_stores!(
    a_key_is_accepted_from_every_documented_place,
    a_bad_checksum_is_refused_before_any_lookup,
    a_user_key_gets_401_or_403_on_every_admin_route,
    a_suspended_users_keys_get_403_until_unsuspended,
    repeated_failures_from_one_ip_are_slowed_down,
);

async fn a_key_is_accepted_from_every_documented_place(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/me", app.api.base);
    let http = &app.api.http;
    let requests = [
        http.get(&url).header("Authorization", format!("Bearer {key}")),
        http.get(&url).header("X-API-Key", &key),
        http.get(&url).header("x-api-key", &key),
        http.get(&url).header("x-goog-api-key", &key),
        http.get(format!("{url}?key={key}")),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<serde_json::Value>().await.unwrap()["user_id"], "u_1");
    }
    let none = app.api.call(Method::GET, "/v1/me", None, None).await.expect(401);
    assert_eq!(none["error"]["type"], "unauthorized");
}

async fn a_bad_checksum_is_refused_before_any_lookup(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    let mut broken = key.clone().into_bytes();
    broken[20] = if broken[20] == b'A' { b'B' } else { b'A' };
    let broken = String::from_utf8(broken).unwrap();
    let refused = app.api.me(&broken).await.expect(401);
    assert!(refused["error"]["message"].as_str().unwrap().contains("checksum"), "{refused}");
    assert!(!refused.to_string().contains(&broken));
    let unknown = tollgate_domain::GatewayKey::generate();
    let refused = app.api.me(unknown.expose()).await.expect(401);
    assert!(refused["error"]["message"].as_str().unwrap().contains("not known"), "{refused}");
    let metrics = app.api.http.get(format!("{}/metrics", app.api.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("reason=\"malformed\""), "malformed keys are counted apart");
}

/// Every admin route: with a user's key, 403; with no or a wrong
/// credential, 401. Never 2xx.
async fn a_user_key_gets_401_or_403_on_every_admin_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let created = app
        .api
        .create_key("u_1", json!({"scopes":["proxy","usage:read","keys:manage","credentials:manage","meter"]}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    let routes = [
        (Method::GET, "/admin/v1/plans".to_owned()),
        (Method::POST, "/admin/v1/plans".to_owned()),
        (Method::GET, "/admin/v1/plans/free".to_owned()),
        (Method::PUT, "/admin/v1/plans/free".to_owned()),
        (Method::PATCH, "/admin/v1/plans/free".to_owned()),
        (Method::DELETE, "/admin/v1/plans/free".to_owned()),
        (Method::GET, "/admin/v1/users".to_owned()),
        (Method::POST, "/admin/v1/users".to_owned()),
        (Method::GET, "/admin/v1/users/u_1".to_owned()),
        (Method::PATCH, "/admin/v1/users/u_1".to_owned()),
        (Method::DELETE, "/admin/v1/users/u_1".to_owned()),
        (Method::POST, "/admin/v1/users/u_1/suspend".to_owned()),
        (Method::POST, "/admin/v1/users/u_1/unsuspend".to_owned()),
        (Method::PUT, "/admin/v1/users/u_1/plan".to_owned()),
        (Method::GET, "/admin/v1/users/u_1/keys".to_owned()),
        (Method::POST, "/admin/v1/users/u_1/keys".to_owned()),
        (Method::GET, format!("/admin/v1/keys/{key_id}")),
        (Method::DELETE, format!("/admin/v1/keys/{key_id}")),
        (Method::POST, format!("/admin/v1/keys/{key_id}/rotate")),
        (Method::GET, "/admin/v1/service-keys".to_owned()),
        (Method::POST, "/admin/v1/service-keys".to_owned()),
        (Method::DELETE, format!("/admin/v1/service-keys/{key_id}")),
    ];
    let body = Some(json!({"plan":"pro","id":"u_x","slug":"x","scopes":["meter"]}));
    for (method, path) in &routes {
        let with_key = app.api.call(method.clone(), path, Some(&key), body.clone()).await;
        assert_eq!(with_key.status.as_u16(), 403, "{method} {path} with a user key: {}", with_key.body);
        assert_eq!(with_key.body["error"]["type"], "forbidden");
        let without = app.api.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(without.status.as_u16(), 401, "{method} {path} without credential");
    }
    // Nothing was changed by any of those calls.
    assert_eq!(app.api.me(&key).await.expect(200)["user_id"], "u_1");
    app.api.admin(Method::GET, "/admin/v1/plans/free", None).await.expect(200);
}

async fn a_suspended_users_keys_get_403_until_unsuspended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    app.api.me(&key).await.expect(200);
    let user = app.api.admin(Method::POST, "/admin/v1/users/u_1/suspend", None).await.expect(200);
    assert_eq!(user["status"], "suspended");
    let refused = app.api.me(&key).await.expect(403);
    assert_eq!(refused["error"]["type"], "forbidden");
    app.api.admin(Method::POST, "/admin/v1/users/u_1/unsuspend", None).await.expect(200);
    app.api.me(&key).await.expect(200);
}

async fn repeated_failures_from_one_ip_are_slowed_down(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_AUTH_FAILURE_LIMIT", "5")]).await;
    app.api.create_user("u_1", "free").await;
    let good = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        let wrong = tollgate_domain::GatewayKey::generate();
        app.api.me(wrong.expose()).await.expect(401);
    }
    let blocked = app.api.me(tollgate_domain::GatewayKey::generate().expose()).await;
    let retry_after: u64 = blocked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(blocked.expect(429)["error"]["type"], "rate_limited");
    // While blocked, even a good key from that address waits: guessing
    // cannot go on by telling 401 from 200.
    app.api.me(&good).await.expect(429);
    // The admin is refused too, being on the same address.
    app.api.admin(Method::GET, "/admin/v1/plans", None).await.expect(429);
}
