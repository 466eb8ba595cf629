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
//!
//! As OpenAI does, the mock stores each response unless the request says
//! `"store": false` (the newest [`KEPT`], in `Shared`), with the key that
//! created it: another key finds nothing there, as another account would.
//! `GET responses/{id}` answers the response object as it was answered
//! whole, or as the stream's last event carried it; `DELETE
//! responses/{id}` forgets it (`{"id","object":"response","deleted":true}`);
//! `GET responses/{id}/input_items` lists the request's input items, each
//! with an `id`, a page at a time (`order`, `limit`, `after`); `POST
//! responses/{id}/cancel` is a 400, as for any response not created in the
//! background (the mock makes none); `POST responses/input_tokens` counts a
//! request's input as a call counts it (`{"object":
//! "response.input_tokens","input_tokens"}`). An id the caller cannot see is a 404,
//! as is a `previous_response_id` it cannot see, and an input item naming
//! by id (`{"type": "item_reference", "id"}`, or an `id` alone) an item of
//! no response or conversation it can see. (A reference is checked, not
//! read: the reply does not depend on what it names.) A response made with
//! `conversation` adds its input and answer to it (`conversations`).
//! These routes are recorded and checked as the others are, and use no
//! tokens.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};

use crate::conversations;
use crate::openai::{self, NULL, role};
use crate::record::Usage;
use crate::reply::{self, Ask, Content, Finish, Reply};
use crate::stream::{self, Frame};
use crate::{Answer, Exchange, Incoming, Provider, Shared, optional_count, query_param, unix_now};

/// The smallest `max_output_tokens` OpenAI takes.
const MIN_OUTPUT: u64 = 16;

struct Request<'a> {
    model: &'a str,
    stream: bool,
    /// Whether to keep the response for the routes that read it back.
    store: bool,
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
    let store = body.get("store").and_then(Value::as_bool) != Some(false);
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
    Ok(Request { model, stream, store, ask, body })
}

/// The ids of the input items that name a stored item rather than give it.
fn references(request: &Value) -> impl Iterator<Item = &str> {
    let items = request.get("input").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    items.iter().filter_map(|item| {
        let by_id = kind(item) == "item_reference" || (item.get("type").is_none() && item.get("role").is_none());
        if by_id { item.get("id").and_then(Value::as_str) } else { None }
    })
}

/// `POST responses`.
pub async fn create(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let request = exchange.json(&call.body)?;
    let read = read(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let conversation = builds_on_what_it_sees(&shared, &exchange, &call, &request)?;
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
    // Kept before it is sent: OpenAI finishes a response whose client went away.
    let done = Arc::new(response(&meta, Some(&reply)));
    if read.store {
        let stored = Stored { key: key(&call).to_owned(), response: done.clone(), request: call.body.clone() };
        shared.responses.keep(meta.id, stored);
    }
    // The input and the reply join the conversation.
    if let Some(conversation) = conversation {
        let output = done["output"].as_array().into_iter().flatten().cloned();
        shared.conversations.add(conversation, listed_items(&request, meta.id).into_iter().chain(output));
    }
    let mut response = if read.stream {
        let frames = events(&meta, &reply, &done);
        stream::respond(exchange, "text/event-stream; charset=utf-8", frames, reply.usage, &knobs)
    } else {
        exchange.answer(&*done, Some(reply.usage), reply.visible_tokens())
    };
    openai::decorate(&mut response, meta.id);
    Ok(response)
}

/// Refuses a request that goes on from a response, adds to a conversation
/// or names an item this key cannot see (a 404, as OpenAI's), or that
/// names both a previous response and a conversation; the conversation it
/// adds to, if any.
fn builds_on_what_it_sees<'a>(
    shared: &Shared,
    exchange: &Exchange,
    call: &Incoming,
    request: &'a Value,
) -> Result<Option<&'a str>, Response> {
    if let Some(previous) = request.get("previous_response_id").and_then(Value::as_str)
        && shared.responses.get(previous, key(call)).is_none()
    {
        let message = format!("Previous response with id '{previous}' not found.");
        let refusal = openai::invalid_request(StatusCode::NOT_FOUND, &message, Some("previous_response_id"));
        return Err(exchange.refuse(refusal));
    }
    let conversation = conversations::named(request);
    if let Some(conversation) = conversation {
        if request.get("previous_response_id").is_some_and(|p| !p.is_null()) {
            let message = "Mutually exclusive parameters: 'previous_response_id' and 'conversation'. Ensure you \
                           are only providing one of: 'previous_response_id' or 'conversation'.";
            return Err(exchange.fail(StatusCode::BAD_REQUEST, message));
        }
        if !shared.conversations.sees(conversation, key(call)) {
            return Err(conversations::not_found(exchange, conversation, Some("conversation")));
        }
    }
    let seen =
        |id: &str| shared.responses.item(id, key(call)).is_some() || shared.conversations.has_item(id, key(call));
    if let Some(missing) = references(request).find(|id| !seen(id)) {
        let message = format!("Item with id '{missing}' not found.");
        return Err(exchange.refuse(openai::invalid_request(StatusCode::NOT_FOUND, &message, Some("input"))));
    }
    Ok(conversation)
}

/// `POST responses/input_tokens`: the input tokens a `responses` call with
/// this body would be counted (its model, input and instructions may each
/// be left out). What it names must be this key's to see, as for a call;
/// the tokens of an earlier response or a conversation are not added.
pub async fn input_tokens(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let request = exchange.json(&call.body)?;
    if request.get("model").is_some_and(|m| !m.is_null()) {
        openai::read_model(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    }
    let items = match request.get("input") {
        Some(text @ Value::String(_)) => std::slice::from_ref(text),
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => {
            return Err(exchange.fail(StatusCode::BAD_REQUEST, "input: expected a string or array of input items"));
        }
    };
    builds_on_what_it_sees(&shared, &exchange, &call, &request)?;
    let tools = request.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let instructions = request.get("instructions").filter(|i| !i.is_null());
    let tokens = reply::input_tokens(instructions.into_iter().chain(items), tools.iter());
    Ok(exchange.answer(json!({"object": "response.input_tokens", "input_tokens": tokens}), None, 0))
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

/// The fields of the events that carry the response object as it stands.
#[derive(Serialize)]
struct Carrying<'a> {
    response: &'a Value,
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

/// The stream's events, the last carrying the `finished` response.
fn events(meta: &Meta<'_>, reply: &Reply, finished: &Value) -> Vec<Frame> {
    let mut seq = Sequence(0);
    let started = Carrying { response: &response(meta, None) };
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
    frames.push(Frame::usage(seq.event(last, Carrying { response: finished })));
    frames
}

/// How many responses the mock keeps (the newest): its memory stays bounded.
const KEPT: usize = 10_000;

/// A response kept for the routes that read it back.
struct Stored {
    /// The credential that created it, the only one that may see it.
    key: String,
    /// The response object, as answered whole or as the last event carried it.
    response: Arc<Value>,
    /// The request, whose `input` is read only when `input_items` asks.
    request: Bytes,
}

/// The stored responses: the newest [`KEPT`], by id.
#[derive(Default)]
pub(crate) struct Store {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<String, Arc<Stored>>,
    /// The ids, oldest first: the next to drop.
    order: VecDeque<String>,
    /// The responses' output items: the response each is part of, by id.
    items: HashMap<String, String>,
}

impl Kept {
    fn drop_response(&mut self, id: &str) {
        if let Some(stored) = self.by_id.remove(id) {
            for item in stored.item_ids() {
                self.items.remove(item);
            }
        }
    }
}

impl Stored {
    fn item_ids(&self) -> impl Iterator<Item = &str> {
        let output = self.response.get("output").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        output.iter().filter_map(|item| item.get("id").and_then(Value::as_str))
    }
}

impl Store {
    fn keep(&self, id: &str, stored: Stored) {
        let mut kept = self.lock();
        if kept.order.len() == KEPT
            && let Some(oldest) = kept.order.pop_front()
        {
            kept.drop_response(&oldest);
        }
        kept.order.push_back(id.to_owned());
        for item in stored.item_ids() {
            kept.items.insert(item.to_owned(), id.to_owned());
        }
        kept.by_id.insert(id.to_owned(), Arc::new(stored));
    }

    /// The response holding the output item `id`, if `key` created it.
    fn item(&self, id: &str, key: &str) -> Option<Arc<Stored>> {
        let kept = self.lock();
        let response = kept.items.get(id)?;
        kept.by_id.get(response).filter(|stored| stored.key == key).cloned()
    }

    /// The response `id`, if `key` created it.
    fn get(&self, id: &str, key: &str) -> Option<Arc<Stored>> {
        self.lock().by_id.get(id).filter(|stored| stored.key == key).cloned()
    }

    /// Forgets the response `id` if `key` created it; whether it did.
    fn remove(&self, id: &str, key: &str) -> bool {
        let mut kept = self.lock();
        if kept.by_id.get(id).is_none_or(|stored| stored.key != key) {
            return false;
        }
        kept.drop_response(id);
        kept.order.retain(|kept_id| kept_id != id);
        true
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The caller's key (`Exchange::open` refused a request without one).
pub(crate) fn key(call: &Incoming) -> &str {
    call.credential(Provider::OpenAi).unwrap_or_default()
}

/// Opens the exchange and finds the response `id` as the caller may see it.
fn open_stored(shared: &Arc<Shared>, call: &Incoming, id: &str) -> Result<(Exchange, Arc<Stored>), Response> {
    let exchange = Exchange::open(shared, Provider::OpenAi, call)?;
    match shared.responses.get(id, key(call)) {
        Some(stored) => Ok((exchange, stored)),
        None => Err(not_found(&exchange, id)),
    }
}

fn not_found(exchange: &Exchange, id: &str) -> Response {
    let message = format!("Response with id '{id}' not found.");
    exchange.refuse(openai::invalid_request(StatusCode::NOT_FOUND, &message, None))
}

/// `GET responses/{id}`: the response as it was answered.
pub async fn retrieve(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let (exchange, stored) = open_stored(&shared, &call, &id)?;
    Ok(exchange.answer(&*stored.response, None, 0))
}

/// `DELETE responses/{id}`.
pub async fn delete(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    if !shared.responses.remove(&id, key(&call)) {
        return Err(not_found(&exchange, &id));
    }
    Ok(exchange.answer(json!({ "id": id, "object": "response", "deleted": true }), None, 0))
}

/// `POST responses/{id}/cancel`: only a response created in the background
/// can be, and the mock creates none there.
pub async fn cancel(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let (exchange, _) = open_stored(&shared, &call, &id)?;
    Err(exchange.fail(StatusCode::BAD_REQUEST, "Only responses created with background=true can be cancelled."))
}

/// `GET responses/{id}/input_items`: a page of the request's input items.
pub async fn input_items(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let (exchange, stored) = open_stored(&shared, &call, &id)?;
    let refuse = |(param, message): (&str, String)| {
        exchange.refuse(openai::invalid_request(StatusCode::BAD_REQUEST, &message, Some(param)))
    };
    let page = Page::read(&call.uri).map_err(refuse)?;
    // It was parsed as JSON when the response was created.
    let request: Value = serde_json::from_slice(&stored.request).expect("a stored request is JSON");
    let list = listing(listed_items(&request, &id), &page, &format!("response '{id}'")).map_err(refuse)?;
    Ok(exchange.answer(list, None, 0))
}

/// A page of `items` (oldest first) as the API lists them; `holder` names
/// what holds them, for an `after` it does not have.
pub(crate) fn listing(mut items: Vec<Value>, page: &Page<'_>, holder: &str) -> Result<Value, (&'static str, String)> {
    if page.newest_first {
        items.reverse();
    }
    let start = match page.after {
        None => 0,
        Some(after) => match items.iter().position(|item| item["id"] == after) {
            Some(at) => at + 1,
            None => return Err(("after", format!("after: {holder} has no item '{after}'"))),
        },
    };
    let rest = &items[start..];
    let data = &rest[..rest.len().min(page.limit)];
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": data.first().map(|item| &item["id"]),
        "last_id": data.last().map(|item| &item["id"]),
        "has_more": rest.len() > data.len()
    }))
}

/// `input_items`' query (and a conversation's `items`).
pub(crate) struct Page<'a> {
    /// `order=desc`, the default; `order=asc` lists them as sent.
    newest_first: bool,
    /// 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] unless given.
    limit: usize,
    /// The id of the item to start after.
    after: Option<&'a str>,
}

const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;

impl Page<'_> {
    /// The page the query asks for, or the parameter to blame and why.
    pub(crate) fn read(uri: &Uri) -> Result<Page<'_>, (&'static str, String)> {
        let newest_first = match query_param(uri, "order") {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => return Err(("order", format!("order: expected 'asc' or 'desc', got '{other}'"))),
        };
        let limit =
            match query_param(uri, "limit") {
                None => DEFAULT_PAGE,
                Some(raw) => raw.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    ("limit", format!("limit: expected an integer from 1 to {MAX_PAGE}, got '{raw}'"))
                })?,
            };
        Ok(Page { newest_first, limit, after: query_param(uri, "after") })
    }
}

/// The request's input as `input_items` lists it, as sent (see [`list_item`]).
fn listed_items(request: &Value, response_id: &str) -> Vec<Value> {
    // Item ids are derived from the response's, so that they stay the same
    // from one page to the next.
    let serial = response_id.strip_prefix("resp_").unwrap_or(response_id);
    let items = match request.get("input") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(text) => std::slice::from_ref(text),
        None => &[],
    };
    items.iter().enumerate().map(|(index, item)| list_item(item, &format!("{serial}{index:04x}"))).collect()
}

/// One input item as the API lists it: a string (the whole input) is a user
/// message, a message's string content one `input_text` part (`output_text`
/// for the assistant's), and an item without an `id` gets one ending in
/// `serial` (`msg_…`, `fc_…`, `fco_…`, `item_…` by its type).
pub(crate) fn list_item(item: &Value, serial: &str) -> Value {
    let mut item = match item {
        Value::String(text) => json!({ "role": "user", "content": text }),
        other => other.clone(),
    };
    let message = matches!(kind(&item), "message" | "") && !role(&item).is_empty();
    let prefix = match kind(&item) {
        _ if message => "msg",
        "function_call" => "fc",
        "function_call_output" => "fco",
        _ => "item",
    };
    let part = if role(&item) == "assistant" { "output_text" } else { "input_text" };
    if let Some(fields) = item.as_object_mut() {
        fields.entry("id").or_insert_with(|| json!(format!("{prefix}_{serial}")));
        if message {
            fields.insert("type".into(), json!("message"));
            if let Some(content @ Value::String(_)) = fields.get_mut("content") {
                *content = json!([{ "type": part, "text": content.take() }]);
            }
        }
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(key: &str) -> Stored {
        Stored { key: key.to_owned(), response: Arc::new(Value::Null), request: Bytes::new() }
    }

    fn with_items(key: &str, n: usize) -> Stored {
        let output = json!([{ "type": "message", "id": format!("msg_{n}") }, { "type": "function_call", "id": format!("fc_{n}") }]);
        Stored { response: Arc::new(json!({ "id": format!("resp_{n}"), "output": output })), ..stored(key) }
    }

    #[test]
    fn the_store_keeps_the_newest_responses_and_forgets_deleted_ones_at_once() {
        let store = Store::default();
        for n in 0..=KEPT {
            store.keep(&format!("resp_{n}"), with_items("k", n));
        }
        assert!(store.get("resp_0", "k").is_none(), "the oldest is dropped");
        assert!(store.item("msg_0", "k").is_none(), "with its items");
        assert!(store.item("fc_1", "k").is_some() && store.item("fc_1", "other").is_none());
        assert!(store.item("resp_1", "k").is_none(), "a response is no item");
        assert!(store.get("resp_1", "k").is_some() && store.get(&format!("resp_{KEPT}"), "k").is_some());
        assert_eq!(store.lock().by_id.len(), KEPT);

        assert!(!store.remove("resp_1", "other"), "another key cannot delete it");
        assert!(store.remove("resp_1", "k"));
        assert!(store.get("resp_1", "k").is_none() && !store.remove("resp_1", "k"));
        assert!(store.item("msg_1", "k").is_none(), "a deleted response's items go with it");
        let kept = store.lock();
        assert_eq!((kept.by_id.len(), kept.order.len()), (KEPT - 1, KEPT - 1), "its place is free");
        assert_eq!(kept.items.len(), 2 * (KEPT - 1));
    }

    #[test]
    fn an_item_without_an_id_gets_one_and_string_content_becomes_a_part() {
        let check = |item: Value, want: Value| assert_eq!(list_item(&item, "mock1"), want, "{item}");
        check(
            json!("hi"),
            json!({ "id": "msg_mock1", "type": "message", "role": "user",
                    "content": [{ "type": "input_text", "text": "hi" }] }),
        );
        check(
            json!({ "role": "assistant", "content": "ok" }),
            json!({ "id": "msg_mock1", "type": "message", "role": "assistant",
                    "content": [{ "type": "output_text", "text": "ok" }] }),
        );
        check(
            json!({ "type": "function_call_output", "call_id": "c", "output": "x" }),
            json!({ "id": "fco_mock1", "type": "function_call_output", "call_id": "c", "output": "x" }),
        );
        check(json!({ "type": "function_call", "id": "fc_1" }), json!({ "type": "function_call", "id": "fc_1" }));
        check(json!({ "type": "item_reference", "id": "r" }), json!({ "type": "item_reference", "id": "r" }));
    }
}
