//! OpenAI's wire format (also Groq's and every OpenAI-compatible API):
//! `POST chat/completions` (streamed as `chat.completion.chunk` events,
//! usage only with `stream_options.include_usage`, in a last chunk whose
//! `choices` is empty), the legacy `POST completions` (a `prompt` in, a
//! `text_completion` out, streamed and metered as chat is; what vLLM,
//! llama.cpp and Ollama still serve), `POST embeddings`, `GET models`. The
//! Responses API (`POST responses`, and `GET`/`DELETE responses/{id}`,
//! `GET responses/{id}/input_items`, `POST responses/{id}/cancel` for the
//! responses it stores) has its own module, `responses`, mounted here.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};

use crate::record::Usage;
use crate::reply::{self, Ask, Content, Finish, Knobs, Reply};
use crate::stream::{self, Frame};
use crate::{Answer, Exchange, Incoming, Provider, Shared, conversations, optional_count, responses, unix_now};

const FINGERPRINT: &str = "fp_tollgate_mock";
const MODELS: [&str; 7] = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "llama-3.1-8b-instant",
];
pub(crate) static NULL: Value = Value::Null;

pub(crate) fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// Chat completions, legacy completions, the Responses API (`responses`)
/// and embeddings under `/v1` and `/openai/v1`; the models routes are shared
/// with Anthropic under `/v1` and mounted by the caller.
pub fn routes() -> Router<Arc<Shared>> {
    let mut router = Router::new();
    for prefix in ["/v1", "/openai/v1"] {
        router = router
            .route(&format!("{prefix}/chat/completions"), post(chat))
            .route(&format!("{prefix}/completions"), post(completions))
            .route(&format!("{prefix}/responses"), post(responses::create))
            .route(&format!("{prefix}/responses/input_tokens"), post(responses::input_tokens))
            .route(&format!("{prefix}/responses/{{id}}"), get(responses::retrieve).delete(responses::delete))
            .route(&format!("{prefix}/responses/{{id}}/input_items"), get(responses::input_items))
            .route(&format!("{prefix}/responses/{{id}}/cancel"), post(responses::cancel))
            .route(&format!("{prefix}/conversations"), post(conversations::create))
            .route(
                &format!("{prefix}/conversations/{{id}}"),
                get(conversations::retrieve).post(conversations::update).delete(conversations::delete),
            )
            .route(
                &format!("{prefix}/conversations/{{id}}/items"),
                get(conversations::list_items).post(conversations::add_items),
            )
            .route(
                &format!("{prefix}/conversations/{{id}}/items/{{item_id}}"),
                get(conversations::item).delete(conversations::delete_item),
            )
            .route(&format!("{prefix}/embeddings"), post(embeddings));
    }
    router
}

struct Chat<'a> {
    model: &'a str,
    stream: bool,
    include_usage: bool,
    ask: Ask<'a>,
}

/// The `model` every generation and embedding request names.
pub(crate) fn read_model(body: &Value) -> Result<&str, String> {
    let model = body.get("model").and_then(Value::as_str).filter(|m| !m.is_empty());
    model.ok_or_else(|| "model: you must provide a model parameter".to_owned())
}

fn read_chat<'a>(body: &'a Value) -> Result<Chat<'a>, String> {
    let model = read_model(body)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: expected a non-empty array")?;
    let (stream, include_usage) = read_stream(body);
    let max_tokens = match optional_count(body, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => optional_count(body, "max_tokens")?,
    };
    let tools = body.get("tools").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let ends_with_tool_result = messages.last().is_some_and(|m| matches!(role(m), "tool" | "function"));
    let function = |tool: &'a Value| {
        let f = tool.get("function")?;
        Some((f.get("name")?.as_str()?, f.get("parameters").unwrap_or(&NULL)))
    };
    let tool = if ends_with_tool_result {
        None
    } else {
        choose_tool(tools, body.get("tool_choice"), "/function/name", function)
    };
    let last_user_text = messages
        .iter()
        .rev()
        .filter(|m| role(m) == "user")
        .map(|m| reply::text_of(m.get("content").unwrap_or(&NULL)))
        .find(|text| !text.is_empty())
        .unwrap_or_default();
    let ask = Ask {
        input_tokens: reply::input_tokens(messages.iter(), tools.iter()),
        last_user_text,
        turns: messages.len(),
        max_tokens,
        tool,
    };
    Ok(Chat { model, stream, include_usage, ask })
}

/// `stream`, and whether the stream ends with the usage.
fn read_stream(body: &Value) -> (bool, bool) {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    (stream, stream && body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true))
}

/// The tool `tool_choice` allows: none for `"none"`, the named one, or the
/// first. Chat and the Responses API place a tool's name and parameters
/// differently: `function` reads them from a tool (`None` for a tool that is
/// not a function), `name_at` points at the name in a choice that forces one.
pub(crate) fn choose_tool<'a>(
    tools: &'a [Value],
    choice: Option<&Value>,
    name_at: &str,
    function: impl Fn(&'a Value) -> Option<(&'a str, &'a Value)>,
) -> Option<(&'a str, &'a Value)> {
    let named = choice.and_then(|c| c.pointer(name_at)).and_then(Value::as_str);
    match (choice, named) {
        (Some(Value::String(none)), _) if none == "none" => None,
        (_, Some(name)) => tools.iter().filter_map(&function).find(|(n, _)| *n == name),
        _ => tools.iter().find_map(function),
    }
}

async fn chat(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let request = exchange.json(&call.body)?;
    let chat = read_chat(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let (reply, knobs) = exchange.reply(&chat.ask, &call.headers).await?;
    let id = shared.next_id();
    let meta = Meta { id: &format!("chatcmpl-mock{id}"), call_id: &format!("call_mock{id}"), model: chat.model };
    let mut response = if chat.stream {
        let frames = chunks(&meta, &reply, chat.include_usage);
        stream::respond(exchange, "text/event-stream; charset=utf-8", frames, reply.usage, &knobs)
    } else {
        exchange.answer(without_usage(completion(&meta, &reply), &knobs), Some(reply.usage), reply.visible_tokens())
    };
    decorate(&mut response, meta.id);
    Ok(response)
}

struct Meta<'a> {
    id: &'a str,
    call_id: &'a str,
    model: &'a str,
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCall => "tool_calls",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// `body` without its usage block when the directives say `no_usage`.
fn without_usage(mut body: Value, knobs: &Knobs) -> Value {
    if knobs.no_usage
        && let Some(fields) = body.as_object_mut()
    {
        fields.remove("usage");
    }
    body
}

fn completion(meta: &Meta<'_>, reply: &Reply) -> Value {
    let mut message = json!({ "role": "assistant", "content": null, "refusal": null, "annotations": [] });
    match &reply.content {
        Content::Text(_) => message["content"] = Value::String(reply.text()),
        Content::Tool(call) => {
            message["tool_calls"] = json!([{
                "id": meta.call_id,
                "type": "function",
                "function": { "name": call.name, "arguments": call.arguments_json }
            }]);
        }
    }
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": meta.model,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(reply.finish) }],
        "usage": usage_json(&reply.usage),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT
    })
}

/// A streamed chunk of chat (`Choice`) or of a legacy completion (`TextChoice`).
#[derive(Serialize)]
struct Chunk<'a, C> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tier: Option<&'static str>,
    system_fingerprint: &'static str,
    choices: &'a [C],
    /// Absent without `include_usage`; `null` on every chunk but the last with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<&'a Value>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Delta<'a> {
    Start { role: &'static str, content: Option<&'a str>, refusal: Option<()> },
    ToolStart { role: &'static str, content: Option<()>, refusal: Option<()>, tool_calls: [ToolDelta<'a>; 1] },
    Content { content: &'a str },
    Arguments { tool_calls: [ToolDelta<'a>; 1] },
    Empty {},
}

#[derive(Serialize)]
struct ToolDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

fn chunks(meta: &Meta<'_>, reply: &Reply, include_usage: bool) -> Vec<Frame> {
    let created = unix_now();
    let usage = include_usage.then(|| usage_json(&reply.usage));
    let event = |delta: Delta<'_>, finish: Option<&'static str>| {
        let choice = [Choice { index: 0, delta, logprobs: None, finish_reason: finish }];
        sse(&Chunk {
            id: meta.id,
            object: "chat.completion.chunk",
            created,
            model: meta.model,
            service_tier: Some("default"),
            system_fingerprint: FINGERPRINT,
            choices: &choice,
            usage: usage.as_ref().map(|_| None),
        })
    };
    let mut frames = Vec::new();
    match &reply.content {
        Content::Text(pieces) => {
            frames.reserve(pieces.len() + 4);
            let start = Delta::Start { role: "assistant", content: Some(""), refusal: None };
            frames.push(Frame::other(event(start, None)));
            for piece in pieces {
                frames.push(Frame::content(event(Delta::Content { content: piece }, None), 1));
            }
        }
        Content::Tool(call) => {
            let fragments = call.fragments();
            frames.reserve(fragments.len() + 4);
            let start = ToolDelta {
                index: 0,
                id: Some(meta.call_id),
                kind: Some("function"),
                function: FunctionDelta { name: Some(&call.name), arguments: "" },
            };
            let delta = Delta::ToolStart { role: "assistant", content: None, refusal: None, tool_calls: [start] };
            frames.push(Frame::content(event(delta, None), 1));
            for fragment in fragments {
                let args = ToolDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: FunctionDelta { name: None, arguments: fragment },
                };
                frames.push(Frame::content(event(Delta::Arguments { tool_calls: [args] }, None), 1));
            }
        }
    }
    frames.push(Frame::other(event(Delta::Empty {}, Some(finish_reason(reply.finish)))));
    if let Some(usage) = &usage {
        frames.push(Frame::usage(sse(&Chunk::<Choice<'_>> {
            id: meta.id,
            object: "chat.completion.chunk",
            created,
            model: meta.model,
            service_tier: Some("default"),
            system_fingerprint: FINGERPRINT,
            choices: &[],
            usage: Some(Some(usage)),
        })));
    }
    frames.push(Frame::other(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

fn sse<C: Serialize>(chunk: &Chunk<'_, C>) -> Bytes {
    let mut buf = Vec::with_capacity(320);
    buf.extend_from_slice(b"data: ");
    // Writing plain structs of strings and numbers into a Vec cannot fail.
    serde_json::to_writer(&mut buf, chunk).expect("a chunk serializes");
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// The headers OpenAI puts on its answers, so a gateway shows whether it
/// passes or replaces them.
pub(crate) fn decorate(response: &mut Response, request_id: &str) {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    for (name, value) in [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-limit-tokens", "10000000"),
        ("x-ratelimit-remaining-tokens", "9999000"),
        ("x-ratelimit-reset-tokens", "6ms"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// OpenAI's default `max_tokens` for legacy completions.
const COMPLETION_MAX_TOKENS: u64 = 16;

/// A legacy completion as a chat of one turn: `prompt` (and `suffix`) in
/// words or token ids, directives from the prompt's last string, no tools.
/// `n`, `echo`, `stop` and `logprobs` are ignored.
fn read_completion(body: &Value) -> Result<Chat<'_>, String> {
    let model = read_model(body)?;
    let prompts = read_inputs(body, "prompt")?;
    let max_tokens = optional_count(body, "max_tokens")?.unwrap_or(COMPLETION_MAX_TOKENS);
    let (stream, include_usage) = read_stream(body);
    let suffix = body.get("suffix").map_or(0, reply::words);
    let ask = Ask {
        input_tokens: prompts.iter().map(Input::tokens).sum::<u64>() + suffix,
        last_user_text: prompts.iter().rev().find_map(Input::text).unwrap_or("").to_owned(),
        turns: 1,
        max_tokens: Some(max_tokens),
        tool: None,
    };
    Ok(Chat { model, stream, include_usage, ask })
}

async fn completions(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let request = exchange.json(&call.body)?;
    let asked = read_completion(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let (reply, knobs) = exchange.reply(&asked.ask, &call.headers).await?;
    let id = format!("cmpl-mock{}", shared.next_id());
    let mut response = if asked.stream {
        let frames = text_chunks(&id, asked.model, &reply, asked.include_usage);
        stream::respond(exchange, "text/event-stream; charset=utf-8", frames, reply.usage, &knobs)
    } else {
        let choice = TextChoice {
            text: &reply.text(),
            index: 0,
            logprobs: None,
            finish_reason: Some(finish_reason(reply.finish)),
        };
        let body = json!({
            "id": id,
            "object": "text_completion",
            "created": unix_now(),
            "model": asked.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
            "usage": usage_json(&reply.usage)
        });
        exchange.answer(without_usage(body, &knobs), Some(reply.usage), reply.visible_tokens())
    };
    decorate(&mut response, &id);
    Ok(response)
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// One chunk per reply piece, one with the finish reason and no text, then
/// the usage (with `include_usage`) and `[DONE]`, as chat streams.
fn text_chunks(id: &str, model: &str, reply: &Reply, include_usage: bool) -> Vec<Frame> {
    let created = unix_now();
    let usage = include_usage.then(|| usage_json(&reply.usage));
    let chunk = |choices: &[TextChoice<'_>], usage: Option<Option<&Value>>| {
        sse(&Chunk {
            id,
            object: "text_completion",
            created,
            model,
            service_tier: None,
            system_fingerprint: FINGERPRINT,
            choices,
            usage,
        })
    };
    let event = |text: &str, finish: Option<&'static str>| {
        let choice = TextChoice { text, index: 0, logprobs: None, finish_reason: finish };
        chunk(&[choice], usage.as_ref().map(|_| None))
    };
    // No tools are offered, so the reply is text.
    let pieces: &[&str] = if let Content::Text(pieces) = &reply.content { pieces } else { &[] };
    let mut frames = Vec::with_capacity(pieces.len() + 3);
    frames.extend(pieces.iter().map(|piece| Frame::content(event(piece, None), 1)));
    frames.push(Frame::other(event("", Some(finish_reason(reply.finish)))));
    if let Some(usage) = &usage {
        frames.push(Frame::usage(chunk(&[], Some(Some(usage)))));
    }
    frames.push(Frame::other(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

enum Input<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

impl Input<'_> {
    /// Its whitespace-separated words (at least one), or its token ids.
    fn tokens(&self) -> u64 {
        match self {
            Input::Text(t) => (t.split_whitespace().count() as u64).max(1),
            Input::Tokens(ts) => ts.len() as u64,
        }
    }

    fn text(&self) -> Option<&str> {
        if let Input::Text(t) = self { Some(t) } else { None }
    }
}

/// Embeddings' `input` or a completion's `prompt`: a non-empty string, an
/// array of them, one token array, or an array of token arrays.
fn read_inputs<'a>(body: &'a Value, field: &str) -> Result<Vec<Input<'a>>, String> {
    let inputs = match body.get(field) {
        Some(Value::Array(items)) if tokens(items) => Some(vec![Input::Tokens(items)]),
        Some(Value::Array(items)) if !items.is_empty() => items.iter().map(one).collect(),
        Some(item @ Value::String(_)) => one(item).map(|input| vec![input]),
        _ => None,
    };
    inputs.ok_or_else(|| format!("{field}: expected a non-empty string, an array of them, or token arrays"))
}

fn tokens(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_u64)
}

fn one(item: &Value) -> Option<Input<'_>> {
    match item {
        Value::String(s) if !s.is_empty() => Some(Input::Text(s)),
        Value::Array(items) if tokens(items) => Some(Input::Tokens(items)),
        _ => None,
    }
}

async fn embeddings(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let request = exchange.json(&call.body)?;
    let refuse = |m: String| exchange.fail(StatusCode::BAD_REQUEST, &m);
    let model = read_model(&request).map_err(refuse)?;
    let inputs = read_inputs(&request, "input").map_err(refuse)?;
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(refuse(format!("encoding_format: {other:?} is not one of float, base64"))),
    };
    let dimensions = match optional_count(&request, "dimensions").map_err(refuse)? {
        Some(d) if (1..=8192).contains(&d) => d as usize,
        Some(_) => return Err(refuse("dimensions: expected 1 to 8192".into())),
        None if model.contains("large") => 3072,
        None => 1536,
    };
    let first_text = inputs.iter().find_map(Input::text).unwrap_or("");
    let knobs = exchange.knobs(first_text, &call.headers)?;
    exchange.wait(&knobs).await?;
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let seed = match input {
                Input::Text(t) => fnv(t.as_bytes()),
                Input::Tokens(ts) => fnv(Value::Array(ts.to_vec()).to_string().as_bytes()),
            };
            tokens += input.tokens();
            let vector = embedding(seed, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
    });
    let usage = Usage { input_tokens: tokens, ..Usage::default() };
    let mut response = exchange.answer(body, Some(usage), 0);
    decorate(&mut response, &format!("req_mock{}", shared.next_id()));
    Ok(response)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)) | 1
}

/// A unit vector of `dimensions` floats derived from `seed`.
fn embedding(mut state: u64, dimensions: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            ((state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// `GET models`, checked with OpenAI's credential.
pub fn models(shared: &Arc<Shared>, call: &Incoming) -> Answer {
    let exchange = Exchange::open(shared, Provider::OpenAi, call)?;
    let data: Vec<Value> = MODELS.iter().map(|id| model_json(id)).collect();
    Ok(exchange.answer(json!({ "object": "list", "data": data }), None, 0))
}

/// `GET models/{id}`.
pub fn model(shared: &Arc<Shared>, call: &Incoming, id: &str) -> Answer {
    let exchange = Exchange::open(shared, Provider::OpenAi, call)?;
    if !MODELS.contains(&id) {
        return Err(exchange.fail(StatusCode::NOT_FOUND, &format!("The model '{id}' does not exist")));
    }
    Ok(exchange.answer(model_json(id), None, 0))
}

/// `GET /openai/v1/models` (Groq's shape).
pub async fn models_route(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    models(&shared, &call)
}

/// `GET /openai/v1/models/{id}`.
pub async fn model_route(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    model(&shared, &call, &id)
}

fn model_json(id: &str) -> Value {
    let owner = if id.starts_with("llama") { "Meta" } else { "openai" };
    json!({ "id": id, "object": "model", "created": 1_715_367_049, "owned_by": owner })
}

/// OpenAI's error shape: `{"error":{"message","type","param","code"}}`.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_denied", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    error_json(message, kind, None, code)
}

/// An `invalid_request_error` naming the `param` to blame (if one is), with
/// no `code`: what the API answers about a stored response (a 404 for an
/// unknown id, not `error_body`'s `model_not_found`) or a query parameter.
pub(crate) fn invalid_request(status: StatusCode, message: &str, param: Option<&str>) -> Response {
    (status, axum::Json(error_json(message, "invalid_request_error", param, None))).into_response()
}

fn error_json(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
}
