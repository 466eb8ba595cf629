//! Anthropic's wire format: `POST /v1/messages` (streamed as
//! `message_start` with the input usage, `content_block_start`, `ping`,
//! `content_block_delta`…, `content_block_stop`, `message_delta` with the
//! output usage, `message_stop`), `GET /v1/models`. Requests need a key
//! (`x-api-key`, or `Authorization: Bearer` as the current SDKs send it) and
//! `anthropic-version`, as the real API does.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::post;
use serde::Serialize;
use serde_json::{Value, json};

use crate::record::Usage;
use crate::reply::{self, Ask, Content, Finish, Reply};
use crate::stream::{self, Frame, event};
use crate::{Answer, Exchange, Incoming, Provider, Shared, optional_count};

const MODELS: [(&str, &str, &str); 4] = [
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    ("claude-3-5-haiku-latest", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
];
static NULL: Value = Value::Null;

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/messages", post(messages)).route("/v1/messages/count_tokens", post(count_tokens))
}

/// `POST /v1/messages/count_tokens`: the input tokens a `messages` call
/// with this body would be counted.
async fn count_tokens(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::Anthropic, &call)?;
    if !call.headers.contains_key("anthropic-version") {
        return Err(exchange.fail(StatusCode::BAD_REQUEST, "anthropic-version: header is required"));
    }
    let request = exchange.json(&call.body)?;
    request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| exchange.fail(StatusCode::BAD_REQUEST, "model: Field required"))?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| exchange.fail(StatusCode::BAD_REQUEST, "messages: expected a non-empty array"))?;
    let tools = request.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let system = request.get("system").filter(|s| !s.is_null());
    let tokens = reply::input_tokens(messages.iter().chain(system), tools.iter());
    Ok(exchange.answer(json!({ "input_tokens": tokens }), None, 0))
}

struct Messages<'a> {
    model: &'a str,
    stream: bool,
    ask: Ask<'a>,
}

fn read(body: &Value) -> Result<Messages<'_>, String> {
    let model = body.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).ok_or("model: Field required")?;
    let max_tokens = optional_count(body, "max_tokens")?.ok_or("max_tokens: Field required")?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: expected a non-empty array")?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tools = body.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let ends_with_tool_result = messages.last().is_some_and(|m| {
        role(m) == "user"
            && m.get("content").and_then(Value::as_array).is_some_and(|blocks| {
                blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            })
    });
    let tool = if ends_with_tool_result { None } else { choose_tool(tools, body.get("tool_choice")) };
    let last_user_text = messages
        .iter()
        .rev()
        .filter(|m| role(m) == "user")
        .map(|m| reply::text_of(m.get("content").unwrap_or(&NULL)))
        .find(|text| !text.is_empty())
        .unwrap_or_default();
    let system = body.get("system").filter(|s| !s.is_null());
    let ask = Ask {
        input_tokens: reply::input_tokens(messages.iter().chain(system), tools.iter()),
        last_user_text,
        turns: messages.len(),
        max_tokens: Some(max_tokens),
        tool,
    };
    Ok(Messages { model, stream, ask })
}

/// The tool `tool_choice` allows: none for `{"type":"none"}`, the named one,
/// or the first client tool (server tools have no `input_schema`).
fn choose_tool<'a>(tools: &'a [Value], choice: Option<&Value>) -> Option<(&'a str, &'a Value)> {
    let client_tool = |tool: &'a Value| Some((tool.get("name")?.as_str()?, tool.get("input_schema")?));
    match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
        Some("none") => None,
        Some("tool") => {
            let name = choice.and_then(|c| c.get("name")).and_then(Value::as_str)?;
            tools.iter().filter_map(client_tool).find(|(n, _)| *n == name)
        }
        _ => tools.iter().find_map(client_tool),
    }
}

async fn messages(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::Anthropic, &call)?;
    if !call.headers.contains_key("anthropic-version") {
        return Err(exchange.fail(StatusCode::BAD_REQUEST, "anthropic-version: header is required"));
    }
    let request = exchange.json(&call.body)?;
    let read = read(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let (reply, knobs) = exchange.reply(&read.ask, &call.headers).await?;
    let id = shared.next_id();
    let meta = Meta { id: &format!("msg_mock{id}"), tool_id: &format!("toolu_mock{id}"), model: read.model };
    let mut response = if read.stream {
        stream::respond(exchange, "text/event-stream; charset=utf-8", events(&meta, &reply), reply.usage, &knobs)
    } else {
        exchange.answer(message(&meta, &reply), Some(reply.usage), reply.visible_tokens())
    };
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&format!("req_mock{id}")) {
        headers.insert("request-id", id);
    }
    for (name, value) in [
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-tokens-limit", "2000000"),
        ("anthropic-ratelimit-tokens-remaining", "1999000"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

struct Meta<'a> {
    id: &'a str,
    tool_id: &'a str,
    model: &'a str,
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCall => "tool_use",
    }
}

/// Anthropic's usage: `input_tokens` is the part not read from the cache.
fn usage_json(u: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": u.input_tokens - u.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

fn message(meta: &Meta<'_>, reply: &Reply) -> Value {
    let content = match &reply.content {
        Content::Text(_) => json!([{ "type": "text", "text": reply.text() }]),
        Content::Tool(call) => {
            json!([{ "type": "tool_use", "id": meta.tool_id, "name": call.name, "input": call.arguments }])
        }
    };
    json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": stop_reason(reply.finish),
        "stop_sequence": null,
        "usage": usage_json(&reply.usage, reply.usage.output_tokens)
    })
}

#[derive(Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: BlockDelta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

fn events(meta: &Meta<'_>, reply: &Reply) -> Vec<Frame> {
    let mut start = message(meta, reply);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    // The real API reports a token or so of output here; the count that
    // holds is the one in `message_delta`.
    start["usage"] = usage_json(&reply.usage, 1);
    let mut frames = vec![Frame::other(event("message_start", &json!({ "type": "message_start", "message": start })))];
    let delta = |delta: BlockDelta<'_>| {
        event("content_block_delta", &DeltaEvent { kind: "content_block_delta", index: 0, delta })
    };
    match &reply.content {
        Content::Text(pieces) => {
            frames.reserve(pieces.len() + 5);
            let block =
                json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } });
            frames.push(Frame::other(event("content_block_start", &block)));
            frames.push(Frame::other(event("ping", &json!({ "type": "ping" }))));
            for piece in pieces {
                frames.push(Frame::content(delta(BlockDelta::TextDelta { text: piece }), 1));
            }
        }
        Content::Tool(call) => {
            let fragments = call.fragments();
            frames.reserve(fragments.len() + 5);
            let block = json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": { "type": "tool_use", "id": meta.tool_id, "name": call.name, "input": {} }
            });
            frames.push(Frame::content(event("content_block_start", &block), 1));
            frames.push(Frame::other(event("ping", &json!({ "type": "ping" }))));
            for fragment in fragments {
                frames.push(Frame::content(delta(BlockDelta::InputJsonDelta { partial_json: fragment }), 1));
            }
        }
    }
    frames.push(Frame::other(event("content_block_stop", &json!({ "type": "content_block_stop", "index": 0 }))));
    let message_delta = json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason(reply.finish), "stop_sequence": null },
        "usage": { "output_tokens": reply.usage.output_tokens }
    });
    frames.push(Frame::usage(event("message_delta", &message_delta)));
    frames.push(Frame::other(event("message_stop", &json!({ "type": "message_stop" }))));
    frames
}

/// `GET /v1/models` with Anthropic's credential.
pub fn models(shared: &Arc<Shared>, call: &Incoming) -> Answer {
    let exchange = Exchange::open(shared, Provider::Anthropic, call)?;
    let data: Vec<Value> = MODELS.iter().map(model_json).collect();
    let body =
        json!({ "data": data, "has_more": false, "first_id": MODELS[0].0, "last_id": MODELS[MODELS.len() - 1].0 });
    Ok(exchange.answer(body, None, 0))
}

/// `GET /v1/models/{id}` with Anthropic's credential.
pub fn model(shared: &Arc<Shared>, call: &Incoming, id: &str) -> Answer {
    let exchange = Exchange::open(shared, Provider::Anthropic, call)?;
    match MODELS.iter().find(|m| m.0 == id) {
        Some(m) => Ok(exchange.answer(model_json(m), None, 0)),
        None => Err(exchange.fail(StatusCode::NOT_FOUND, &format!("model: {id}"))),
    }
}

fn model_json((id, name, created): &(&str, &str, &str)) -> Value {
    json!({ "type": "model", "id": id, "display_name": name, "created_at": created })
}

/// Anthropic's error shape: `{"type":"error","error":{"type","message"}}`.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}
