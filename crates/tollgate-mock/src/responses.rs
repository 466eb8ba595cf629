//! OpenAI's Responses API, `POST responses` (mounted under `/v1` and
//! `/openai/v1` by `openai::routes`): `input` is a string or a list of items
//! (messages with or without `"type":"message"`, `function_call`,
//! `function_call_output`), `instructions` a system prompt, function tools
//! are flat (`{"type":"function","name","parameters"}`), and the answer is a
//! `response` object whose `output` holds one message or one function call.
//!
//! Streamed, it is typed server-sent events (`event: response.created`, …),
//! each with a `sequence_number`: `response.created`, `response.in_progress`,
//! `response.output_item.added`, then `response.content_part.added`, one
//! `response.output_text.delta` per token, `response.output_text.done`,
//! `response.content_part.done` for text, or one
//! `response.function_call_arguments.delta` per fragment and
//! `response.function_call_arguments.done` for a call, then
//! `response.output_item.done` and last `response.completed` (or
//! `response.incomplete` when `max_output_tokens` cut the reply), which
//! alone carries the usage. There is no `data: [DONE]`.
//!
//! The request is read, answered, paced and recorded as chat completions
//! are (`reply`, `stream`); only the JSON is this module's.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use crate::openai::{self, NULL, role};
use crate::record::Usage;
use crate::reply::{self, Ask, Content, Finish, Reply};
use crate::stream::{self, Frame};
use crate::{Answer, Exchange, Incoming, Provider, Shared, optional_count, unix_now};

/// The smallest `max_output_tokens` OpenAI takes.
const MIN_OUTPUT: u64 = 16;

struct Request<'a> {
    model: &'a str,
    stream: bool,
    ask: Ask<'a>,
    /// The whole request, whose settings the answer echoes as the API does.
    body: &'a Value,
}

fn kind(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or("")
}

fn read<'a>(body: &'a Value) -> Result<Request<'a>, String> {
    let model = openai::read_model(body)?;
    // A string is one user message, counted as chat counts a message.
    let items = match body.get("input") {
        Some(text @ Value::String(s)) if !s.is_empty() => std::slice::from_ref(text),
        Some(Value::Array(items)) if !items.is_empty() => items.as_slice(),
        _ => return Err("input: expected a non-empty string or array of input items".into()),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max_tokens = optional_count(body, "max_output_tokens")?;
    if let Some(n) = max_tokens.filter(|n| *n < MIN_OUTPUT) {
        return Err(format!(
            "max_output_tokens: integer below minimum value, expected a value >= {MIN_OUTPUT}, got {n}"
        ));
    }
    let tools = body.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    // Hosted tools (web search, file search…) are never called.
    let function = |tool: &'a Value| match kind(tool) {
        "function" => Some((tool.get("name")?.as_str()?, tool.get("parameters").unwrap_or(&NULL))),
        _ => None,
    };
    let ends_with_tool_result = items.last().is_some_and(|i| kind(i) == "function_call_output");
    let tool = if ends_with_tool_result {
        None
    } else {
        openai::choose_tool(tools, body.get("tool_choice"), "/name", function)
    };
    let user_text = |item: &Value| match item {
        Value::String(s) => s.clone(),
        _ if role(item) == "user" => reply::text_of(item.get("content").unwrap_or(&NULL)),
        _ => String::new(),
    };
    let last_user_text = items.iter().rev().map(user_text).find(|text| !text.is_empty()).unwrap_or_default();
    // `instructions` costs what a system message would.
    let instructions = body.get("instructions").filter(|i| !i.is_null());
    let ask = Ask {
        input_tokens: reply::input_tokens(instructions.into_iter().chain(items), tools.iter()),
        last_user_text,
        // Instructions are no turn: the same input gets the same reply with or without them.
        turns: items.len(),
        max_tokens,
        tool,
    };
    Ok(Request { model, stream, ask, body })
}

/// `POST responses`.
pub async fn create(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let request = exchange.json(&call.body)?;
    let read = read(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let (reply, knobs) = exchange.reply(&read.ask, &call.headers).await?;
    let id = shared.next_id();
    let item_id = match reply.content {
        Content::Text(_) => format!("msg_mock{id}"),
        Content::Tool(_) => format!("fc_mock{id}"),
    };
    let meta = Meta {
        id: &format!("resp_mock{id}"),
        item_id: &item_id,
        call_id: &format!("call_mock{id}"),
        created_at: unix_now(),
        request: &read,
    };
    let mut response = if read.stream {
        stream::respond(exchange, "text/event-stream; charset=utf-8", events(&meta, &reply), reply.usage, &knobs)
    } else {
        exchange.answer(response(&meta, Some(&reply)), Some(reply.usage), reply.visible_tokens())
    };
    openai::decorate(&mut response, meta.id);
    Ok(response)
}

struct Meta<'a> {
    id: &'a str,
    /// The output item's id: `msg_…` for a message, `fc_…` for a call.
    item_id: &'a str,
    call_id: &'a str,
    created_at: u64,
    request: &'a Request<'a>,
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": { "cached_tokens": u.cached_tokens, "cache_write_tokens": 0 },
        "output_tokens": u.output_tokens,
        "output_tokens_details": { "reasoning_tokens": u.reasoning_tokens },
        "total_tokens": u.input_tokens + u.output_tokens
    })
}

fn output_text(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })
}

/// The output item: as `response.output_item.added` announces it (empty,
/// in progress) or whole.
fn item(meta: &Meta<'_>, reply: &Reply, whole: bool) -> Value {
    let status = match (whole, reply.finish) {
        (false, _) => "in_progress",
        (true, Finish::Length) => "incomplete",
        (true, _) => "completed",
    };
    match &reply.content {
        Content::Text(_) => {
            let content = if whole { json!([output_text(&reply.text())]) } else { json!([]) };
            json!({ "type": "message", "id": meta.item_id, "status": status, "role": "assistant", "content": content })
        }
        Content::Tool(call) => json!({
            "type": "function_call",
            "id": meta.item_id,
            "call_id": meta.call_id,
            "name": call.name,
            "arguments": if whole { call.arguments_json.as_str() } else { "" },
            "status": status
        }),
    }
}

/// The `response` object: in progress (no reply yet, as the stream's first
/// events carry it) or finished, with the request's settings echoed.
fn response(meta: &Meta<'_>, reply: Option<&Reply>) -> Value {
    let body = meta.request.body;
    let setting = |name: &str, default: Value| body.get(name).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    let (status, incomplete, output, usage, completed_at) = match reply {
        None => ("in_progress", Value::Null, json!([]), Value::Null, Value::Null),
        Some(reply) => {
            let (status, incomplete) = match reply.finish {
                Finish::Length => ("incomplete", json!({ "reason": "max_output_tokens" })),
                Finish::Stop | Finish::ToolCall => ("completed", Value::Null),
            };
            (status, incomplete, json!([item(meta, reply, true)]), usage_json(&reply.usage), json!(unix_now()))
        }
    };
    json!({
        "id": meta.id,
        "object": "response",
        "created_at": meta.created_at,
        "status": status,
        "completed_at": completed_at,
        "background": false,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": setting("instructions", Value::Null),
        "max_output_tokens": setting("max_output_tokens", Value::Null),
        "max_tool_calls": setting("max_tool_calls", Value::Null),
        "model": meta.request.model,
        "output": output,
        "parallel_tool_calls": setting("parallel_tool_calls", json!(true)),
        "previous_response_id": setting("previous_response_id", Value::Null),
        "reasoning": setting("reasoning", json!({ "effort": null, "summary": null })),
        "service_tier": "default",
        "store": setting("store", json!(true)),
        "temperature": setting("temperature", json!(1.0)),
        "text": setting("text", json!({ "format": { "type": "text" } })),
        "tool_choice": setting("tool_choice", json!("auto")),
        "tools": setting("tools", json!([])),
        "top_p": setting("top_p", json!(1.0)),
        "truncation": setting("truncation", json!("disabled")),
        "usage": usage,
        "user": null,
        "metadata": setting("metadata", json!({}))
    })
}

/// One event: its `type` (also its SSE name), its place in the stream, and
/// its own fields.
#[derive(Serialize)]
struct Event<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u32,
    #[serde(flatten)]
    body: T,
}

/// Numbers the events of one stream from 0.
struct Sequence(u32);

impl Sequence {
    fn event(&mut self, kind: &'static str, body: impl Serialize) -> Bytes {
        let bytes = stream::event(kind, &Event { kind, sequence_number: self.0, body });
        self.0 += 1;
        bytes
    }
}

/// The fields of a text delta (one per token: typed, not a JSON value).
#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct ArgumentsDelta<'a> {
    item_id: &'a str,
    output_index: u32,
    delta: &'a str,
}

fn events(meta: &Meta<'_>, reply: &Reply) -> Vec<Frame> {
    let mut seq = Sequence(0);
    let started = json!({ "response": response(meta, None) });
    let mut frames = vec![
        Frame::other(seq.event("response.created", &started)),
        Frame::other(seq.event("response.in_progress", &started)),
    ];
    let added = json!({ "output_index": 0, "item": item(meta, reply, false) });
    match &reply.content {
        Content::Text(pieces) => {
            frames.reserve(pieces.len() + 7);
            frames.push(Frame::other(seq.event("response.output_item.added", &added)));
            let part =
                |part: Value| json!({ "item_id": meta.item_id, "output_index": 0, "content_index": 0, "part": part });
            frames.push(Frame::other(seq.event("response.content_part.added", part(output_text("")))));
            for piece in pieces {
                let delta =
                    TextDelta { item_id: meta.item_id, output_index: 0, content_index: 0, delta: piece, logprobs: [] };
                frames.push(Frame::content(seq.event("response.output_text.delta", delta), 1));
            }
            let text = reply.text();
            let done =
                json!({ "item_id": meta.item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": [] });
            frames.push(Frame::other(seq.event("response.output_text.done", done)));
            frames.push(Frame::other(seq.event("response.content_part.done", part(output_text(&text)))));
        }
        Content::Tool(call) => {
            let fragments = call.fragments();
            frames.reserve(fragments.len() + 5);
            // The call's name is its first token, as in chat's first tool chunk.
            frames.push(Frame::content(seq.event("response.output_item.added", &added), 1));
            for fragment in fragments {
                let delta = ArgumentsDelta { item_id: meta.item_id, output_index: 0, delta: fragment };
                frames.push(Frame::content(seq.event("response.function_call_arguments.delta", delta), 1));
            }
            // No `name`: documented, but the live API leaves it out.
            let done = json!({ "item_id": meta.item_id, "output_index": 0, "arguments": call.arguments_json });
            frames.push(Frame::other(seq.event("response.function_call_arguments.done", done)));
        }
    }
    let done = json!({ "output_index": 0, "item": item(meta, reply, true) });
    frames.push(Frame::other(seq.event("response.output_item.done", done)));
    let last = if reply.finish == Finish::Length { "response.incomplete" } else { "response.completed" };
    frames.push(Frame::usage(seq.event(last, json!({ "response": response(meta, Some(reply)) }))));
    frames
}
