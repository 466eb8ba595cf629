//! Several instances sharing one store and one Redis (`TOLLGATE_REDIS_URL`):
//! quotas exact across instances, holds and rate windows shared, a
//! revocation seen by every instance at once. Each test writes under a Redis
//! key prefix of its own. Needs Redis at 127.0.0.1:6379.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_stores;
use crate::common::{Api, Backend, TestApp, eventually};

both_stores!(
    a_single_instance_on_redis_holds_settles_releases_and_expires_like_in_memory,
    two_instances_grant_exactly_the_limit_between_them,
    a_revocation_on_one_instance_is_refused_at_once_by_the_other,
    a_removed_provider_key_is_forgotten_at_once_by_the_other_instance,
    the_per_minute_limit_is_shared_by_the_instances,
);

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Redis settings with a key prefix of this test's own.
fn redis(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let prefix = format!("tollgate_test_{}:", tollgate_domain::base62::random(10));
    let mut env = vec![("TOLLGATE_REDIS_URL", REDIS_URL.to_owned()), ("TOLLGATE_REDIS_PREFIX", prefix)];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn setup(api: &Api, limits: Value, rpm: Option<i64>) -> String {
    let plan = json!({"slug": "k", "limits": limits, "rpm": rpm});
    api.admin(Method::POST, "/admin/v1/plans", Some(plan)).await.expect(201);
    api.create_user("u_1", "k").await;
    let body = json!({"name":"backend","scopes":["meter","usage:read"]});
    let created = api.admin(Method::POST, "/admin/v1/service-keys", Some(body)).await.expect(201);
    created["key"].as_str().unwrap().to_owned()
}

async fn check(api: &Api, key: &str, body: Value) -> Value {
    api.call(Method::POST, "/v1/quota/check", Some(key), Some(body)).await.expect(200)
}

async fn tokens(api: &Api) -> Value {
    api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200)["meters"]["tokens"].clone()
}

async fn a_single_instance_on_redis_holds_settles_releases_and_expires_like_in_memory(backend: Backend) {
    let env = redis(&[]);
    let app = TestApp::spawn_with(backend, &refs(&env)).await;
    let key = setup(&app.api, json!({"tokens": 1000}), None).await;
    let events = json!({"events":[{"id":"e1","user_id":"u_1","input_tokens":500}]});
    app.api.call(Method::POST, "/v1/usage/events", Some(&key), Some(events)).await.expect(200);
    let first = check(&app.api, &key, json!({"user_id":"u_1","meter":"tokens","amount":300,"reserve":true})).await;
    assert_eq!((first["allowed"].as_bool(), first["used"].as_i64()), (Some(true), Some(500)), "{first}");
    let refused = check(&app.api, &key, json!({"user_id":"u_1","meter":"tokens","amount":201,"reserve":true})).await;
    assert_eq!((refused["allowed"].as_bool(), refused["reserved"].as_i64()), (Some(false), Some(300)));
    let id = first["reservation_id"].as_str().unwrap();
    let settle = format!("/v1/quota/reservations/{id}/settle");
    app.api.call(Method::POST, &settle, Some(&key), Some(json!({"amount":280}))).await.expect(200);
    app.api.call(Method::POST, &settle, Some(&key), Some(json!({"amount":280}))).await.expect(404);
    assert_eq!(tokens(&app.api).await, json!({"used":780,"limit":1000,"remaining":220,"reserved":0}));

    let held = check(&app.api, &key, json!({"user_id":"u_1","meter":"tokens","amount":200,"reserve":true})).await;
    let release = format!("/v1/quota/reservations/{}", held["reservation_id"].as_str().unwrap());
    assert_eq!(tokens(&app.api).await["reserved"], 200);
    app.api.call(Method::DELETE, &release, Some(&key), None).await.expect(204);
    assert_eq!(tokens(&app.api).await["reserved"], 0);

    let short = json!({"user_id":"u_1","meter":"tokens","amount":220,"reserve":true,"ttl_seconds":1});
    assert_eq!(check(&app.api, &key, short).await["allowed"], true);
    let api = app.api.clone();
    let expired = eventually(Duration::from_secs(5), || {
        let api = api.clone();
        async move { tokens(&api).await["reserved"] == 0 }
    })
    .await;
    assert!(expired, "an unsettled hold expires");
}

async fn two_instances_grant_exactly_the_limit_between_them(backend: Backend) {
    let env = redis(&[]);
    let app = TestApp::spawn_with(backend, &refs(&env)).await;
    let (other, _other_server) = app.sibling(&refs(&env)).await;
    let key = setup(&app.api, json!({"tokens": 1000}), None).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let api = if i % 2 == 0 { app.api.clone() } else { other.clone() };
            let key = key.clone();
            tokio::spawn(async move {
                let body = json!({"user_id":"u_1","meter":"tokens","amount":10,"reserve":true});
                check(&api, &key, body).await["reservation_id"].as_str().map(|id| (api, id.to_owned()))
            })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        granted.extend(task.await.unwrap());
    }
    assert_eq!(granted.len(), 100, "1000 / 10 between both instances, not per instance");
    // A hold made on one instance is settled on whichever; usage shows on both.
    let settles: Vec<_> = granted
        .into_iter()
        .enumerate()
        .map(|(i, (api, id))| {
            let api = if i % 3 == 0 { api } else { other.clone() };
            let key = key.clone();
            tokio::spawn(async move {
                let path = format!("/v1/quota/reservations/{id}/settle");
                api.call(Method::POST, &path, Some(&key), Some(json!({"amount":7}))).await.expect(200);
            })
        })
        .collect();
    for task in settles {
        task.await.unwrap();
    }
    for api in [&app.api, &other] {
        assert_eq!(tokens(api).await, json!({"used":700,"limit":1000,"remaining":300,"reserved":0}));
    }
    let over = check(&other, &key, json!({"user_id":"u_1","meter":"tokens","amount":301,"reserve":true})).await;
    assert_eq!(over["allowed"], false);
}

async fn a_revocation_on_one_instance_is_refused_at_once_by_the_other(backend: Backend) {
    // Verified keys are trusted for an hour: only the announcement can make
    // the other instance forget one.
    let env = redis(&[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "3600")]);
    let app = TestApp::spawn_with(backend, &refs(&env)).await;
    let (other, _other_server) = app.sibling(&refs(&env)).await;
    app.api.create_user("u_1", "free").await;
    let created = app.api.create_key("u_1", json!({"name":"laptop"})).await;
    let secret = created["key"].as_str().unwrap().to_owned();
    other.me(&secret).await.expect(200);
    let revoke = format!("/admin/v1/keys/{}", created["id"].as_str().unwrap());
    let started = Instant::now();
    app.api.admin(Method::DELETE, &revoke, None).await.expect(204);
    let refused = eventually(Duration::from_secs(5), || {
        let (other, secret) = (other.clone(), secret.clone());
        async move { other.me(&secret).await.status == 401 }
    })
    .await;
    assert!(refused, "the other instance refuses the revoked key");
    assert!(started.elapsed() < Duration::from_secs(60), "long before the cache TTL");
}

async fn a_removed_provider_key_is_forgotten_at_once_by_the_other_instance(backend: Backend) {
    // Credentials are cached for the key cache TTL: an hour here.
    let env = redis(&[("TOLLGATE_KEY_CACHE_TTL_SECONDS", "3600")]);
    let app = TestApp::spawn_with(backend, &refs(&env)).await;
    let (other, _other_server) = app.sibling(&refs(&env)).await;
    app.api.create_user("u_1", "free").await;
    let own = "sk-own-key-that-leaked-0001";
    let path = "/admin/v1/users/u_1/credentials/openai";
    app.api.admin(Method::PUT, path, Some(json!({ "secret": own }))).await.expect(200);
    let service = crate::common::service_key(&app.api, &["credentials:read"]).await;
    let resolve = || {
        let (other, service) = (other.clone(), service.clone());
        async move {
            let body = json!({ "user_id": "u_1", "provider": "openai" });
            other.call(Method::POST, "/v1/credentials/resolve", Some(&service), Some(body)).await
        }
    };
    assert_eq!(resolve().await.expect(200)["secret"], own, "the other instance has it cached now");
    app.api.admin(Method::DELETE, path, None).await.expect(204);
    let forgotten = eventually(Duration::from_secs(5), || async { resolve().await.body["source"] != "byok" }).await;
    assert!(forgotten, "the other instance no longer hands out the removed key");
}

async fn the_per_minute_limit_is_shared_by_the_instances(backend: Backend) {
    let env = redis(&[]);
    let app = TestApp::spawn_with(backend, &refs(&env)).await;
    let (other, _other_server) = app.sibling(&refs(&env)).await;
    setup(&app.api, json!({"tokens": null}), Some(10)).await;
    let created = app.api.create_key("u_1", json!({"name":"laptop"})).await;
    let secret = created["key"].as_str().unwrap();
    let mut statuses = Vec::new();
    for i in 0..14 {
        let api = if i % 2 == 0 { &app.api } else { &other };
        statuses.push(api.me(secret).await.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 4, "{statuses:?}");
}

/// A counter read from the store while another instance adds to it is read
/// again, not set to the value that misses the addition; and a commit adds
/// its usage before it ends its holds, so that no reservation in between
/// sees neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_read_while_another_instance_commits_is_read_again() {
    use tollgate_domain::quota::{Ask, CounterKey};
    use tollgate_server::cluster::{Cluster, RedisCounters};
    use tollgate_server::metering::CounterStore;

    let prefix = format!("tollgate_test_{}:", tollgate_domain::base62::random(10));
    let counters = RedisCounters(Cluster::connect(REDIS_URL, &prefix).await.expect("Redis at 127.0.0.1:6379"));
    let key = CounterKey { user: "u_1".into(), meter: "tokens".into(), period_start: 0 };
    let fence = counters.fence(&key).await.unwrap();
    // Meanwhile another instance commits 5 (the counter is not loaded
    // here yet, so only its generation moves).
    counters.apply(&[], &[(key.clone(), 5)]).await.unwrap();
    assert!(!counters.load(key.clone(), 100, fence).await.unwrap(), "a value read across an addition is refused");
    assert_eq!(counters.count(&key).await.unwrap().used, 0, "nothing was set");
    let fence = counters.fence(&key).await.unwrap();
    assert!(counters.load(key.clone(), 105, fence).await.unwrap());
    assert_eq!(counters.count(&key).await.unwrap().used, 105);
    // Once loaded, a load is a no-op whatever the fence.
    assert!(counters.load(key.clone(), 1, 0).await.unwrap());
    assert_eq!(counters.count(&key).await.unwrap().used, 105);

    // A reservation settled at 10: used 115, nothing held after.
    let ask = Ask { key: key.clone(), amount: 10, limit: Some(200) };
    let now = chrono::Utc::now().timestamp_millis();
    counters.reserve("res_1", std::slice::from_ref(&ask), now, 60_000).await.unwrap().unwrap();
    assert_eq!(counters.count(&key).await.unwrap().reserved, 10);
    counters.apply(&["res_1".into()], &[(key.clone(), 10)]).await.unwrap();
    let count = counters.count(&key).await.unwrap();
    assert_eq!((count.used, count.reserved), (115, 0));

    // A hold prolonged (a stream still going) outlives its first expiry,
    // in Redis as in the set every instance expires from; one settled is
    // not brought back.
    counters.reserve("res_2", std::slice::from_ref(&ask), now, 1_000).await.unwrap().unwrap();
    assert!(counters.prolong("res_2", now, 60_000).await.unwrap());
    assert_eq!(counters.expire(now + 30_000).await.unwrap(), 0, "not due any more");
    assert_eq!(counters.count(&key).await.unwrap().reserved, 10);
    assert!(counters.prolong("res_2", now, 5_000).await.unwrap(), "a shorter one keeps the later expiry");
    assert_eq!(counters.expire(now + 30_000).await.unwrap(), 0);
    assert_eq!(counters.expire(now + 60_000).await.unwrap(), 1, "due at its prolonged expiry");
    assert!(!counters.prolong("res_2", now, 60_000).await.unwrap(), "gone");
    assert_eq!(counters.count(&key).await.unwrap().reserved, 0);
}

#[tokio::test]
async fn a_redis_that_does_not_answer_stops_the_start_with_a_clear_message() {
    let db = crate::common::TestDb::new(Backend::Sqlite).await;
    let mut env = db.env();
    env.push(("TOLLGATE_ADMIN_TOKEN".into(), crate::common::ADMIN_TOKEN.into()));
    env.push(("TOLLGATE_REDIS_URL".into(), "redis://:hunter2-secret@127.0.0.1:1".into()));
    let config = tollgate_server::Config::from_sources(None, &env).unwrap();
    let error = match tollgate_server::start(config).await {
        Ok(_) => panic!("the start should fail without Redis"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("Redis"), "{error}");
    assert!(!error.contains("hunter2"), "the URL's password is not repeated: {error}");
}
