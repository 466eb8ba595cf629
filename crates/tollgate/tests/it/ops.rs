//! Operations routes and what every response carries.

use reqwest::Method;

use crate::both_stores;
use crate::common::{Backend, TestApp};

both_stores!(
    health_readiness_and_metrics_answer,
    every_response_carries_a_request_id,
    openapi_describes_every_admin_and_self_service_route,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_store_is_gone() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.api.call(Method::GET, "/readyz", None, None).await.expect(200);
    let admin = sqlx::PgPool::connect(crate::common::PG_ADMIN_URL).await.unwrap();
    let name = app.db.pg_name.clone().unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await.unwrap();
    let reply = app.api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.expect(503)["status"], "unavailable");
    assert_eq!(app.api.call(Method::GET, "/healthz", None, None).await.expect(200)["status"], "ok");
}

async fn health_readiness_and_metrics_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.api.call(Method::GET, "/healthz", None, None).await.expect(200)["status"], "ok");
    let ready = app.api.call(Method::GET, "/readyz", None, None).await.expect(200);
    let expected = if backend == Backend::Sqlite { "sqlite" } else { "postgres" };
    assert_eq!(ready["store"], expected);
    app.api.admin(Method::GET, "/admin/v1/plans", None).await.expect(200);
    let metrics = app.api.http.get(format!("{}/metrics", app.api.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tollgate_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/admin/v1/plans\""));
    // Latencies as histograms with buckets (they add up across instances).
    let bucket = metrics
        .lines()
        .find(|l| l.starts_with("tollgate_http_request_duration_seconds_bucket{") && l.contains("/admin/v1/plans"))
        .unwrap_or_else(|| panic!("no latency buckets for the route: {metrics}"));
    assert!(bucket.contains("le=\""), "{bucket}");
    assert!(metrics.contains("le=\"0.001\"") && metrics.contains("le=\"+Inf\""), "{metrics}");
    assert!(!metrics.contains("quantile=\""), "no summaries: {metrics}");
    assert!(!metrics.contains(crate::common::ADMIN_TOKEN));
}

async fn every_response_carries_a_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path, token) in [
        (Method::GET, "/healthz", None),
        (Method::GET, "/v1/me", None),
        (Method::GET, "/no/such/route", None),
        (Method::DELETE, "/healthz", None),
        (Method::GET, "/admin/v1/plans", Some(crate::common::ADMIN_TOKEN)),
        (Method::GET, "/admin/v1/users/nobody", Some(crate::common::ADMIN_TOKEN)),
    ] {
        let reply = app.api.call(method.clone(), path, token, None).await;
        let id = reply.headers.get("x-request-id").unwrap_or_else(|| panic!("{method} {path} has no X-Request-Id"));
        assert!(id.len() > 8);
        if !reply.status.is_success() {
            assert!(reply.body["error"]["type"].is_string(), "{method} {path}: one error shape: {}", reply.body);
        }
    }
    let echoed = app
        .api
        .http
        .get(format!("{}/healthz", app.api.base))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-abc.123");
}

async fn openapi_describes_every_admin_and_self_service_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = app.api.call(Method::GET, "/openapi.json", None, None).await.expect(200);
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("get", "/admin/v1/plans"),
        ("post", "/admin/v1/plans"),
        ("get", "/admin/v1/plans/{slug}"),
        ("put", "/admin/v1/plans/{slug}"),
        ("patch", "/admin/v1/plans/{slug}"),
        ("delete", "/admin/v1/plans/{slug}"),
        ("get", "/admin/v1/users"),
        ("post", "/admin/v1/users"),
        ("get", "/admin/v1/users/{id}"),
        ("patch", "/admin/v1/users/{id}"),
        ("delete", "/admin/v1/users/{id}"),
        ("post", "/admin/v1/users/{id}/suspend"),
        ("post", "/admin/v1/users/{id}/unsuspend"),
        ("put", "/admin/v1/users/{id}/plan"),
        ("post", "/admin/v1/users/{id}/portal-sessions"),
        ("get", "/admin/v1/users/{id}/keys"),
        ("post", "/admin/v1/users/{id}/keys"),
        ("get", "/admin/v1/keys/{key_id}"),
        ("delete", "/admin/v1/keys/{key_id}"),
        ("post", "/admin/v1/keys/{key_id}/rotate"),
        ("get", "/admin/v1/service-keys"),
        ("post", "/admin/v1/service-keys"),
        ("delete", "/admin/v1/service-keys/{key_id}"),
        ("get", "/v1/me"),
        ("get", "/v1/me/keys"),
        ("post", "/v1/me/keys"),
        ("delete", "/v1/me/keys/{key_id}"),
        ("get", "/v1/plans"),
        ("post", "/v1/usage/events"),
        ("post", "/v1/quota/check"),
        ("post", "/v1/quota/reservations/{id}/settle"),
        ("delete", "/v1/quota/reservations/{id}"),
        ("get", "/v1/me/usage"),
        ("get", "/admin/v1/usage"),
        ("get", "/admin/v1/users/{id}/usage"),
        ("post", "/admin/v1/users/{id}/usage/reset"),
        ("get", "/admin/v1/users/{id}/usage/events"),
        ("get", "/admin/v1/users/{id}/grants"),
        ("post", "/admin/v1/users/{id}/grants"),
        ("get", "/admin/v1/prices"),
        ("put", "/admin/v1/prices/{model}"),
        ("delete", "/admin/v1/prices/{model}"),
        ("get", "/admin/v1/users/{id}/credentials"),
        ("get", "/admin/v1/users/{id}/credentials/{provider}"),
        ("put", "/admin/v1/users/{id}/credentials/{provider}"),
        ("delete", "/admin/v1/users/{id}/credentials/{provider}"),
        ("get", "/v1/me/credentials"),
        ("get", "/v1/me/credentials/{provider}"),
        ("put", "/v1/me/credentials/{provider}"),
        ("delete", "/v1/me/credentials/{provider}"),
        ("post", "/v1/credentials/resolve"),
        ("get", "/admin/v1/audit"),
        ("get", "/admin/v1/webhooks"),
        ("post", "/admin/v1/webhooks"),
        ("get", "/admin/v1/webhooks/{id}"),
        ("patch", "/admin/v1/webhooks/{id}"),
        ("delete", "/admin/v1/webhooks/{id}"),
        ("get", "/admin/v1/webhooks/{id}/deliveries"),
        ("get", "/admin/v1/webhooks/{id}/deliveries/{delivery_id}"),
        ("post", "/admin/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
        ("post", "/webhooks/stripe"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in routes {
        let operation = &doc["paths"][path][method];
        assert!(operation["responses"].is_object(), "{method} {path} is not described");
    }
    // Every schema referenced is defined.
    let text = doc.to_string();
    for reference in text.split("#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "schema {name} is referenced but not defined");
    }
    // And the documented paths are the router's: each answers something other than 404-no-route.
    for (method, path) in routes {
        let concrete = path
            .replace("{slug}", "free")
            .replace("{id}", "nobody")
            .replace("{key_id}", "key_AAAAAAAAAAAAAAAAAAAA")
            .replace("{provider}", "openai")
            .replace("{delivery_id}", "dlv_nothing");
        let reply = app.api.call(method.to_uppercase().parse().unwrap(), &concrete, None, None).await;
        let no_route =
            reply.status == 404 && reply.body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no route"));
        assert!(
            !no_route && reply.status != 405,
            "{method} {path} is documented but not routed: {} {}",
            reply.status,
            reply.body
        );
    }
}
