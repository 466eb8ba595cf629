//! Gemini's wire format: `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent` (server-sent events with `alt=sse`, else one
//! JSON array written piece by piece; every chunk carries the cumulative
//! `usageMetadata`), `:countTokens`, `GET /v1beta/models`; the same under
//! `/v1/` (where the router tells Gemini's calls from OpenAI's). The key
//! comes in `x-goog-api-key` or `?key=`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use crate::reply::{self, Ask, Content, Finish, Reply};
use crate::stream::{self, Frame};
use crate::{Answer, Exchange, Incoming, Provider, Shared, query_param};

const MODELS: [(&str, &str); 4] = [
    ("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
    ("gemini-2.0-flash", "Gemini 2.0 Flash"),
];
static NULL: Value = Value::Null;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1beta/models", get(models)).route("/v1beta/models/{name}", get(model).post(action))
}

struct Generate<'a> {
    ask: Ask<'a>,
}

fn read(body: &Value) -> Result<Generate<'_>, String> {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
    let config = body.get("generationConfig").or_else(|| body.get("generation_config"));
    let max_tokens = match config.and_then(|c| c.get("maxOutputTokens").or_else(|| c.get("max_output_tokens"))) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or("generationConfig.maxOutputTokens: expected a non-negative integer")?),
    };
    let declarations: Vec<&Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").or_else(|| t.get("function_declarations")))
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    let ends_with_tool_result = contents.last().is_some_and(|c| {
        parts(c).iter().any(|p| p.get("functionResponse").or_else(|| p.get("function_response")).is_some())
    });
    let tool = if ends_with_tool_result { None } else { choose_tool(&declarations, body.get("toolConfig")) };
    let last_user_text = contents
        .iter()
        .rev()
        .filter(|c| c.get("role").and_then(Value::as_str).is_none_or(|r| r == "user"))
        .map(|c| reply::text_of(c.get("parts").unwrap_or(&NULL)))
        .find(|text| !text.is_empty())
        .unwrap_or_default();
    let system = body.get("systemInstruction").or_else(|| body.get("system_instruction"));
    let ask = Ask {
        input_tokens: reply::input_tokens(contents.iter().chain(system), declarations.iter().copied()),
        last_user_text,
        turns: contents.len(),
        max_tokens,
        tool,
    };
    Ok(Generate { ask })
}

/// The function `toolConfig` allows: none in mode `NONE`, the first allowed
/// name, or the first declared.
fn choose_tool<'a>(declarations: &[&'a Value], tool_config: Option<&Value>) -> Option<(&'a str, &'a Value)> {
    let calling = tool_config.and_then(|c| c.get("functionCallingConfig"));
    if calling.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE") {
        return None;
    }
    let allowed = calling.and_then(|c| c.pointer("/allowedFunctionNames/0")).and_then(Value::as_str);
    declarations
        .iter()
        .filter_map(|d| {
            let schema = d.get("parameters").or_else(|| d.get("parametersJsonSchema")).unwrap_or(&NULL);
            Some((d.get("name")?.as_str()?, schema))
        })
        .find(|(name, _)| allowed.is_none_or(|a| a == *name))
}

pub(crate) async fn action(State(shared): State<Arc<Shared>>, Path(name): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::Gemini, &call)?;
    let Some((model, action)) = name.split_once(':') else {
        return Err(exchange
            .fail(StatusCode::NOT_FOUND, &format!("models/{name} has no method; call models/{name}:generateContent")));
    };
    let (stream, sse) = match action {
        "generateContent" => (false, false),
        "streamGenerateContent" => (true, query_param(&call.uri, "alt") == Some("sse")),
        "countTokens" => return count_tokens(&exchange, &call.body),
        _ => return Err(exchange.fail(StatusCode::NOT_FOUND, &format!("models/{model}:{action} is not a method"))),
    };
    let request = exchange.json(&call.body)?;
    let read = read(&request).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let (reply, knobs) = exchange.reply(&read.ask, &call.headers).await?;
    let response_id = format!("mock{}", shared.next_id());
    let meta = Meta { model, response_id: &response_id };
    if stream {
        let content_type = if sse { "text/event-stream" } else { "application/json; charset=UTF-8" };
        Ok(stream::respond(exchange, content_type, chunks(&meta, &reply, sse), reply.usage, &knobs))
    } else {
        let text = reply.text();
        let body = chunk(&meta, &reply, whole_part(&reply, &text), reply.visible_tokens(), true);
        Ok(exchange.answer(body, Some(reply.usage), reply.visible_tokens()))
    }
}

fn parts(content: &Value) -> &[Value] {
    content.get("parts").and_then(Value::as_array).map_or(&[][..], Vec::as_slice)
}

fn count_tokens(exchange: &Exchange, body: &Bytes) -> Result<Response, Response> {
    let request = exchange.json(body)?;
    let inner = request.get("generateContentRequest").unwrap_or(&request);
    let read = read(inner).map_err(|m| exchange.fail(StatusCode::BAD_REQUEST, &m))?;
    let tokens = read.ask.input_tokens;
    let body = json!({ "totalTokens": tokens, "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": tokens }] });
    Ok(exchange.answer(body, None, 0))
}

struct Meta<'a> {
    model: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: CandidateContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct CandidateContent<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    Call {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
    },
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
    prompt_tokens_details: [Modality; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Modality {
    modality: &'static str,
    token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A response (or one streamed chunk) carrying `part`, with the usage so
/// far: `candidates` visible tokens, plus the reasoning ones as thoughts.
fn chunk<'a>(meta: &Meta<'a>, reply: &Reply, part: Part<'a>, candidates: u64, last: bool) -> Chunk<'a> {
    let u = &reply.usage;
    let finish = match reply.finish {
        Finish::Length => "MAX_TOKENS",
        Finish::Stop | Finish::ToolCall => "STOP",
    };
    Chunk {
        candidates: [Candidate {
            content: CandidateContent { parts: [part], role: "model" },
            finish_reason: last.then_some(finish),
            index: 0,
        }],
        usage_metadata: UsageMetadata {
            prompt_token_count: u.input_tokens,
            candidates_token_count: candidates,
            total_token_count: u.input_tokens + candidates + u.reasoning_tokens,
            cached_content_token_count: u.cached_tokens,
            thoughts_token_count: u.reasoning_tokens,
            prompt_tokens_details: [Modality { modality: "TEXT", token_count: u.input_tokens }],
        },
        model_version: meta.model,
        response_id: meta.response_id,
    }
}

/// The whole reply as one part (`text` is the reply's text, if any).
fn whole_part<'a>(reply: &'a Reply, text: &'a str) -> Part<'a> {
    match &reply.content {
        Content::Text(_) => Part::Text { text },
        Content::Tool(call) => Part::Call { function_call: FunctionCall { name: &call.name, args: &call.arguments } },
    }
}

fn chunks(meta: &Meta<'_>, reply: &Reply, sse: bool) -> Vec<Frame> {
    let write = |chunk: &Chunk<'_>, first: bool, last: bool| {
        let mut buf = Vec::with_capacity(400);
        buf.extend_from_slice(match (sse, first) {
            (true, _) => b"data: ".as_slice(),
            (false, true) => b"[",
            (false, false) => b",\r\n",
        });
        // Writing plain structs of strings and numbers into a Vec cannot fail.
        serde_json::to_writer(&mut buf, chunk).expect("a chunk serializes");
        buf.extend_from_slice(match (sse, last) {
            (true, _) => b"\r\n\r\n".as_slice(),
            (false, true) => b"]",
            (false, false) => b"",
        });
        Bytes::from(buf)
    };
    let visible = reply.visible_tokens();
    match &reply.content {
        Content::Text(pieces) if !pieces.is_empty() => pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let last = i + 1 == pieces.len();
                let bytes = write(&chunk(meta, reply, Part::Text { text: piece }, i as u64 + 1, last), i == 0, last);
                Frame { bytes, tokens: 1, usage: last }
            })
            .collect(),
        _ => {
            let bytes = write(&chunk(meta, reply, whole_part(reply, ""), visible, true), true, true);
            vec![Frame { bytes, tokens: visible, usage: true }]
        }
    }
}

pub(crate) async fn models(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::Gemini, &call)?;
    let models: Vec<Value> = MODELS.iter().map(model_json).collect();
    Ok(exchange.answer(json!({ "models": models }), None, 0))
}

pub(crate) async fn model(State(shared): State<Arc<Shared>>, Path(name): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::Gemini, &call)?;
    match MODELS.iter().find(|m| m.0 == name) {
        Some(m) => Ok(exchange.answer(model_json(m), None, 0)),
        None => {
            let version = if call.uri.path().starts_with("/v1/") { "v1" } else { "v1beta" };
            Err(exchange.fail(StatusCode::NOT_FOUND, &format!("models/{name} is not found for API version {version}")))
        }
    }
}

fn model_json((id, name): &(&str, &str)) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"]
    })
}

/// Gemini's error shape: `{"error":{"code","message","status"}}`.
pub fn error_body(status: StatusCode, message: &str) -> Value {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    };
    let mut body = json!({ "error": { "code": status.as_u16(), "message": message, "status": name } });
    if status == StatusCode::UNAUTHORIZED {
        // The real API names a bad key this way (with a 400); clients match on it.
        body["error"]["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com"
        }]);
    }
    body
}
