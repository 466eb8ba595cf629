//! The official client SDKs (Python `openai` and `anthropic`, the Vercel AI
//! SDK) against `mock-llm` directly: proof that the mock is faithful enough
//! for them, and the bench the gateway's SDK tests build on. The scripts in
//! `tests/sdk/` check what an SDK user relies on and print what they saw;
//! these tests compare it with what the mock recorded.

use serde_json::Value;
use tollgate_mock::{Recorded, Usage};

use crate::common::{mock_llm, node, python};

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
async fn vercel_ai_generate_text_with_a_tool_takes_two_steps_and_total_usage_is_what_the_mock_reported() {
    let mock = mock_llm(&[KEY]).await;
    let base = mock.openai_base_url();
    let seen = node("generate_text_tools.mjs", &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", KEY)]).await.json();
    assert_eq!(seen["steps"], 2);

    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "one request per step");
    assert!(requests[0].body["tools"].is_array());
    assert_eq!(
        requests[1].body["messages"].as_array().and_then(|m| m.last()).map(|m| &m["role"]),
        Some(&Value::from("tool"))
    );
    let total = |field: fn(&Usage) -> u64| requests.iter().map(|r| field(&usage_of(r))).sum::<u64>();
    assert_eq!(seen["totalUsage"]["inputTokens"], total(|u| u.input_tokens));
    assert_eq!(seen["totalUsage"]["outputTokens"], total(|u| u.output_tokens));
}
