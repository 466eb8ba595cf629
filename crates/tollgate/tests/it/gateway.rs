//! The LLM gateway against `mock-llm` in process: every proxy route,
//! streamed and not, routing, accounting (the provider's usage settled, cut
//! streams estimated, output limits lowered, refusals before the call),
//! credentials (BYOK and platform keys, as the upstream received them),
//! errors in each provider's shape, timeouts, disconnects and headers.
//! Issue #5.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_mock::{MockServer, Recorded};

use crate::both_stores;
use crate::common::{Backend, BinApp, Reply, TestApp, TestDb, eventually, mock_llm};

both_stores!(
    a_chat_completion_is_answered_and_recorded_with_the_usage_the_provider_reported,
    a_stream_is_counted_when_the_client_did_not_ask_for_usage_and_loses_the_extra_chunk,
    anthropic_messages_are_metered_from_message_start_and_message_delta,
    the_responses_api_is_metered_whole_and_streamed_and_settles_cuts_and_lowers_limits_as_chat_does,
    stored_responses_reach_only_the_user_who_made_them_unmetered,
    stored_items_are_named_only_by_their_maker_on_the_platforms_key,
    conversations_are_made_for_and_reached_only_by_their_maker,
    legacy_completions_are_metered_and_their_stream_usage_asked_for_and_removed_as_chats,
    gemini_streams_settle_the_last_cumulative_usage_never_the_sum,
    byok_calls_use_the_users_own_key_and_count_only_when_the_plan_says,
    the_output_limit_is_lowered_to_what_is_left_and_nothing_overshoots,
    going_on_from_a_stored_response_holds_what_it_brings_along,
    a_cut_stream_is_settled_from_the_text_that_passed_and_marked_estimated,
    many_users_streaming_at_once_each_have_the_ledger_their_upstream_calls_reported,
    a_second_server_on_the_same_database_records_its_calls_in_the_same_ledger,
);

pub const OPENAI_KEY: &str = "sk-platform-openai-0001";
pub const ANTHROPIC_KEY: &str = "sk-ant-platform-0001";
pub const GEMINI_KEY: &str = "AIzaPlatformGemini0001";
pub const GROQ_KEY: &str = "gsk_platform_groq_0001";

/// A gateway in front of an in-process mock, with one plan (`gw`), one
/// user (`u_1`) on it and a key of theirs.
pub struct Gateway {
    pub app: TestApp,
    pub mock: MockServer,
    pub key: String,
}

impl Gateway {
    /// `plan` is the plan's JSON without its slug; `extra` more settings;
    /// `file` the configuration file.
    pub async fn start(backend: Backend, plan: Value, extra: &[(&str, &str)], file: &str) -> Gateway {
        let mock = mock_llm(&[]).await;
        let (openai, groq, base) = (mock.openai_base_url(), mock.groq_base_url(), mock.base_url());
        let mut env: Vec<(&str, &str)> = vec![
            ("TOLLGATE_OPENAI_BASE_URL", &openai),
            ("TOLLGATE_GROQ_BASE_URL", &groq),
            ("TOLLGATE_ANTHROPIC_BASE_URL", &base),
            ("TOLLGATE_GEMINI_BASE_URL", &base),
            ("OPENAI_API_KEY", OPENAI_KEY),
            ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
            ("GEMINI_API_KEY", GEMINI_KEY),
            ("GROQ_API_KEY", GROQ_KEY),
        ];
        env.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
        env.extend_from_slice(extra);
        let app = TestApp::spawn_with_file(backend, &env, file).await;
        let mut plan = plan;
        plan["slug"] = json!("gw");
        app.api.admin(Method::POST, "/admin/v1/plans", Some(plan)).await.expect(201);
        let key = Gateway::user(&app, "u_1").await;
        Gateway { app, mock, key }
    }

    /// A new user on the plan `gw`; returns their key.
    pub async fn user(app: &TestApp, id: &str) -> String {
        app.api.create_user(id, "gw").await;
        let body = json!({"name": "sdk", "scopes": ["proxy", "usage:read", "credentials:manage"]});
        app.api.create_key(id, body).await["key"].as_str().unwrap().to_owned()
    }

    pub fn base(&self) -> &str {
        &self.app.api.base
    }

    /// A proxy call with the user's key as a bearer token.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.app.api.call(Method::POST, path, Some(&self.key), Some(body)).await
    }

    pub async fn usage(&self, user: &str) -> Value {
        self.app.api.admin(Method::GET, &format!("/admin/v1/users/{user}/usage"), None).await.expect(200)
    }

    /// The user's ledger, oldest first.
    pub async fn events(&self, user: &str) -> Vec<Value> {
        let page = self.app.api.admin(Method::GET, &format!("/admin/v1/users/{user}/usage/events"), None).await;
        let mut events = page.expect(200)["events"].as_array().unwrap().clone();
        events.sort_by_key(|e| e["timestamp"].as_str().unwrap_or("").to_owned());
        events
    }

    /// A streamed call: the response, whose body is read by the caller.
    pub async fn stream(&self, path: &str, body: Value) -> reqwest::Response {
        self.app
            .api
            .http
            .post(format!("{}{path}", self.base()))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .flat_map(|event| event.lines().filter_map(|l| l.trim_end_matches('\r').strip_prefix("data: ")))
        .map(str::to_owned)
        .collect()
}

fn usage_of(r: &Recorded) -> tollgate_mock::Usage {
    r.usage.unwrap_or_else(|| panic!("request {} reported no usage", r.seq))
}

fn chat(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

async fn a_chat_completion_is_answered_and_recorded_with_the_usage_the_provider_reported(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000, "requests": 1000}}), &[], "").await;
    let reply = gw
        .app
        .api
        .http
        .post(format!("{}/v1/chat/completions", gw.base()))
        .bearer_auth(&gw.key)
        .header("user-agent", "gateway-test/1.0")
        .json(&chat("Tell me about toll gates [mock tokens=6 cached=2 reasoning=3]"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let headers = reply.headers().clone();
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"].as_str().unwrap().split_whitespace().count(), 6);

    let sent = gw.mock.requests();
    assert_eq!(sent.len(), 1);
    let upstream = &sent[0];
    assert_eq!(upstream.credential.as_deref(), Some(OPENAI_KEY), "the platform key went upstream");
    assert!(
        upstream.headers.values().all(|v| !v.contains(&gw.key)),
        "the gateway key never leaves: {:?}",
        upstream.headers
    );
    assert_eq!(upstream.body["model"], "gpt-4o-mini");
    let reported = usage_of(upstream);
    assert_eq!(body["usage"]["prompt_tokens"], reported.input_tokens);

    for name in [
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(headers.contains_key(name), "{name} is missing: {headers:?}");
    }
    assert_eq!(headers["x-ratelimit-resource"], "tokens");
    let total = reported.input_tokens + reported.output_tokens;
    assert_eq!(headers["x-ratelimit-used"].to_str().unwrap(), total.to_string(), "the headers come after the commit");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "100000");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "999");

    let usage = gw.usage("u_1").await;
    assert_eq!(usage["meters"]["tokens"]["used"], total);
    assert_eq!(usage["meters"]["requests"]["used"], 1);
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["route"], "/v1/chat/completions");
    assert_eq!((e["provider"].as_str(), e["model"].as_str()), (Some("openai"), Some("gpt-4o-mini")));
    assert_eq!(e["input_tokens"], reported.input_tokens);
    assert_eq!(e["output_tokens"], reported.output_tokens);
    assert_eq!((e["cached_tokens"].as_u64(), e["reasoning_tokens"].as_u64()), (Some(2), Some(3)));
    assert_eq!(e["status_code"], 200);
    assert_eq!(e["key_source"], "platform");
    assert_eq!((e["billable"].as_bool(), e["estimated"].as_bool()), (Some(true), Some(false)));
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["user_agent"], "gateway-test/1.0");
    assert!(e["latency_ms"].is_i64() && e["ttft_ms"].is_i64());
    assert!(e["request_bytes"].as_i64().unwrap() > 0 && e["response_bytes"].as_i64().unwrap() > 0);
    assert!(e["cost_usd"].as_i64().unwrap() > 0, "gpt-4o-mini has a price");
    assert!(e["key_id"].as_str().unwrap().starts_with("key_"));
}

async fn a_stream_is_counted_when_the_client_did_not_ask_for_usage_and_loses_the_extra_chunk(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let mut body = chat("stream to me [mock tokens=5]");
    body["stream"] = json!(true);
    let response = gw.stream("/v1/chat/completions", body.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(response.headers().contains_key("x-ratelimit-remaining-tokens"));
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "the usage chunk was removed");
    assert!(chunks.iter().all(|c| c["usage"].is_null()));
    let upstream = &gw.mock.requests()[0];
    assert_eq!(upstream.body["stream_options"]["include_usage"], true, "the gateway asked for it");
    let reported = usage_of(upstream);
    let events = gw.events("u_1").await;
    assert_eq!(events[0]["output_tokens"], reported.output_tokens);
    assert_eq!(events[0]["input_tokens"], reported.input_tokens);
    assert_eq!(events[0]["estimated"], false);

    // Asked for: passed as it came.
    body["stream_options"] = json!({"include_usage": true});
    let data = sse_data(&gw.stream("/v1/chat/completions", body).await.text().await.unwrap());
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(gw.usage("u_1").await["meters"]["tokens"]["used"], 2 * (reported.input_tokens + 5));
}

async fn the_responses_api_is_metered_whole_and_streamed_and_settles_cuts_and_lowers_limits_as_chat_does(
    backend: Backend,
) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 1000}}), &[], "").await;
    let reply = gw
        .post(
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "What is a toll gate? [mock tokens=6]"}),
        )
        .await;
    assert!(reply.headers.contains_key("x-ratelimit-remaining-tokens"));
    let reply = reply.expect(200);
    assert_eq!(reply["object"], "response");
    let upstream = &gw.mock.requests()[0];
    assert_eq!(upstream.path, "/v1/responses");
    assert_eq!(upstream.credential.as_deref(), Some(OPENAI_KEY));
    let reported = usage_of(upstream);
    assert_eq!(reply["usage"]["output_tokens"], 6);
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["route"], "/v1/responses");
    assert_eq!(events[0]["input_tokens"], reported.input_tokens);
    assert_eq!(events[0]["output_tokens"], reported.output_tokens);
    assert_eq!(events[0]["estimated"], false);

    // Streamed: every event passes, the last carries the usage.
    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "stream to me [mock tokens=5]"}]}]});
    let response = gw.stream("/v1/responses", body).await;
    assert_eq!(response.status(), 200);
    let data: Vec<Value> =
        sse_data(&response.text().await.unwrap()).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let deltas = data.iter().filter(|e| e["type"] == "response.output_text.delta").count();
    assert_eq!(deltas, 5);
    let last = data.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["usage"]["output_tokens"], 5);
    let upstream = &gw.mock.requests()[1];
    assert!(upstream.body.get("stream_options").is_none(), "the Responses API always reports usage");
    let events = gw.events("u_1").await;
    assert_eq!(events[1]["output_tokens"], 5);
    assert_eq!(events[1]["input_tokens"], usage_of(upstream).input_tokens);
    assert_eq!(events[1]["estimated"], false);

    // Cut: settled from the text that passed.
    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": "cut me [mock cut_after=3 tokens=10]"});
    let text = gw.stream("/v1/responses", body).await.text().await.unwrap_or_default();
    assert!(!text.contains("response.completed"), "{text}");
    let events = gw.events("u_1").await;
    assert_eq!((events[2]["output_tokens"].as_u64(), events[2]["estimated"].as_bool()), (Some(3), Some(true)));

    // More than is left: max_output_tokens is lowered to it.
    let used = gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap();
    let reply = gw
        .post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "a long answer", "max_output_tokens": 5000}))
        .await
        .expect(200);
    let lowered = gw.mock.requests()[3].body["max_output_tokens"].as_u64().unwrap();
    assert!(lowered < 1000 - used, "lowered to {lowered}, with {} left", 1000 - used);
    assert_eq!(reply["usage"]["output_tokens"], lowered);
    assert_eq!(reply["status"], "incomplete");
    assert!(gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap() <= 1000, "zero overshoot");
}

async fn stored_responses_reach_only_the_user_who_made_them_unmetered(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let other = Gateway::user(&gw.app, "u_2").await;
    let made = gw
        .post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "keep this [mock tokens=4]"}))
        .await
        .expect(200);
    let id = made["id"].as_str().unwrap().to_owned();
    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": "and this [mock tokens=3]"});
    let streamed = sse_data(&gw.stream("/v1/responses", body).await.text().await.unwrap());
    let created: Value = serde_json::from_str(&streamed[0]).unwrap();
    let streamed_id = created["response"]["id"].as_str().unwrap().to_owned();

    // Its maker gets it, whole or streamed, from the provider it was made through.
    let fetched = ask(&gw, Method::GET, &format!("/v1/responses/{id}"), &gw.key).await;
    assert!(fetched.headers.contains_key("x-ratelimit-remaining-tokens"));
    let fetched = fetched.expect(200);
    assert_eq!((&fetched["id"], &fetched["output"], &fetched["usage"]), (&made["id"], &made["output"], &made["usage"]));
    let upstream = gw.mock.requests().last().unwrap().clone();
    assert_eq!((upstream.method.as_str(), upstream.path.as_str()), ("GET", format!("/v1/responses/{id}").as_str()));
    assert_eq!(upstream.credential.as_deref(), Some(OPENAI_KEY), "the platform key, never the gateway key");
    let fetched = ask(&gw, Method::GET, &format!("/v1/responses/{streamed_id}"), &gw.key).await.expect(200);
    assert_eq!(fetched["usage"]["output_tokens"], 3);
    // The query passes on, less a gateway key given in it.
    let path = format!("/v1/responses/{id}/input_items?order=asc&limit=1&key={}", gw.key);
    let items = gw.app.api.call(Method::GET, &path, None, None).await.expect(200);
    assert_eq!(items["data"][0]["content"][0]["text"], "keep this [mock tokens=4]");
    assert_eq!(gw.mock.requests().last().unwrap().query.as_deref(), Some("order=asc&limit=1"));

    // Anyone else is told it does not exist, and the provider is not asked.
    let asked = gw.mock.requests().len();
    for path in [format!("/v1/responses/{id}"), format!("/v1/responses/{id}/input_items")] {
        let refused = ask(&gw, Method::GET, &path, &other).await.expect(404);
        assert_eq!(refused["error"]["message"], format!("Response with id '{id}' not found."));
    }
    ask(&gw, Method::DELETE, &format!("/v1/responses/{id}"), &other).await.expect(404);
    let going_on = json!({"model": "gpt-4o-mini", "input": "what did they say?", "previous_response_id": id});
    let refused = gw.app.api.call(Method::POST, "/v1/responses", Some(&other), Some(going_on.clone())).await;
    assert_eq!(refused.expect(404)["error"]["param"], "previous_response_id");
    assert_eq!(gw.mock.requests().len(), asked, "nothing reached the provider");
    assert!(gw.events("u_2").await.is_empty());
    let refused = ask(&gw, Method::GET, "/v1/responses/resp%20x", &gw.key).await.expect(400);
    assert_eq!(refused["error"]["param"], "response_id");
    let refused = ask(&gw, Method::GET, &format!("/v1/responses/{id}?stream=true"), &gw.key).await.expect(400);
    assert_eq!(refused["error"]["param"], "stream", "only a background response streams again");
    assert_eq!(gw.mock.requests().len(), asked, "nor these");

    // Its maker goes on from it, cannot cancel it (not a background
    // response: the provider's 400 passes), and deletes it.
    gw.post("/v1/responses", going_on).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().body["previous_response_id"], id.as_str());
    ask(&gw, Method::POST, &format!("/v1/responses/{id}/cancel"), &gw.key).await.expect(400);
    let deleted = ask(&gw, Method::DELETE, &format!("/v1/responses/{id}"), &gw.key).await.expect(200);
    assert_eq!((&deleted["id"], &deleted["deleted"]), (&json!(id), &json!(true)));
    let asked = gw.mock.requests().len();
    ask(&gw, Method::GET, &format!("/v1/responses/{id}"), &gw.key).await.expect(404);
    assert_eq!(gw.mock.requests().len(), asked, "forgotten once deleted");

    // A response the provider was told not to keep is nobody's to fetch.
    let unkept = json!({"model": "gpt-4o-mini", "input": "forget me", "store": false});
    let unkept = gw.post("/v1/responses", unkept).await.expect(200)["id"].as_str().unwrap().to_owned();
    let asked = gw.mock.requests().len();
    ask(&gw, Method::GET, &format!("/v1/responses/{unkept}"), &gw.key).await.expect(404);
    assert_eq!(gw.mock.requests().len(), asked);

    // Only the four calls that made responses are in the ledger.
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 4);
    assert!(events.iter().all(|e| e["route"] == "/v1/responses"));

    // Each is fetched from the account that made it, whatever the user holds now.
    let own = "sk-users-own-openai-key-88";
    let set = gw.app.api.call(Method::PUT, "/v1/me/credentials/openai", Some(&gw.key), Some(json!({"secret": own})));
    set.await.expect(200);
    ask(&gw, Method::GET, &format!("/v1/responses/{streamed_id}"), &gw.key).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().credential.as_deref(), Some(OPENAI_KEY), "made on the platform's");
    let mine = gw.post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "on my key"})).await.expect(200);
    let mine = mine["id"].as_str().unwrap().to_owned();
    ask(&gw, Method::GET, &format!("/v1/responses/{mine}"), &gw.key).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().credential.as_deref(), Some(own));
    ask(&gw, Method::DELETE, "/v1/me/credentials/openai", &gw.key).await.expect(204);
    let gone = ask(&gw, Method::GET, &format!("/v1/responses/{mine}"), &gw.key).await.expect(400);
    assert!(gone["error"]["message"].as_str().unwrap().contains("own openai key"), "{gone}");
    let plan = |byok_required: bool| {
        gw.app.api.admin(Method::PATCH, "/admin/v1/plans/gw", Some(json!({"byok_required": byok_required})))
    };
    plan(true).await.expect(200);
    let barred = ask(&gw, Method::GET, &format!("/v1/responses/{streamed_id}"), &gw.key).await.expect(400);
    assert!(barred["error"]["message"].as_str().unwrap().contains("platform's openai key"), "{barred}");
    plan(false).await.expect(200);

    // A user deleted and made again under the same id is someone else.
    gw.app.api.admin(Method::DELETE, "/admin/v1/users/u_1", None).await.expect(204);
    let again = Gateway::user(&gw.app, "u_1").await;
    ask(&gw, Method::GET, &format!("/v1/responses/{streamed_id}"), &again).await.expect(404);
}

async fn stored_items_are_named_only_by_their_maker_on_the_platforms_key(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let other = Gateway::user(&gw.app, "u_2").await;
    let made = gw.post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "keep this"})).await.expect(200);
    let (id, item) = (made["id"].as_str().unwrap().to_owned(), made["output"][0]["id"].as_str().unwrap().to_owned());
    let body = json!({"model": "gpt-4o-mini", "stream": true, "input": "and this"});
    let streamed = sse_data(&gw.stream("/v1/responses", body).await.text().await.unwrap());
    let added: Value = streamed
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "response.output_item.added")
        .unwrap();
    let streamed_item = added["item"]["id"].as_str().unwrap().to_owned();
    let naming = |items: Value| json!({"model": "gpt-4o-mini", "input": items});
    let reference = |item: &str| json!({"type": "item_reference", "id": item});

    // Anyone else naming them is told they do not exist, and the provider
    // (which keeps every user's items in the platform's account) is not asked.
    let asked = gw.mock.requests().len();
    for items in [
        json!([reference(&item)]),
        json!([{"id": streamed_item}]),
        json!([{"role": "user", "content": "hi"}, reference(&streamed_item)]),
        json!([{"type": "reasoning", "id": item, "summary": []}]),
        json!([reference(&id)]),
    ] {
        let refused = gw.app.api.call(Method::POST, "/v1/responses", Some(&other), Some(naming(items))).await;
        let refused = refused.expect(404);
        assert_eq!(refused["error"]["param"], "input");
        assert!(refused["error"]["message"].as_str().unwrap().starts_with("Item with id '"), "{refused}");
    }
    // Nor can they count what those hold.
    for (body, param) in [
        (json!({"input": "how long was it?", "previous_response_id": id}), "previous_response_id"),
        (json!({"model": "gpt-4o-mini", "input": [reference(&item)]}), "input"),
    ] {
        let refused = gw.app.api.call(Method::POST, "/v1/responses/input_tokens", Some(&other), Some(body)).await;
        assert_eq!(refused.expect(404)["error"]["param"], param);
    }
    assert_eq!(gw.mock.requests().len(), asked, "nothing reached the provider");
    assert!(gw.events("u_2").await.is_empty());
    let counted = json!({"input": [reference(&item)], "previous_response_id": id});
    let counted = gw.post("/v1/responses/input_tokens", counted).await.expect(200);
    assert_eq!(counted["object"], "response.input_tokens", "the maker counts them: the provider sees them");

    // Their maker names them, whole or streamed, and the provider finds them.
    let items = json!([reference(&item), {"id": streamed_item}, {"role": "user", "content": "go on"}]);
    gw.post("/v1/responses", naming(items.clone())).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().body["input"], items);
    // A response is no item.
    gw.post("/v1/responses", naming(json!([reference(&id)]))).await.expect(404);

    // On the user's own key the account is theirs alone, and the gateway
    // checks nothing the input names.
    let own = "sk-users-own-openai-key-77";
    let set = gw.app.api.call(Method::PUT, "/v1/me/credentials/openai", Some(&gw.key), Some(json!({"secret": own})));
    set.await.expect(200);
    // What the input names is looked up in that account, which answers for
    // itself: the item made on the platform's key is not there.
    let asked = gw.mock.requests().len();
    let refused = gw.post("/v1/responses", naming(json!([reference(&item)]))).await.expect(404);
    assert_eq!(refused["error"]["message"], format!("Item with id '{item}' not found."));
    assert_eq!(gw.mock.requests().len(), asked + 1, "the provider was asked, with the user's own key");
    let going_on = json!({"model": "gpt-4o-mini", "input": "and?", "previous_response_id": id});
    let refused = gw.post("/v1/responses", going_on).await.expect(404);
    assert_eq!(refused["error"]["param"], "previous_response_id");
    assert_eq!(gw.mock.requests().len(), asked + 2, "likewise");
    ask(&gw, Method::DELETE, "/v1/me/credentials/openai", &gw.key).await.expect(204);

    // A deleted response's items go with it.
    ask(&gw, Method::DELETE, &format!("/v1/responses/{id}"), &gw.key).await.expect(200);
    let asked = gw.mock.requests().len();
    gw.post("/v1/responses", naming(json!([reference(&item)]))).await.expect(404);
    assert_eq!(gw.mock.requests().len(), asked);

    // A body naming a key twice could be read one way here and another
    // upstream: it is refused, naming the key.
    let twice = r#"{"model":"gpt-4o-mini","input":"hi","model":"gpt-4o"}"#;
    let refused = gw.app.api.raw(Method::POST, "/v1/responses", Some(&gw.key), Some(twice.to_owned())).await;
    let refused = refused.expect(400);
    assert_eq!(refused["error"]["param"], "body");
    assert!(refused["error"]["message"].as_str().unwrap().contains("\"model\" appears twice"), "{refused}");
    assert_eq!(gw.mock.requests().len(), asked);
}

async fn conversations_are_made_for_and_reached_only_by_their_maker(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let other = Gateway::user(&gw.app, "u_2").await;
    let call = async |method: Method, path: &str, key: &str, body: Option<Value>| {
        gw.app.api.call(method, path, Some(key), body).await
    };
    let opening = json!({"items": [{"role": "user", "content": "hi"}], "metadata": {"topic": "tolls"}});
    let made = call(Method::POST, "/v1/conversations", &gw.key, Some(opening)).await.expect(200);
    let id = made["id"].as_str().unwrap().to_owned();
    let upstream = gw.mock.requests().last().unwrap().clone();
    assert_eq!((upstream.path.as_str(), upstream.credential.as_deref()), ("/v1/conversations", Some(OPENAI_KEY)));
    let conversation = format!("/v1/conversations/{id}");
    assert_eq!(call(Method::GET, &conversation, &gw.key, None).await.expect(200), made);
    let renamed = call(Method::POST, &conversation, &gw.key, Some(json!({"metadata": {"topic": "gates"}}))).await;
    assert_eq!(renamed.expect(200)["metadata"]["topic"], "gates");

    // Its maker adds a turn to it, metered as any response; its items listed
    // are theirs to name later.
    let turn = json!({"model": "gpt-4o-mini", "input": "more [mock tokens=3]", "conversation": id});
    let answered = gw.post("/v1/responses", turn.clone()).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().body["conversation"], id.as_str());
    let items = call(Method::GET, &format!("{conversation}/items?order=asc"), &gw.key, None).await.expect(200);
    let ids: Vec<&str> = items["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!((ids.len(), ids[2]), (3, answered["output"][0]["id"].as_str().unwrap()), "{items}");
    let opening_item = ids[0].to_owned();
    let named = json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": opening_item}]});
    gw.post("/v1/responses", named.clone()).await.expect(200);
    let added = json!({"items": [{"type": "message", "role": "user", "content": "noted"}]});
    let added = call(Method::POST, &format!("{conversation}/items"), &gw.key, Some(added)).await.expect(200);
    let noted = added["data"][0]["id"].as_str().unwrap().to_owned();
    call(Method::GET, &format!("{conversation}/items/{noted}"), &gw.key, None).await.expect(200);
    assert_eq!(gw.events("u_1").await.len(), 2, "the two responses; the conversation's routes are not metered");

    // Anyone else is told it does not exist, and the provider is not asked.
    let asked = gw.mock.requests().len();
    for (method, path, body) in [
        (Method::GET, conversation.clone(), None),
        (Method::POST, conversation.clone(), Some(json!({"metadata": {}}))),
        (Method::DELETE, conversation.clone(), None),
        (Method::GET, format!("{conversation}/items"), None),
        (Method::POST, format!("{conversation}/items"), Some(json!({"items": [{"role": "user", "content": "x"}]}))),
        (Method::GET, format!("{conversation}/items/{noted}"), None),
        (Method::DELETE, format!("{conversation}/items/{noted}"), None),
    ] {
        let refused = call(method.clone(), &path, &other, body).await.expect(404);
        assert_eq!(refused["error"]["message"], format!("Conversation with id '{id}' not found."), "{method} {path}");
    }
    let refused = gw.app.api.call(Method::POST, "/v1/responses", Some(&other), Some(turn.clone())).await;
    assert_eq!(refused.expect(404)["error"]["param"], "conversation");
    let refused = gw.app.api.call(Method::POST, "/v1/responses", Some(&other), Some(named.clone())).await;
    assert_eq!(refused.expect(404)["error"]["param"], "input", "nor its items");
    let bad = call(Method::GET, "/v1/conversations/conv%20x", &gw.key, None).await.expect(400);
    assert_eq!(bad["error"]["param"], "conversation_id");
    assert_eq!(gw.mock.requests().len(), asked, "nothing reached the provider");
    assert!(gw.events("u_2").await.is_empty());

    // Nor may they copy its items into a conversation of their own.
    let theirs = call(Method::POST, "/v1/conversations", &other, Some(json!({}))).await.expect(200);
    let theirs = format!("/v1/conversations/{}", theirs["id"].as_str().unwrap());
    let asked = gw.mock.requests().len();
    let copying = json!({"items": [{"type": "item_reference", "id": opening_item}]});
    for path in ["/v1/conversations".to_owned(), format!("{theirs}/items")] {
        let refused = call(Method::POST, &path, &other, Some(copying.clone())).await.expect(404);
        assert_eq!(refused["error"]["param"], "items", "{path}");
    }
    assert_eq!(gw.mock.requests().len(), asked, "nor these");
    // Nor take an item over by sending an input item under its id, then
    // having it listed back to them.
    let posing = json!({"model": "gpt-4o-mini", "input": [{"type": "message", "role": "user", "id": opening_item,
                                                         "content": "mine now?"}]});
    let posed = gw.app.api.call(Method::POST, "/v1/responses", Some(&other), Some(posing)).await.expect(200);
    let listing = format!("/v1/responses/{}/input_items", posed["id"].as_str().unwrap());
    let listed = call(Method::GET, &listing, &other, None).await.expect(200);
    assert_eq!(listed["data"][0]["id"], opening_item.as_str(), "the mock kept the id the client gave");
    let named_by_them = json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": opening_item}]});
    let refused = gw.app.api.call(Method::POST, "/v1/responses", Some(&other), Some(named_by_them)).await;
    assert_eq!(refused.expect(404)["error"]["param"], "input", "still not theirs");

    // One made on the user's own key is fetched with it, whatever they hold.
    let own = "sk-users-own-openai-key-66";
    let set = gw.app.api.call(Method::PUT, "/v1/me/credentials/openai", Some(&gw.key), Some(json!({"secret": own})));
    set.await.expect(200);
    let mine = call(Method::POST, "/v1/conversations", &gw.key, Some(json!({}))).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().credential.as_deref(), Some(own));
    call(Method::GET, &conversation, &gw.key, None).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().credential.as_deref(), Some(OPENAI_KEY), "made on the platform's");
    call(Method::GET, &format!("/v1/conversations/{}", mine["id"].as_str().unwrap()), &gw.key, None).await.expect(200);
    assert_eq!(gw.mock.requests().last().unwrap().credential.as_deref(), Some(own));
    ask(&gw, Method::DELETE, "/v1/me/credentials/openai", &gw.key).await.expect(204);

    // Deleted, it is forgotten with the items its maker saw in it; one item
    // deleted is forgotten alone.
    call(Method::DELETE, &format!("{conversation}/items/{noted}"), &gw.key, None).await.expect(200);
    let asked = gw.mock.requests().len();
    let naming_noted = json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": noted}]});
    gw.post("/v1/responses", naming_noted).await.expect(404);
    assert_eq!(gw.mock.requests().len(), asked);
    gw.post("/v1/responses", named.clone()).await.expect(200);
    let deleted = call(Method::DELETE, &conversation, &gw.key, None).await.expect(200);
    assert_eq!(deleted, json!({"id": id, "object": "conversation.deleted", "deleted": true}));
    let asked = gw.mock.requests().len();
    call(Method::GET, &conversation, &gw.key, None).await.expect(404);
    let named = json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": opening_item}]});
    gw.post("/v1/responses", named).await.expect(404);
    assert_eq!(gw.mock.requests().len(), asked);
}

/// A call without a body, with `key` as a bearer token.
async fn ask(gw: &Gateway, method: Method, path: &str, key: &str) -> Reply {
    gw.app.api.call(method, path, Some(key), None).await
}

async fn legacy_completions_are_metered_and_their_stream_usage_asked_for_and_removed_as_chats(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 1000}}), &[], "").await;
    let prompt = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi [mock tokens=5]"});
    let reply = gw.post("/v1/completions", prompt.clone()).await.expect(200);
    assert_eq!(reply["object"], "text_completion");
    let upstream = &gw.mock.requests()[0];
    assert_eq!((upstream.path.as_str(), upstream.credential.as_deref()), ("/v1/completions", Some(OPENAI_KEY)));
    let events = gw.events("u_1").await;
    assert_eq!(events[0]["route"], "/v1/completions");
    assert_eq!(events[0]["input_tokens"], usage_of(upstream).input_tokens);
    assert_eq!(events[0]["output_tokens"], 5);

    // Streamed without include_usage: asked for upstream, removed on the way back.
    let mut streamed = prompt;
    streamed["stream"] = json!(true);
    let data = sse_data(&gw.stream("/v1/completions", streamed).await.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "the usage chunk was removed");
    assert!(chunks.iter().all(|c| c["usage"].is_null()));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text.split_whitespace().count(), 5);
    let upstream = &gw.mock.requests()[1];
    assert_eq!(upstream.body["stream_options"]["include_usage"], true, "the gateway asked for it");
    let events = gw.events("u_1").await;
    assert_eq!((&events[1]["output_tokens"], &events[1]["estimated"]), (&json!(5), &json!(false)));
    assert_eq!(events[1]["input_tokens"], usage_of(upstream).input_tokens);

    // More than is left: max_tokens is lowered to it.
    let used = gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap();
    let long = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "a long one", "max_tokens": 5000});
    let reply = gw.post("/v1/completions", long).await.expect(200);
    let lowered = gw.mock.requests()[2].body["max_tokens"].as_u64().unwrap();
    assert!(lowered < 1000 - used, "lowered to {lowered}, with {} left", 1000 - used);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert!(gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap() <= 1000, "zero overshoot");
}

async fn anthropic_messages_are_metered_from_message_start_and_message_delta(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "Describe a toll gate [mock tokens=7 cached=3]"}]});
    // As Anthropic's SDK sends it: the key in x-api-key, and the version.
    let messages = |body: &Value| {
        gw.app
            .api
            .http
            .post(format!("{}/v1/messages", gw.base()))
            .header("x-api-key", &gw.key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
    };
    let reply = messages(&body).await.unwrap();
    assert_eq!(reply.status(), 200);
    let message: Value = reply.json().await.unwrap();
    assert_eq!(message["usage"]["output_tokens"], 7);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let response = messages(&streamed).await.unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");

    let sent = gw.mock.requests();
    assert!(sent.iter().all(|r| r.credential.as_deref() == Some(ANTHROPIC_KEY)));
    assert!(sent.iter().all(|r| r.header("anthropic-version") == Some("2023-06-01")));
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 2);
    for (event, upstream) in events.iter().zip(&sent) {
        let reported = usage_of(upstream);
        assert_eq!(event["input_tokens"], reported.input_tokens, "cache reads are part of the input");
        assert_eq!(event["cached_tokens"], 3);
        assert_eq!(event["output_tokens"], 7);
        assert_eq!(event["provider"], "anthropic");
        assert_eq!(event["estimated"], false);
    }
}

async fn gemini_streams_settle_the_last_cumulative_usage_never_the_sum(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Toll gates? [mock tokens=6]"}]}]});
    // The key in `?key=`, as Gemini's clients can send it: it must not travel on.
    let url = |action: &str, query: &str| {
        format!("{}/v1beta/models/gemini-2.5-flash:{action}?{query}key={}", gw.base(), gw.key)
    };
    let http = &gw.app.api.http;
    let whole: Value = http.post(url("generateContent", "")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(whole["usageMetadata"]["candidatesTokenCount"], 6);
    let sse = http.post(url("streamGenerateContent", "alt=sse&")).json(&body).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse_data(&sse.text().await.unwrap()).len(), 6);
    let array = http.post(url("streamGenerateContent", "")).json(&body).send().await.unwrap();
    let chunks: Vec<Value> = array.json().await.unwrap();
    assert_eq!(chunks.len(), 6);

    let sent = gw.mock.requests();
    assert_eq!(sent.len(), 3);
    for r in &sent {
        assert_eq!(r.credential.as_deref(), Some(GEMINI_KEY));
        assert!(!r.query.as_deref().unwrap_or("").contains("key="), "the gateway key stays: {:?}", r.query);
    }
    assert_eq!(sent[1].query.as_deref(), Some("alt=sse"));
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 3);
    for (event, upstream) in events.iter().zip(&sent) {
        assert_eq!(event["output_tokens"], 6, "the last cumulative count, not 1+2+…+6");
        assert_eq!(event["input_tokens"], usage_of(upstream).input_tokens);
        assert_eq!(event["estimated"], false);
        assert_eq!(event["provider"], "gemini");
    }
    assert_eq!(events[1]["route"], "/v1beta/models/{model}:streamGenerateContent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_calls_on_the_stable_v1_paths_go_upstream_on_v1_and_are_metered_alike() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Toll gates? [mock tokens=4]"}]}]});
    let http = &gw.app.api.http;
    let call = |action: &str| {
        http.post(format!("{}/v1/models/gemini-2.5-flash:{action}", gw.base()))
            .header("x-goog-api-key", &gw.key)
            .json(&body)
            .send()
    };
    let whole = call("generateContent").await.unwrap();
    assert_eq!(whole.status(), 200);
    assert!(whole.headers().contains_key("x-ratelimit-remaining-tokens"));
    let whole: Value = whole.json().await.unwrap();
    assert_eq!(whole["usageMetadata"]["candidatesTokenCount"], 4);
    let chunks: Vec<Value> = call("streamGenerateContent").await.unwrap().json().await.unwrap();
    assert_eq!(chunks.len(), 4);
    let unknown = call("summarize").await.unwrap();
    assert_eq!(unknown.status(), 404, "an action the gateway does not proxy");
    assert_eq!(unknown.json::<Value>().await.unwrap()["error"]["status"], "NOT_FOUND");

    let sent = gw.mock.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/v1/models/gemini-2.5-flash:generateContent", "/v1/models/gemini-2.5-flash:streamGenerateContent"],
        "the version the client named"
    );
    assert!(sent.iter().all(|r| r.credential.as_deref() == Some(GEMINI_KEY)));
    let events = gw.events("u_1").await;
    let routes: Vec<&str> = events.iter().map(|e| e["route"].as_str().unwrap()).collect();
    assert_eq!(routes, ["/v1/models/{model}:generateContent", "/v1/models/{model}:streamGenerateContent"]);
    for (event, upstream) in events.iter().zip(&sent) {
        assert_eq!(event["output_tokens"], 4);
        assert_eq!(event["input_tokens"], usage_of(upstream).input_tokens);
        assert_eq!(event["provider"], "gemini");
    }
    // OpenAI's `GET /v1/models` is still OpenAI's.
    let list = gw.app.api.call(Method::GET, "/v1/models", Some(&gw.key), None).await;
    assert_eq!(list.status.as_u16(), 200);
    assert_eq!(list.body["object"], "list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geminis_model_list_comes_in_its_shape_narrowed_to_the_plan_on_both_versions() {
    let plan = json!({"allowed_models": ["gpt-4o-mini", "gemini-2.5-flash", "gemini/gemini-2.0-*"]});
    let gw = Gateway::start(Backend::Sqlite, plan, &[], "").await;
    let http = &gw.app.api.http;
    let names = |list: &Value| -> Vec<String> {
        list["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_owned()).collect()
    };
    // The key as Gemini's clients send it: in `x-goog-api-key`, or `?key=`.
    let stable = http.get(format!("{}/v1/models", gw.base())).header("x-goog-api-key", &gw.key).send().await.unwrap();
    assert_eq!(stable.status(), 200);
    let stable: Value = stable.json().await.unwrap();
    assert_eq!(names(&stable), ["models/gemini-2.5-flash", "models/gemini-2.0-flash"]);
    let beta = http.get(format!("{}/v1beta/models?key={}&pageSize=50", gw.base(), gw.key)).send().await.unwrap();
    assert_eq!(names(&beta.json().await.unwrap()), names(&stable));
    let sent = gw.mock.requests();
    assert_eq!(sent.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/v1/models", "/v1beta/models"]);
    assert!(sent.iter().all(|r| r.credential.as_deref() == Some(GEMINI_KEY)));
    assert_eq!(sent[1].query.as_deref(), Some("pageSize=50"), "the gateway key stays");
    let one = http.get(format!("{}/v1beta/models/gemini-2.5-flash?key={}", gw.base(), gw.key)).send().await.unwrap();
    assert_eq!(one.json::<Value>().await.unwrap()["name"], "models/gemini-2.5-flash");
    let hidden = http.get(format!("{}/v1/models/gemini-2.5-pro", gw.base())).header("x-goog-api-key", &gw.key);
    let hidden = hidden.send().await.unwrap();
    assert_eq!(hidden.status(), 403);
    assert_eq!(hidden.json::<Value>().await.unwrap()["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(gw.mock.requests().len(), 3);
    // A bearer key on `/v1/models` is OpenAI's list, as before.
    let openai = gw.app.api.call(Method::GET, "/v1/models", Some(&gw.key), None).await.expect(200);
    let ids: Vec<&str> = openai["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o-mini"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_counts_pass_through_unmetered_for_the_models_the_plan_allows() {
    let plan = json!({"limits": {"tokens": 1000}, "rpm": 100, "allowed_models": ["claude-haiku-4-5", "gemini-2.5-flash", "gpt-4o-mini"]});
    let gw = Gateway::start(Backend::Sqlite, plan, &[], "").await;
    let http = &gw.app.api.http;
    let anthropic = |model: &str| {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "How many tokens is a toll gate?"}]});
        http.post(format!("{}/v1/messages/count_tokens", gw.base()))
            .header("x-api-key", &gw.key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    // Named with its provider: the provider is sent its own name for it.
    let counted = anthropic("anthropic/claude-haiku-4-5").await.unwrap();
    assert_eq!(counted.status(), 200);
    assert_eq!(counted.headers()["x-ratelimit-limit-requests"], "100");
    assert_eq!(counted.headers()["x-ratelimit-remaining-requests"], "99", "the call took a request of the rpm");
    let counted: Value = counted.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().is_some_and(|n| n > 0), "{counted}");
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "How many tokens is a toll gate?"}]}]});
    let url = format!("{}/v1/models/gemini-2.5-flash:countTokens?key={}", gw.base(), gw.key);
    let total: Value = http.post(url).json(&gemini).send().await.unwrap().json().await.unwrap();
    assert!(total["totalTokens"].as_u64().is_some_and(|n| n > 0), "{total}");

    // OpenAI's count of a Responses input; its model may be left out.
    let openai =
        json!({"model": "gpt-4o-mini", "input": "How many tokens is a toll gate?", "instructions": "Be brief."});
    let counted = gw.post("/v1/responses/input_tokens", openai.clone()).await.expect(200);
    assert_eq!(counted["object"], "response.input_tokens");
    assert!(counted["input_tokens"].as_u64().is_some_and(|n| n > 0), "{counted}");
    let unnamed = gw.post("/v1/responses/input_tokens", json!({"input": "How many?"})).await.expect(200);
    assert!(unnamed["input_tokens"].as_u64().is_some_and(|n| n > 0), "{unnamed}");

    let refused = anthropic("claude-opus-4-1").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["type"], "permission_error");
    let refused = gw.post("/v1/responses/input_tokens", json!({"model": "gpt-4o", "input": "hi"})).await.expect(403);
    assert!(refused["error"]["message"].as_str().unwrap().contains("\"gpt-4o\" is not allowed"), "{refused}");
    // A body naming its model twice could pass the plan's list here and
    // name another model upstream: refused, as on the metered routes.
    let twice = r#"{"model":"claude-opus-4-1","messages":[{"role":"user","content":"hi"}],"model":"claude-haiku-4-5"}"#;
    let refused = http
        .post(format!("{}/v1/messages/count_tokens", gw.base()))
        .header("x-api-key", &gw.key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await.unwrap();
    assert!(refused["error"]["message"].as_str().unwrap().contains("\"model\" appears twice"), "{refused}");
    let sent = gw.mock.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/messages/count_tokens",
            "/v1/models/gemini-2.5-flash:countTokens",
            "/v1/responses/input_tokens",
            "/v1/responses/input_tokens"
        ],
        "no refused call left"
    );
    assert_eq!(sent[0].credential.as_deref(), Some(ANTHROPIC_KEY));
    assert_eq!(sent[0].body["model"], "claude-haiku-4-5");
    assert_eq!(sent[1].credential.as_deref(), Some(GEMINI_KEY));
    assert!(!sent[1].query.as_deref().unwrap_or("").contains("key="), "the gateway key stays");
    assert_eq!((sent[2].credential.as_deref(), &sent[2].body), (Some(OPENAI_KEY), &openai), "passed on as it came");
    assert!(gw.events("u_1").await.is_empty(), "a count is not a metered call");
    let meters = &gw.usage("u_1").await["meters"];
    assert_eq!((meters["tokens"]["used"].as_i64(), meters["tokens"]["reserved"].as_i64()), (Some(0), Some(0)));
}

async fn byok_calls_use_the_users_own_key_and_count_only_when_the_plan_says(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let own = "sk-users-own-openai-key-77";
    let set = gw.app.api.call(Method::PUT, "/v1/me/credentials/openai", Some(&gw.key), Some(json!({"secret": own})));
    set.await.expect(200);
    // Headers that pick the provider account pass with the user's own key
    // only: with the platform's key, a user could bill another project.
    let with_project = |body: Value| {
        reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", gw.app.api.base))
            .bearer_auth(&gw.key)
            .header("openai-project", "proj_theirs")
            .header("openai-organization", "org_theirs")
            .json(&body)
            .send()
    };
    assert_eq!(with_project(chat("mine [mock tokens=4]")).await.unwrap().status(), 200);
    let upstream = &gw.mock.requests()[0];
    assert_eq!(upstream.credential.as_deref(), Some(own), "the user's own key went upstream");
    assert_eq!(upstream.header("openai-project"), Some("proj_theirs"));
    assert_eq!(upstream.header("openai-organization"), Some("org_theirs"));
    let event = &gw.events("u_1").await[0];
    assert_eq!((event["key_source"].as_str(), event["billable"].as_bool()), (Some("byok"), Some(false)));
    assert_eq!(gw.usage("u_1").await["meters"]["tokens"]["used"], 0, "BYOK does not count by default");

    // Other providers still use the platform key.
    let groq =
        json!({"model": "groq/llama-3.1-8b-instant", "messages": [{"role": "user", "content": "hi [mock tokens=2]"}]});
    assert_eq!(with_project(groq).await.unwrap().status(), 200);
    assert_eq!(gw.mock.requests()[1].credential.as_deref(), Some(GROQ_KEY));
    assert_eq!(gw.mock.requests()[1].header("openai-project"), None, "not with the platform's key");
    assert_eq!(gw.mock.requests()[1].header("openai-organization"), None);
    assert_eq!(gw.mock.requests()[1].path, "/openai/v1/chat/completions");

    gw.app.api.admin(Method::PATCH, "/admin/v1/plans/gw", Some(json!({"byok_counts": true}))).await.expect(200);
    gw.post("/v1/chat/completions", chat("counted [mock tokens=4]")).await.expect(200);
    let counted = usage_of(&gw.mock.requests()[2]);
    let tokens = gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap();
    let groq = gw.events("u_1").await[1]["input_tokens"].as_u64().unwrap()
        + gw.events("u_1").await[1]["output_tokens"].as_u64().unwrap();
    assert_eq!(tokens, groq + counted.input_tokens + counted.output_tokens, "byok_counts: the plan says so");
}

async fn the_output_limit_is_lowered_to_what_is_left_and_nothing_overshoots(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 300}}), &[], "").await;
    // Use some of the quota first.
    gw.post("/v1/chat/completions", chat("warm up [mock tokens=100]")).await.expect(200);
    let used = gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap();
    let mut body = chat("a long answer please");
    body["max_tokens"] = json!(5000);
    let reply = gw.post("/v1/chat/completions", body).await.expect(200);
    let sent = &gw.mock.requests()[1];
    let lowered = sent.body["max_tokens"].as_u64().expect("the client's field was lowered");
    assert!(lowered < 300 - used, "lowered to {lowered}, with {} left", 300 - used);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    let after = gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap();
    assert!(after <= 300, "zero overshoot: {after} of 300");

    // Without a limit of its own, a request gets what is left as its limit.
    let before = gw.mock.requests().len();
    let reply = gw.post("/v1/chat/completions", chat("and more")).await;
    if reply.status == 200 {
        let sent = &gw.mock.requests()[before];
        assert!(sent.body["max_completion_tokens"].as_u64().is_some(), "{}", sent.body);
        assert!(gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap() <= 300);
    } else {
        assert_eq!(reply.status, 429);
    }
}

async fn going_on_from_a_stored_response_holds_what_it_brings_along(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 1000}}), &[], "").await;
    let long = json!({"model": "gpt-4o-mini", "input": "a long answer [mock tokens=600]"});
    // The provider puts the response gone on from before the call's own
    // input, and charges it as input: the hold counts it, so a call that
    // cannot fit it is refused before the provider is asked.
    let refused_after = async |key: &str| {
        let made = gw.app.api.call(Method::POST, "/v1/responses", Some(key), Some(long.clone())).await.expect(200);
        let brought =
            made["usage"]["input_tokens"].as_u64().unwrap() + made["usage"]["output_tokens"].as_u64().unwrap();
        let asked = gw.mock.requests().len();
        let going_on = json!({"model": "gpt-4o-mini", "input": "go on", "previous_response_id": made["id"], "max_output_tokens": 16});
        let refused = gw.app.api.call(Method::POST, "/v1/responses", Some(key), Some(going_on)).await.expect(429);
        let message = refused["error"]["message"].as_str().unwrap();
        let needed: u64 = message.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(needed > brought + 16, "{message} (it brings {brought} along)");
        assert_eq!(gw.mock.requests().len(), asked, "the provider was not asked");
    };
    refused_after(&gw.key).await;
    // Likewise on the user's own key where the plan counts it.
    gw.app.api.admin(Method::POST, "/admin/v1/users/u_1/usage/reset", None).await.expect(200);
    gw.app.api.admin(Method::PATCH, "/admin/v1/plans/gw", Some(json!({"byok_counts": true}))).await.expect(200);
    let own = "sk-users-own-openai-key-88";
    let set = gw.app.api.call(Method::PUT, "/v1/me/credentials/openai", Some(&gw.key), Some(json!({"secret": own})));
    set.await.expect(200);
    refused_after(&gw.key).await;
    assert_eq!(gw.mock.requests().last().unwrap().credential.as_deref(), Some(own));
}

async fn a_cut_stream_is_settled_from_the_text_that_passed_and_marked_estimated(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let mut body = chat("cut me [mock cut_after=3 tokens=10]");
    body["stream"] = json!(true);
    let mut response = gw.stream("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(error.is_some(), "the client's stream is cut too, not ended cleanly: {text}");
    assert!(!text.contains("[DONE]"));
    let upstream = &gw.mock.requests()[0];
    assert!(!upstream.completed && upstream.tokens_sent == 3);
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["estimated"], true);
    assert_eq!(e["output_tokens"], 3, "the three words that passed");
    assert!(e["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(e["requests"], 1);
}

async fn many_users_streaming_at_once_each_have_the_ledger_their_upstream_calls_reported(backend: Backend) {
    let gw = Gateway::start(backend, json!({"limits": {"tokens": 1000000}, "byok_counts": true}), &[], "").await;
    let users: Vec<(String, String, String)> = futures_util::future::join_all((0..12).map(|i| {
        let app = &gw.app;
        async move {
            let id = format!("crowd_{i}");
            let key = Gateway::user(app, &id).await;
            let own = format!("sk-crowd-{i:04}-own-key");
            let path = "/v1/me/credentials/openai";
            app.api.call(Method::PUT, path, Some(&key), Some(json!({"secret": own}))).await.expect(200);
            (id, key, own)
        }
    }))
    .await;
    let calls = users.iter().flat_map(|(_, key, _)| (0..4).map(move |n| (key.clone(), n)));
    let http = gw.app.api.http.clone();
    let base = gw.base().to_owned();
    futures_util::future::join_all(calls.map(|(key, n)| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = json!({"model": "gpt-4o-mini", "stream": true,
                "messages": [{"role": "user", "content": format!("call {n} [mock tokens={} tps=400]", 3 + n)}]});
            let response =
                http.post(format!("{base}/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));
        }
    }))
    .await;
    let sent = gw.mock.requests();
    for (id, _, own) in &users {
        let mine: Vec<&Recorded> = sent.iter().filter(|r| r.credential.as_deref() == Some(own.as_str())).collect();
        assert_eq!(mine.len(), 4);
        let reported: u64 = mine.iter().map(|r| usage_of(r).input_tokens + usage_of(r).output_tokens).sum();
        let usage = gw.usage(id).await;
        assert_eq!(usage["meters"]["tokens"]["used"], reported, "{id}");
        assert_eq!(usage["lifetime"]["tokens"], reported, "{id}");
        assert!(gw.events(id).await.iter().all(|e| e["estimated"] == false));
    }
}

// ---- one store is enough below: nothing here depends on it ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_reservation_ttl_keeps_its_hold_to_the_end() {
    let ttl = [("TOLLGATE_RESERVATION_TTL_SECONDS", "1")];
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 1000}}), &ttl, "").await;
    let mut body = chat("slowly [mock tokens=12 tps=4]");
    (body["stream"], body["max_tokens"]) = (json!(true), json!(900));
    let response = gw.stream("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let reading = tokio::spawn(response.text());
    // Twice the TTL into a three-second stream: the hold is still there, so
    // another call cannot be given the room this one may still spend.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let tokens = gw.usage("u_1").await["meters"]["tokens"].clone();
    assert!(tokens["reserved"].as_i64().unwrap() > 900, "{tokens}");
    let mut other = chat("meanwhile");
    other["max_tokens"] = json!(500);
    gw.post("/v1/chat/completions", other).await.expect(200);
    let lowered = gw.mock.requests().last().unwrap().body["max_tokens"].as_u64().unwrap();
    assert!(lowered < 100, "lowered to what the held call leaves: {lowered}");
    assert!(reading.await.unwrap().unwrap().ends_with("data: [DONE]\n\n"));
    let tokens = gw.usage("u_1").await["meters"]["tokens"].clone();
    assert_eq!(tokens["reserved"], 0, "settled, the hold is gone: {tokens}");
    assert!(tokens["used"].as_i64().unwrap() > 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_answer_without_usage_is_settled_from_its_text_and_marked_estimated() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let reply = gw.post("/v1/chat/completions", chat("no count [mock tokens=9 no_usage]")).await.expect(200);
    assert!(reply.get("usage").is_none(), "{reply}");
    let words = reply["choices"][0]["message"]["content"].as_str().unwrap().split_whitespace().count() as u64;
    assert_eq!(words, 9);
    let event = &gw.events("u_1").await[0];
    assert_eq!(event["estimated"], true);
    let output = event["output_tokens"].as_u64().unwrap();
    assert!((words..=3 * words).contains(&output), "the answer's {words} words counted: {output}");
    assert!(event["input_tokens"].as_u64().unwrap() > 0, "the input as counted before the call");
    let used = gw.usage("u_1").await["meters"]["tokens"]["used"].as_u64().unwrap();
    assert_eq!(used, output + event["input_tokens"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_no_output_limit_is_sent_none_while_its_reservation_fits() {
    let plan = json!({"limits": {"tokens": 100000}, "default_output_reservation": 20});
    let gw = Gateway::start(Backend::Sqlite, plan, &[], "").await;
    // Far more room than the reservation: the request goes as it came (a
    // made-up limit could cut a reasoning model short, or pass a small
    // model's context), and what it wrote beyond the reservation is settled.
    let reply = gw.post("/v1/chat/completions", chat("a long one [mock tokens=50]")).await.expect(200);
    let sent = &gw.mock.requests()[0].body;
    assert!(sent.get("max_tokens").is_none() && sent.get("max_completion_tokens").is_none(), "{sent}");
    assert_eq!(reply["usage"]["completion_tokens"], 50);
    let used = gw.usage("u_1").await["meters"]["tokens"]["used"].as_i64().unwrap();
    assert_eq!(used, reply["usage"]["total_tokens"].as_i64().unwrap());
    // Less left than the reservation: the limit sent is what is left.
    let limits = json!({"limits": {"tokens": used + 30}});
    gw.app.api.admin(Method::PATCH, "/admin/v1/plans/gw", Some(limits)).await.expect(200);
    let reply = gw.post("/v1/chat/completions", chat("short [mock tokens=50]")).await.expect(200);
    let lowered = gw.mock.requests()[1].body["max_completion_tokens"].as_i64().unwrap();
    assert!(lowered < 20, "{lowered}");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    let after = gw.usage("u_1").await["meters"]["tokens"]["used"].as_i64().unwrap();
    assert!(after <= used + 30, "zero overshoot: {after} of {}", used + 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_the_models_list_pass_through_and_the_list_follows_the_plan() {
    let gw =
        Gateway::start(Backend::Sqlite, json!({"allowed_models": ["gpt-4o-mini", "text-embedding-*"]}), &[], "").await;
    let reply = gw
        .post("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": ["a toll gate", "a gate"]}))
        .await
        .expect(200);
    assert_eq!(reply["data"].as_array().unwrap().len(), 2);
    let sent = &gw.mock.requests()[0];
    assert!(sent.body.get("max_tokens").is_none() && sent.body.get("max_completion_tokens").is_none(), "{}", sent.body);
    assert_eq!(gw.usage("u_1").await["meters"]["tokens"]["reserved"], 0);
    let event = &gw.events("u_1").await[0];
    assert_eq!((event["route"].as_str(), event["input_tokens"].as_u64()), (Some("/v1/embeddings"), Some(5)));
    assert_eq!(event["output_tokens"], 0);
    let models = gw.app.api.call(Method::GET, "/v1/models", Some(&gw.key), None).await;
    assert!(models.headers.contains_key("x-ratelimit-limit-requests") || models.headers.contains_key("x-request-id"));
    let ids: Vec<&str> = models.body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large"]);
    assert_eq!(gw.mock.requests()[1].credential.as_deref(), Some(OPENAI_KEY));
    // One model: the provider's answer, if the plan allows it.
    let one = gw.app.api.call(Method::GET, "/v1/models/gpt-4o-mini", Some(&gw.key), None).await.expect(200);
    assert_eq!((one["id"].as_str(), one["object"].as_str()), (Some("gpt-4o-mini"), Some("model")));
    assert_eq!(gw.mock.requests()[2].path, "/v1/models/gpt-4o-mini");
    let refused = gw.app.api.call(Method::GET, "/v1/models/gpt-4o", Some(&gw.key), None).await.expect(403);
    assert_eq!(refused["error"]["model"], "gpt-4o", "{refused}");
    // A name that would climb out of `models/` on the provider never leaves.
    let climbing = gw.app.api.call(Method::GET, "/v1/models/..%2Ffiles", Some(&gw.key), None).await.expect(400);
    assert_eq!(climbing["error"]["param"], "model", "{climbing}");
    assert_eq!(gw.mock.requests().len(), 3, "neither refusal reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_each_providers_calls_by_status_and_its_tokens_as_the_ledger_has_them() {
    // A provider of this test's own: the metrics are the process's, and
    // other tests call the built-in providers meanwhile.
    let mock = mock_llm(&[]).await;
    let base = mock.openai_base_url();
    let extra = [("TOLLGATE_TALLIED_BASE_URL", base.as_str()), ("TALLIED_API_KEY", "tallied-platform-key-1")];
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &extra, "").await;
    let ask = |text: &str| json!({"model": "tallied/m", "messages": [{"role": "user", "content": text}]});
    gw.post("/v1/chat/completions", ask("one [mock tokens=3]")).await.expect(200);
    gw.post("/v1/chat/completions", ask("two more words [mock tokens=5]")).await.expect(200);
    assert_eq!(gw.post("/v1/chat/completions", ask("no [mock status=429]")).await.status, 429);
    let metrics = gw.app.api.http.get(format!("{}/metrics", gw.base())).send().await.unwrap().text().await.unwrap();
    let value = |series: &str| -> Option<f64> {
        metrics.lines().find_map(|l| l.strip_prefix(series)).map(|v| v.trim().parse().unwrap())
    };
    assert_eq!(value(r#"tollgate_gateway_calls_total{provider="tallied",status="200"}"#), Some(2.0), "{metrics}");
    assert_eq!(value(r#"tollgate_gateway_calls_total{provider="tallied",status="429"}"#), Some(1.0));
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 3);
    let sum = |field: &str| events.iter().map(|e| e[field].as_f64().unwrap()).sum::<f64>();
    assert_eq!(value(r#"tollgate_gateway_tokens_total{provider="tallied",kind="input"}"#), Some(sum("input_tokens")));
    assert_eq!(value(r#"tollgate_gateway_tokens_total{provider="tallied",kind="output"}"#), Some(sum("output_tokens")));
    assert_eq!(sum("output_tokens"), 8.0);
    let route = r#"tollgate_http_requests_total{method="POST",route="/v1/chat/completions",status="429"}"#;
    assert!(value(route).is_some_and(|n| n >= 1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_and_aliases_route_to_their_providers_and_the_plan_allows_models_by_name() {
    let file = "[models.fast]\nprovider = \"groq\"\nmodel = \"llama-3.1-8b-instant\"\n";
    let plan = json!({"limits": {"tokens": 100000},
                      "allowed_models": ["fast", "gpt-4o-mini", "claude-haiku-4-5", "local/*"]});
    let mock = mock_llm(&[]).await;
    let local = mock.openai_base_url();
    let extra = [("TOLLGATE_LOCAL_BASE_URL", local.as_str()), ("LOCAL_API_KEY", "local-platform-key-1")];
    let gw = Gateway::start(Backend::Sqlite, plan, &extra, file).await;
    let hi = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi [mock tokens=2]"}]});
    let reply = gw.post("/v1/chat/completions", hi("fast")).await.expect(200);
    assert_eq!(reply["model"], "llama-3.1-8b-instant");
    let sent = gw.mock.requests();
    assert_eq!(
        (sent[0].path.as_str(), sent[0].body["model"].as_str()),
        ("/openai/v1/chat/completions", Some("llama-3.1-8b-instant"))
    );
    assert_eq!(sent[0].credential.as_deref(), Some(GROQ_KEY));
    assert_eq!(gw.events("u_1").await[0]["provider"], "groq");
    // Any OpenAI-compatible API added by its base URL is a provider too.
    let reply = gw.post("/v1/chat/completions", hi("local/my-finetune")).await.expect(200);
    assert_eq!(reply["model"], "my-finetune");
    let received = &mock.requests()[0];
    assert_eq!(
        (received.credential.as_deref(), received.body["model"].as_str()),
        (Some("local-platform-key-1"), Some("my-finetune"))
    );

    // Not on the list: a 403 naming the model, in OpenAI's shape, and no call.
    let refused = gw.post("/v1/chat/completions", hi("gpt-4o")).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("\"gpt-4o\""), "{}", refused.body);
    assert_eq!(refused.body["error"]["type"], "permission_denied");
    assert!(refused.headers.contains_key("x-ratelimit-remaining-tokens"), "headers on refusals too");
    // And in Anthropic's.
    let anthropic = gw
        .post(
            "/v1/messages",
            json!({"model": "claude-opus-4-1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(anthropic.status, 403);
    assert_eq!(anthropic.body["type"], "error");
    assert_eq!(anthropic.body["error"]["type"], "permission_error");
    assert!(anthropic.body["error"]["message"].as_str().unwrap().contains("claude-opus-4-1"));
    // A provider that does not speak the route's API.
    let wrong = gw.post("/v1/chat/completions", hi("anthropic/claude-haiku-4-5")).await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body["error"]["param"], "model");
    // A name the ledger could not hold (it records the model of each call).
    for name in ["local/".to_owned() + &"m".repeat(300), "local/a\u{0}b".to_owned()] {
        let odd = gw.post("/v1/chat/completions", hi(&name)).await;
        assert_eq!((odd.status.as_u16(), odd.body["error"]["param"].as_str()), (400, Some("model")), "{}", odd.body);
    }
    assert_eq!(gw.mock.requests().len() + mock.requests().len(), 2, "refusals never reach a provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_input_alone_does_not_fit_is_refused_without_calling_upstream() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 20}}), &[], "").await;
    let long = "word ".repeat(50);
    let refused = gw.post("/v1/chat/completions", chat(&long)).await;
    assert_eq!(refused.status, 429);
    let error = &refused.body["error"];
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(
        (error["meter"].as_str(), error["limit"].as_i64(), error["used"].as_i64()),
        (Some("tokens"), Some(20), Some(0))
    );
    assert!(error["reset_at"].is_string());
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1 && error["retry_after"] == retry);
    assert!(gw.mock.requests().is_empty(), "upstream was not called");
    assert!(gw.events("u_1").await.is_empty());
    // In Anthropic's and Gemini's shapes too.
    let anthropic = gw
        .post(
            "/v1/messages",
            json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!((anthropic.status.as_u16(), anthropic.body["error"]["type"].as_str()), (429, Some("rate_limit_error")));
    let gemini = gw
        .post("/v1beta/models/gemini-2.5-flash:generateContent", json!({"contents": [{"parts": [{"text": long}]}]}))
        .await;
    assert_eq!((gemini.status.as_u16(), gemini.body["error"]["status"].as_str()), (429, Some("RESOURCE_EXHAUSTED")));
    assert_eq!(gemini.body["error"]["code"], 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_call_is_never_lowered_below_the_apis_minimum_nor_sent_in_the_background() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"output_tokens": 10}}), &[], "").await;
    // Chat takes a limit of 10: lowered to what is left.
    gw.post("/v1/chat/completions", chat("hello [mock tokens=30]")).await.expect(200);
    assert_eq!(gw.mock.requests()[0].body["max_completion_tokens"], 10);
    assert_eq!(gw.usage("u_1").await["meters"]["output_tokens"]["used"], 10);

    // The Responses API refuses a max_output_tokens below 16: with less left
    // the call is Tollgate's 429, never the provider's 400.
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"output_tokens": 15}}), &[], "").await;
    let refused = gw.post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "hello"})).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        (refused.body["error"]["type"].as_str(), refused.body["error"]["meter"].as_str()),
        (Some("insufficient_quota"), Some("output_tokens"))
    );
    assert!(gw.mock.requests().is_empty(), "upstream was not called");
    // Unless the client asked for less itself: then it is the client's call.
    let asked =
        gw.post("/v1/responses", json!({"model": "gpt-4o-mini", "input": "hello", "max_output_tokens": 8})).await;
    assert_eq!(asked.status, 400, "the provider's own refusal, passed through: {}", asked.body);
    assert_eq!(gw.mock.requests()[0].body["max_output_tokens"], 8);

    // A background response's usage is known only when it is fetched: refused before any call.
    let background = json!({"model": "gpt-4o-mini", "input": "hello", "background": true});
    let refused = gw.post("/v1/responses", background).await;
    assert_eq!((refused.status.as_u16(), refused.body["error"]["param"].as_str()), (400, Some("background")));
    assert_eq!(gw.mock.requests().len(), 1);
    assert!(gw.events("u_1").await.iter().all(|e| e["status_code"] == 400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_minute_request_and_token_limits_refuse_with_retry_after() {
    let gw = Gateway::start(Backend::Sqlite, json!({"rpm": 2, "tpm": 100000}), &[], "").await;
    for _ in 0..2 {
        gw.post("/v1/chat/completions", chat("hi [mock tokens=1]")).await.expect(200);
    }
    let refused = gw.post("/v1/chat/completions", chat("hi")).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.body["error"]["meter"], "requests_per_minute");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(refused.headers["x-ratelimit-remaining-requests"], "0");

    let gw = Gateway::start(Backend::Sqlite, json!({"tpm": 200}), &[], "").await;
    let mut body = chat("hi [mock tokens=1]");
    body["max_tokens"] = json!(150);
    gw.post("/v1/chat/completions", body.clone()).await.expect(200);
    // What the call did not use is given back: 150 reserved, 1 used.
    gw.post("/v1/chat/completions", body.clone()).await.expect(200);
    body["max_tokens"] = json!(190);
    let refused = gw.post("/v1/chat/completions", body).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["meter"], "tokens_per_minute");
    assert_eq!(refused.body["error"]["type"], "tokens");
    assert_eq!(gw.mock.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_is_a_400_naming_the_provider_in_its_shape() {
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[("GEMINI_API_KEY", " ")], "").await;
    let reply = gw
        .post("/v1beta/models/gemini-2.5-flash:generateContent", json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(reply.body["error"]["provider"], "gemini");
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("GEMINI_API_KEY"));
    assert!(gw.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_in_the_providers_shape() {
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[], "").await;
    let api = &gw.app.api;
    let bad = api.call(Method::POST, "/v1/chat/completions", Some("sk-not-a-gateway-key"), Some(chat("hi"))).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["error"]["code"], "invalid_api_key");
    let none = api.call(Method::POST, "/v1/messages", None, Some(json!({}))).await;
    assert_eq!((none.status.as_u16(), none.body["error"]["type"].as_str()), (401, Some("authentication_error")));
    let admin = api.admin(Method::POST, "/v1/chat/completions", Some(chat("hi"))).await;
    assert_eq!(admin.status, 403);
    let usage_only = api.create_key("u_1", json!({"name": "reader", "scopes": ["usage:read"]})).await;
    let scoped = api.call(Method::POST, "/v1/chat/completions", usage_only["key"].as_str(), Some(chat("hi"))).await;
    assert_eq!((scoped.status.as_u16(), scoped.body["error"]["type"].as_str()), (403, Some("permission_denied")));
    let broken = api.raw(Method::POST, "/v1/chat/completions", Some(&gw.key), Some("{not json".into())).await;
    assert_eq!((broken.status.as_u16(), broken.body["error"]["param"].as_str()), (400, Some("body")));
    assert!(gw.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_pass_through_as_4xx_and_become_502_as_5xx() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let limited = gw.post("/v1/chat/completions", chat("slow down [mock status=429 retry_after=7]")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "7");
    assert_eq!(limited.body["error"]["code"], "rate_limit_exceeded", "the provider's own body");
    assert!(limited.body["error"]["message"].as_str().unwrap().contains("mock-llm"));
    let bad = gw.post("/v1/chat/completions", chat("[mock status=400]")).await;
    assert_eq!(bad.status, 400);
    // A stream is answered 200 only once the provider has: a failing one is a 502 error, not a stream.
    let mut streamed = chat("[mock status=503]");
    streamed["stream"] = json!(true);
    let failed_stream = gw.stream("/v1/chat/completions", streamed).await;
    assert_eq!(failed_stream.status(), 502);
    assert!(failed_stream.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let failed = gw.post("/v1/chat/completions", chat("[mock status=503]")).await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.body["error"]["type"], "server_error");
    assert_eq!(failed.body["error"]["provider"], "openai");
    assert!(failed.body["error"]["message"].as_str().unwrap().contains("openai answered HTTP 503"), "{}", failed.body);
    let anthropic = gw
        .post("/v1/messages", json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "[mock status=529]"}]}))
        .await;
    assert_eq!((anthropic.status.as_u16(), anthropic.body["error"]["type"].as_str()), (502, Some("api_error")));
    let events = gw.events("u_1").await;
    let statuses: Vec<i64> = events.iter().map(|e| e["status_code"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [429, 400, 502, 502, 502], "failed calls are recorded");
    assert!(events.iter().all(|e| e["requests"] == 0 && e["input_tokens"] == 0));
    assert_eq!(gw.usage("u_1").await["meters"]["tokens"]["used"], 0, "and cost nothing");
}

/// Issue #5 (SQLite, where the gateway's usage goes through a journal): the
/// journal is emptied whenever it reaches its limit, once what it holds is
/// in the ledger; every call is in the ledger once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_journal_is_emptied_at_its_limit_and_every_call_is_in_the_ledger_once() {
    const LIMIT: u64 = 2048;
    let limit = LIMIT.to_string();
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[("TOLLGATE_USAGE_JOURNAL_MAX_BYTES", &limit)], "").await;
    let gw = std::sync::Arc::new(gw);
    let journal = gw.app.db.data_dir().join("tollgate.db-usage-journal");
    let (mut largest, mut appended) = (0, 0);
    for round in 0..8 {
        let calls: Vec<_> = (0..5)
            .map(|i| {
                let gw = gw.clone();
                tokio::spawn(async move {
                    gw.post("/v1/chat/completions", chat(&format!("{round}.{i} [mock tokens=2]"))).await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().status, 200);
        }
        let size = std::fs::metadata(&journal).unwrap().len();
        largest = largest.max(size);
        appended += 5;
    }
    // An event takes about 670 bytes in the journal, so the 40 calls' lines
    // make 26 KB: emptied at its limit, the file never held much more than
    // the limit and the last groups.
    assert!(largest < LIMIT + 5 * 1500, "the journal reached {largest} bytes");
    let events = gw.events("u_1").await;
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((events.len(), ids.len()), (appended, appended), "every call once");
    assert_eq!(gw.usage("u_1").await["meters"]["requests"]["used"], appended);
}

/// A self-signed certificate for 127.0.0.1, made for the test below: no
/// authority the system trusts signed it.
const UNTRUSTED_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBmzCCAUGgAwIBAgIUXlKsfzOxEVfNhimvPJrL6Kcqlj4wCgYIKoZIzj0EAwIw\nFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNjIzMTAxNFoYDzIxMjYxMTEy\nMjMxMDE0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\nPQMBBwNCAAQbpvZFgOXVG1tW3NoUTPYAenK0bhQ2YKDXxflAuHzdeY0R8PdFCg+1\na+93KYc+Wg5hYcgDWiO9tbsRhnunnszko28wbTAdBgNVHQ4EFgQUS2wwnHMRDqnn\n6iyad/+OPAHNbOYwHwYDVR0jBBgwFoAUS2wwnHMRDqnn6iyad/+OPAHNbOYwDwYD\nVR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZI\nzj0EAwIDSAAwRQIgJmjHPZsKUOQG3ntOcFUjuCZoe11xYnH+D2WIeMzFPl4CIQCO\nrP9xNmtE7p4vecbtTCKsbCzM/dR3rwP+tqdv25SJEw==\n-----END CERTIFICATE-----";
const UNTRUSTED_CERT_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1Tw3ERtQwWRBitki\nLaEKfiimGe2PPVloJo+ES9/Hm/ehRANCAAQbpvZFgOXVG1tW3NoUTPYAenK0bhQ2\nYKDXxflAuHzdeY0R8PdFCg+1a+93KYc+Wg5hYcgDWiO9tbsRhnunnszk\n-----END PRIVATE KEY-----";

/// Issue #5: calls to an `https://` provider are TLS with the certificate
/// checked. A provider whose certificate no trusted authority signed is
/// refused, a 502 naming it, after the handshake was begun and broken off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_certificate_nobody_trusts_is_refused() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(UNTRUSTED_CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(UNTRUSTED_CERT_KEY.as_bytes()).unwrap();
    let tls =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}/v1", listener.local_addr().unwrap());
    let handshakes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let outcome = acceptor.accept(tcp).await.map(|_| ()).map_err(|e| e.to_string());
            seen.lock().unwrap().push(outcome);
        }
    });
    // Were the certificate accepted, the call would wait for an answer this
    // stand-in never gives: 2 s, not 300.
    let settings = [("TOLLGATE_OPENAI_BASE_URL", base.as_str()), ("TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS", "2")];
    let gw = Gateway::start(Backend::Sqlite, json!({}), &settings, "").await;
    let refused = gw.post("/v1/chat/completions", chat("hi")).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.body["error"]["provider"], "openai");
    assert_eq!(refused.body["error"]["message"], "openai failed: the connection failed", "{}", refused.body);
    let begun = eventually(Duration::from_secs(5), || async { !handshakes.lock().unwrap().is_empty() }).await;
    assert!(begun, "the gateway reached the provider");
    let handshakes = handshakes.lock().unwrap().clone();
    // The gateway ended each handshake with an alert (`CertificateUnknown`).
    let alerted = handshakes.iter().all(|h| h.as_ref().is_err_and(|e| e.contains("alert")));
    assert!(alerted, "no handshake was completed: {handshakes:?}");
}

/// Reads one HTTP/1.1 request (head and a `content-length` body) from `tcp`.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gateway closed the connection mid-request");
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if request.len() >= head_end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

/// An OpenAI stand-in that answers one streamed call with `events` (each
/// `data:` with its `event:` name, if any) and keeps the stream open, as a
/// provider may for a moment after its last word; the request must
/// contain `asked`. Returns its base URL.
async fn a_provider_that_keeps_its_stream_open(
    events: Vec<(Option<&'static str>, String)>,
    asked: &'static str,
) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let request = read_request(&mut tcp).await;
        assert!(request.contains(asked), "{asked} in {request}");
        let mut answer =
            String::from("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
        for (name, data) in events {
            let piece = match name {
                Some(name) => format!("event: {name}\ndata: {data}\n\n"),
                None => format!("data: {data}\n\n"),
            };
            answer.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
        }
        tcp.write_all(answer.as_bytes()).await.unwrap();
        // The provider keeps its stream open: no last chunk yet.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    base
}

/// What a client reads of `response` up to and including `marker`.
async fn read_until(response: &mut reqwest::Response, marker: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(marker) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await;
        let chunk = chunk.expect("the end marker within 10 s").unwrap().expect("the end marker before the body's end");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// The one event of `u_1`: answered, with the provider's usage (9 in, 2
/// out), and the bytes the client got.
async fn the_call_is_recorded_exactly(gw: &Gateway, seen: &str) {
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 1, "recorded before the end marker left");
    let event = &events[0];
    assert_eq!((event["status_code"].as_u64(), event["estimated"].as_bool()), (Some(200), Some(false)), "{event}");
    assert_eq!((event["input_tokens"].as_u64(), event["output_tokens"].as_u64()), (Some(9), Some(2)));
    assert_eq!(event["response_bytes"].as_u64(), Some(seen.len() as u64), "the piece holding the marker counted");
}

/// Issue #5: SDKs stop reading a stream at its end marker (OpenAI's Python
/// SDK closes the response at `[DONE]`). By the time the marker reaches
/// the client the call is in the ledger, answered whole, even though the
/// provider has not closed its stream yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_at_done_finds_its_call_already_recorded() {
    let chunk = |rest: &str| {
        let data =
            format!(r#"{{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",{rest}}}"#);
        (None, data)
    };
    let events = vec![
        chunk(r#""choices":[{"index":0,"delta":{"role":"assistant","content":"Hello there"},"finish_reason":null}]"#),
        chunk(r#""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]"#),
        chunk(r#""choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#),
        (None, "[DONE]".to_owned()),
    ];
    let base = a_provider_that_keeps_its_stream_open(events, r#""include_usage":true"#).await;
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[("TOLLGATE_OPENAI_BASE_URL", &base)], "").await;
    let mut body = chat("hi");
    body["stream"] = json!(true);
    let mut response = gw.stream("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let seen = read_until(&mut response, "data: [DONE]").await;
    assert!(seen.contains("Hello there") && !seen.contains("usage"), "the usage chunk, not asked for, was taken out");
    the_call_is_recorded_exactly(&gw, &seen).await;
}

/// The Responses API's last word is `response.completed` (there is no
/// `[DONE]`): the call is committed before it leaves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_at_response_completed_finds_its_call_already_recorded() {
    let response = r#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-4o-mini","output":[],"#;
    let events = vec![
        (Some("response.created"), r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","usage":null}}"#.to_owned()),
        (Some("response.output_text.delta"), r#"{"type":"response.output_text.delta","sequence_number":1,"item_id":"m1","output_index":0,"content_index":0,"delta":"Hello there"}"#.to_owned()),
        (
            Some("response.completed"),
            format!(
                r#"{{"type":"response.completed","sequence_number":2,"response":{response}"usage":{{"input_tokens":9,"output_tokens":2,"total_tokens":11}}}}}}"#
            ),
        ),
    ];
    let base = a_provider_that_keeps_its_stream_open(events, r#""stream":true"#).await;
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[("TOLLGATE_OPENAI_BASE_URL", &base)], "").await;
    let body = json!({"model": "gpt-4o-mini", "input": "hi", "stream": true});
    let mut response = gw.stream("/v1/responses", body).await;
    assert_eq!(response.status(), 200);
    let seen = read_until(&mut response, r#""output_tokens":2,"total_tokens":11}}"#).await;
    assert!(seen.contains("Hello there") && !seen.contains("stream_options"));
    the_call_is_recorded_exactly(&gw, &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_provider_reuse_pooled_connections() {
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[], "").await;
    let mut streamed = chat("stream [mock tokens=3]");
    streamed["stream"] = json!(true);
    for i in 0..10 {
        let body = if i % 2 == 0 { chat("hi [mock tokens=2]") } else { streamed.clone() };
        let reply = gw.post("/v1/chat/completions", body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(gw.mock.requests().len(), 10);
    // One connection kept alive serves them all; a call that finds it not
    // yet back in the pool may open a second.
    let opened = gw.mock.connections();
    assert!((1..=2).contains(&opened), "10 calls, one after another, opened {opened} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_nobody_listens_for_is_a_502_naming_it_and_the_call_is_recorded() {
    let closed = format!("http://127.0.0.1:{}/v1", crate::common::free_port());
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[("TOLLGATE_OPENAI_BASE_URL", &closed)], "").await;
    let refused = gw.post("/v1/chat/completions", chat("hi")).await;
    assert_eq!(refused.status, 502);
    assert_eq!(refused.body["error"]["provider"], "openai");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert_eq!(message, "openai failed: the connection failed", "{}", refused.body);
    let events = gw.events("u_1").await;
    assert_eq!((events.len(), events[0]["status_code"].as_i64()), (1, Some(502)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_does_not_take_the_connection_in_time_is_a_504_naming_the_wait() {
    // A listener that never accepts, its queue full: the kernel drops every
    // further SYN, so a connect to it hangs until the caller gives up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // A connect that takes a second on loopback is one the kernel dropped.
    let mut queued = Vec::new();
    while let Ok(connected) = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
        queued.push(connected.unwrap());
        assert!(queued.len() < 64, "the listener's queue never filled");
    }
    let base = format!("http://{addr}/v1");
    let settings = [("TOLLGATE_OPENAI_BASE_URL", base.as_str()), ("TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_SECONDS", "1")];
    let gw = Gateway::start(Backend::Sqlite, json!({}), &settings, "").await;
    let started = std::time::Instant::now();
    let hung = gw.post("/v1/chat/completions", chat("hi")).await;
    assert_eq!(hung.status, 504, "{}", hung.body);
    assert_eq!(hung.body["error"]["code"], "upstream_timeout");
    let message = hung.body["error"]["message"].as_str().unwrap();
    assert_eq!(message, "openai did not answer in time: no connection within 1 s");
    // The kernel itself gives up on a connect after about two minutes
    // (six SYN retries), with the same error: the configured second must
    // have been what ended it, not the kernel.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "the gateway waited for the connection");
    assert!(waited < Duration::from_secs(60), "the connect timeout did not apply: {waited:?}");
    let events = gw.events("u_1").await;
    assert_eq!((events.len(), events[0]["status_code"].as_i64()), (1, Some(504)));
    drop((queued, listener));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_does_not_answer_in_time_is_a_504_and_a_silent_stream_is_cut() {
    let timeouts =
        [("TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS", "1"), ("TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECONDS", "1")];
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &timeouts, "").await;
    let hung = gw.post("/v1/chat/completions", chat("[mock hang]")).await;
    assert_eq!(hung.status, 504);
    assert_eq!(hung.body["error"]["code"], "upstream_timeout");
    assert!(hung.body["error"]["message"].as_str().unwrap().contains("openai"));
    let mut body = chat("slow [mock tokens=3 tps=0.4]");
    body["stream"] = json!(true);
    let mut response = gw.stream("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    let cut = loop {
        match response.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the client's stream is cut when the provider falls silent");
    let events = gw.events("u_1").await;
    assert_eq!(events[0]["status_code"], 504);
    assert_eq!(events[1]["estimated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_upstream_stream_and_what_passed_is_settled() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let mut body = chat("talk slowly [mock tokens=200 tps=20]");
    body["stream"] = json!(true);
    let mut response = gw.stream("/v1/chat/completions", body).await;
    let mut words = 0;
    while words < 3 {
        let chunk = response.chunk().await.unwrap().unwrap();
        let data = sse_data(&String::from_utf8_lossy(&chunk));
        let chunks = data.iter().filter_map(|d| serde_json::from_str::<Value>(d).ok());
        words += chunks.filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())).count();
    }
    // Chunks leave as they arrive: three are here while the provider is still talking.
    assert!(!gw.mock.requests()[0].completed);
    drop(response);
    let ended = eventually(Duration::from_secs(10), || async {
        gw.mock.requests()[0].completed || gw.mock.requests()[0].tokens_sent < 200 && !gw.events("u_1").await.is_empty()
    })
    .await;
    assert!(ended, "the call was settled");
    let upstream = &gw.mock.requests()[0];
    assert!(!upstream.completed && upstream.tokens_sent < 200, "the upstream request was cancelled");
    let event = &gw.events("u_1").await[0];
    assert_eq!(event["status_code"], 499);
    assert_eq!(event["estimated"], true);
    let output = event["output_tokens"].as_u64().unwrap();
    assert!((3..200).contains(&output), "what passed: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_before_the_answer_cancels_the_call_and_its_input_is_settled() {
    let gw = Gateway::start(Backend::Sqlite, json!({"limits": {"tokens": 100000}}), &[], "").await;
    let call = {
        let (http, base, key) = (gw.app.api.http.clone(), gw.base().to_owned(), gw.key.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&chat("[mock hang]")).send().await
        })
    };
    assert!(eventually(Duration::from_secs(10), || async { !gw.mock.requests().is_empty() }).await);
    call.abort();
    let settled = eventually(Duration::from_secs(10), || async { !gw.events("u_1").await.is_empty() }).await;
    assert!(settled, "the abandoned call was settled");
    let event = &gw.events("u_1").await[0];
    assert_eq!((event["status_code"].as_i64(), event["estimated"].as_bool()), (Some(499), Some(true)));
    assert!(event["input_tokens"].as_u64().unwrap() > 0);
    let usage = gw.usage("u_1").await;
    assert_eq!(usage["meters"]["tokens"]["reserved"], 0, "the hold ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_demo_mode_lets_calls_without_a_key_through_on_the_demo_plans_quota() {
    let gw = Gateway::start(Backend::Sqlite, json!({}), &[("TOLLGATE_ANONYMOUS_ENABLED", "true")], "").await;
    let reply = gw.app.api.call(Method::POST, "/v1/chat/completions", None, Some(chat("hi [mock tokens=4]"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-demo-mode"], "true");
    let used: u64 = reply.headers["x-ratelimit-used"].to_str().unwrap().parse().unwrap();
    assert_eq!(used, usage_of(&gw.mock.requests()[0]).input_tokens + 4, "metered per client address");
    assert_eq!(gw.mock.requests()[0].credential.as_deref(), Some(OPENAI_KEY));
    let long = "word ".repeat(2500);
    let refused = gw.app.api.call(Method::POST, "/v1/chat/completions", None, Some(chat(&long))).await;
    assert_eq!(refused.status, 429, "the demo plan's quota holds");
    // Callers from one address share an anonymous user: stored responses are not theirs.
    let stored = gw.app.api.call(Method::GET, "/v1/responses/resp_1", None, None).await;
    assert_eq!(stored.status, 403, "{:?}", stored.body);
    let going_on = json!({"model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_1"});
    assert_eq!(gw.app.api.call(Method::POST, "/v1/responses", None, Some(going_on)).await.status, 403);
    // Nor are conversations, nor stored items named in an input.
    let asked = gw.mock.requests().len();
    assert_eq!(gw.app.api.call(Method::POST, "/v1/conversations", None, Some(json!({}))).await.status, 403);
    assert_eq!(gw.app.api.call(Method::GET, "/v1/conversations/conv_1", None, None).await.status, 403);
    let naming = json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": "msg_1"}]});
    assert_eq!(gw.app.api.call(Method::POST, "/v1/responses", None, Some(naming)).await.status, 403);
    assert_eq!(gw.mock.requests().len(), asked, "none reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_provider_secret_reaches_the_logs_or_the_store_through_the_gateway() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mock = mock_llm(&[]).await;
    let mut env = db.env();
    let own = "sk-ant-users-own-secret-31337";
    for (k, v) in [
        ("TOLLGATE_LOG_FORMAT", "json".to_owned()),
        ("TOLLGATE_LOG", "debug".to_owned()),
        ("TOLLGATE_ADMIN_TOKEN", crate::common::ADMIN_TOKEN.to_owned()),
        ("TOLLGATE_OPENAI_BASE_URL", mock.openai_base_url()),
        ("TOLLGATE_ANTHROPIC_BASE_URL", mock.base_url()),
        ("TOLLGATE_GEMINI_BASE_URL", mock.base_url()),
        ("OPENAI_API_KEY", OPENAI_KEY.to_owned()),
        ("GEMINI_API_KEY", GEMINI_KEY.to_owned()),
    ] {
        env.push((k.to_owned(), v));
    }
    let mut app = BinApp::start(db.dir.path(), &env, &[], "gateway");
    let api = app.api.clone();
    api.create_user("u_1", "pro").await;
    let key = api.create_key("u_1", json!({"scopes": ["proxy", "credentials:manage"]})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    api.call(Method::PUT, "/v1/me/credentials/anthropic", Some(&key), Some(json!({"secret": own}))).await.expect(200);
    let post = |path: &'static str, body: Value| api.call(Method::POST, path, Some(&key), Some(body));
    post("/v1/chat/completions", chat("hello [mock tokens=3]")).await.expect(200);
    post("/v1/chat/completions", chat("[mock status=401]")).await.expect(401);
    post("/v1/chat/completions", chat("[mock status=500]")).await.expect(502);
    let mut streamed = chat("stream [mock tokens=3]");
    streamed["stream"] = json!(true);
    post("/v1/chat/completions", streamed).await.expect(200);
    let message =
        json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    post("/v1/messages", message).await.expect(200);
    let gemini = format!("{}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={key}", api.base);
    let body = json!({"contents": [{"parts": [{"text": "hi [mock tokens=2]"}]}]});
    assert_eq!(api.http.post(gemini).json(&body).send().await.unwrap().status(), 200);
    assert_eq!(mock.requests().iter().filter(|r| r.credential.as_deref() == Some(own)).count(), 1);
    assert!(app.terminate());
    let all = app.output();
    assert!(all.contains("/v1/chat/completions"), "the calls were logged");
    for secret in [&key[3..], OPENAI_KEY, GEMINI_KEY, own, crate::common::ADMIN_TOKEN] {
        assert!(!all.contains(secret), "{secret} is in the logs");
    }
    let dump = db.dump();
    assert!(dump.contains("/v1/chat/completions"), "the dump holds the ledger");
    for secret in [&key[3..], OPENAI_KEY, GEMINI_KEY, own] {
        assert!(!dump.contains(secret), "{secret} is in the store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_demo_prints_a_key_a_curl_command_and_a_python_snippet_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = dir.path().join("demo.stdout");
    let mut command = std::process::Command::new(crate::common::binary());
    command
        .arg("demo")
        .current_dir(dir.path())
        .env("TOLLGATE_LISTEN", "127.0.0.1:0")
        .env_remove("TOLLGATE_DATABASE_URL")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.stderr")).unwrap());
    let mut child = ChildGuard(command.spawn().expect("the demo starts"));
    let printed = {
        let ready = eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&stdout).unwrap_or_default().contains("Ctrl-C stops the demo")
        });
        assert!(ready.await, "the demo printed its instructions");
        std::fs::read_to_string(&stdout).unwrap()
    };
    let key = printed.lines().find_map(|l| l.trim().strip_prefix("tg_")).map(|k| format!("tg_{k}")).unwrap();
    let url = printed.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches(',').to_owned();
    assert!(printed.contains(&format!("{url}/ui")), "the dashboard's URL");
    assert!(printed.contains(&format!("curl -s {url}/v1/chat/completions")));

    // The curl command's request.
    let http = reqwest::Client::new();
    let curl = printed.lines().find(|l| l.trim().starts_with("-d '")).unwrap();
    let body = curl.trim().trim_start_matches("-d '").trim_end_matches('\'').to_owned();
    let reply = http.post(format!("{url}/v1/chat/completions")).bearer_auth(&key).body(body).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    // The Python snippet, as printed.
    let start = printed.find("from openai import OpenAI").unwrap();
    let end = printed[start..].find("reply.usage)").unwrap() + start + "reply.usage)".len();
    let snippet: String =
        printed[start..end].lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let script = dir.path().join("snippet.py");
    std::fs::write(&script, snippet).unwrap();
    let python = crate::common::repo_root().join(".venv/bin/python");
    let ran = std::process::Command::new(python).arg(&script).output().unwrap();
    assert!(ran.status.success(), "the snippet failed: {}", String::from_utf8_lossy(&ran.stderr));
    assert!(String::from_utf8_lossy(&ran.stdout).contains("CompletionUsage"));
    let usage: Value =
        http.get(format!("{url}/v1/me/usage")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["meters"]["requests"]["used"], 2);

    let data_dir = printed.split("its data (").nth(1).and_then(|s| s.split(')').next()).unwrap().to_owned();
    assert!(std::path::Path::new(&data_dir).exists());
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "a clean exit");
    assert!(!std::path::Path::new(&data_dir).exists(), "the demo's data is removed");
}

/// Kills the child when the test ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two servers on one database: on SQLite the usage journal is the first
/// one's (it holds the file's lock), and the second commits its calls to
/// the ledger directly; every call of both is in the one ledger, once.
async fn a_second_server_on_the_same_database_records_its_calls_in_the_same_ledger(backend: Backend) {
    let mut gw = Gateway::start(backend, json!({"limits": {"requests": 1000}}), &[], "").await;
    let openai = gw.mock.openai_base_url();
    let (second, server) =
        gw.app.sibling(&[("TOLLGATE_OPENAI_BASE_URL", &openai), ("OPENAI_API_KEY", OPENAI_KEY)]).await;
    for _ in 0..3 {
        gw.post("/v1/chat/completions", chat("hi [mock tokens=2]")).await.expect(200);
    }
    for _ in 0..2 {
        second
            .call(Method::POST, "/v1/chat/completions", Some(&gw.key), Some(chat("hi [mock tokens=2]")))
            .await
            .expect(200);
    }
    let events = gw.events("u_1").await;
    assert_eq!(events.len(), 5, "{events:?}");
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "each call once");
    assert!(events.iter().all(|e| e["output_tokens"] == 2));
    let journal = gw.app.db.data_dir().join("tollgate.db-usage-journal");
    if backend == Backend::Sqlite {
        let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
        assert_eq!(lines, 3, "the first server's three calls, one line each; the second wrote none");
    }
    server.shutdown().await.unwrap();
    gw.app.stop().await;
    if backend == Backend::Sqlite {
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0, "a clean stop leaves the journal empty");
    } else {
        assert!(!journal.exists());
    }
}
