//! The official client SDKs (Python `openai`, `anthropic` and Google's
//! `google-genai`, the Vercel AI SDK) against `mock-llm` directly (proof that the mock is faithful enough
//! for them), then through the gateway (proof that an app changes only the
//! base URL and the key, and that Tollgate records what the provider
//! reported). The scripts in `tests/sdk/` check what an SDK user relies on
//! and print what they saw; these tests compare it with what the mock
//! recorded and with the ledger.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_mock::{Recorded, Usage};

use crate::common::{Backend, mock_llm, node, python};
use crate::gateway::Gateway;

const KEY: &str = "sk-mock-good-0123456789";

fn chat_requests(requests: &[Recorded]) -> Vec<&Recorded> {
    requests.iter().filter(|r| r.path == "/v1/chat/completions").collect()
}

fn usage_of(recorded: &Recorded) -> Usage {
    recorded.usage.unwrap_or_else(|| panic!("request {} recorded no usage", recorded.seq))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_sync_client_reads_replies_streams_and_usage_the_mock_reported() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.openai_base_url();
    let seen = python("openai_sync.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", KEY)]).await.json();

    let requests = mock.requests();
    let chats = chat_requests(&requests);
    let (plain, stream, with_usage) = (chats[0], chats[1], chats[2]);
    assert_eq!(usage_of(plain).input_tokens, seen["usage"]["prompt_tokens"]);
    assert_eq!(usage_of(plain).output_tokens, seen["usage"]["completion_tokens"]);
    assert_eq!(stream.body["stream"], true);
    assert!(stream.usage.is_none() && stream.completed, "no usage is sent without include_usage");
    assert_eq!(stream.tokens_sent, 6);
    assert_eq!(with_usage.body["stream_options"]["include_usage"], true);
    assert_eq!(usage_of(with_usage).output_tokens, seen["stream_usage"]["completion_tokens"]);
    assert!(requests.iter().all(|r| r.credential.as_deref() == Some(KEY) && r.status == Some(200)));
    assert!(requests.iter().any(|r| r.path == "/v1/embeddings" && r.body["encoding_format"] == "base64"));
}

/// What `openai_responses.py` saw, call by call: input, output, cached
/// and reasoning tokens.
fn sdk_usages(seen: &Value) -> Vec<[u64; 4]> {
    let usages = seen["usage"].as_array().expect("the script's usage list");
    let counts = |u: &Value| ["input", "output", "cached", "reasoning"].map(|k| u[k].as_u64().unwrap());
    usages.iter().map(counts).collect()
}

/// The Responses API calls that made a response, and the calls about a
/// stored one, which must be those of `openai_responses.py`: a fetch, its
/// input items, a cancel (refused), a delete, and a fetch again, which `forgotten` says is
/// answered before the provider (by the gateway, which forgets a response
/// deleted through it). Beside them, one input was counted.
fn made_and_stored(requests: Vec<Recorded>, forgotten: bool) -> (Vec<Recorded>, Vec<Recorded>) {
    let (counted, requests): (Vec<Recorded>, Vec<Recorded>) =
        requests.into_iter().partition(|r| r.path.ends_with("/responses/input_tokens"));
    assert_eq!(counted.iter().map(|r| r.status).collect::<Vec<_>>(), [Some(200)], "one input counted");
    let (made, stored): (Vec<Recorded>, Vec<Recorded>) =
        requests.into_iter().partition(|r| r.method == "POST" && r.path.ends_with("/responses"));
    let calls: Vec<(&str, Option<u16>)> = stored.iter().map(|r| (r.method.as_str(), r.status)).collect();
    let mut expected = vec![("GET", Some(200)), ("GET", Some(200)), ("POST", Some(400)), ("DELETE", Some(200))];
    if !forgotten {
        expected.push(("GET", Some(404)));
    }
    assert_eq!(calls, expected, "retrieve, input items, cancel, delete, retrieve");
    assert!(stored[1].path.ends_with("/input_items") && stored[2].path.ends_with("/cancel"));
    (made, stored)
}

/// What the mock reported, call by call, in the same order.
fn reported_usages(requests: &[Recorded]) -> Vec<[u64; 4]> {
    let counts = |u: Usage| [u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens];
    requests.iter().map(|r| counts(usage_of(r))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_responses_create_stream_and_tools_read_the_usage_the_mock_reported() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.openai_base_url();
    let seen = python("openai_responses.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", KEY)]).await.json();
    let (requests, _) = made_and_stored(mock.requests(), false);
    assert!(requests.iter().all(|r| r.path == "/v1/responses" && r.status == Some(200)));
    let reported = reported_usages(&requests);
    assert_eq!(sdk_usages(&seen), reported, "the SDK read the usage the mock reported, streamed and not");
    assert!(reported.iter().any(|u| u[2] == 3 && u[3] == 2), "cached and reasoning tokens among them");
    assert_eq!(requests.iter().filter(|r| r.body["stream"] == true).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_conversations_keep_the_turns_the_mock_made() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.openai_base_url();
    let seen = python("openai_conversations.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", KEY)]).await.json();
    let requests = mock.requests();
    let made: Vec<&Recorded> = requests.iter().filter(|r| r.path == "/v1/responses").collect();
    assert_eq!(made.len(), 3);
    let conversation = made[0].body["conversation"].as_str().unwrap();
    assert!(conversation.starts_with("conv_") && made[1].body["conversation"]["id"] == conversation);
    assert_eq!(made[2].body["input"][0]["id"], seen["items"][0], "the opening item, named by reference");
    let sdk: Vec<(u64, u64)> = seen["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["input"].as_u64().unwrap(), u["output"].as_u64().unwrap()))
        .collect();
    let reported: Vec<(u64, u64)> = made
        .iter()
        .map(|r| {
            let u = usage_of(r);
            (u.input_tokens, u.output_tokens)
        })
        .collect();
    assert_eq!(sdk, reported);
    let routes: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .filter(|(_, p)| p.starts_with("/v1/conversations"))
        .collect();
    assert_eq!(
        routes.len(),
        9,
        "create, retrieve, update, list, add, fetch, delete an item, delete, retrieve: {routes:?}"
    );
    assert_eq!(requests.last().unwrap().status, Some(404), "deleted, not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_async_client_streams_both_ways_and_runs_requests_concurrently() {
    let mock = mock_llm(&[]).await;
    let base = mock.openai_base_url();
    let seen = python("openai_async.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", KEY)]).await.json();

    let requests = mock.requests();
    assert_eq!(requests.len(), 23, "one plain, two streams, twenty at once");
    let reported: Vec<Usage> = requests.iter().filter_map(|r| r.usage).collect();
    assert_eq!(reported.len(), 22, "every request but the stream without include_usage reported usage");
    assert_eq!(reported[0].output_tokens, seen["usage"]["completion_tokens"]);
    assert_eq!(seen["stream_usage"], seen["usage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_raises_rate_limit_and_status_errors_and_refuses_a_bad_key() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.openai_base_url();
    let env = [("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", KEY), ("BAD_OPENAI_API_KEY", "sk-mock-bad")];
    let seen = python("openai_errors.py", &env).await.json();
    assert_eq!(seen["rate_limit"]["status"], 429);
    assert_eq!(seen["server_error"]["type"], "server_error");
    assert_eq!(seen["cut"]["chunks"], 2);
    assert_eq!(seen["bad_key"]["code"], "invalid_api_key");

    let requests = mock.requests();
    let statuses: Vec<Option<u16>> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(500), Some(503), Some(200), Some(401)]);
    let cut = &requests[3];
    assert!(!cut.completed && cut.usage.is_none());
    assert_eq!(cut.tokens_sent, 2);
    assert_eq!(requests[4].credential.as_deref(), Some("sk-mock-bad"), "the mock saw the key the client sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_anthropic_create_and_stream_report_the_usage_the_mock_recorded() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.base_url();
    let seen =
        python("anthropic_messages.py", &[("ANTHROPIC_BASE_URL", &base), ("ANTHROPIC_API_KEY", KEY)]).await.json();

    let requests = mock.requests();
    let (created, streamed) = (&requests[0], &requests[1]);
    assert_eq!(streamed.body["stream"], true);
    for (recorded, usage) in [(created, &seen["usage"]), (streamed, &seen["stream_usage"])] {
        let recorded = usage_of(recorded);
        assert_eq!(recorded.input_tokens, usage["input_tokens"]);
        assert_eq!(recorded.output_tokens, usage["output_tokens"]);
    }
    assert!(requests.iter().all(|r| r.header("anthropic-version").is_some()));
    assert_eq!(requests.last().unwrap().status, Some(529));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_google_genai_generates_and_streams_on_v1_and_v1beta_with_the_usage_the_mock_reported() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.base_url();
    let seen = python("gemini_genai.py", &[("GEMINI_BASE_URL", &base), ("GEMINI_API_KEY", KEY)]).await.json();

    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    let calls = |version: &str| {
        let path = |action: &str| format!("/{version}/models/gemini-2.5-flash:{action}");
        let list = format!("/{version}/models");
        [list, path("generateContent"), path("countTokens"), path("streamGenerateContent")]
    };
    assert_eq!(paths, [calls("v1"), calls("v1beta")].concat(), "the SDK's default version is v1");
    assert!(requests.iter().all(|r| r.credential.as_deref() == Some(KEY) && r.status == Some(200)));
    let listed = seen["models"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "the mock's four Gemini models: {listed:?}");
    let requests: Vec<Recorded> = requests.into_iter().filter(|r| r.path.ends_with("Content")).collect();
    assert!(
        requests
            .iter()
            .filter(|r| r.path.ends_with(":streamGenerateContent"))
            .all(|r| r.query.as_deref() == Some("alt=sse"))
    );
    let sdk = seen["usage"].as_array().unwrap();
    assert_eq!(sdk.len(), requests.len());
    for (usage, recorded) in sdk.iter().zip(&requests) {
        assert_eq!(usage["input"], usage_of(recorded).input_tokens);
        assert_eq!(usage["output"], usage_of(recorded).output_tokens);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_generate_text_with_a_tool_takes_two_steps_and_total_usage_is_what_the_mock_reported() {
    vercel_ai_against_the_mock("chat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_default_openai_model_speaks_the_responses_api_with_the_usage_the_mock_reported() {
    vercel_ai_against_the_mock("responses").await;
}

/// `generate_text_tools.mjs` against the mock with the model of `api`
/// (`chat` or `responses`): two steps, then a stream, then a next turn,
/// each with the usage the mock reported.
async fn vercel_ai_against_the_mock(api: &str) {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.openai_base_url();
    let env = [("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", KEY), ("OPENAI_MODEL_API", api)];
    let seen = node("generate_text_tools.mjs", &env).await.json();
    assert_eq!(seen["steps"], 2);

    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "one request per step, then the stream, then the next turn");
    assert!(
        requests
            .iter()
            .all(|r| r.path == format!("/v1/{}", if api == "chat" { "chat/completions" } else { "responses" }))
    );
    assert!(requests[0].body["tools"].is_array());
    let last_input = match api {
        "chat" => requests[1].body["messages"].as_array().and_then(|m| m.last()).map(|m| &m["role"]),
        _ => requests[1].body["input"].as_array().and_then(|m| m.last()).map(|m| &m["type"]),
    };
    let tool_result = if api == "chat" { "tool" } else { "function_call_output" };
    assert_eq!(last_input, Some(&Value::from(tool_result)), "the second step answers the tool's result");
    let total = |field: fn(&Usage) -> u64| requests[..2].iter().map(|r| field(&usage_of(r))).sum::<u64>();
    assert_eq!(seen["totalUsage"]["inputTokens"], total(|u| u.input_tokens));
    assert_eq!(seen["totalUsage"]["outputTokens"], total(|u| u.output_tokens));
    assert_eq!(requests[2].body["stream"], true);
    assert_eq!(seen["streamUsage"]["inputTokens"], usage_of(&requests[2]).input_tokens);
    assert_eq!(seen["streamUsage"]["outputTokens"], usage_of(&requests[2]).output_tokens);
    assert_eq!(seen["nextUsage"]["outputTokens"], usage_of(&requests[3]).output_tokens);
    if api == "responses" {
        assert_eq!(referenced(&requests[3]).len(), 1, "the SDK named the stored answer: {}", requests[3].body);
    }
}

/// The ids a Responses API request names by `item_reference`.
fn referenced(request: &Recorded) -> Vec<&str> {
    let input = request.body["input"].as_array().into_iter().flatten();
    input.filter(|item| item["type"] == "item_reference").filter_map(|item| item["id"].as_str()).collect()
}

// ---- through the gateway ----

/// A gateway whose plan allows `gpt-4o-mini`, the embedding models, Claude
/// Haiku and Gemini 2.5 Flash, and a second user (`broke`) whose quota of
/// one token is too small for any call; returns the gateway and that
/// user's key.
async fn gateway() -> (Gateway, String) {
    let plan = json!({"limits": {"tokens": 1000000, "requests": 10000}, "rpm": 1000,
                      "allowed_models": ["gpt-4o-mini", "text-embedding-*", "claude-haiku-4-5", "gemini-2.5-flash"]});
    let gw = Gateway::start(Backend::Sqlite, plan, &[], "").await;
    let tiny = json!({"slug": "tiny", "limits": {"tokens": 1}});
    gw.app.api.admin(Method::POST, "/admin/v1/plans", Some(tiny)).await.expect(201);
    gw.app.api.create_user("broke", "tiny").await;
    let created = gw.app.api.create_key("broke", json!({"name": "sdk", "scopes": ["proxy"]})).await;
    let broke = created["key"].as_str().unwrap().to_owned();
    (gw, broke)
}

/// The ledger of `user` matches the mock's records call by call: same
/// input, output and cached tokens, in order.
async fn ledger_matches_the_mock(gw: &Gateway, user: &str) -> (u64, u64) {
    let reported: Vec<Usage> = gw.mock.requests().iter().filter_map(|r| r.usage).collect();
    let events = gw.events(user).await;
    let billed: Vec<&Value> = events.iter().filter(|e| e["status_code"] == 200).collect();
    assert_eq!(billed.len(), reported.len(), "one event per answered call");
    for (event, usage) in billed.iter().zip(&reported) {
        assert_eq!(event["input_tokens"], usage.input_tokens, "{event}");
        assert_eq!(event["output_tokens"], usage.output_tokens, "{event}");
        assert_eq!(event["cached_tokens"], usage.cached_tokens, "{event}");
        assert_eq!(event["estimated"], false);
    }
    let input = reported.iter().map(|u| u.input_tokens).sum();
    let output = reported.iter().map(|u| u.output_tokens).sum();
    let meters = &gw.usage(user).await["meters"];
    assert_eq!(meters["input_tokens"]["used"], input);
    assert_eq!(meters["output_tokens"]["used"], output);
    (input, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_sync_client_through_the_gateway_sees_the_providers_answers_and_each_call_is_recorded() {
    let (gw, _) = gateway().await;
    let base = format!("{}/v1", gw.base());
    let seen = python("openai_sync.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", &gw.key)]).await.json();
    let requests = gw.mock.requests();
    let chats = chat_requests(&requests);
    let (stream, with_usage) = (chats[1], chats[2]);
    assert_eq!(stream.body["stream_options"]["include_usage"], true, "asked for usage, which the SDK did not see");
    assert_eq!(usage_of(with_usage).output_tokens, seen["stream_usage"]["completion_tokens"]);
    assert!(requests.iter().all(|r| r.credential.as_deref() == Some(crate::gateway::OPENAI_KEY)));
    ledger_matches_the_mock(&gw, "u_1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_responses_through_the_gateway_are_recorded_as_the_provider_reported() {
    let (gw, _) = gateway().await;
    let base = format!("{}/v1", gw.base());
    let seen = python("openai_responses.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", &gw.key)]).await.json();
    let all = gw.mock.requests();
    assert!(all.iter().all(|r| r.credential.as_deref() == Some(crate::gateway::OPENAI_KEY)));
    let (requests, _) = made_and_stored(all, true);
    let (input, output) = ledger_matches_the_mock(&gw, "u_1").await;
    let sdk = sdk_usages(&seen);
    let reported = reported_usages(&requests);
    assert_eq!(sdk, reported, "the SDK saw what the provider reported, call by call");
    let sum = sdk.iter().fold((0, 0), |(i, o), u| (i + u[0], o + u[1]));
    assert_eq!((input, output), sum, "what the SDK saw is what Tollgate recorded");
    let events = gw.events("u_1").await;
    let reasoning: Vec<u64> = events.iter().map(|e| e["reasoning_tokens"].as_u64().unwrap_or(0)).collect();
    assert_eq!(reasoning, sdk.iter().map(|u| u[3]).collect::<Vec<_>>(), "reasoning tokens kept in the ledger");
    assert!(gw.events("u_1").await.iter().all(|e| e["route"] == "/v1/responses"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_conversations_through_the_gateway_are_the_users_own_and_their_turns_recorded() {
    let (gw, _) = gateway().await;
    let base = format!("{}/v1", gw.base());
    let seen =
        python("openai_conversations.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", &gw.key)]).await.json();
    let requests = gw.mock.requests();
    assert!(requests.iter().all(|r| r.credential.as_deref() == Some(crate::gateway::OPENAI_KEY)));
    let (input, output) = ledger_matches_the_mock(&gw, "u_1").await;
    let sum = seen["usage"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(i, o), u| (i + u["input"].as_u64().unwrap(), o + u["output"].as_u64().unwrap()));
    assert_eq!((input, output), sum, "the three responses, as the SDK saw them");
    assert_eq!(gw.events("u_1").await.len(), 3, "the conversation's own routes are not metered");
    // The fetch after the delete was answered by the gateway, which forgot it.
    let last = requests.last().unwrap();
    assert!(
        last.method == "DELETE" && last.path.starts_with("/v1/conversations/conv_"),
        "{} {}",
        last.method,
        last.path
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_async_client_through_the_gateway_streams_both_ways_and_runs_calls_concurrently() {
    let (gw, _) = gateway().await;
    let base = format!("{}/v1", gw.base());
    let seen = python("openai_async.py", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", &gw.key)]).await.json();
    assert_eq!(seen["stream_usage"], seen["usage"]);
    assert_eq!(gw.mock.requests().len(), 23);
    assert!(gw.mock.requests().iter().all(|r| r.usage.is_some()), "the gateway asked every stream for usage");
    ledger_matches_the_mock(&gw, "u_1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openai_raises_rate_limit_permission_auth_and_status_errors_through_the_gateway() {
    let (gw, broke) = gateway().await;
    let base = format!("{}/v1", gw.base());
    let env = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", gw.key.as_str()),
        ("EXHAUSTED_API_KEY", broke.as_str()),
        ("BAD_API_KEY", "tg_notAKeyAtAll"),
    ];
    let seen = python("gateway_openai_errors.py", &env).await.json();
    assert_eq!(seen["quota"]["code"], "insufficient_quota");
    assert_eq!(seen["upstream_error"]["status"], 502);
    let statuses: Vec<Option<u16>> = gw.mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(500), Some(200)], "Tollgate's own refusals never reached the provider");
    assert!(gw.events("broke").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_anthropic_create_and_stream_through_the_gateway_are_recorded_as_the_provider_reported() {
    let (gw, broke) = gateway().await;
    let env = [
        ("ANTHROPIC_BASE_URL", gw.base()),
        ("ANTHROPIC_API_KEY", gw.key.as_str()),
        ("EXHAUSTED_API_KEY", broke.as_str()),
    ];
    let seen = python("gateway_anthropic.py", &env).await.json();
    let requests = gw.mock.requests();
    assert!(requests.iter().all(|r| r.credential.as_deref() == Some(crate::gateway::ANTHROPIC_KEY)));
    assert_eq!(requests[1].body["stream"], true);
    let (input, output) = ledger_matches_the_mock(&gw, "u_1").await;
    let sdk_input = seen["usage"]["input"].as_u64().unwrap() + seen["stream_usage"]["input"].as_u64().unwrap();
    let sdk_output = seen["usage"]["output"].as_u64().unwrap() + seen["stream_usage"]["output"].as_u64().unwrap();
    assert_eq!((input, output), (sdk_input, sdk_output), "what the SDK saw is what Tollgate recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_google_genai_through_the_gateway_is_recorded_as_the_provider_reported_on_both_versions() {
    let (gw, broke) = gateway().await;
    let env = [("GEMINI_BASE_URL", gw.base()), ("GEMINI_API_KEY", gw.key.as_str()), ("EXHAUSTED_API_KEY", &broke)];
    let seen = python("gemini_genai.py", &env).await.json();
    let requests = gw.mock.requests();
    assert_eq!(requests.len(), 8, "Tollgate's own refusal never reached the provider");
    assert!(requests.iter().all(|r| r.credential.as_deref() == Some(crate::gateway::GEMINI_KEY)));
    let versions: Vec<&str> = requests.iter().map(|r| r.path.split('/').nth(1).unwrap()).collect();
    let expected = [["v1"; 4], ["v1beta"; 4]].concat();
    assert_eq!(versions, expected, "each call went upstream on the version the SDK named");
    assert_eq!(seen["models"], json!(["models/gemini-2.5-flash"]), "the list the plan allows");
    let (input, output) = ledger_matches_the_mock(&gw, "u_1").await;
    let sdk = seen["usage"].as_array().unwrap();
    let sum = |field: &str| sdk.iter().map(|u| u[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!((input, output), (sum("input"), sum("output")), "what the SDK saw is what Tollgate recorded");
    assert!(gw.events("broke").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_generate_text_with_a_tool_through_the_gateway_is_recorded_as_its_total_usage() {
    vercel_ai_through_the_gateway("chat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_default_openai_model_through_the_gateway_is_recorded_as_its_total_usage() {
    vercel_ai_through_the_gateway("responses").await;
}

/// `generate_text_tools.mjs` through the gateway with the model of `api`:
/// the ledger holds what the mock reported, whose sum is the SDK's.
async fn vercel_ai_through_the_gateway(api: &str) {
    let (gw, _) = gateway().await;
    let base = format!("{}/v1", gw.base());
    let env = [("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", gw.key.as_str()), ("OPENAI_MODEL_API", api)];
    let seen = node("generate_text_tools.mjs", &env).await.json();
    let steps = seen["steps"].as_u64().unwrap();
    assert!(steps >= 2);
    let (input, output) = ledger_matches_the_mock(&gw, "u_1").await;
    let sdk = |field: &str| {
        ["totalUsage", "streamUsage", "nextUsage"].iter().map(|usage| seen[usage][field].as_u64().unwrap()).sum()
    };
    assert_eq!((input, output), (sdk("inputTokens"), sdk("outputTokens")), "the ledger's sum is the SDK's");
    let events = gw.events("u_1").await.len() as u64;
    assert_eq!(events, steps + 2, "one event per step, one for the stream and one for the next turn");
    if api == "responses" {
        // The stored answer the next turn named was the user's own.
        let requests = gw.mock.requests();
        assert_eq!(referenced(requests.last().unwrap()).len(), 1);
    }
}
