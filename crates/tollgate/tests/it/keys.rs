//! Gateway keys: format, storage, revocation, rotation, expiry, last use.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_domain::{GatewayKey, KeyHash};

use crate::both_stores;
use crate::common::{Backend, TestApp, eventually};

both_stores!(
    a_new_key_is_shown_once_and_listed_without_its_secret,
    only_the_hash_of_a_key_is_stored,
    revoked_key_is_rejected_at_once,
    rotation_without_grace_stops_the_old_key_at_once,
    rotation_with_grace_keeps_the_old_key_until_it_ends,
    a_revoked_or_rotated_key_cannot_be_rotated,
    expired_key_is_refused,
    concurrent_key_creation_for_one_user_gives_distinct_keys,
    last_used_is_tracked_without_a_write_per_request,
    another_instance_sees_a_revocation_within_the_cache_ttl,
    service_keys_belong_to_the_app_and_carry_their_scopes,
    a_user_manages_own_keys_within_own_scopes,
);

fn secret(created: &Value) -> String {
    created["key"].as_str().unwrap().to_owned()
}

async fn a_new_key_is_shown_once_and_listed_without_its_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_42", "free").await;
    let created = app.api.create_key("u_42", json!({"name":"ci","scopes":["proxy"],"expires_at":null})).await;
    let key = secret(&created);
    assert!(GatewayKey::parse(&key).is_ok(), "the documented format");
    assert!(created["id"].as_str().unwrap().starts_with("key_"));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["proxy"]));
    assert_eq!(created["name"], "ci");

    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_42/keys", None).await.expect(200);
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    for field in ["id", "name", "prefix", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"] {
        assert!(keys[0].get(field).is_some(), "listing has {field}");
    }
    assert!(keys[0].get("key").is_none());
    assert!(!listed.to_string().contains(&key[7..]), "no part of the secret beyond the prefix");
    let one = app.api.admin(Method::GET, &format!("/admin/v1/keys/{}", created["id"].as_str().unwrap()), None).await;
    assert!(one.expect(200).get("key").is_none());

    let me = app.api.me(&key).await.expect(200);
    assert_eq!(me["user_id"], "u_42");
    assert_eq!(me["plan"], "free");
    assert_eq!(me["key"]["id"], created["id"]);
    assert_eq!(me["key"]["prefix"], created["prefix"]);
    assert_eq!(me["key"]["scopes"], json!(["proxy"]));
}

async fn only_the_hash_of_a_key_is_stored(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(secret(&app.api.create_key("u_1", json!({})).await));
    }
    let rotated = app.api.create_key("u_1", json!({})).await;
    let path = format!("/admin/v1/keys/{}/rotate", rotated["id"].as_str().unwrap());
    keys.push(secret(&rotated));
    keys.push(secret(&app.api.admin(Method::POST, &path, Some(json!({"grace_seconds":60}))).await.expect(201)));
    let service = app.api.admin(Method::POST, "/admin/v1/service-keys", Some(json!({"scopes":["meter"]}))).await;
    keys.push(secret(&service.expect(201)));
    for key in &keys {
        app.api.me(key).await.expect(200);
    }
    app.stop().await;
    let dump = app.db.dump();
    for key in &keys {
        assert!(dump.contains(KeyHash::of(key).as_str()), "the dump holds the hash (the dump works)");
        assert!(!dump.contains(key.as_str()), "plaintext key found in the store");
        assert!(!dump.contains(&key[3..]), "the key's random part found in the store");
    }
    assert!(!dump.contains(crate::common::ADMIN_TOKEN));
}

async fn revoked_key_is_rejected_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let created = app.api.create_key("u_1", json!({})).await;
    let key = secret(&created);
    app.api.me(&key).await.expect(200); // now cached
    app.api
        .admin(Method::DELETE, &format!("/admin/v1/keys/{}", created["id"].as_str().unwrap()), None)
        .await
        .expect(204);
    let refused = app.api.me(&key).await.expect(401);
    assert_eq!(refused["error"]["type"], "unauthorized");
    assert!(!refused.to_string().contains(&key));
    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_1/keys", None).await.expect(200);
    assert!(listed["keys"][0]["revoked_at"].is_string());
    // Revoking again is harmless; an unknown key is 404.
    app.api
        .admin(Method::DELETE, &format!("/admin/v1/keys/{}", created["id"].as_str().unwrap()), None)
        .await
        .expect(204);
    app.api.admin(Method::DELETE, "/admin/v1/keys/key_AAAAAAAAAAAAAAAAAAAA", None).await.expect(404);
}

async fn rotate(app: &TestApp, id: &str, grace: i64) -> Value {
    let path = format!("/admin/v1/keys/{id}/rotate");
    app.api.admin(Method::POST, &path, Some(json!({"grace_seconds":grace}))).await.expect(201)
}

async fn rotation_without_grace_stops_the_old_key_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let old = app.api.create_key("u_1", json!({"name":"ci","scopes":["proxy","usage:read"]})).await;
    app.api.me(&secret(&old)).await.expect(200);
    let new = rotate(&app, old["id"].as_str().unwrap(), 0).await;
    assert_ne!(new["id"], old["id"]);
    assert_eq!(new["name"], "ci");
    assert_eq!(new["scopes"], old["scopes"]);
    app.api.me(&secret(&old)).await.expect(401);
    assert_eq!(app.api.me(&secret(&new)).await.expect(200)["user_id"], "u_1");
    // A rotation with no body at all means no grace.
    let newer =
        app.api.admin(Method::POST, &format!("/admin/v1/keys/{}/rotate", new["id"].as_str().unwrap()), None).await;
    let newer = newer.expect(201);
    app.api.me(&secret(&new)).await.expect(401);
    app.api.me(&secret(&newer)).await.expect(200);
}

async fn rotation_with_grace_keeps_the_old_key_until_it_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "enterprise").await;
    let long = app.api.create_key("u_1", json!({})).await;
    let successor = rotate(&app, long["id"].as_str().unwrap(), 3600).await;
    app.api.me(&secret(&long)).await.expect(200);
    app.api.me(&secret(&successor)).await.expect(200);
    let listed = app.api.admin(Method::GET, &format!("/admin/v1/keys/{}", long["id"].as_str().unwrap()), None).await;
    assert!(listed.expect(200)["revoked_at"].is_string(), "the end of the grace period is shown");

    let short = app.api.create_key("u_1", json!({})).await;
    let short_successor = rotate(&app, short["id"].as_str().unwrap(), 1).await;
    app.api.me(&secret(&short)).await.expect(200);
    let key = secret(&short);
    let api = app.api.clone();
    let ended = eventually(Duration::from_secs(5), || {
        let api = api.clone();
        let key = key.clone();
        async move { api.me(&key).await.status.as_u16() == 401 }
    })
    .await;
    assert!(ended, "the old key stops working when the grace period ends");
    app.api.me(&secret(&short_successor)).await.expect(200);
}

async fn a_revoked_or_rotated_key_cannot_be_rotated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = app.api.create_key("u_1", json!({})).await;
    let id = key["id"].as_str().unwrap();
    rotate(&app, id, 60).await;
    let twice = app.api.admin(Method::POST, &format!("/admin/v1/keys/{id}/rotate"), None).await;
    assert_eq!(twice.expect(409)["error"]["type"], "conflict");
    let other = app.api.create_key("u_1", json!({})).await;
    let other_id = other["id"].as_str().unwrap();
    app.api.admin(Method::DELETE, &format!("/admin/v1/keys/{other_id}"), None).await.expect(204);
    app.api.admin(Method::POST, &format!("/admin/v1/keys/{other_id}/rotate"), None).await.expect(409);
    app.api.admin(Method::POST, "/admin/v1/keys/key_AAAAAAAAAAAAAAAAAAAA/rotate", None).await.expect(404);
}

async fn expired_key_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "enterprise").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let created = app.api.create_key("u_1", json!({"expires_at": soon})).await;
    let key = secret(&created);
    app.api.me(&key).await.expect(200);
    let api = app.api.clone();
    let refused = eventually(Duration::from_secs(6), || {
        let api = api.clone();
        let key = key.clone();
        async move {
            let reply = api.me(&key).await;
            reply.status.as_u16() == 401 && reply.body["error"]["message"].as_str().unwrap().contains("expired")
        }
    })
    .await;
    assert!(refused, "an expired key is refused");
}

async fn concurrent_key_creation_for_one_user_gives_distinct_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let api = app.api.clone();
            tokio::spawn(async move { api.create_key("u_1", json!({"name": format!("k{i}")})).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut secrets = std::collections::HashSet::new();
    for task in tasks {
        let created = task.await.unwrap();
        ids.insert(created["id"].as_str().unwrap().to_owned());
        secrets.insert(secret(&created));
    }
    assert_eq!((ids.len(), secrets.len()), (40, 40));
    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_1/keys", None).await.expect(200);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 40);
    for key in secrets.iter().take(5) {
        app.api.me(key).await.expect(200);
    }
}

async fn last_used_is_tracked_without_a_write_per_request(backend: Backend) {
    // A long flush interval: nothing reaches the store until shutdown.
    let mut app = TestApp::spawn_with(backend, &[("TOLLGATE_LAST_USED_FLUSH_SECONDS", "3600")]).await;
    app.api.create_user("u_1", "free").await;
    let created = app.api.create_key("u_1", json!({})).await;
    assert!(created["last_used_at"].is_null());
    for _ in 0..5 {
        app.api.me(&secret(&created)).await.expect(200);
    }
    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_1/keys", None).await.expect(200);
    assert!(listed["keys"][0]["last_used_at"].is_string(), "the listing shows the use at once");
    let store = tollgate_store::Store::open(&store_config(&app)).await.unwrap();
    let id = tollgate_domain::KeyId::parse(created["id"].as_str().unwrap()).unwrap();
    assert!(store.key(&id).await.unwrap().last_used_at.is_none(), "no write on the request path");
    app.stop().await;
    assert!(store.key(&id).await.unwrap().last_used_at.is_some(), "written at shutdown");
    store.close().await;
}

fn store_config(app: &TestApp) -> tollgate_store::StoreConfig {
    match app.db.database_url() {
        Some(url) => tollgate_store::StoreConfig::Postgres { url },
        None => tollgate_store::StoreConfig::Sqlite { path: app.db.sqlite_path(), fsync_each_commit: false },
    }
}

async fn another_instance_sees_a_revocation_within_the_cache_ttl(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "1")]).await;
    let (other, other_server) = app.sibling(&[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "1")]).await;
    app.api.create_user("u_1", "enterprise").await;
    let created = app.api.create_key("u_1", json!({})).await;
    let key = secret(&created);
    other.me(&key).await.expect(200); // cached by the other instance
    app.api
        .admin(Method::DELETE, &format!("/admin/v1/keys/{}", created["id"].as_str().unwrap()), None)
        .await
        .expect(204);
    app.api.me(&key).await.expect(401);
    let seen = eventually(Duration::from_secs(5), || {
        let other = other.clone();
        let key = key.clone();
        async move { other.me(&key).await.status.as_u16() == 401 }
    })
    .await;
    assert!(seen, "the other instance refuses the key once its cache entry expires");
    other_server.shutdown().await.unwrap();
}

async fn service_keys_belong_to_the_app_and_carry_their_scopes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .api
        .admin(
            Method::POST,
            "/admin/v1/service-keys",
            Some(json!({"name":"backend","scopes":["meter","credentials:read"]})),
        )
        .await
        .expect(201);
    assert!(created["user_id"].is_null());
    assert_eq!(created["kind"], "service");
    let me = app.api.me(&secret(&created)).await.expect(200);
    assert!(me["user_id"].is_null());
    assert_eq!(me["key"]["scopes"], json!(["meter", "credentials:read"]));
    let listed = app.api.admin(Method::GET, "/admin/v1/service-keys", None).await.expect(200);
    assert_eq!(listed["keys"][0]["id"], created["id"]);
    assert!(listed["keys"][0].get("key").is_none());
    // A service key is not a user's: self-service key routes refuse it.
    app.api.call(Method::GET, "/v1/me/keys", Some(&secret(&created)), None).await.expect(403);
    let path = format!("/admin/v1/service-keys/{}", created["id"].as_str().unwrap());
    app.api.admin(Method::DELETE, &path, None).await.expect(204);
    app.api.me(&secret(&created)).await.expect(401);
}

async fn a_user_manages_own_keys_within_own_scopes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_a", "free").await;
    app.api.create_user("u_b", "free").await;
    let manager = secret(&app.api.create_key("u_a", json!({"scopes":["proxy","keys:manage"]})).await);
    let plain = secret(&app.api.create_key("u_a", json!({"scopes":["proxy"]})).await);
    let b_key = app.api.create_key("u_b", json!({})).await;

    app.api.call(Method::GET, "/v1/me/keys", Some(&plain), None).await.expect(403);
    let mine = app.api.call(Method::GET, "/v1/me/keys", Some(&manager), None).await.expect(200);
    assert_eq!(mine["keys"].as_array().unwrap().len(), 2);
    assert!(mine["keys"].as_array().unwrap().iter().all(|k| k["user_id"] == "u_a"));

    let made =
        app.api.call(Method::POST, "/v1/me/keys", Some(&manager), Some(json!({"scopes":["proxy"]}))).await.expect(201);
    assert_eq!(app.api.me(&secret(&made)).await.expect(200)["user_id"], "u_a");
    let escalate = app.api.call(Method::POST, "/v1/me/keys", Some(&manager), Some(json!({"scopes":["meter"]}))).await;
    assert_eq!(escalate.expect(400)["error"]["field"], "scopes");

    // Another user's key is out of reach, and stays valid.
    let path = format!("/v1/me/keys/{}", b_key["id"].as_str().unwrap());
    app.api.call(Method::DELETE, &path, Some(&manager), None).await.expect(404);
    app.api.me(&secret(&b_key)).await.expect(200);
    let own = format!("/v1/me/keys/{}", made["id"].as_str().unwrap());
    app.api.call(Method::DELETE, &own, Some(&manager), None).await.expect(204);
    app.api.me(&secret(&made)).await.expect(401);
    let plans = app.api.call(Method::GET, "/v1/plans", Some(&plain), None).await.expect(200);
    assert_eq!(plans["plans"].as_array().unwrap().len(), 3);
}
