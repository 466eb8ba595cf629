//! `tollgate mock-llm` on its own: each provider's wire format (Gemini's
//! and OpenAI's Responses API here, the others also through their SDKs in
//! `sdk`), streams, tool calls, credentials, injected errors, cut streams,
//! hangs, latency, recording.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tollgate_mock::{MockConfig, MockServer, Provider, Usage};

use crate::common::{binary, eventually, mock_llm};

const KEY: &str = "mock-key-good";

/// A request to one provider's generation route, credential included.
struct Call {
    provider: Provider,
    path: String,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Call {
    fn openai(body: Value) -> Call {
        Call { provider: Provider::OpenAi, path: "/v1/chat/completions".into(), body, headers: vec![] }
    }

    /// OpenAI's legacy completions.
    fn completions(body: Value) -> Call {
        Call { provider: Provider::OpenAi, path: "/v1/completions".into(), body, headers: vec![] }
    }

    /// OpenAI's Responses API.
    fn responses(body: Value) -> Call {
        Call { provider: Provider::OpenAi, path: "/v1/responses".into(), body, headers: vec![] }
    }

    fn anthropic(body: Value) -> Call {
        let headers = vec![("anthropic-version", "2023-06-01".to_owned())];
        Call { provider: Provider::Anthropic, path: "/v1/messages".into(), body, headers }
    }

    fn gemini(action: &str, body: Value) -> Call {
        Call {
            provider: Provider::Gemini,
            path: format!("/v1beta/models/gemini-2.5-flash:{action}"),
            body,
            headers: vec![],
        }
    }

    /// The same conversation for each provider, streamed or not.
    fn each(text: &str, stream: bool) -> [Call; 3] {
        let mut openai = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": text }] });
        let mut anthropic = json!({ "model": "claude-haiku-4-5", "max_tokens": 500, "messages": [{ "role": "user", "content": text }] });
        if stream {
            openai["stream"] = json!(true);
            openai["stream_options"] = json!({ "include_usage": true });
            anthropic["stream"] = json!(true);
        }
        let gemini = json!({ "contents": [{ "role": "user", "parts": [{ "text": text }] }] });
        let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
        [Call::openai(openai), Call::anthropic(anthropic), Call::gemini(action, gemini)]
    }

    fn header(mut self, name: &'static str, value: &str) -> Call {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn request(&self, mock: &MockServer, key: &str) -> reqwest::RequestBuilder {
        let mut request = reqwest::Client::new().post(format!("{}{}", mock.base_url(), self.path)).json(&self.body);
        request = match self.provider {
            Provider::OpenAi => request.bearer_auth(key),
            Provider::Anthropic => request.header("x-api-key", key),
            Provider::Gemini => request.header("x-goog-api-key", key),
            Provider::GitHub => unreachable!("GitHub has no completions"),
        };
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request
    }

    async fn send(&self, mock: &MockServer) -> (u16, HeaderMap, String) {
        self.send_with(mock, KEY).await
    }

    async fn send_with(&self, mock: &MockServer, key: &str) -> (u16, HeaderMap, String) {
        let response = self.request(mock, key).send().await.expect("the mock answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("a whole body"))
    }
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `data:` payloads of an SSE body (events split on blank lines, LF or CRLF).
fn sse_data(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

/// `(event name, data)` of an Anthropic SSE body.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let name = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default();
            let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            (name.to_owned(), json_of(data))
        })
        .collect()
}

/// Reads a streamed body until it ends; returns the text and whether it
/// ended in an error (a cut connection) rather than cleanly.
async fn read_stream(response: reqwest::Response) -> (String, bool) {
    let mut body = response.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8_lossy(&text).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&text).into_owned(), false)
}

/// The generated text of a whole (not streamed) answer.
fn text_of(provider: Provider, body: &Value) -> String {
    let text = match provider {
        Provider::OpenAi => &body["choices"][0]["message"]["content"],
        Provider::Anthropic => &body["content"][0]["text"],
        Provider::Gemini => &body["candidates"][0]["content"]["parts"][0]["text"],
        Provider::GitHub => unreachable!("GitHub has no completions"),
    };
    text.as_str().unwrap_or_else(|| panic!("no text in {body}")).to_owned()
}

/// The text of a streamed answer, and the usage its stream reported.
fn streamed(provider: Provider, body: &str) -> (String, Usage) {
    let mut text = String::new();
    let mut usage = Usage::default();
    match provider {
        Provider::OpenAi => {
            for data in sse_data(body).iter().filter(|d| *d != "[DONE]") {
                let chunk = json_of(data);
                text.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
                if let Some(u) = chunk["usage"].as_object() {
                    usage.input_tokens = u["prompt_tokens"].as_u64().unwrap();
                    usage.output_tokens = u["completion_tokens"].as_u64().unwrap();
                }
            }
        }
        Provider::Anthropic => {
            for (name, data) in sse_events(body) {
                match name.as_str() {
                    "message_start" => usage.input_tokens = data["message"]["usage"]["input_tokens"].as_u64().unwrap(),
                    "content_block_delta" => text.push_str(data["delta"]["text"].as_str().unwrap_or("")),
                    "message_delta" => usage.output_tokens = data["usage"]["output_tokens"].as_u64().unwrap(),
                    _ => {}
                }
            }
        }
        Provider::Gemini => {
            for data in sse_data(body) {
                let chunk = json_of(&data);
                text.push_str(chunk["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap_or(""));
                // Cumulative: the last chunk's counts are the totals.
                usage.input_tokens = chunk["usageMetadata"]["promptTokenCount"].as_u64().unwrap();
                usage.output_tokens = chunk["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap();
            }
        }
        Provider::GitHub => unreachable!("GitHub has no completions"),
    }
    (text, usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_streams_the_same_text_it_answers_whole_with_the_same_usage() {
    let mock = mock_llm(&[]).await;
    let prompt = "Tell me a story about gates [mock tokens=12]";
    for (whole, stream) in Call::each(prompt, false).into_iter().zip(Call::each(prompt, true)) {
        let (status, _, body) = whole.send(&mock).await;
        assert_eq!(status, 200, "{body}");
        let text = text_of(whole.provider, &json_of(&body));
        assert_eq!(text.split_whitespace().count(), 12);
        let (status, headers, body) = stream.send(&mock).await;
        assert_eq!(status, 200, "{body}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let (streamed_text, usage) = streamed(stream.provider, &body);
        assert_eq!(streamed_text, text, "{:?}: the stream spells the whole answer", stream.provider);
        let recorded = mock.requests();
        let (whole_usage, stream_usage) = (recorded[recorded.len() - 2].usage, recorded[recorded.len() - 1].usage);
        assert_eq!(whole_usage, stream_usage);
        let recorded = stream_usage.expect("usage was reported");
        assert_eq!((usage.input_tokens, usage.output_tokens), (recorded.input_tokens, recorded.output_tokens));
    }
    // The same prompt gets the same answer; another prompt another one.
    let text = |body: String| text_of(Provider::OpenAi, &json_of(&body));
    let first = text(Call::each(prompt, false)[0].send(&mock).await.2);
    assert_eq!(first, text(Call::each(prompt, false)[0].send(&mock).await.2));
    assert_ne!(first, text(Call::each("Another story [mock tokens=12]", false)[0].send(&mock).await.2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_tokens_follow_the_documented_rule() {
    let mock = mock_llm(&[]).await;
    // Two messages of 3 and 2 words: 2 × 4 overhead + 5 words.
    let messages =
        json!([{ "role": "system", "content": "be very brief" }, { "role": "user", "content": "hello there" }]);
    let (_, _, body) = Call::openai(json!({ "model": "gpt-4o-mini", "messages": messages })).send(&mock).await;
    assert_eq!(json_of(&body)["usage"]["prompt_tokens"], 2 * tollgate_mock::MESSAGE_OVERHEAD + 5);
    // A tool adds its overhead and the words of its definition.
    let tool = json!({ "type": "function", "function": { "name": "f", "description": "two words" } });
    let body = json!({ "model": "gpt-4o-mini", "messages": messages, "tools": [tool], "tool_choice": "none" });
    let (_, _, body) = Call::openai(body).send(&mock).await;
    let expected = 2 * tollgate_mock::MESSAGE_OVERHEAD + 5 + tollgate_mock::TOOL_OVERHEAD + 3;
    assert_eq!(json_of(&body)["usage"]["prompt_tokens"], expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_sets_the_reply_length_and_the_finish_reason_of_each_provider() {
    let mock = mock_llm(&[]).await;
    let openai = json!({ "model": "m", "max_completion_tokens": 4, "messages": [{ "role": "user", "content": "hi" }] });
    let (_, _, body) = Call::openai(openai).send(&mock).await;
    let body = json_of(&body);
    assert_eq!(
        (body["usage"]["completion_tokens"].as_u64(), &body["choices"][0]["finish_reason"]),
        (Some(4), &json!("length"))
    );

    let anthropic = json!({ "model": "m", "max_tokens": 3, "messages": [{ "role": "user", "content": "hi" }] });
    let body = json_of(&Call::anthropic(anthropic).send(&mock).await.2);
    assert_eq!((body["usage"]["output_tokens"].as_u64(), &body["stop_reason"]), (Some(3), &json!("max_tokens")));

    let gemini = json!({ "contents": [{ "parts": [{ "text": "hi" }] }], "generationConfig": { "maxOutputTokens": 2 } });
    let body = json_of(&Call::gemini("generateContent", gemini).send(&mock).await.2);
    let candidate = &body["candidates"][0];
    assert_eq!(
        (body["usageMetadata"]["candidatesTokenCount"].as_u64(), &candidate["finishReason"]),
        (Some(2), &json!("MAX_TOKENS"))
    );

    // Without max tokens: the configured default length, and a natural stop.
    let body = json_of(
        &Call::openai(json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] })).send(&mock).await.2,
    );
    assert_eq!(body["usage"]["completion_tokens"], MockConfig::default().output_tokens);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_usage_comes_only_with_include_usage_in_a_last_chunk_without_choices() {
    let mock = mock_llm(&[]).await;
    let messages = json!([{ "role": "user", "content": "count [mock tokens=3]" }]);
    let plain = Call::openai(json!({ "model": "m", "stream": true, "messages": messages }));
    let body = plain.send(&mock).await.2;
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json_of(d)).collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage field at all without include_usage");
    assert_eq!(chunks.len(), 5, "role, three words, finish");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");

    let with_usage = Call::openai(
        json!({ "model": "m", "stream": true, "stream_options": { "include_usage": true }, "messages": messages }),
    );
    let body = with_usage.send(&mock).await.2;
    let data = sse_data(&body);
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json_of(d)).collect();
    assert_eq!(chunks.len(), 6);
    assert!(
        chunks[..5].iter().all(|c| c["usage"].is_null() && c.get("usage").is_some()),
        "usage: null before the last"
    );
    let last = &chunks[5];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 3);
    let recorded = mock.requests();
    assert_eq!((recorded[0].usage, recorded[0].tokens_sent), (None, 3));
    assert_eq!(recorded[1].usage.map(|u| u.output_tokens), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_tool_calls_stream_in_fragments_then_a_tool_result_gets_text() {
    let mock = mock_llm(&[]).await;
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "parameters": {
        "type": "object", "properties": { "city": { "type": "string" }, "days": { "type": "integer" } },
        "required": ["city", "days"] } } }]);
    let question = json!([{ "role": "user", "content": "weather? [mock tokens=2]" }]);
    let body =
        Call::openai(json!({ "model": "m", "stream": true, "tools": tools, "messages": question })).send(&mock).await.2;
    let data = sse_data(&body);
    let chunks: Vec<Value> = data.iter().filter(|d| *d != "[DONE]").map(|d| json_of(d)).collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (&first["function"]["name"], &first["type"], &first["index"]),
        (&json!("get_weather"), &json!("function"), &json!(0))
    );
    let id = first["id"].as_str().unwrap().to_owned();
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(json_of(&arguments), json!({ "city": "mock", "days": 1 }));
    assert!(chunks.len() > 3, "the arguments come in several fragments");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

    let mut conversation = question.as_array().unwrap().clone();
    conversation.push(json!({ "role": "assistant", "content": null, "tool_calls": [{ "id": id, "type": "function",
        "function": { "name": "get_weather", "arguments": arguments } }] }));
    conversation.push(json!({ "role": "tool", "tool_call_id": id, "content": "sunny" }));
    let body =
        json_of(&Call::openai(json!({ "model": "m", "tools": tools, "messages": conversation })).send(&mock).await.2);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"].as_str().unwrap().split_whitespace().count(), 2);
}

/// The usage of a Responses API `response` object, as the mock records it.
fn responses_usage(response: &Value) -> Usage {
    let usage = &response["usage"];
    let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(count("/total_tokens"), count("/input_tokens") + count("/output_tokens"));
    Usage {
        input_tokens: count("/input_tokens"),
        output_tokens: count("/output_tokens"),
        cached_tokens: count("/input_tokens_details/cached_tokens"),
        reasoning_tokens: count("/output_tokens_details/reasoning_tokens"),
    }
}

/// The text of a Responses API message output.
fn responses_text(response: &Value) -> String {
    let message = &response["output"][0];
    assert_eq!((&message["type"], &message["role"]), (&json!("message"), &json!("assistant")), "{response}");
    assert_eq!(message["content"][0]["type"], "output_text");
    message["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {response}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_answers_a_response_object_with_the_usage_it_records() {
    let mock = mock_llm(&[]).await;
    let prompt = "Tell me about gates [mock tokens=7 cached=2 reasoning=3]";
    let call = Call::responses(json!({ "model": "gpt-4o-mini", "instructions": "be brief", "input": prompt }));
    let (status, headers, body) = call.send(&mock).await;
    assert_eq!(status, 200, "{body}");
    let body = json_of(&body);
    assert_eq!((&body["object"], &body["status"]), (&json!("response"), &json!("completed")));
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(headers["x-request-id"], body["id"].as_str().unwrap());
    assert!(body["incomplete_details"].is_null() && body["error"].is_null());
    assert_eq!((&body["model"], &body["instructions"]), (&json!("gpt-4o-mini"), &json!("be brief")));
    assert!(body["created_at"].is_u64());
    let message = &body["output"][0];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["status"], "completed");
    assert_eq!(responses_text(&body).split_whitespace().count(), 7);
    // (4 + 2 words) for the instructions, (4 + 8 words) for the input.
    let usage = Usage { input_tokens: 18, output_tokens: 10, cached_tokens: 2, reasoning_tokens: 3 };
    assert_eq!(responses_usage(&body), usage);
    assert_eq!(mock.requests()[0].usage, Some(usage), "the record reports the usage the answer carries");
    assert_eq!(mock.requests()[0].tokens_sent, 7);

    // The same conversation as items (under Groq's prefix too) costs the
    // same: instructions count as a system message.
    let items = json!([
        { "role": "developer", "content": "be brief" },
        { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": prompt }] }
    ]);
    let http = reqwest::Client::new();
    let url = format!("{}/responses", mock.groq_base_url());
    let same = http.post(url).bearer_auth(KEY).json(&json!({ "model": "m", "input": items })).send().await.unwrap();
    let same: Value = same.json().await.unwrap();
    assert_eq!(responses_usage(&same), usage);
    let messages = json!([{ "role": "system", "content": "be brief" }, { "role": "user", "content": prompt }]);
    let chat = json!({ "model": "m", "messages": messages });
    let chat = json_of(&Call::openai(chat).send(&mock).await.2);
    assert_eq!(chat["usage"]["prompt_tokens"], usage.input_tokens, "chat counts the same conversation alike");
    // Instructions are not a turn: without them the same input gets the same text.
    let plain = json_of(&Call::responses(json!({ "model": "m", "input": prompt })).send(&mock).await.2);
    assert_eq!(responses_text(&plain), responses_text(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_streams_typed_events_in_order_ending_with_the_usage_it_records() {
    let mock = mock_llm(&[]).await;
    let request = json!({ "model": "gpt-4o-mini", "stream": true, "input": "count [mock tokens=3 reasoning=2]" });
    let (status, headers, body) = Call::responses(request.clone()).send(&mock).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(!body.contains("[DONE]"), "the Responses API sends no [DONE]");
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!((&data["type"], &data["sequence_number"]), (&json!(name), &json!(i)), "{data}");
    }
    let created = &events[0].1["response"];
    assert_eq!(
        (&created["status"], &created["output"], &created["usage"]),
        (&json!("in_progress"), &json!([]), &Value::Null)
    );
    let added = &events[2].1;
    assert_eq!((&added["output_index"], &added["item"]["status"]), (&json!(0), &json!("in_progress")));
    let item_id = &added["item"]["id"];
    assert!(
        events[3..9].iter().all(|(_, d)| d["item_id"] == *item_id && d["output_index"] == 0 && d["content_index"] == 0)
    );
    let deltas: String = events[4..7].iter().map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    assert_eq!(events[7].1["text"], deltas.as_str());
    assert_eq!(events[8].1["part"]["text"], deltas.as_str());
    assert_eq!((&events[9].1["item"]["id"], &events[9].1["item"]["status"]), (item_id, &json!("completed")));
    let completed = &events[10].1["response"];
    assert_eq!((&completed["id"], &completed["status"]), (&created["id"], &json!("completed")));
    assert_eq!(responses_text(completed), deltas);
    let recorded = mock.requests()[0].clone();
    assert_eq!(recorded.usage, Some(responses_usage(completed)), "the last event's usage is the recorded one");
    assert_eq!(recorded.usage.map(|u| (u.output_tokens, u.reasoning_tokens)), Some((5, 2)));
    assert_eq!((recorded.tokens_sent, recorded.completed), (3, true));

    // Whole, the same request gets the same text.
    let mut whole = request.clone();
    whole["stream"] = json!(false);
    assert_eq!(responses_text(&json_of(&Call::responses(whole).send(&mock).await.2)), deltas);

    // Cut after two deltas: no final event, no usage recorded.
    let call = Call::responses(request).header("x-mock", "tokens=10 cut_after=2");
    let response = call.request(&mock, KEY).send().await.unwrap();
    let (body, errored) = read_stream(response).await;
    assert!(errored, "the connection is cut, not closed cleanly: {body}");
    assert_eq!(body.matches("event: response.output_text.delta").count(), 2);
    assert!(!body.contains("response.completed"));
    let recorded = mock.requests().pop().unwrap();
    assert_eq!((recorded.completed, recorded.usage, recorded.tokens_sent), (false, None, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_calls_a_function_tool_whole_and_streamed_then_answers_its_output_with_text() {
    let mock = mock_llm(&[]).await;
    let tools = json!([
        { "type": "function", "name": "get_weather", "description": "the weather", "strict": true, "parameters": {
            "type": "object", "properties": { "city": { "type": "string" }, "days": { "type": "integer" } },
            "required": ["city", "days"], "additionalProperties": false } },
        { "type": "function", "name": "get_time", "parameters": {
            "type": "object", "properties": { "zone": { "type": "string" } }, "required": ["zone"] } }
    ]);
    let question = json!([{ "role": "user", "content": "weather? [mock tokens=2]" }]);
    let body =
        json_of(&Call::responses(json!({ "model": "m", "tools": tools, "input": question })).send(&mock).await.2);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["tools"], tools, "the tools are echoed");
    let call = &body["output"][0];
    assert_eq!(
        (&call["type"], &call["name"], &call["status"]),
        (&json!("function_call"), &json!("get_weather"), &json!("completed"))
    );
    assert!(call["id"].as_str().unwrap().starts_with("fc_") && call["call_id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(json_of(call["arguments"].as_str().unwrap()), json!({ "city": "mock", "days": 1 }));
    assert_eq!(mock.requests()[0].usage, Some(responses_usage(&body)));

    let streamed = Call::responses(json!({ "model": "m", "stream": true, "tools": tools, "input": question }));
    let events = sse_events(&streamed.send(&mock).await.2);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let fragments = names.iter().filter(|n| **n == "response.function_call_arguments.delta").count();
    assert!(fragments > 1, "the arguments come in several fragments");
    let mut expected = vec!["response.created", "response.in_progress", "response.output_item.added"];
    expected.extend(std::iter::repeat_n("response.function_call_arguments.delta", fragments));
    expected.extend(["response.function_call_arguments.done", "response.output_item.done", "response.completed"]);
    assert_eq!(names, expected);
    assert!(events.iter().enumerate().all(|(i, (_, d))| d["sequence_number"] == i));
    let added = &events[2].1["item"];
    assert_eq!(
        (&added["type"], &added["name"], &added["arguments"]),
        (&json!("function_call"), &json!("get_weather"), &json!(""))
    );
    let arguments: String = events[3..3 + fragments].iter().map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    assert_eq!(json_of(&arguments), json!({ "city": "mock", "days": 1 }));
    assert_eq!(events[3 + fragments].1["arguments"], arguments.as_str());
    let done = &events[4 + fragments].1["item"];
    assert_eq!(
        (&done["id"], &done["call_id"], &done["arguments"]),
        (&added["id"], &added["call_id"], &json!(arguments))
    );
    let recorded = mock.requests()[1].clone();
    assert_eq!(recorded.usage, Some(responses_usage(&events.last().unwrap().1["response"])));
    assert_eq!(recorded.tokens_sent, 1 + fragments as u64, "the call's name, then one token per fragment");

    // The call and its output sent back get text.
    let mut conversation = question.as_array().unwrap().clone();
    conversation.push(call.clone());
    conversation.push(json!({ "type": "function_call_output", "call_id": call["call_id"], "output": "sunny" }));
    let body =
        json_of(&Call::responses(json!({ "model": "m", "tools": tools, "input": conversation })).send(&mock).await.2);
    assert_eq!(responses_text(&body).split_whitespace().count(), 2);

    // `tool_choice` names a tool, or forbids them.
    let choice = json!({ "type": "function", "name": "get_time" });
    let named = json!({ "model": "m", "tools": tools, "input": question, "tool_choice": choice });
    let body = json_of(&Call::responses(named).send(&mock).await.2);
    assert_eq!((&body["output"][0]["name"], &body["tool_choice"]["name"]), (&json!("get_time"), &json!("get_time")));
    let none = json!({ "model": "m", "tools": tools, "input": question, "tool_choice": "none" });
    assert_eq!(responses_text(&json_of(&Call::responses(none).send(&mock).await.2)).split_whitespace().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_max_output_tokens_shortens_the_reply_and_leaves_it_incomplete() {
    let mock = mock_llm(&[]).await;
    let request = json!({ "model": "m", "max_output_tokens": 16, "input": "a long story [mock tokens=20]" });
    let body = json_of(&Call::responses(request.clone()).send(&mock).await.2);
    assert_eq!(
        (&body["status"], &body["incomplete_details"]),
        (&json!("incomplete"), &json!({ "reason": "max_output_tokens" }))
    );
    assert_eq!((&body["max_output_tokens"], &body["usage"]["output_tokens"]), (&json!(16), &json!(16)));
    assert_eq!(responses_text(&body).split_whitespace().count(), 16);
    assert_eq!(body["output"][0]["status"], "incomplete");

    let mut streamed = request;
    streamed["stream"] = json!(true);
    let events = sse_events(&Call::responses(streamed).send(&mock).await.2);
    assert_eq!(events.iter().filter(|(n, _)| n == "response.output_text.delta").count(), 16);
    let (last, data) = events.last().unwrap();
    assert_eq!((last.as_str(), &data["response"]["status"]), ("response.incomplete", &json!("incomplete")));
    assert_eq!(mock.requests()[1].usage, Some(responses_usage(&data["response"])));

    // Without it: the configured default length, completed.
    let body = json_of(&Call::responses(json!({ "model": "m", "input": "hi" })).send(&mock).await.2);
    assert_eq!(
        (&body["status"], &body["usage"]["output_tokens"]),
        (&json!("completed"), &json!(MockConfig::default().output_tokens))
    );
}

/// Calls a stored-response route, `{method} /v1/responses/{rest}`, with
/// `key`: the status and the JSON body.
async fn stored(mock: &MockServer, method: reqwest::Method, rest: &str, key: &str) -> (u16, Value) {
    let url = format!("{}/responses/{rest}", mock.openai_base_url());
    let response = reqwest::Client::new().request(method, url).bearer_auth(key).send().await.expect("the mock answers");
    let status = response.status().as_u16();
    (status, json_of(&response.text().await.expect("a whole body")))
}

/// A call on `/v1/conversations{rest}` with `key`, and a JSON body if any.
async fn conversations(
    mock: &MockServer,
    method: reqwest::Method,
    rest: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/conversations{rest}", mock.openai_base_url());
    let mut request = reqwest::Client::new().request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the mock answers");
    let status = response.status().as_u16();
    (status, json_of(&response.text().await.expect("a whole body")))
}

/// `GET /v1/responses/{id}` with the usual key.
async fn retrieved(mock: &MockServer, id: &Value) -> (u16, Value) {
    stored(mock, reqwest::Method::GET, id.as_str().expect("a response id"), KEY).await
}

/// `GET /v1/responses/{id}/input_items?{query}` with the usual key.
async fn input_items(mock: &MockServer, id: &str, query: &str) -> (u16, Value) {
    stored(mock, reqwest::Method::GET, &format!("{id}/input_items?{query}"), KEY).await
}

/// OpenAI's 404 for a response id the caller cannot see.
fn response_not_found(id: &Value) -> Value {
    let message = format!("Response with id '{}' not found.", id.as_str().unwrap());
    json!({ "error": { "message": message, "type": "invalid_request_error", "param": null, "code": null } })
}

/// The ids of an `input_items` page, and its cursor fields.
fn page_ids(page: &Value) -> (Vec<&str>, &Value, &Value, &Value) {
    assert_eq!(page["object"], "list", "{page}");
    let ids = page["data"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap()).collect();
    (ids, &page["first_id"], &page["last_id"], &page["has_more"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_keeps_each_response_whole_or_streamed_and_answers_it_back_as_it_was() {
    let mock = mock_llm(&[KEY]).await;
    let request =
        json!({ "model": "gpt-4o-mini", "instructions": "be brief", "input": "keep me [mock tokens=4 cached=1]" });
    let body = json_of(&Call::responses(request.clone()).send(&mock).await.2);
    let (status, got) = retrieved(&mock, &body["id"]).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!((&got["id"], &got["status"], &got["output"]), (&body["id"], &json!("completed"), &body["output"]));
    assert_eq!(responses_usage(&got), responses_usage(&body));
    assert_eq!(responses_text(&got).split_whitespace().count(), 4);
    assert_eq!(got, body, "the very object answered");
    // Groq's prefix serves the same store.
    let groq = format!("{}/responses/{}", mock.groq_base_url(), body["id"].as_str().unwrap());
    let same: Value = reqwest::Client::new().get(groq).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(same, body);
    // Recorded as any request, with no usage: it generated nothing.
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 3);
    let get = &recorded[1];
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", format!("/v1/responses/{}", body["id"].as_str().unwrap()).as_str())
    );
    assert_eq!((get.status, get.usage, get.tokens_sent, get.credential.as_deref()), (Some(200), None, 0, Some(KEY)));
    assert_eq!(get.header("authorization"), Some(format!("Bearer {KEY}").as_str()));

    // Streamed: the object the last event carried, incomplete ones too.
    let mut streamed = request;
    streamed["stream"] = json!(true);
    streamed["max_output_tokens"] = json!(16);
    let call = Call::responses(streamed).header("x-mock", "tokens=20");
    let events = sse_events(&call.send(&mock).await.2);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.incomplete");
    let (status, got) = retrieved(&mock, &data["response"]["id"]).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, data["response"]);
    assert_eq!((&got["status"], &got["usage"]["output_tokens"]), (&json!("incomplete"), &json!(16)));
    assert_ne!(got["id"], body["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_does_not_keep_a_response_created_with_store_false() {
    let mock = mock_llm(&[]).await;
    for stream in [false, true] {
        let request = json!({ "model": "m", "store": false, "stream": stream, "input": "forget me" });
        let text = Call::responses(request).send(&mock).await.2;
        let response = if stream { sse_events(&text).pop().unwrap().1["response"].clone() } else { json_of(&text) };
        assert_eq!(response["store"], false, "the setting is echoed");
        let (status, got) = retrieved(&mock, &response["id"]).await;
        assert_eq!((status, got), (404, response_not_found(&response["id"])));
    }
    let kept =
        json_of(&Call::responses(json!({ "model": "m", "store": true, "input": "keep me" })).send(&mock).await.2);
    assert_eq!(retrieved(&mock, &kept["id"]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_lists_input_items_with_ids_newest_first_paged_by_limit_and_after() {
    let mock = mock_llm(&[]).await;
    // A string input is one user message with an input_text part.
    let body = json_of(&Call::responses(json!({ "model": "m", "input": "just this" })).send(&mock).await.2);
    let id = body["id"].as_str().unwrap();
    let (status, page) = input_items(&mock, id, "").await;
    assert_eq!(status, 200, "{page}");
    let item = &page["data"][0];
    let item_id = item["id"].as_str().unwrap();
    assert!(item_id.starts_with("msg_"), "{item}");
    assert_ne!(item["id"], body["output"][0]["id"], "not the output message's id");
    assert_eq!(
        page,
        json!({
            "object": "list",
            "data": [{ "id": item_id, "type": "message", "role": "user",
                       "content": [{ "type": "input_text", "text": "just this" }] }],
            "first_id": item_id, "last_id": item_id, "has_more": false
        })
    );

    // A list: items keep their ids, the others get one; newest first by default.
    let input = json!([
        { "role": "developer", "content": "be brief" },
        { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "weather?" }] },
        { "type": "function_call", "id": "fc_given", "call_id": "call_1", "name": "get_weather", "arguments": "{}" },
        { "type": "function_call_output", "call_id": "call_1", "output": "sunny" },
        { "role": "assistant", "content": "It is sunny." },
        { "role": "user", "content": "thanks" }
    ]);
    let body = json_of(&Call::responses(json!({ "model": "m", "input": input })).send(&mock).await.2);
    let id = body["id"].as_str().unwrap();
    let (status, asc) = input_items(&mock, id, "order=asc").await;
    assert_eq!(status, 200, "{asc}");
    let (ids, first, last, more) = page_ids(&asc);
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[2], "fc_given");
    assert!(ids[0].starts_with("msg_") && ids[5].starts_with("msg_") && ids[3].starts_with("fco_"), "{ids:?}");
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), 6, "{ids:?}");
    assert_eq!((first, last, more), (&json!(ids[0]), &json!(ids[5]), &json!(false)));
    let data = asc["data"].as_array().unwrap();
    assert_eq!(data[0]["content"], json!([{ "type": "input_text", "text": "be brief" }]));
    assert_eq!((&data[0]["type"], &data[0]["role"]), (&json!("message"), &json!("developer")));
    assert_eq!(data[1]["content"], input[1]["content"]);
    assert_eq!((&data[2]["name"], &data[3]["output"]), (&json!("get_weather"), &json!("sunny")));
    assert_eq!(data[4]["content"], json!([{ "type": "output_text", "text": "It is sunny." }]));
    let (_, desc) = input_items(&mock, id, "").await;
    let mut reversed = data.clone();
    reversed.reverse();
    assert_eq!(desc["data"], json!(reversed), "desc is the default: newest first");
    assert_eq!(input_items(&mock, id, "order=desc").await.1, desc);
    let again = input_items(&mock, id, "order=asc").await.1;
    assert_eq!(page_ids(&again).0, ids, "the ids given stay the same");

    // Pages: `limit`, `has_more`, then `after` the last id.
    let (_, one) = input_items(&mock, id, "order=asc&limit=4").await;
    let (first_ids, _, last, more) = page_ids(&one);
    assert_eq!((first_ids.as_slice(), last, more), (&ids[..4], &json!(ids[3]), &json!(true)));
    let (_, two) = input_items(&mock, id, &format!("order=asc&limit=4&after={}", ids[3])).await;
    let (rest, first, _, more) = page_ids(&two);
    assert_eq!((rest.as_slice(), first, more), (&ids[4..], &json!(ids[4]), &json!(false)));
    let (_, newest) = input_items(&mock, id, &format!("limit=2&after={}", ids[5])).await;
    assert_eq!(page_ids(&newest).0, [ids[4], ids[3]]);
    assert_eq!(page_ids(&newest).3, true);
    let (_, exact) = input_items(&mock, id, "limit=6").await;
    assert_eq!(page_ids(&exact).3, false, "nothing remains after the sixth");

    // Bad parameters: a 400 naming the parameter.
    for (query, param) in [("order=up", "order"), ("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit")]
    {
        let (status, error) = input_items(&mock, id, query).await;
        assert_eq!((status, &error["error"]["param"]), (400, &json!(param)), "{query}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(error["error"]["message"].as_str().unwrap().contains(param), "{error}");
    }
    let recorded = mock.requests().pop().unwrap();
    assert_eq!((recorded.status, recorded.query.as_deref()), (Some(400), Some("limit=ten")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_deletes_a_response_which_is_then_not_found() {
    let mock = mock_llm(&[]).await;
    let body = json_of(&Call::responses(json!({ "model": "m", "input": "delete me" })).send(&mock).await.2);
    let id = body["id"].as_str().unwrap();
    let (status, deleted) = stored(&mock, reqwest::Method::DELETE, id, KEY).await;
    assert_eq!((status, deleted), (200, json!({ "id": id, "object": "response", "deleted": true })));
    assert_eq!(retrieved(&mock, &body["id"]).await, (404, response_not_found(&body["id"])));
    assert_eq!(stored(&mock, reqwest::Method::DELETE, id, KEY).await, (404, response_not_found(&body["id"])));
    assert_eq!(input_items(&mock, id, "").await, (404, response_not_found(&body["id"])));
    let recorded = mock.requests();
    let methods: Vec<(&str, Option<u16>)> = recorded.iter().map(|r| (r.method.as_str(), r.status)).collect();
    assert_eq!(
        methods,
        [("POST", Some(200)), ("DELETE", Some(200)), ("GET", Some(404)), ("DELETE", Some(404)), ("GET", Some(404))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_cancel_is_a_400_for_a_response_not_created_in_the_background() {
    let mock = mock_llm(&[]).await;
    let body = json_of(&Call::responses(json!({ "model": "m", "input": "too late" })).send(&mock).await.2);
    let (status, error) =
        stored(&mock, reqwest::Method::POST, &format!("{}/cancel", body["id"].as_str().unwrap()), KEY).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        error,
        json!({ "error": { "message": "Only responses created with background=true can be cancelled.",
                           "type": "invalid_request_error", "param": null, "code": null } })
    );
    assert_eq!(retrieved(&mock, &body["id"]).await.1, body, "the response is still there, unchanged");
    let unknown = json!("resp_unknown");
    assert_eq!(
        stored(&mock, reqwest::Method::POST, "resp_unknown/cancel", KEY).await,
        (404, response_not_found(&unknown))
    );
    assert_eq!(retrieved(&mock, &unknown).await, (404, response_not_found(&unknown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_hides_a_response_from_another_api_key() {
    const OTHER: &str = "mock-key-other";
    let mock = mock_llm(&[KEY, OTHER]).await;
    let body = json_of(&Call::responses(json!({ "model": "m", "input": "mine" })).send(&mock).await.2);
    let id = body["id"].as_str().unwrap();
    let hidden = (404, response_not_found(&body["id"]));
    for (method, rest) in [
        (reqwest::Method::GET, id.to_owned()),
        (reqwest::Method::GET, format!("{id}/input_items")),
        (reqwest::Method::POST, format!("{id}/cancel")),
        (reqwest::Method::DELETE, id.to_owned()),
    ] {
        assert_eq!(stored(&mock, method.clone(), &rest, OTHER).await, hidden, "{method} {rest}");
    }
    assert_eq!(retrieved(&mock, &body["id"]).await.1, body, "the other key deleted nothing");
    // Going on from it: only with the key that made it.
    let next = Call::responses(json!({ "model": "m", "input": "and?", "previous_response_id": id }));
    let (status, _, refused) = next.send_with(&mock, OTHER).await;
    let refused = json_of(&refused);
    assert_eq!((status, &refused["error"]["param"]), (404, &json!("previous_response_id")));
    assert_eq!(refused["error"]["message"], format!("Previous response with id '{id}' not found."));
    assert_eq!(next.send(&mock).await.0, 200);
    // Naming one of its output items in an input: the same.
    let item = body["output"][0]["id"].as_str().unwrap();
    for named in [json!({ "type": "item_reference", "id": item }), json!({ "id": item })] {
        let next = Call::responses(json!({ "model": "m", "input": [named, { "role": "user", "content": "and?" }] }));
        let (status, _, refused) = next.send_with(&mock, OTHER).await;
        let refused = json_of(&refused);
        assert_eq!((status, &refused["error"]["param"]), (404, &json!("input")));
        assert_eq!(refused["error"]["message"], format!("Item with id '{item}' not found."));
        assert_eq!(next.send(&mock).await.0, 200);
    }
    // A key the mock does not accept is refused as on the other routes.
    let (status, refused) = stored(&mock, reqwest::Method::GET, id, "wrong-key").await;
    assert_eq!((status, &refused["error"]["code"]), (401, &json!("invalid_api_key")));
    assert_eq!(mock.requests().last().unwrap().credential.as_deref(), Some("wrong-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_api_keeps_items_which_responses_in_it_add_to_for_the_key_that_made_it() {
    use reqwest::Method;
    const OTHER: &str = "mock-key-other";
    let mock = mock_llm(&[KEY, OTHER]).await;
    let opening = json!({ "items": [{ "role": "user", "content": "hi" }], "metadata": { "topic": "tolls" } });
    let (status, made) = conversations(&mock, Method::POST, "", KEY, Some(opening)).await;
    assert_eq!(status, 200, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("conv_") && made["object"] == "conversation", "{made}");
    assert_eq!(made["metadata"], json!({ "topic": "tolls" }));
    assert_eq!(conversations(&mock, Method::GET, &format!("/{id}"), KEY, None).await, (200, made.clone()));
    let renamed = json!({ "metadata": { "topic": "gates" } });
    let (status, updated) = conversations(&mock, Method::POST, &format!("/{id}"), KEY, Some(renamed)).await;
    assert_eq!((status, &updated["metadata"]["topic"]), (200, &json!("gates")));

    // A response in it adds its input and its answer.
    let turn = Call::responses(json!({ "model": "m", "input": "more [mock tokens=3]", "conversation": id }));
    let (status, _, answered) = turn.send(&mock).await;
    let answered = json_of(&answered);
    assert_eq!(status, 200, "{answered}");
    let (_, page) = conversations(&mock, Method::GET, &format!("/{id}/items?order=asc"), KEY, None).await;
    let (ids, ..) = page_ids(&page);
    assert_eq!(ids.len(), 3, "{page}");
    assert_eq!(page["data"][0]["content"][0]["text"], "hi");
    assert_eq!(page["data"][1]["content"][0]["text"], "more [mock tokens=3]");
    assert_eq!(ids[2], answered["output"][0]["id"].as_str().unwrap(), "the answer, by its own id");
    let by_object = Call::responses(json!({ "model": "m", "input": "again", "conversation": { "id": id } }));
    assert_eq!(by_object.send(&mock).await.0, 200);

    // Items added, fetched and deleted one by one.
    let added = json!({ "items": [{ "type": "message", "role": "user", "content": "noted" }] });
    let (status, list) = conversations(&mock, Method::POST, &format!("/{id}/items"), KEY, Some(added)).await;
    assert_eq!((status, list["data"].as_array().unwrap().len()), (200, 1), "{list}");
    let item = list["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, fetched) = conversations(&mock, Method::GET, &format!("/{id}/items/{item}"), KEY, None).await;
    assert_eq!((status, &fetched["content"][0]["text"]), (200, &json!("noted")));
    let (status, after) = conversations(&mock, Method::DELETE, &format!("/{id}/items/{item}"), KEY, None).await;
    assert_eq!((status, &after["id"]), (200, &json!(id)), "the conversation is answered");
    let (status, gone) = conversations(&mock, Method::GET, &format!("/{id}/items/{item}"), KEY, None).await;
    assert_eq!((status, &gone["error"]["message"]), (404, &json!(format!("Item with id '{item}' not found."))));
    let (status, _) =
        conversations(&mock, Method::POST, &format!("/{id}/items"), KEY, Some(json!({ "items": [] }))).await;
    assert_eq!(status, 400, "nothing to add");

    // Another key finds nothing, and cannot add to it.
    let hidden = json!(format!("Conversation with id '{id}' not found."));
    for (method, rest) in
        [(Method::GET, format!("/{id}")), (Method::GET, format!("/{id}/items")), (Method::DELETE, format!("/{id}"))]
    {
        let (status, refused) = conversations(&mock, method.clone(), &rest, OTHER, None).await;
        assert_eq!((status, &refused["error"]["message"]), (404, &hidden), "{method} {rest}");
    }
    let (status, _, refused) = turn.send_with(&mock, OTHER).await;
    let refused = json_of(&refused);
    assert_eq!((status, &refused["error"]["param"]), (404, &json!("conversation")));
    // It goes on from a conversation or a response, not both.
    let both = json!({ "model": "m", "input": "x", "conversation": id, "previous_response_id": answered["id"] });
    assert_eq!(Call::responses(both).send(&mock).await.0, 400);

    let (status, deleted) = conversations(&mock, Method::DELETE, &format!("/{id}"), KEY, None).await;
    assert_eq!((status, deleted), (200, json!({ "id": id, "object": "conversation.deleted", "deleted": true })));
    assert_eq!(conversations(&mock, Method::GET, &format!("/{id}"), KEY, None).await.0, 404);
}

/// The usage of a chat or legacy completion, as the mock records it.
fn openai_usage(usage: &Value) -> Usage {
    let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(count("/total_tokens"), count("/prompt_tokens") + count("/completion_tokens"));
    Usage {
        input_tokens: count("/prompt_tokens"),
        output_tokens: count("/completion_tokens"),
        cached_tokens: count("/prompt_tokens_details/cached_tokens"),
        reasoning_tokens: count("/completion_tokens_details/reasoning_tokens"),
    }
}

/// The chunks of a legacy completion stream that ended with `[DONE]`.
fn completion_chunks(body: &str) -> Vec<Value> {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    data[..data.len() - 1].iter().map(|d| json_of(d)).collect()
}

fn completion_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_completions_answer_a_text_completion_with_the_usage_it_records() {
    let mock = mock_llm(&[]).await;
    let prompt = "Say hi to gates [mock tokens=5 cached=1 reasoning=2]";
    let call = Call::completions(json!({ "model": "gpt-3.5-turbo-instruct", "prompt": prompt, "suffix": "the end" }));
    let (status, headers, body) = call.send(&mock).await;
    assert_eq!(status, 200, "{body}");
    let body = json_of(&body);
    assert_eq!((&body["object"], &body["model"]), (&json!("text_completion"), &json!("gpt-3.5-turbo-instruct")));
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-mock"));
    assert_eq!(headers["x-request-id"], body["id"].as_str().unwrap());
    assert!(body["created"].is_u64() && body["system_fingerprint"].is_string());
    let choice = &body["choices"][0];
    assert_eq!(
        (&choice["index"], &choice["logprobs"], &choice["finish_reason"]),
        (&json!(0), &Value::Null, &json!("stop"))
    );
    assert_eq!(choice["text"].as_str().unwrap().split_whitespace().count(), 5);
    // 8 words of prompt and 2 of suffix, no per-message overhead.
    let usage = Usage { input_tokens: 10, output_tokens: 7, cached_tokens: 1, reasoning_tokens: 2 };
    assert_eq!(openai_usage(&body["usage"]), usage);
    assert_eq!(mock.requests()[0].usage, Some(usage), "the record reports the usage the answer carries");
    assert_eq!(mock.requests()[0].tokens_sent, 5);

    // Groq's prefix answers the same prompt alike.
    let http = reqwest::Client::new();
    let url = format!("{}/completions", mock.groq_base_url());
    let same = http.post(url).bearer_auth(KEY).json(&call.body).send().await.unwrap();
    assert_eq!(json_of(&same.text().await.unwrap())["choices"][0]["text"], choice["text"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_completions_stream_text_pieces_with_usage_only_with_include_usage() {
    let mock = mock_llm(&[]).await;
    let request = json!({ "model": "m", "prompt": "count [mock tokens=3]" });
    let whole = json_of(&Call::completions(request.clone()).send(&mock).await.2);
    let mut plain = request.clone();
    plain["stream"] = json!(true);
    let chunks = completion_chunks(&Call::completions(plain.clone()).send(&mock).await.2);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage field at all without include_usage");
    assert_eq!(chunks.len(), 4, "three words, finish");
    assert!(
        chunks.iter().all(|c| c["object"] == "text_completion" && c["id"].as_str().unwrap().starts_with("cmpl-mock"))
    );
    assert!(chunks[..3].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(chunks[3]["choices"][0], json!({ "text": "", "index": 0, "logprobs": null, "finish_reason": "stop" }));
    assert_eq!(completion_text(&chunks), whole["choices"][0]["text"].as_str().unwrap(), "the stream spells the answer");
    assert_eq!((mock.requests()[1].usage, mock.requests()[1].tokens_sent), (None, 3));

    let mut with_usage = plain.clone();
    with_usage["stream_options"] = json!({ "include_usage": true });
    let chunks = completion_chunks(&Call::completions(with_usage).send(&mock).await.2);
    assert_eq!(chunks.len(), 5);
    assert!(chunks[..4].iter().all(|c| c.get("usage") == Some(&Value::Null)), "usage: null before the last");
    let last = &chunks[4];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        Some(openai_usage(&last["usage"])),
        mock.requests()[2].usage,
        "the last chunk's usage is the recorded one"
    );
    assert_eq!(openai_usage(&last["usage"]), openai_usage(&whole["usage"]));

    // Cut after two pieces: no finish, no [DONE], no usage recorded.
    let cut = Call::completions(plain).header("x-mock", "cut_after=2");
    let (body, errored) = read_stream(cut.request(&mock, KEY).send().await.unwrap()).await;
    assert!(errored && !body.contains("[DONE]") && !body.contains("\"stop\""), "{body}");
    let recorded = mock.requests().pop().unwrap();
    assert_eq!((recorded.completed, recorded.usage, recorded.tokens_sent), (false, None, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_completions_stop_at_max_tokens_which_defaults_to_16() {
    let mock = mock_llm(&[]).await;
    let check = |max_tokens: Value, expected: u64| {
        let request = json!({ "model": "m", "prompt": "a long story [mock tokens=20]", "max_tokens": max_tokens });
        let call = Call::completions(request);
        let mock = &mock;
        async move {
            let body = json_of(&call.send(mock).await.2);
            let choice = &body["choices"][0];
            assert_eq!(
                (&body["usage"]["completion_tokens"], &choice["finish_reason"]),
                (&json!(expected), &json!("length"))
            );
            assert_eq!(choice["text"].as_str().unwrap().split_whitespace().count() as u64, expected);
        }
    };
    check(json!(4), 4).await;
    check(Value::Null, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_prompt_counts_each_strings_words_or_each_token_id() {
    let mock = mock_llm(&[]).await;
    let prompt_tokens = |prompt: Value| {
        let call = Call::completions(json!({ "model": "m", "prompt": prompt, "max_tokens": 1 }));
        let mock = &mock;
        async move { json_of(&call.send(mock).await.2)["usage"]["prompt_tokens"].as_u64().unwrap() }
    };
    assert_eq!(prompt_tokens(json!("one two three")).await, 3);
    assert_eq!(prompt_tokens(json!(["one two", "three four five"])).await, 5);
    assert_eq!(prompt_tokens(json!([1, 2, 3])).await, 3);
    assert_eq!(prompt_tokens(json!([[1, 2, 3], [4]])).await, 4);
    // Directives come from the last string of the prompt.
    let body = json!({ "model": "m", "prompt": ["first [mock tokens=9]", "last [mock tokens=2]"] });
    let body = json_of(&Call::completions(body).send(&mock).await.2);
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_is_the_documented_event_sequence_with_usage_in_start_and_delta() {
    let mock = mock_llm(&[]).await;
    let body = json!({ "model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
        "messages": [{ "role": "user", "content": "hi [mock tokens=2 cached=3]" }] });
    let events = sse_events(&Call::anthropic(body).send(&mock).await.2);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(events.iter().all(|(name, data)| data["type"] == name.as_str()));
    let start = &events[0].1["message"]["usage"];
    let recorded = mock.requests()[0].usage.unwrap();
    assert_eq!(start["input_tokens"].as_u64(), Some(recorded.input_tokens - 3), "input_tokens excludes cache reads");
    assert_eq!(start["cache_read_input_tokens"], 3);
    assert_eq!(events[6].1["usage"]["output_tokens"], 2);
    assert_eq!(events[6].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[3].1["delta"]["type"], "text_delta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_tool_use_streams_input_json_deltas() {
    let mock = mock_llm(&[]).await;
    let tools = json!([{ "name": "lookup", "input_schema": { "type": "object",
        "properties": { "q": { "type": "string" } }, "required": ["q"] } }]);
    let body = json!({ "model": "m", "max_tokens": 50, "stream": true, "tools": tools,
        "messages": [{ "role": "user", "content": "find it" }] });
    let events = sse_events(&Call::anthropic(body).send(&mock).await.2);
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], "lookup");
    let input: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(json_of(&input), json!({ "q": "mock" }));
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_generate_content_reports_usage_metadata_with_cached_and_thoughts_tokens() {
    let mock = mock_llm(&[]).await;
    let request = json!({
        "systemInstruction": { "parts": [{ "text": "be brief" }] },
        "contents": [{ "role": "user", "parts": [{ "text": "hello gemini [mock tokens=5 cached=4 reasoning=6]" }] }]
    });
    let body = json_of(&Call::gemini("generateContent", request).send(&mock).await.2);
    let usage = &body["usageMetadata"];
    // (4 + 2) for the system instruction, (4 + 2 words + 4 directive words) for the user.
    assert_eq!(usage["promptTokenCount"], 16);
    assert_eq!(usage["candidatesTokenCount"], 5);
    assert_eq!(usage["thoughtsTokenCount"], 6);
    assert_eq!(usage["cachedContentTokenCount"], 4);
    assert_eq!(usage["totalTokenCount"], 16 + 5 + 6);
    assert_eq!(body["candidates"][0]["content"]["role"], "model");
    assert_eq!(body["candidates"][0]["finishReason"], "STOP");
    assert_eq!(body["modelVersion"], "gemini-2.5-flash");
    let recorded = mock.requests()[0].usage.unwrap();
    assert_eq!(recorded, Usage { input_tokens: 16, output_tokens: 11, cached_tokens: 4, reasoning_tokens: 6 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_sse_stream_carries_cumulative_usage_in_every_chunk() {
    let mock = mock_llm(&[]).await;
    let request = json!({ "contents": [{ "parts": [{ "text": "stream it [mock tokens=4]" }] }] });
    let call = Call::gemini("streamGenerateContent?alt=sse", request.clone());
    let (status, _, body) = call.send(&mock).await;
    assert_eq!(status, 200);
    assert!(body.contains("\r\n\r\n"), "events end with CRLF CRLF as Google's do");
    let chunks: Vec<Value> = sse_data(&body).iter().map(|d| json_of(d)).collect();
    assert_eq!(chunks.len(), 4);
    for (i, chunk) in chunks.iter().enumerate() {
        let usage = &chunk["usageMetadata"];
        // 4 for the message and 4 words ("stream it [mock tokens=4]").
        assert_eq!(usage["promptTokenCount"], 8, "the prompt count is in every chunk");
        assert_eq!(usage["candidatesTokenCount"], i + 1, "the output count is cumulative");
        assert_eq!(usage["totalTokenCount"], 8 + i + 1);
        assert_eq!(chunk["candidates"][0]["finishReason"].is_string(), i == 3, "only the last chunk finishes");
    }

    // Without alt=sse the stream is one JSON array, written piece by piece.
    let (status, headers, body) = Call::gemini("streamGenerateContent", request).send(&mock).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let array = json_of(&body);
    assert_eq!(array.as_array().map(Vec::len), Some(4));
    assert_eq!(array[3]["usageMetadata"]["candidatesTokenCount"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_calls_the_first_function_then_answers_its_response_with_text() {
    let mock = mock_llm(&[]).await;
    let tools = json!([{ "functionDeclarations": [{ "name": "get_time", "parameters": { "type": "OBJECT",
        "properties": { "zone": { "type": "STRING" } }, "required": ["zone"] } }] }]);
    let mut contents = vec![json!({ "role": "user", "parts": [{ "text": "what time? [mock tokens=3]" }] })];
    let body =
        json_of(&Call::gemini("generateContent", json!({ "contents": contents, "tools": tools })).send(&mock).await.2);
    let part = &body["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"], json!({ "name": "get_time", "args": { "zone": "mock" } }));

    contents.push(json!({ "role": "model", "parts": [part] }));
    contents.push(json!({ "role": "user", "parts": [{ "functionResponse": { "name": "get_time", "response": { "time": "noon" } } }] }));
    let call = Call::gemini("streamGenerateContent?alt=sse", json!({ "contents": contents, "tools": tools }));
    let (text, usage) = streamed(Provider::Gemini, &call.send(&mock).await.2);
    assert_eq!((text.split_whitespace().count(), usage.output_tokens), (3, 3));

    let none = json!({ "contents": [contents[0]], "tools": tools, "toolConfig": { "functionCallingConfig": { "mode": "NONE" } } });
    let body = json_of(&Call::gemini("generateContent", none).send(&mock).await.2);
    assert!(body["candidates"][0]["content"]["parts"][0]["text"].is_string(), "mode NONE gets text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_checks_its_own_credential_and_refuses_in_its_own_shape() {
    let mock = mock_llm(&[KEY]).await;
    for call in Call::each("hello", false) {
        let (status, _, body) = call.send(&mock).await;
        assert_eq!(status, 200, "{:?}: {body}", call.provider);
        let (status, _, body) = call.send_with(&mock, "wrong-key").await;
        assert_eq!(status, 401, "{:?}", call.provider);
        let body = json_of(&body);
        match call.provider {
            Provider::OpenAi => assert_eq!(body["error"]["code"], "invalid_api_key"),
            Provider::Anthropic => {
                assert_eq!((&body["type"], &body["error"]["type"]), (&json!("error"), &json!("authentication_error")))
            }
            Provider::Gemini => {
                assert_eq!(
                    (&body["error"]["code"], &body["error"]["status"]),
                    (&json!(401), &json!("UNAUTHENTICATED"))
                );
                assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
            }
            Provider::GitHub => unreachable!("GitHub has no completions"),
        }
        assert!(!body.to_string().contains("wrong-key"), "the refused key is not echoed");
    }
    let recorded: Vec<Option<String>> = mock.requests().into_iter().map(|r| r.credential).collect();
    assert_eq!(recorded.iter().filter(|c| c.as_deref() == Some("wrong-key")).count(), 3);

    // Another provider's header is not this provider's credential.
    let http = reqwest::Client::new();
    let body = json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] });
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let response = http.post(&url).header("x-api-key", KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // Gemini takes ?key= too; Anthropic takes a bearer token too, as its current SDKs send it.
    let gemini = json!({ "contents": [{ "parts": [{ "text": "hi" }] }] });
    let url = format!("{}/v1beta/models/gemini-2.5-flash:generateContent?key={KEY}", mock.base_url());
    assert_eq!(http.post(&url).json(&gemini).send().await.unwrap().status(), 200);
    let anthropic = json!({ "model": "m", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let url = format!("{}/v1/messages", mock.base_url());
    let response =
        http.post(&url).bearer_auth(KEY).header("anthropic-version", "2023-06-01").json(&anthropic).send().await;
    assert_eq!(response.unwrap().status(), 200);
    // GitHub's `GET /user`, for validating GitHub tokens: `Bearer` or `token`.
    let url = format!("{}/user", mock.base_url());
    assert_eq!(http.get(&url).header("authorization", format!("token {KEY}")).send().await.unwrap().status(), 200);
    let refused = http.get(&url).bearer_auth("wrong-key").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.json::<Value>().await.unwrap()["message"], "Bad credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_come_in_each_providers_shape_from_the_message_or_the_header() {
    let mock = mock_llm(&[]).await;
    let cases = [
        (429, "requests", "rate_limit_error", "RESOURCE_EXHAUSTED"),
        (500, "server_error", "api_error", "INTERNAL"),
        (503, "server_error", "api_error", "UNAVAILABLE"),
        (400, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    ];
    for (status, openai, anthropic, gemini) in cases {
        for (i, call) in Call::each(&format!("fail [mock status={status}]"), false).into_iter().enumerate() {
            let (got, headers, body) = call.send(&mock).await;
            assert_eq!(got, status, "{:?}: {body}", call.provider);
            let body = json_of(&body);
            match call.provider {
                Provider::OpenAi => assert_eq!(body["error"]["type"], openai),
                Provider::Anthropic => {
                    assert_eq!((&body["type"], &body["error"]["type"]), (&json!("error"), &json!(anthropic)))
                }
                Provider::Gemini => {
                    assert_eq!((&body["error"]["code"], &body["error"]["status"]), (&json!(status), &json!(gemini)))
                }
                Provider::GitHub => unreachable!("GitHub has no completions"),
            }
            assert_eq!(headers.get("retry-after").is_some(), status == 429, "case {i}");
        }
    }
    // The header does the same, and wins over the message.
    for call in Call::each("fine [mock status=500]", true) {
        let (status, headers, _) = call.header("x-mock", "status=429 retry_after=9").send(&mock).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "9");
    }
    let recorded = mock.requests();
    assert!(recorded.iter().all(|r| r.usage.is_none() && r.status.is_some_and(|s| s >= 400)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_ends_abruptly_after_the_given_content_chunks_for_every_provider() {
    let mock = mock_llm(&[]).await;
    for call in Call::each("long story [mock tokens=20]", true) {
        let call = call.header("x-mock", "cut_after=3");
        let response = call.request(&mock, KEY).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let (body, errored) = read_stream(response).await;
        assert!(errored, "{:?}: the connection is cut, not closed cleanly: {body}", call.provider);
        let (text, usage) = streamed(call.provider, &body);
        assert_eq!(text.split_whitespace().count(), 3, "{:?}: {body}", call.provider);
        assert!(!body.contains("[DONE]") && !body.contains("message_stop") && !body.contains("finishReason"));
        assert_eq!(usage.output_tokens, if call.provider == Provider::Gemini { 3 } else { 0 }, "no final usage");
        let recorded = mock.requests().pop().unwrap();
        assert!(!recorded.completed && recorded.usage.is_none());
        assert_eq!(recorded.tokens_sent, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_stream_is_recorded_as_incomplete() {
    let config = MockConfig { tokens_per_second: Some(200.0), ..MockConfig::default() };
    let mock = tollgate_mock::start(config).await.unwrap();
    let call = &Call::each("long [mock tokens=500]", true)[0];
    let response = call.request(&mock, KEY).send().await.unwrap();
    let mut body = response.bytes_stream();
    body.next().await.expect("a first chunk").unwrap();
    drop(body);
    assert!(
        eventually(Duration::from_secs(10), || async { mock.requests()[0].status == Some(200) }).await,
        "the dropped stream is recorded"
    );
    let recorded = mock.requests().remove(0);
    assert!(!recorded.completed && recorded.usage.is_none() && recorded.tokens_sent < 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_request_is_recorded_never_answered_and_does_not_block_shutdown() {
    let mock = mock_llm(&[]).await;
    let call = &Call::each("wait [mock hang]", false)[1];
    let timed_out = call.request(&mock, KEY).timeout(Duration::from_millis(300)).send().await;
    assert!(timed_out.unwrap_err().is_timeout());

    let pending = tokio::spawn(call.request(&mock, KEY).send());
    assert!(eventually(Duration::from_secs(10), || async { mock.requests().len() == 2 }).await);
    assert!(mock.requests().iter().all(|r| r.status.is_none()), "no answer was given");
    assert!(!pending.is_finished());
    tokio::time::timeout(Duration::from_secs(10), mock.shutdown()).await.expect("shutdown is not blocked").unwrap();
    let ended = pending.await.unwrap();
    assert!(ended.is_err() || ended.is_ok_and(|r| r.status() == 503), "the hanging request ends at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_pacing_delay_the_answer_by_at_least_the_given_time() {
    // Lower bounds only: a slow machine can only make these longer.
    let config = MockConfig { latency: Duration::from_millis(150), ..MockConfig::default() };
    let mock = tollgate_mock::start(config).await.unwrap();
    let call = &Call::each("hi [mock tokens=1]", false)[0];
    let start = Instant::now();
    assert_eq!(call.send(&mock).await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(150), "the configured latency");

    let call = &Call::each("hi [mock latency_ms=300 tokens=1]", false)[2];
    let start = Instant::now();
    assert_eq!(call.send(&mock).await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(300), "the directive's latency wins");

    // 11 tokens at 50 per second: 10 gaps of 20 ms after the first.
    let call =
        Call::each("hi [mock tokens=11 latency_ms=0]", true).into_iter().nth(1).unwrap().header("x-mock", "tps=50");
    let start = Instant::now();
    let (status, _, body) = call.send(&mock).await;
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(200), "paced at 50 tokens per second");
    assert_eq!(streamed(Provider::Anthropic, &body).1.output_tokens, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400s_in_the_providers_shape_naming_the_field() {
    let mock = mock_llm(&[]).await;
    let user = json!([{ "role": "user", "content": "hi" }]);
    let cases = [
        (Call::openai(json!({ "messages": user })), "model"),
        (Call::openai(json!({ "model": "m", "messages": [] })), "messages"),
        (Call::openai(json!({ "model": "m", "messages": user, "max_tokens": "ten" })), "max_tokens"),
        (Call::completions(json!({ "prompt": "hi" })), "model"),
        (Call::completions(json!({ "model": "m" })), "prompt"),
        (Call::completions(json!({ "model": "m", "prompt": "" })), "prompt"),
        (Call::completions(json!({ "model": "m", "prompt": [] })), "prompt"),
        (Call::completions(json!({ "model": "m", "prompt": "hi", "max_tokens": -1 })), "max_tokens"),
        (Call::completions(json!({ "model": "m", "prompt": "hi", "max_tokens": 1.5 })), "max_tokens"),
        (Call::responses(json!({ "input": "hi" })), "model"),
        (Call::responses(json!({ "model": "m" })), "input"),
        (Call::responses(json!({ "model": "m", "input": "" })), "input"),
        (Call::responses(json!({ "model": "m", "input": [] })), "input"),
        (Call::responses(json!({ "model": "m", "input": "hi", "max_output_tokens": -1 })), "max_output_tokens"),
        (Call::responses(json!({ "model": "m", "input": "hi", "max_output_tokens": 15 })), "max_output_tokens"),
        (
            Call::openai(json!({ "model": "m", "messages": [{ "role": "user", "content": "[mock stauts=500]" }] })),
            "stauts",
        ),
        (Call::anthropic(json!({ "model": "m", "messages": user })), "max_tokens"),
        (Call::gemini("generateContent", json!({ "contents": [] })), "contents"),
        (
            Call::gemini(
                "generateContent",
                json!({ "contents": [{ "parts": [{ "text": "hi" }] }],
            "generationConfig": { "maxOutputTokens": -1 } }),
            ),
            "maxOutputTokens",
        ),
    ];
    for (call, field) in cases {
        let (status, _, body) = call.send(&mock).await;
        assert_eq!(status, 400, "{body}");
        // All three shapes keep the message at error.message.
        let message = json_of(&body)["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    let http = reqwest::Client::new();
    let no_version = http.post(format!("{}/v1/messages", mock.base_url())).header("x-api-key", KEY);
    let response = no_version.json(&json!({ "model": "m", "max_tokens": 5, "messages": user })).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("anthropic-version"));
    let not_json = http.post(format!("{}/v1/chat/completions", mock.base_url())).bearer_auth(KEY).body("{nope");
    let response = not_json.send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(&response.text().await.unwrap())["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_come_as_floats_or_base64_with_the_asked_dimensions() {
    let mock = mock_llm(&[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/embeddings", mock.base_url());
    let ask = |body: Value| http.post(&url).bearer_auth(KEY).json(&body).send();
    let body: Value = ask(json!({ "model": "text-embedding-3-small", "input": ["one two", "three"] }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let vector: Vec<f64> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 1536);
    let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "a unit vector");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["usage"], json!({ "prompt_tokens": 3, "total_tokens": 3 }));

    let body: Value = ask(
        json!({ "model": "text-embedding-3-large", "input": "one two", "encoding_format": "base64", "dimensions": 8 }),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(body["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(floats.len(), 8);
    let same: Value =
        ask(json!({ "model": "m", "input": "one two", "dimensions": 8 })).await.unwrap().json().await.unwrap();
    let same: Vec<f32> = serde_json::from_value(same["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(same, floats, "the same text gets the same vector in both encodings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_in_each_providers_shape_and_groqs_base_url_works() {
    let mock = mock_llm(&[KEY]).await;
    let http = reqwest::Client::new();
    let base = mock.base_url();
    let openai: Value =
        http.get(format!("{base}/v1/models")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(openai["object"], "list");
    assert!(openai["data"].as_array().unwrap().iter().any(|m| m["id"] == "gpt-4o-mini" && m["object"] == "model"));
    let anthropic =
        http.get(format!("{base}/v1/models")).header("x-api-key", KEY).header("anthropic-version", "2023-06-01");
    let anthropic: Value = anthropic.send().await.unwrap().json().await.unwrap();
    assert_eq!(anthropic["has_more"], false);
    assert!(
        anthropic["data"].as_array().unwrap().iter().all(|m| m["type"] == "model" && m["display_name"].is_string())
    );
    let gemini: Value = http.get(format!("{base}/v1beta/models?key={KEY}")).send().await.unwrap().json().await.unwrap();
    assert!(gemini["models"].as_array().unwrap().iter().any(|m| m["name"] == "models/gemini-2.5-flash"));
    // Gemini's stable version shares `/v1/models` with OpenAI: its key tells.
    let stable: Value =
        http.get(format!("{base}/v1/models")).header("x-goog-api-key", KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(stable, gemini);
    let one = http.get(format!("{base}/v1/models/gemini-2.5-flash?key={KEY}")).send().await.unwrap();
    assert_eq!(one.json::<Value>().await.unwrap()["name"], "models/gemini-2.5-flash");
    let missing = http.get(format!("{base}/v1/models/gemini-9?key={KEY}")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(missing["error"]["message"], "models/gemini-9 is not found for API version v1");

    let groq = mock.groq_base_url();
    let models: Value = http.get(format!("{groq}/models")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "llama-3.1-8b-instant"));
    let body = json!({ "model": "llama-3.1-8b-instant", "messages": [{ "role": "user", "content": "hi" }] });
    let response = http.post(format!("{groq}/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.requests().last().unwrap().path, "/openai/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_keeps_the_newest_requests_and_can_be_turned_off() {
    let limited = tollgate_mock::start(MockConfig { record_limit: 2, ..MockConfig::default() }).await.unwrap();
    for i in 0..3 {
        Call::each(&format!("request {i}"), false)[0].send(&limited).await;
    }
    let seqs: Vec<u64> = limited.requests().iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [2, 3]);
    limited.clear_requests();
    assert!(limited.requests().is_empty());

    let off = tollgate_mock::start(MockConfig { record_limit: 0, ..MockConfig::default() }).await.unwrap();
    assert_eq!(Call::each("hi", true)[1].send(&off).await.0, 200);
    assert!(off.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_llm_command_prints_its_address_and_shows_what_it_received_over_http() {
    let mut child = tokio::process::Command::new(binary())
        .args([
            "mock-llm",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--latency-ms",
            "1",
            "--tokens-per-second",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("a line in time").unwrap();
    let base =
        line.as_deref().and_then(|l| l.strip_prefix("mock-llm listening on ")).expect("the ready line").to_owned();

    let http = reqwest::Client::new();
    let body = json!({ "model": "gpt-4o-mini", "stream": true, "messages": [{ "role": "user", "content": "hi [mock tokens=3]" }] });
    let response = http.post(format!("{base}/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(streamed(Provider::OpenAi, &response.text().await.unwrap()).0.split_whitespace().count(), 3);
    let response =
        http.post(format!("{base}/v1/chat/completions")).bearer_auth("nope").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);

    let listed: Value = http.get(format!("{base}/_mock/requests")).send().await.unwrap().json().await.unwrap();
    let requests = listed["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["body"], body);
    assert_eq!(
        (&requests[0]["credential"], &requests[0]["status"], &requests[0]["provider"]),
        (&json!(KEY), &json!(200), &json!("openai"))
    );
    assert_eq!(requests[0]["headers"]["authorization"], format!("Bearer {KEY}"));
    assert_eq!((&requests[1]["credential"], &requests[1]["status"]), (&json!("nope"), &json!(401)));
    let records: Vec<tollgate_mock::Recorded> = serde_json::from_value(listed["requests"].clone()).unwrap();
    assert_eq!(records[0].tokens_sent, 3);

    let cleared = http.delete(format!("{base}/_mock/requests")).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    let listed: Value = http.get(format!("{base}/_mock/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["requests"], json!([]));

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits on SIGTERM").unwrap();
    assert!(status.success());
}
