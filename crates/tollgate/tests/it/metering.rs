//! The metering API and usage: the ledger, exact quotas, periods, grants,
//! resets, reading usage, headers. Issue #3.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_stores;
use crate::common::{Backend, TestApp, eventually};

both_stores!(
    events_are_committed_once_and_feed_every_meter,
    bad_events_are_refused_with_the_field_named_and_the_rest_committed,
    two_hundred_parallel_reservations_of_ten_against_a_thousand_grant_exactly_one_hundred,
    reservations_hold_until_settled_released_or_expired,
    repeated_events_count_once_across_a_restart,
    grants_add_allowance_until_they_expire,
    a_reset_starts_a_new_period_and_lifetime_totals_survive,
    a_plan_change_keeps_usage_unless_told_to_reset,
    usage_is_readable_by_day_model_feature_key_and_provider,
    a_past_month_and_the_csv_export_read_the_ledger,
    the_overview_sorts_users_by_share_of_quota_used,
    byok_usage_is_recorded_but_counts_only_when_the_plan_says,
    costs_come_from_the_price_table_and_its_overrides,
    metering_needs_the_meter_scope_and_a_users_key_meters_only_itself,
    responses_carry_rate_limit_headers_and_rpm_refusals_say_when_to_retry,
    raw_events_past_retention_are_deleted_and_rollups_stay,
    per_user_overrides_replace_the_plans_limits,
    tokens_per_minute_limit_refuses_checks_and_says_when_to_retry,
    anchored_and_lifetime_periods_are_reported,
    amounts_past_two_to_the_53_and_bad_text_are_refused_with_the_field_named,
    sums_of_huge_amounts_saturate_instead_of_wrapping_negative,
    anonymous_demo_calls_are_counted_when_the_cached_account_is_gone,
    settled_reservations_show_in_history_and_breakdowns_and_are_billable,
);

async fn plan(app: &TestApp, slug: &str, limits: Value) {
    let body = json!({"slug": slug, "limits": limits});
    app.api.admin(Method::POST, "/admin/v1/plans", Some(body)).await.expect(201);
}

async fn service_key(app: &TestApp) -> String {
    let body = json!({"name":"backend","scopes":["meter","usage:read"]});
    let created = app.api.admin(Method::POST, "/admin/v1/service-keys", Some(body)).await.expect(201);
    created["key"].as_str().unwrap().to_owned()
}

async fn events(app: &TestApp, key: &str, events: Value) -> crate::common::Reply {
    app.api.call(Method::POST, "/v1/usage/events", Some(key), Some(json!({ "events": events }))).await
}

async fn usage(app: &TestApp, user: &str) -> Value {
    app.api.admin(Method::GET, &format!("/admin/v1/users/{user}/usage"), None).await.expect(200)
}

async fn check(app: &TestApp, key: &str, body: Value) -> Value {
    app.api.call(Method::POST, "/v1/quota/check", Some(key), Some(body)).await.expect(200)
}

async fn events_are_committed_once_and_feed_every_meter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "metered", json!({"tokens": 1000, "requests": null})).await;
    app.api.create_user("u_42", "metered").await;
    // Before any usage, every meter the plan names is shown, the unlimited too.
    let fresh = usage(&app, "u_42").await;
    let shown = |m: &str| (fresh["meters"][m]["used"].as_i64(), fresh["meters"][m]["limit"].clone());
    assert_eq!((shown("tokens"), shown("requests")), ((Some(0), json!(1000)), (Some(0), Value::Null)), "{fresh}");
    assert_eq!(fresh["lifetime"], json!({"tokens": 0}));
    let key = service_key(&app).await;
    let batch = json!([
        {"id":"evt_1","user_id":"u_42","feature":"analyze","provider":"openai","model":"gpt-4o-mini",
         "input_tokens":10,"output_tokens":5,"requests":1,"timestamp": chrono::Utc::now().to_rfc3339()},
        {"id":"evt_2","user_id":"u_42","feature":"analyze","input_tokens":100,"output_tokens":50},
        {"id":"evt_2","user_id":"u_42","input_tokens":100},
    ]);
    let reply = events(&app, &key, batch.clone()).await.expect(200);
    assert_eq!((reply["accepted"].as_i64(), reply["duplicates"].as_i64()), (Some(2), Some(1)));
    let again = events(&app, &key, batch).await.expect(200);
    assert_eq!((again["accepted"].as_i64(), again["duplicates"].as_i64()), (Some(0), Some(3)));
    // Stored ids mixed with new ones: only the new count.
    let mixed = json!([
        {"id":"evt_3","user_id":"u_42","input_tokens":4,"output_tokens":1},
        {"id":"evt_1","user_id":"u_42","input_tokens":1000},
        {"id":"evt_3","user_id":"u_42","input_tokens":1000},
    ]);
    let reply = events(&app, &key, mixed).await.expect(200);
    assert_eq!((reply["accepted"].as_i64(), reply["duplicates"].as_i64()), (Some(1), Some(2)));

    let u = usage(&app, "u_42").await;
    assert_eq!(u["user_id"], "u_42");
    assert_eq!(u["plan"], "metered");
    assert!(u["period"]["start"].is_string() && u["period"]["end"].is_string());
    assert_eq!(u["meters"]["tokens"], json!({"used":170,"limit":1000,"remaining":830,"reserved":0}));
    assert_eq!(u["meters"]["input_tokens"]["used"], 114);
    assert_eq!(u["meters"]["output_tokens"]["used"], 56);
    assert_eq!(u["meters"]["requests"]["used"], 3, "requests default to one per event");
    assert!(u["meters"]["requests"]["limit"].is_null());
    assert_eq!(u["meters"]["requests:analyze"]["used"], 2);
    // gpt-4o-mini: 10 × 0.15 + 5 × 0.60 = 4.5 µ$ → 5 (the second event has no model: 0).
    assert_eq!(u["meters"]["cost_usd"]["used"], 5);
    assert_eq!(u["lifetime"]["tokens"], 170);
}

async fn bad_events_are_refused_with_the_field_named_and_the_rest_committed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = service_key(&app).await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let batch = json!([
        {"id":"ok_1","user_id":"u_1","input_tokens":7},
        {"id":"neg","user_id":"u_1","input_tokens":-1},
        {"id":"ghost","user_id":"nobody","input_tokens":1},
        {"user_id":"u_1","input_tokens":1},
        {"id":"future","user_id":"u_1","timestamp":future},
        {"id":"typed","user_id":"u_1","output_tokens":"many"},
        {"id":"extra","user_id":"u_1","colour":"red"},
        {"id":"src","user_id":"u_1","key_source":"mine"},
        {"id":"ok_2","user_id":"u_1","output_tokens":3},
    ]);
    let reply = events(&app, &key, batch).await.expect(200);
    assert_eq!(reply["accepted"], 2);
    assert_eq!(reply["rejected"], 7);
    let fields: Vec<&str> = reply["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "events[1].input_tokens",
            "events[2].user_id",
            "events[3].id",
            "events[4].timestamp",
            "events[5].output_tokens",
            "events[6].colour",
            "events[7].key_source"
        ]
    );
    assert_eq!(reply["errors"][1]["id"], "ghost");
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["used"], 10);
    // A batch with nothing valid is a 400; an unparsable body too.
    let all_bad = events(&app, &key, json!([{"id":"x","user_id":"u_1","requests":-3}])).await.expect(400);
    assert_eq!(all_bad["error"]["field"], "events[0].requests");
    let broken = app.api.raw(Method::POST, "/v1/usage/events", Some(&key), Some("{\"events\": [".into())).await;
    assert_eq!(broken.expect(400)["error"]["field"], "body");
    let wrong = app.api.call(Method::POST, "/v1/usage/events", Some(&key), Some(json!({"events": {}}))).await;
    assert_eq!(wrong.expect(400)["error"]["field"], "events");
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["used"], 10, "nothing stored was changed");
}

/// Review of issue #3: an amount near `i64::MAX` wrapped the tokens sum
/// negative and erased a quota; a NUL byte or an over-long model failed a
/// whole group commit on Postgres.
async fn amounts_past_two_to_the_53_and_bad_text_are_refused_with_the_field_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "small", json!({"tokens": 1000})).await;
    app.api.create_user("u_1", "small").await;
    let key = service_key(&app).await;
    let max = 9_007_199_254_740_992_i64;
    let batch = json!([
        {"id":"wrap","user_id":"u_1","input_tokens":i64::MAX,"output_tokens":1},
        {"id":"meter","user_id":"u_1","meters":{"pages":max + 1}},
        {"id":"cost","user_id":"u_1","cost_usd":max + 1},
        {"id":"nul","user_id":"u_1","model":"gpt-4o\u{0}"},
        {"id":"long","user_id":"u_1","model":"m".repeat(257)},
        {"id":"agent","user_id":"u_1","user_agent":"a".repeat(1025)},
        {"id":"key","user_id":"u_1","key_id":"k\n"},
        {"id":"edge","user_id":"u_1","input_tokens":max,"model":"m".repeat(256),"user_agent":"a".repeat(1024)},
    ]);
    let reply = events(&app, &key, batch).await.expect(200);
    assert_eq!((reply["accepted"].as_i64(), reply["rejected"].as_i64()), (Some(1), Some(7)));
    let errors = reply["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "events[0].input_tokens",
            "events[1].meters.pages",
            "events[2].cost_usd",
            "events[3].model",
            "events[4].model",
            "events[5].user_agent",
            "events[6].key_id"
        ]
    );
    assert_eq!(errors[0]["message"], "input_tokens: at most 9007199254740992");
    let tokens = &usage(&app, "u_1").await["meters"]["tokens"];
    assert_eq!((tokens["used"].as_i64(), tokens["remaining"].as_i64()), (Some(max), Some(0)), "only the edge counted");
    for path in ["/v1/quota/check", "/v1/quota/reservations/res_x/settle"] {
        let body = json!({"user_id":"u_1","meter":"tokens","amount":max + 1});
        let body = if path.ends_with("settle") { json!({"amount": max + 1}) } else { body };
        let refused = app.api.call(Method::POST, path, Some(&key), Some(body)).await.expect(400);
        assert_eq!(refused["error"]["field"], "amount", "{path}");
    }
}

/// Review of issue #3: one event's amount is bounded, their sums are not;
/// they stop at the largest integer instead of turning negative.
async fn sums_of_huge_amounts_saturate_instead_of_wrapping_negative(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "small", json!({"tokens": 1000})).await;
    app.api.create_user("u_1", "small").await;
    let key = service_key(&app).await;
    let max = 9_007_199_254_740_992_i64;
    // 600 events of 2^54 tokens each pass 2^63 within one commit; a second
    // batch adds to the stored (saturated) rows.
    for batch in 0..2 {
        let events_json: Vec<Value> = (0..600)
            .map(|i| json!({"id":format!("e_{batch}_{i}"),"user_id":"u_1","input_tokens":max,"output_tokens":max}))
            .collect();
        events(&app, &key, json!(events_json)).await.expect(200);
    }
    let view = usage(&app, "u_1").await;
    assert_eq!(view["meters"]["tokens"]["used"].as_i64(), Some(i64::MAX));
    assert_eq!(view["meters"]["tokens"]["remaining"].as_i64(), Some(0));
    assert_eq!(view["lifetime"]["tokens"].as_i64(), Some(i64::MAX));
    let by_day = app.api.admin(Method::GET, "/admin/v1/users/u_1/usage?group_by=day", None).await.expect(200);
    assert_eq!(by_day["groups"][0]["input_tokens"].as_i64(), Some(i64::MAX));
    assert_eq!(by_day["groups"][0]["tokens"].as_i64(), Some(i64::MAX));
    let refused = check(&app, &key, json!({"user_id":"u_1","meter":"tokens","amount":1,"reserve":true})).await;
    assert_eq!(refused["allowed"], false, "the quota is not erased");
}

async fn two_hundred_parallel_reservations_of_ten_against_a_thousand_grant_exactly_one_hundred(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 1000})).await;
    app.api.create_user("u_1", "k").await;
    let key = service_key(&app).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let api = app.api.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let body = json!({"user_id":"u_1","meter":"tokens","amount":10,"reserve":true});
                api.call(Method::POST, "/v1/quota/check", Some(&key), Some(body)).await.expect(200)
            })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        if reply["allowed"] == true {
            granted.push(reply["reservation_id"].as_str().unwrap().to_owned());
        } else {
            assert!(reply["reservation_id"].is_null());
        }
    }
    assert_eq!(granted.len(), 100, "exactly the limit, never more");
    let u = usage(&app, "u_1").await;
    assert_eq!(u["meters"]["tokens"]["reserved"], 1000);
    assert_eq!(u["meters"]["tokens"]["remaining"], 0);
    // Settle them all concurrently: every unit counted once.
    let tasks: Vec<_> = granted
        .into_iter()
        .map(|id| {
            let api = app.api.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let path = format!("/v1/quota/reservations/{id}/settle");
                api.call(Method::POST, &path, Some(&key), Some(json!({"amount": 7}))).await.expect(200)
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let u = usage(&app, "u_1").await;
    assert_eq!(u["meters"]["tokens"], json!({"used":700,"limit":1000,"remaining":300,"reserved":0}));
}

async fn reservations_hold_until_settled_released_or_expired(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 1000})).await;
    app.api.create_user("u_42", "k").await;
    let key = service_key(&app).await;
    events(&app, &key, json!([{"id":"e1","user_id":"u_42","input_tokens":500}])).await.expect(200);
    let first = check(&app, &key, json!({"user_id":"u_42","meter":"tokens","amount":300,"reserve":true})).await;
    assert_eq!(first["allowed"], true);
    assert_eq!(
        (first["limit"].as_i64(), first["used"].as_i64(), first["remaining"].as_i64()),
        (Some(1000), Some(500), Some(500))
    );
    assert!(first["reset_at"].is_string());
    let id = first["reservation_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("res_"));
    let refused = check(&app, &key, json!({"user_id":"u_42","meter":"tokens","amount":201,"reserve":true})).await;
    assert_eq!(refused["allowed"], false, "a refusal is a 200 with allowed false");
    let path = format!("/v1/quota/reservations/{id}/settle");
    app.api.call(Method::POST, &path, Some(&key), Some(json!({"amount":280}))).await.expect(200);
    app.api.call(Method::POST, &path, Some(&key), Some(json!({"amount":280}))).await.expect(404);
    assert_eq!(usage(&app, "u_42").await["meters"]["tokens"]["used"], 780);

    let held = check(&app, &key, json!({"user_id":"u_42","meter":"tokens","amount":200,"reserve":true})).await;
    let release = format!("/v1/quota/reservations/{}", held["reservation_id"].as_str().unwrap());
    app.api.call(Method::DELETE, &release, Some(&key), None).await.expect(204);
    assert_eq!(usage(&app, "u_42").await["meters"]["tokens"]["reserved"], 0);

    let short =
        check(&app, &key, json!({"user_id":"u_42","meter":"tokens","amount":220,"reserve":true,"ttl_seconds":1})).await;
    assert_eq!(short["allowed"], true);
    let api = app.api.clone();
    let expired = eventually(Duration::from_secs(5), || {
        let api = api.clone();
        async move {
            let u = api.admin(Method::GET, "/admin/v1/users/u_42/usage", None).await.expect(200);
            u["meters"]["tokens"]["reserved"] == 0
        }
    })
    .await;
    assert!(expired, "an unsettled reservation expires");
    // Checks without reserve hold nothing.
    let peek = check(&app, &key, json!({"user_id":"u_42","meter":"tokens","amount":220})).await;
    assert_eq!((peek["allowed"].as_bool(), peek["reservation_id"].is_null()), (Some(true), true));
    let over = check(&app, &key, json!({"user_id":"u_42","meter":"tokens","amount":221})).await;
    assert_eq!(over["allowed"], false);
    // Bad checks name the field.
    let bad = app
        .api
        .call(Method::POST, "/v1/quota/check", Some(&key), Some(json!({"user_id":"u_42","meter":"tokens","amount":-1})))
        .await;
    assert_eq!(bad.expect(400)["error"]["field"], "amount");
    let bad = app
        .api
        .call(
            Method::POST,
            "/v1/quota/check",
            Some(&key),
            Some(json!({"user_id":"nobody","meter":"tokens","amount":1})),
        )
        .await;
    assert_eq!(bad.expect(400)["error"]["field"], "user_id");
    let bad = app
        .api
        .call(Method::POST, "/v1/quota/check", Some(&key), Some(json!({"user_id":"u_42","meter":"Tokens!","amount":1})))
        .await;
    assert_eq!(bad.expect(400)["error"]["field"], "meter");
}

async fn repeated_events_count_once_across_a_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "free").await;
    let key = service_key(&app).await;
    let batch =
        json!([{"id":"once","user_id":"u_1","input_tokens":40}, {"id":"twice","user_id":"u_1","input_tokens":2}]);
    assert_eq!(events(&app, &key, batch.clone()).await.expect(200)["accepted"], 2);
    app.stop().await;
    let server = TestApp::start_on(&app.db, &[]).await;
    let api = crate::common::Api::new(server.addr);
    let reply =
        api.call(Method::POST, "/v1/usage/events", Some(&key), Some(json!({ "events": batch }))).await.expect(200);
    assert_eq!((reply["accepted"].as_i64(), reply["duplicates"].as_i64()), (Some(0), Some(2)));
    let u = api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
    assert_eq!(u["meters"]["tokens"]["used"], 42);
    server.shutdown().await.unwrap();
}

async fn grants_add_allowance_until_they_expire(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 1000})).await;
    app.api.create_user("u_1", "k").await;
    let key = service_key(&app).await;
    events(&app, &key, json!([{"id":"e","user_id":"u_1","input_tokens":1000}])).await.expect(200);
    assert_eq!(check(&app, &key, json!({"user_id":"u_1","meter":"tokens","amount":1})).await["allowed"], false);
    let grant = app
        .api
        .admin(
            Method::POST,
            "/admin/v1/users/u_1/grants",
            Some(json!({"meter":"tokens","amount":5000,"expires_at":null})),
        )
        .await;
    let grant = grant.expect(201);
    let u = usage(&app, "u_1").await;
    assert_eq!(grant["expires_at"], u["period"]["end"], "a grant lasts to the end of the period by default");
    assert_eq!(u["meters"]["tokens"]["limit"], 6000);
    assert_eq!(check(&app, &key, json!({"user_id":"u_1","meter":"tokens","amount":5000})).await["allowed"], true);
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1200)).to_rfc3339();
    app.api
        .admin(Method::POST, "/admin/v1/users/u_1/grants", Some(json!({"meter":"tokens","amount":7,"expires_at":soon})))
        .await
        .expect(201);
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["limit"], 6007);
    let listed = app.api.admin(Method::GET, "/admin/v1/users/u_1/grants", None).await.expect(200);
    assert_eq!(listed["grants"].as_array().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(1300)).await; // the grant's own expiry, not a synchronisation
    // The account cache (TTL 5 s) may still hold the grant; limits are evaluated at the current time.
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["limit"], 6000, "an expired grant adds nothing");
    let bad =
        app.api.admin(Method::POST, "/admin/v1/users/u_1/grants", Some(json!({"meter":"tokens","amount":0}))).await;
    assert_eq!(bad.expect(400)["error"]["field"], "amount");
}

async fn a_reset_starts_a_new_period_and_lifetime_totals_survive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 100})).await;
    app.api.create_user("u_1", "k").await;
    let key = service_key(&app).await;
    events(&app, &key, json!([{"id":"a","user_id":"u_1","input_tokens":90}])).await.expect(200);
    let before = usage(&app, "u_1").await;
    let after = app.api.admin(Method::POST, "/admin/v1/users/u_1/usage/reset", None).await.expect(200);
    assert_eq!(after["meters"]["tokens"]["used"], 0);
    assert_ne!(after["period"]["start"], before["period"]["start"]);
    assert_eq!(after["lifetime"]["tokens"], 90);
    events(&app, &key, json!([{"id":"b","user_id":"u_1","input_tokens":5}])).await.expect(200);
    let now = usage(&app, "u_1").await;
    assert_eq!(now["meters"]["tokens"]["used"], 5);
    assert_eq!(now["lifetime"]["tokens"], 95);
    assert_eq!(check(&app, &key, json!({"user_id":"u_1","meter":"tokens","amount":95})).await["allowed"], true);
}

async fn a_plan_change_keeps_usage_unless_told_to_reset(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "small", json!({"tokens": 100})).await;
    plan(&app, "big", json!({"tokens": 10000})).await;
    app.api.create_user("u_1", "small").await;
    let key = service_key(&app).await;
    events(&app, &key, json!([{"id":"a","user_id":"u_1","input_tokens":100}])).await.expect(200);
    app.api.admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({"plan":"big"}))).await.expect(200);
    let kept = usage(&app, "u_1").await;
    assert_eq!((kept["plan"].as_str(), kept["meters"]["tokens"]["used"].as_i64()), (Some("big"), Some(100)));
    assert_eq!(kept["meters"]["tokens"]["limit"], 10000);
    app.api
        .admin(Method::PUT, "/admin/v1/users/u_1/plan", Some(json!({"plan":"small","reset_usage":true})))
        .await
        .expect(200);
    let reset = usage(&app, "u_1").await;
    assert_eq!((reset["plan"].as_str(), reset["meters"]["tokens"]["used"].as_i64()), (Some("small"), Some(0)));
    assert_eq!(reset["lifetime"]["tokens"], 100);
}

async fn usage_is_readable_by_day_model_feature_key_and_provider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "pro").await;
    let key = service_key(&app).await;
    let day = |d: i64| (chrono::Utc::now() - chrono::Duration::days(d)).to_rfc3339();
    let batch = json!([
        {"id":"1","user_id":"u_1","model":"gpt-4o","provider":"openai","feature":"chat","key_id":"key_a","input_tokens":10,"timestamp":day(0)},
        {"id":"2","user_id":"u_1","model":"gpt-4o","provider":"openai","feature":"chat","key_id":"key_a","input_tokens":20,"timestamp":day(0)},
        {"id":"3","user_id":"u_1","model":"claude-sonnet-4","provider":"anthropic","feature":"review","key_id":"key_b","output_tokens":5,"timestamp":day(0)},
    ]);
    events(&app, &key, batch).await.expect(200);
    let grouped = |by: &'static str| {
        let app = &app;
        async move {
            let u =
                app.api.admin(Method::GET, &format!("/admin/v1/users/u_1/usage?group_by={by}"), None).await.expect(200);
            u["groups"].as_array().unwrap().clone()
        }
    };
    let models = grouped("model").await;
    assert_eq!(models.len(), 2);
    let gpt = models.iter().find(|g| g["model"] == "gpt-4o").unwrap();
    assert_eq!(
        (gpt["tokens"].as_i64(), gpt["requests"].as_i64(), gpt["events"].as_i64()),
        (Some(30), Some(2), Some(2))
    );
    assert!(gpt["cost_usd"].as_i64().unwrap() > 0);
    let features = grouped("feature").await;
    assert_eq!(features.iter().find(|g| g["feature"] == "review").unwrap()["tokens"], 5);
    let keys = grouped("key").await;
    assert_eq!(keys.iter().find(|g| g["key_id"] == "key_a").unwrap()["tokens"], 30);
    let providers = grouped("provider").await;
    assert_eq!(providers.iter().find(|g| g["provider"] == "anthropic").unwrap()["tokens"], 5);
    let days = grouped("day").await;
    assert_eq!(days.iter().map(|g| g["tokens"].as_i64().unwrap()).sum::<i64>(), 35);
    let bad = app.api.admin(Method::GET, "/admin/v1/users/u_1/usage?group_by=colour", None).await;
    assert_eq!(bad.expect(400)["error"]["field"], "group_by");
    // The user reads the same through their own key.
    let own = app.api.create_key("u_1", json!({"scopes":["usage:read"]})).await;
    let mine = app.api.call(Method::GET, "/v1/me/usage?group_by=model", own["key"].as_str(), None).await.expect(200);
    assert_eq!(mine["meters"]["tokens"]["used"], 35);
    assert_eq!(mine["groups"].as_array().unwrap().len(), 2);
    let proxy_only = app.api.create_key("u_1", json!({"scopes":["proxy"]})).await;
    app.api.call(Method::GET, "/v1/me/usage", proxy_only["key"].as_str(), None).await.expect(403);
}

async fn a_past_month_and_the_csv_export_read_the_ledger(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "pro").await;
    let key = service_key(&app).await;
    // Events in the past are allowed (late reports) and land in their own period.
    let batch = json!([
        {"id":"old_1","user_id":"u_1","input_tokens":11,"timestamp":"2026-01-15T10:00:00Z","model":"gpt-4o","user_agent":"tool, \"quoted\""},
        {"id":"old_2","user_id":"u_1","input_tokens":22,"timestamp":"2026-01-31T23:59:59Z"},
        {"id":"feb","user_id":"u_1","input_tokens":33,"timestamp":"2026-02-01T00:00:00Z"},
    ]);
    events(&app, &key, batch).await.expect(200);
    let january = app.api.admin(Method::GET, "/admin/v1/users/u_1/usage?period=2026-01", None).await.expect(200);
    assert_eq!(january["period"], json!({"start":"2026-01-01T00:00:00.000Z","end":"2026-02-01T00:00:00.000Z"}));
    assert_eq!(january["meters"]["tokens"]["used"], 33);
    app.api.admin(Method::GET, "/admin/v1/users/u_1/usage?period=2026-13", None).await.expect(400);

    let csv = app
        .api
        .http
        .get(format!("{}/admin/v1/users/u_1/usage?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", app.api.base))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("id,user_id,key_id,timestamp"), "{}", lines[0]);
    assert_eq!(lines.len(), 3, "header and the two January events: {text}");
    assert!(lines[1].starts_with("old_1,u_1,,2026-01-15T10:00:00.000Z"));
    assert!(lines[1].contains("\"tool, \"\"quoted\"\"\""), "fields are quoted: {}", lines[1]);
    let page = app
        .api
        .admin(Method::GET, "/admin/v1/users/u_1/usage/events?from=2026-01-01T00:00:00Z&limit=2", None)
        .await
        .expect(200);
    assert_eq!(page["total"], 3);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .api
        .admin(
            Method::GET,
            &format!("/admin/v1/users/u_1/usage/events?from=2026-01-01T00:00:00Z&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(rest.expect(200)["events"][0]["id"], "feb");
}

async fn the_overview_sorts_users_by_share_of_quota_used(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 100})).await;
    let key = service_key(&app).await;
    for (user, used) in [("low", 10), ("high", 90), ("mid", 50)] {
        app.api.create_user(user, "k").await;
        events(&app, &key, json!([{"id": format!("e_{user}"), "user_id": user, "input_tokens": used}]))
            .await
            .expect(200);
    }
    app.api.create_user("unlimited", "enterprise").await;
    let overview = app.api.admin(Method::GET, "/admin/v1/usage", None).await.expect(200);
    let order: Vec<&str> =
        overview["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(order, ["high", "mid", "low", "unlimited"]);
    assert_eq!(overview["users"][0]["share"], 0.9);
    assert_eq!(overview["users"][0]["binding_meter"], "tokens");
}

async fn byok_usage_is_recorded_but_counts_only_when_the_plan_says(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "own", json!({"tokens": 100})).await;
    app.api
        .admin(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"slug":"counted","limits":{"tokens":100},"byok_counts":true})),
        )
        .await
        .expect(201);
    app.api.create_user("a", "own").await;
    app.api.create_user("b", "counted").await;
    let key = service_key(&app).await;
    for user in ["a", "b"] {
        let e = json!([{"id": format!("byok_{user}"), "user_id": user, "input_tokens": 60, "key_source": "byok"}]);
        events(&app, &key, e).await.expect(200);
    }
    let a = usage(&app, "a").await;
    assert_eq!(a["meters"]["tokens"]["used"], 0, "own key: outside the quota");
    assert_eq!(a["lifetime"]["tokens"], 60, "but recorded");
    let by_model = app.api.admin(Method::GET, "/admin/v1/users/a/usage?group_by=provider", None).await.expect(200);
    assert_eq!(by_model["groups"][0]["tokens"], 60, "and visible");
    assert_eq!(usage(&app, "b").await["meters"]["tokens"]["used"], 60, "the plan counts own keys");
    let events_a = app.api.admin(Method::GET, "/admin/v1/users/a/usage/events", None).await.expect(200);
    assert_eq!(events_a["events"][0]["billable"], false);
}

async fn costs_come_from_the_price_table_and_its_overrides(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "pro").await;
    let key = service_key(&app).await;
    let prices = app.api.admin(Method::GET, "/admin/v1/prices", None).await.expect(200);
    let listed: Vec<&str> = prices["prices"].as_array().unwrap().iter().map(|p| p["model"].as_str().unwrap()).collect();
    for model in ["gpt-4o", "claude-sonnet-4", "gemini-2.5-flash", "llama-3.1-8b-instant"] {
        assert!(listed.contains(&model), "{model} is priced");
    }
    app.api
        .admin(Method::PUT, "/admin/v1/prices/my-model", Some(json!({"input": 1.0, "output": 2.0})))
        .await
        .expect(200);
    let bad =
        app.api.admin(Method::PUT, "/admin/v1/prices/my-model", Some(json!({"input": -1.0, "output": 2.0}))).await;
    assert_eq!(bad.expect(400)["error"]["field"], "input");
    let batch = json!([
        {"id":"a","user_id":"u_1","model":"my-model","input_tokens":1000000,"output_tokens":1000000},
        {"id":"b","user_id":"u_1","model":"nobody-knows","input_tokens":1000000},
        {"id":"c","user_id":"u_1","model":"gpt-4o","input_tokens":1000000,"cost_usd":42},
    ]);
    events(&app, &key, batch).await.expect(200);
    // 1 + 2 dollars, 0 for the unknown model, 42 µ$ given explicitly.
    assert_eq!(usage(&app, "u_1").await["meters"]["cost_usd"]["used"], 3_000_042);
    let metrics = app.api.http.get(format!("{}/metrics", app.api.base)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("tollgate_unknown_model_events_total{model=\"nobody-knows\"}"),
        "unknown models are counted"
    );
    app.api.admin(Method::DELETE, "/admin/v1/prices/my-model", None).await.expect(204);
    app.api.admin(Method::DELETE, "/admin/v1/prices/my-model", None).await.expect(404);
}

async fn metering_needs_the_meter_scope_and_a_users_key_meters_only_itself(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api.create_user("a", "pro").await;
    app.api.create_user("b", "pro").await;
    let reader =
        app.api.admin(Method::POST, "/admin/v1/service-keys", Some(json!({"scopes":["usage:read"]}))).await.expect(201);
    let reader = reader["key"].as_str().unwrap();
    events(&app, reader, json!([{"id":"x","user_id":"a"}])).await.expect(403);
    let a_key = app.api.create_key("a", json!({"scopes":["meter"]})).await;
    let a_key = a_key["key"].as_str().unwrap();
    let own = events(&app, a_key, json!([{"id":"mine","input_tokens":3}])).await.expect(200);
    assert_eq!(own["accepted"], 1, "a user's key meters itself without naming the user");
    let other = events(&app, a_key, json!([{"id":"theirs","user_id":"b","input_tokens":3}])).await.expect(400);
    assert_eq!(other["error"]["field"], "events[0].user_id");
    let body = json!({"user_id":"b","meter":"tokens","amount":1});
    app.api.call(Method::POST, "/v1/quota/check", Some(a_key), Some(body)).await.expect(403);
    assert_eq!(usage(&app, "b").await["lifetime"]["tokens"], 0, "nothing recorded for b");
    // The admin token meters too.
    let admin = app
        .api
        .admin(Method::POST, "/v1/usage/events", Some(json!({"events":[{"id":"adm","user_id":"b","input_tokens":1}]})))
        .await;
    assert_eq!(admin.expect(200)["accepted"], 1);
}

async fn responses_carry_rate_limit_headers_and_rpm_refusals_say_when_to_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api
        .admin(
            Method::POST,
            "/admin/v1/plans",
            Some(json!({"slug":"k","limits":{"requests":50,"tokens":1000},"rpm":5})),
        )
        .await
        .expect(201);
    app.api.create_user("u_1", "k").await;
    let service = service_key(&app).await;
    events(&app, &service, json!([{"id":"e","user_id":"u_1","requests":3}])).await.expect(200);
    let key = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    let reply = app.api.me(&key).await;
    let h = &reply.headers;
    assert_eq!(h["x-ratelimit-limit"], "50");
    assert_eq!(h["x-ratelimit-used"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "47");
    assert_eq!(h["x-ratelimit-resource"], "requests");
    let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!(reset > chrono::Utc::now().timestamp());
    assert!(h["ratelimit-policy"].to_str().unwrap().starts_with("\"requests\";q=50;w="));
    assert!(h["ratelimit"].to_str().unwrap().starts_with("\"requests\";r=47;t="));
    // The quota check carries the headers of the meter it checked.
    let body = json!({"user_id":"u_1","meter":"tokens","amount":1});
    let checked = app.api.call(Method::POST, "/v1/quota/check", Some(&service), Some(body)).await;
    assert_eq!(checked.headers["x-ratelimit-resource"], "tokens");
    assert_eq!(checked.headers["x-ratelimit-limit"], "1000");
    // rpm = 5: the first call above and four more pass, the sixth waits.
    for _ in 0..4 {
        app.api.me(&key).await.expect(200);
    }
    let refused = app.api.me(&key).await;
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Its headers name the limit that binds: the minute's.
    let header = |name: &str| refused.headers[name].to_str().unwrap().to_owned();
    assert_eq!(
        [header("x-ratelimit-resource"), header("x-ratelimit-limit"), header("x-ratelimit-remaining")],
        ["requests_per_minute", "5", "0"]
    );
    let reset: i64 = header("x-ratelimit-reset").parse().unwrap();
    assert!((reset - chrono::Utc::now().timestamp()).abs() <= 61, "{reset}");
    assert!(header("ratelimit").starts_with("\"requests_per_minute\";r=0;t="), "{}", header("ratelimit"));
    let body = refused.expect(429);
    assert_eq!(body["error"]["type"], "rate_limited");
    assert_eq!(body["error"]["meter"], "requests_per_minute");
    assert_eq!(body["error"]["limit"], 5);
    assert!(body["error"]["used"].is_number() && body["error"]["reset_at"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_taken_whatever_its_size_and_a_body_past_the_limit_is_refused_in_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    plan(&app, "big", json!({"tokens": null})).await;
    app.api.create_user("u_1", "big").await;
    let key = service_key(&app).await;
    // The most events a batch may hold, each with a long user agent: over
    // the 2 MB other routes take.
    let agent = "a".repeat(300);
    let batch: Vec<Value> = (0..10_000)
        .map(|i| json!({"id": format!("evt-{i}"), "user_id": "u_1", "input_tokens": 1, "user_agent": agent}))
        .collect();
    let body = json!({ "events": batch }).to_string();
    assert!(body.len() > 3 << 20, "{} bytes", body.len());
    let reply = app.api.raw(Method::POST, "/v1/usage/events", Some(&key), Some(body)).await.expect(200);
    assert_eq!(reply["accepted"], 10_000);
    // Past the batch route's own limit: a 400 in Tollgate's shape, naming the body.
    let huge = format!(r#"{{"events": [{{"id": "x", "user_id": "u_1", "feature": "{}"}}]}}"#, "f".repeat(33 << 20));
    // A key that may not meter is refused before its body is read.
    let proxy_only = app.api.create_key("u_1", json!({"scopes": ["proxy"]})).await["key"].as_str().unwrap().to_owned();
    let refused = app.api.raw(Method::POST, "/v1/usage/events", Some(&proxy_only), Some(huge.clone())).await;
    assert_eq!(refused.expect(403)["error"]["type"], "forbidden");
    let refused = app.api.raw(Method::POST, "/v1/usage/events", Some(&key), Some(huge)).await.expect(400);
    assert_eq!(
        (refused["error"]["type"].as_str(), refused["error"]["field"].as_str()),
        (Some("invalid_request"), Some("body"))
    );
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["used"], 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_demo_mode_meters_per_address_on_a_tiny_quota() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("TOLLGATE_ANONYMOUS_ENABLED", "true")]).await;
    let plan = app.api.admin(Method::GET, "/admin/v1/plans/demo", None).await.expect(200);
    let limit = plan["limits"]["requests"].as_i64().unwrap();
    app.api
        .admin(Method::PATCH, "/admin/v1/plans/demo", Some(json!({"rpm": null, "limits": {"requests": 3}})))
        .await
        .expect(200);
    for i in 0..3 {
        let reply = app.api.call(Method::GET, "/v1/me", None, None).await;
        assert_eq!(reply.headers["x-demo-mode"], "true");
        assert_eq!(reply.headers["x-ratelimit-remaining"], (2 - i).to_string().as_str());
        let body = reply.expect(200);
        assert_eq!(body["anonymous"], true);
        assert_eq!(body["user_id"], "anon:127.0.0.1");
    }
    let refused = app.api.call(Method::GET, "/v1/me", None, None).await;
    assert_eq!(refused.headers["x-demo-mode"], "true");
    assert!(refused.headers.contains_key("retry-after"));
    let body = refused.expect(429);
    assert_eq!(body["error"]["type"], "quota_exceeded");
    assert_eq!(
        (body["error"]["meter"].as_str(), body["error"]["limit"].as_i64(), body["error"]["used"].as_i64()),
        (Some("requests"), Some(3), Some(3))
    );
    assert!(limit > 0 && limit <= 100, "the demo quota is tiny");
    // A key still works as usual, without the demo marker.
    app.api.create_user("u_1", "enterprise").await;
    let key = app.api.create_key("u_1", json!({})).await["key"].as_str().unwrap().to_owned();
    let keyed = app.api.me(&key).await;
    assert!(keyed.headers.get("x-demo-mode").is_none());
    keyed.expect(200);
    // Off by default.
    let plain = TestApp::spawn(Backend::Sqlite).await;
    plain.api.call(Method::GET, "/v1/me", None, None).await.expect(401);
}

/// Review of issue #3: settling an anonymous call looked its account up
/// again by user id; `anon:<ip>` has no users row, so once the cached
/// account was gone the response became a 404 and the call went uncounted.
/// A cache TTL of 0 makes every call find the cache empty.
async fn anonymous_demo_calls_are_counted_when_the_cached_account_is_gone(backend: Backend) {
    let env = [("TOLLGATE_ANONYMOUS_ENABLED", "true"), ("TOLLGATE_KEY_CACHE_TTL_SECONDS", "0")];
    let app = TestApp::spawn_with(backend, &env).await;
    app.api
        .admin(Method::PATCH, "/admin/v1/plans/demo", Some(json!({"rpm": null, "limits": {"requests": 2}})))
        .await
        .expect(200);
    for left in [1, 0] {
        let reply = app.api.call(Method::GET, "/v1/me", None, None).await;
        assert_eq!(reply.headers["x-ratelimit-remaining"], left.to_string().as_str());
        assert_eq!(reply.expect(200)["user_id"], "anon:127.0.0.1");
    }
    let refused = app.api.call(Method::GET, "/v1/me", None, None).await.expect(429);
    assert_eq!((refused["error"]["used"].as_i64(), refused["error"]["limit"].as_i64()), (Some(2), Some(2)));
}

/// Review of issue #3: a settled reservation was recorded only in the
/// event's own meters, which the daily rollups did not keep: history and
/// breakdowns showed 0 for it, and the event was not billable.
async fn settled_reservations_show_in_history_and_breakdowns_and_are_billable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 1000, "requests": 10})).await;
    app.api.create_user("u_1", "k").await;
    let key = service_key(&app).await;
    for (meter, reserve, actual) in [("tokens", 300, 280), ("requests", 1, 1)] {
        let held = check(&app, &key, json!({"user_id":"u_1","meter":meter,"amount":reserve,"reserve":true})).await;
        let id = held["reservation_id"].as_str().unwrap();
        let path = format!("/v1/quota/reservations/{id}/settle");
        app.api.call(Method::POST, &path, Some(&key), Some(json!({"amount": actual}))).await.expect(200);
    }
    let live = usage(&app, "u_1").await;
    assert_eq!(
        (live["meters"]["tokens"]["used"].as_i64(), live["meters"]["requests"]["used"].as_i64()),
        (Some(280), Some(1))
    );
    let month = &chrono::Utc::now().to_rfc3339()[..7];
    let past = app.api.admin(Method::GET, &format!("/admin/v1/users/u_1/usage?period={month}"), None).await.expect(200);
    assert_eq!(past["meters"]["tokens"]["used"], 280, "{past}");
    assert_eq!(past["meters"]["requests"]["used"], 1, "{past}");
    assert_eq!(past["meters"]["input_tokens"]["used"], Value::Null, "only the reserved meter moved: {past}");
    let by_day = app.api.admin(Method::GET, "/admin/v1/users/u_1/usage?group_by=day", None).await.expect(200);
    let day = &by_day["groups"][0];
    assert_eq!(
        (day["tokens"].as_i64(), day["requests"].as_i64(), day["events"].as_i64()),
        (Some(280), Some(1), Some(2))
    );
    let ledger = app.api.admin(Method::GET, "/admin/v1/users/u_1/usage/events", None).await.expect(200);
    let events = ledger["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["billable"] == true && e["key_source"] == "platform"), "{ledger}");
    assert!(events.iter().any(|e| e["requests"] == 1), "a settled request is in its column: {ledger}");
}

async fn raw_events_past_retention_are_deleted_and_rollups_stay(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.api.create_user("u_1", "pro").await;
    let key = service_key(&app).await;
    let old = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let batch = json!([{"id":"old","user_id":"u_1","input_tokens":5,"timestamp":old}, {"id":"new","user_id":"u_1","input_tokens":7}]);
    events(&app, &key, batch).await.expect(200);
    app.stop().await;
    let server = TestApp::start_on(&app.db, &[("TOLLGATE_RETENTION_DAYS", "1")]).await;
    let api = crate::common::Api::new(server.addr);
    let from = "/admin/v1/users/u_1/usage/events?from=2000-01-01T00:00:00Z";
    let pruned = eventually(Duration::from_secs(5), || {
        let api = api.clone();
        async move { api.admin(Method::GET, from, None).await.expect(200)["total"] == 1 }
    })
    .await;
    assert!(pruned, "the raw event past retention is deleted");
    let u = api.admin(Method::GET, "/admin/v1/users/u_1/usage", None).await.expect(200);
    assert_eq!(u["lifetime"]["tokens"], 12, "totals stay");
    let path = format!("/admin/v1/users/u_1/usage?period={}&group_by=day", &old[..7]);
    let month = api.admin(Method::GET, &path, None).await.expect(200);
    let day = month["groups"].as_array().unwrap().iter().find(|g| g["day"] == old[..10]).cloned();
    assert_eq!(day.expect("the old day's rollup")["tokens"], 5, "daily rollups stay");
    let late = api
        .call(
            Method::POST,
            "/v1/usage/events",
            Some(&key),
            Some(json!({"events":[{"id":"late","user_id":"u_1","timestamp":old}]})),
        )
        .await;
    assert_eq!(
        late.expect(400)["error"]["field"],
        "events[0].timestamp",
        "an event older than retention would escape deduplication"
    );
    server.shutdown().await.unwrap();
}

async fn per_user_overrides_replace_the_plans_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    plan(&app, "k", json!({"tokens": 100, "requests": 10})).await;
    app.api.create_user("u_1", "k").await;
    let key = service_key(&app).await;
    let user = app
        .api
        .admin(Method::PATCH, "/admin/v1/users/u_1", Some(json!({"limits": {"tokens": 5000, "requests": null}})))
        .await;
    assert_eq!(user.expect(200)["limit_overrides"], json!({"tokens": 5000, "requests": null}));
    let u = usage(&app, "u_1").await;
    assert_eq!(u["meters"]["tokens"]["limit"], 5000);
    assert!(u["meters"].get("requests").is_none_or(|m| m["limit"].is_null()), "null overrides to unlimited");
    assert_eq!(check(&app, &key, json!({"user_id":"u_1","meter":"tokens","amount":4000})).await["allowed"], true);
    app.api.admin(Method::PATCH, "/admin/v1/users/u_1", Some(json!({"limits": null}))).await.expect(200);
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["limit"], 100, "back to the plan's");
    let bad = app.api.admin(Method::PATCH, "/admin/v1/users/u_1", Some(json!({"limits": {"tokens": -5}}))).await;
    assert_eq!(bad.expect(400)["error"]["field"], "limits");
}

async fn tokens_per_minute_limit_refuses_checks_and_says_when_to_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api
        .admin(Method::POST, "/admin/v1/plans", Some(json!({"slug":"k","tpm":1000,"limits":{"tokens":1000000}})))
        .await
        .expect(201);
    app.api.create_user("u_1", "k").await;
    let key = service_key(&app).await;
    let first = check(&app, &key, json!({"user_id":"u_1","meter":"tokens","amount":800,"reserve":true})).await;
    assert_eq!(first["allowed"], true);
    let reply = app
        .api
        .call(
            Method::POST,
            "/v1/quota/check",
            Some(&key),
            Some(json!({"user_id":"u_1","meter":"tokens","amount":300,"reserve":true})),
        )
        .await;
    assert!(reply.headers.contains_key("retry-after"));
    let second = reply.expect(200);
    assert_eq!((second["allowed"].as_bool(), second["reason"].as_str()), (Some(false), Some("tokens_per_minute")));
    assert!(second["reservation_id"].is_null());
    assert!(second["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(usage(&app, "u_1").await["meters"]["tokens"]["reserved"], 800, "the refused check holds nothing");
}

async fn anchored_and_lifetime_periods_are_reported(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.api
        .admin(Method::POST, "/admin/v1/plans", Some(json!({"slug":"anch","period":"anchored","limits":{"tokens":10}})))
        .await
        .expect(201);
    app.api
        .admin(Method::POST, "/admin/v1/plans", Some(json!({"slug":"life","period":"lifetime","limits":{"tokens":10}})))
        .await
        .expect(201);
    let anchor = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    app.api
        .admin(Method::POST, "/admin/v1/users", Some(json!({"id":"a","plan":"anch","billing_anchor":anchor})))
        .await
        .expect(201);
    app.api.create_user("l", "life").await;
    let a = usage(&app, "a").await;
    let start = chrono::DateTime::parse_from_rfc3339(a["period"]["start"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(a["period"]["end"].as_str().unwrap()).unwrap();
    let anchor_dt = chrono::DateTime::parse_from_rfc3339(&anchor).unwrap();
    assert!(start > anchor_dt && start <= chrono::Utc::now() && end > chrono::Utc::now());
    assert_eq!(start.time(), anchor_dt.time(), "periods run from the anchor's time of day");
    let l = usage(&app, "l").await;
    assert!(l["period"]["end"].is_null(), "a lifetime period has no end");
    assert_eq!(l["period"]["start"], "1970-01-01T00:00:00.000Z");
}

/// Review of issue #3: when one group commit failed, every caller in the
/// group got the error. The jobs are queued on a single-threaded runtime
/// before the writer runs, so they are sure to share one transaction; a
/// trigger makes one of them fail in the store.
mod group_commit {
    use std::sync::Arc;
    use std::time::Duration;

    use tollgate_domain::{Meter, Timestamp};
    use tollgate_server::metering::{Metering, MeteringConfig};
    use tollgate_store::{EventRow, PreparedEvent, Store, StoreConfig};

    use crate::common::{Backend, TestApp};

    pub(super) fn event(id: &str, tokens: i64) -> PreparedEvent {
        let row = EventRow {
            id: id.into(),
            user_id: "u_1".into(),
            ts: Timestamp::now().millis(),
            key_source: "platform".into(),
            billable: true,
            ..EventRow::default()
        };
        PreparedEvent {
            row,
            meters: vec![(Meter::builtin(Meter::TOKENS), tokens)],
            period_start: Some(0),
            ..Default::default()
        }
    }

    /// The (stopped) app's store, opened again.
    pub(super) async fn open_store(app: &TestApp) -> Arc<Store> {
        let config = match app.db.database_url() {
            Some(url) => StoreConfig::Postgres { url },
            None => StoreConfig::Sqlite { path: app.db.sqlite_path(), fsync_each_commit: false },
        };
        Arc::new(Store::open(&config).await.unwrap())
    }

    async fn one_failing_job_fails_only_its_own_caller(backend: Backend) {
        let mut app = TestApp::spawn(backend).await;
        app.api.create_user("u_1", "pro").await;
        app.stop().await;
        let poison = match backend {
            Backend::Sqlite => vec![
                "CREATE TRIGGER poison BEFORE INSERT ON usage_events WHEN NEW.id = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned event'); END",
            ],
            Backend::Postgres => vec![
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF; RETURN NEW; END $$",
                "CREATE TRIGGER poison BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION poison()",
            ],
        };
        for sql in poison {
            app.db.execute(sql).await;
        }
        let store = open_store(&app).await;
        let config = MeteringConfig { account_ttl: Duration::from_secs(5), reservation_ttl: Duration::from_secs(60) };
        let metering = Metering::start(store.clone(), config, Vec::new());
        let (a, bad, b) = tokio::join!(
            metering.commit(vec![event("a", 3)], None),
            metering.commit(vec![event("poison", 100)], None),
            metering.commit(vec![event("b_1", 4), event("b_2", 5)], None),
        );
        assert!(bad.is_err(), "the bad job fails");
        assert_eq!(a.unwrap(), [true], "a job beside it commits");
        assert_eq!(b.unwrap(), [true, true], "and so does another");
        assert_eq!(store.lifetime_of("u_1").await.unwrap(), [("tokens".to_owned(), 12)]);
        metering.shutdown().await;
    }

    #[tokio::test]
    async fn sqlite() {
        one_failing_job_fails_only_its_own_caller(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn postgres() {
        one_failing_job_fails_only_its_own_caller(Backend::Postgres).await
    }
}

/// Who made a response the provider stored, as the ledger's commit records
/// it beside the call's event (`gateway_responses`).
mod response_owners {
    use tollgate_domain::Timestamp;
    use tollgate_store::{Kept, Owned, PreparedEvent, Recorded};

    use super::group_commit::{event, open_store};
    use crate::common::{Backend, TestApp};

    fn made(id: &str, user: &str, response: &str) -> PreparedEvent {
        let mut made = event(id, 1);
        made.row.user_id = user.into();
        made.row.provider = Some("openai".into());
        made.response_id = Some(response.into());
        made
    }

    async fn the_newest_maker_of_a_response_id_owns_it_until_it_is_forgotten(backend: Backend) {
        let mut app = TestApp::spawn(backend).await;
        app.stop().await;
        let store = open_store(&app).await;
        let owner = async |id: &str| store.response_owner(id).await.unwrap().map(|o| (o.user_id, o.provider));
        let of = |user: &str| Some((user.to_owned(), "openai".to_owned()));

        store.commit_usage(&[made("e1", "u_1", "resp_a")], None).await.unwrap();
        assert_eq!(owner("resp_a").await, of("u_1"));
        let made_at = store.response_owner("resp_a").await.unwrap().unwrap().created_at;
        assert!(made_at > 0 && made_at <= Timestamp::now().millis(), "when its call began");
        let source = store.response_owner("resp_a").await.unwrap().unwrap().key_source;
        assert_eq!(source, "platform", "the credential that made it, as its event says");
        store.commit_usage(&[made("e1", "u_2", "resp_a")], None).await.unwrap();
        assert_eq!(owner("resp_a").await, of("u_1"), "a replayed event changes nothing");
        // An id given again (a provider restarted, say) is its newest maker's.
        store.commit_usage(&[made("e2", "u_2", "resp_a")], None).await.unwrap();
        assert_eq!(owner("resp_a").await, of("u_2"));
        let with_items = |id: &str, user: &str, response: &str, items: &[&str]| PreparedEvent {
            items: items.iter().map(|i| i.to_string()).collect(),
            ..made(id, user, response)
        };
        let both = [
            with_items("e3", "u_1", "resp_b", &["msg_b1"]),
            with_items("e4", "u_2", "resp_b", &["msg_b2", "rs_b3"]),
            made("e5", "u_1", "resp_c"),
        ];
        store.commit_usage(&both, None).await.unwrap();
        assert_eq!((owner("resp_b").await, owner("resp_c").await), (of("u_2"), of("u_1")), "the later in one commit");
        assert_eq!(owner("resp_none").await, None);
        // A response's output items are its maker's, each naming the response.
        let item_of = async |id: &str| store.response_owner(id).await.unwrap().and_then(|o| o.item_of);
        assert_eq!(owner("rs_b3").await, of("u_2"));
        assert_eq!(item_of("rs_b3").await.as_deref(), Some("resp_b"));
        assert_eq!(item_of("resp_b").await, None, "a response is no item");
        assert_eq!(owner("msg_b1").await, of("u_1"), "the earlier maker's item stays theirs");
        // What a call going on from a response brings along: its call's
        // input and output, less its reasoning; nothing for an item.
        let mut long = with_items("e6", "u_1", "resp_d", &["msg_d1"]);
        (long.row.input_tokens, long.row.output_tokens, long.row.reasoning_tokens) = (900, 140, 40);
        store.commit_usage(&[long], None).await.unwrap();
        let context = async |id: &str| store.response_owner(id).await.unwrap().map(|o| o.context_tokens);
        assert_eq!((context("resp_d").await, context("msg_d1").await), (Some(1000), Some(0)));
        // Many at once (in runs of 4 and 1 here), the unknown left out.
        let asked = ["resp_c", "nope", "rs_b3", "msg_b1", "resp_a", "msg_b2"];
        let mut found: Vec<String> =
            store.response_owners(&asked).await.unwrap().into_iter().map(|o| o.response_id).collect();
        found.sort();
        assert_eq!(found, ["msg_b1", "msg_b2", "resp_a", "resp_c", "rs_b3"]);

        store.forget_kept("resp_b", "u_1").await.unwrap();
        assert_eq!(owner("resp_b").await, of("u_2"), "only its owner's rows are forgotten");
        store.forget_kept("resp_b", "u_2").await.unwrap();
        assert_eq!(owner("resp_b").await, None, "deleted at the provider");
        assert_eq!((owner("msg_b2").await, owner("rs_b3").await), (None, None), "with its items");
        // Recorded outside a call's event: a conversation made (its newest
        // maker owns it), and items listed to a user (never taking over).
        let kept = |id: &'static str, user: &'static str, kind: Kept, item_of: Option<&'static str>| Owned {
            id,
            kind,
            user_id: user,
            provider: "openai",
            key_source: "platform",
            event_id: "",
            created_at: Timestamp::now().millis(),
            item_of,
        };
        store.keep_owned([kept("conv_1", "u_2", Kept::Conversation, None)], Recorded::Newest).await.unwrap();
        store.keep_owned([kept("conv_1", "u_1", Kept::Conversation, None)], Recorded::Newest).await.unwrap();
        assert_eq!(owner("conv_1").await, of("u_1"));
        let listed =
            [kept("msg_c1", "u_1", Kept::Item, Some("conv_1")), kept("resp_c", "u_2", Kept::Item, Some("conv_9"))];
        store.keep_owned(listed, Recorded::First).await.unwrap();
        assert_eq!(item_of("msg_c1").await.as_deref(), Some("conv_1"));
        let resp_c = store.response_owner("resp_c").await.unwrap().unwrap();
        assert_eq!(
            (resp_c.user_id.as_str(), resp_c.kind.as_str(), resp_c.item_of),
            ("u_1", "response", None),
            "not taken over"
        );

        store.delete_events_before(Timestamp::now().millis() + 1).await.unwrap();
        assert_eq!((owner("resp_a").await, owner("resp_c").await), (None, None), "gone with their events");
        assert_eq!((owner("conv_1").await, owner("msg_c1").await), (of("u_1"), of("u_1")), "kept till deleted");
        store.forget_kept("conv_1", "u_1").await.unwrap();
        assert_eq!((owner("conv_1").await, owner("msg_c1").await), (None, None));
    }

    #[tokio::test]
    async fn sqlite() {
        the_newest_maker_of_a_response_id_owns_it_until_it_is_forgotten(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn postgres() {
        the_newest_maker_of_a_response_id_owns_it_until_it_is_forgotten(Backend::Postgres).await
    }
}
