//! OpenAI's wire format, also Groq's and any OpenAI-compatible API's:
//! chat completions (`max_completion_tokens` or `max_tokens`, `n` choices,
//! `stream_options.include_usage`, usage in the body or in a last stream
//! chunk whose `choices` is empty), legacy completions (the same, with a
//! `prompt`, `max_tokens` only, 16 when absent, and `text` in each
//! choice), embeddings (`input`, usage with `prompt_tokens` only) and
//! responses (`instructions` and `input` items, `max_output_tokens`, usage
//! as `input_tokens`/`output_tokens` in the response, streamed as typed
//! events ending with `response.completed`, which carries the whole
//! response with its usage).

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use crate::tokens::{self, Encoding};
use crate::{
    Adapter, Answer, Body, ErrorInfo, ErrorKind, Fields, Invalid, LimitStyle, Operation, Seen, StoredResponse, Usage,
    add_details, count_field, text_parts,
};

pub struct OpenAi;

/// Tokens every message costs besides its content, and the reply's
/// priming (OpenAI's published way of counting chat input).
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;
/// An image part, as a high-detail 512×512 tile and the base cost.
const PER_IMAGE: u64 = 255;

/// The output limit of a legacy completion that names none.
const COMPLETIONS_DEFAULT_OUTPUT: u64 = 16;

/// The smallest `max_output_tokens` the Responses API takes.
pub(crate) const RESPONSES_LEAST_OUTPUT: u64 = 16;

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

/// The Responses API's usage: the same counts under other names. (Kept
/// apart from chat's: some OpenAI-compatible APIs send both spellings in
/// one chat usage block.)
#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    output_tokens_details: Option<CompletionDetails>,
}

impl ResponsesUsage {
    fn usage(&self) -> Usage {
        usage(self.input_tokens, self.output_tokens, &self.input_tokens_details, &self.output_tokens_details)
    }
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        usage(self.prompt_tokens, self.completion_tokens, &self.prompt_tokens_details, &self.completion_tokens_details)
    }
}

/// Usage from its counts and details, under either API's names.
fn usage(input: u64, output: u64, prompt: &Option<PromptDetails>, completion: &Option<CompletionDetails>) -> Usage {
    Usage {
        input,
        output,
        cached: prompt.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
        reasoning: completion.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
    }
}

#[derive(Deserialize)]
struct Whole {
    usage: Option<WireUsage>,
}

/// The scalar `visit_*` methods of a lenient visitor: each value is
/// `$nothing`.
macro_rules! forward_to_nothing {
    ($nothing:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($nothing)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($nothing)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($nothing)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($nothing)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($nothing)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($nothing)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($nothing)
        }
    };
}

/// A Responses API response (whole, or in a stream's events).
#[derive(Deserialize)]
struct WholeResponse {
    #[serde(default)]
    id: Option<String>,
    /// Whether OpenAI keeps it (the default), to be fetched by its id.
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    output: ItemIds,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

/// The ids of a response's output items, read leniently: whatever else an
/// upstream puts there (an item without an id, a number for an id, no
/// list at all) is skipped, so that the usage beside it is never lost.
#[derive(Default)]
struct ItemIds(Vec<String>);

/// One output item's id, read as leniently.
#[derive(Default)]
struct ItemId(Option<String>);

impl<'de> Deserialize<'de> for ItemIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ItemIds, D::Error> {
        struct Ids;
        impl<'de> Visitor<'de> for Ids {
            type Value = ItemIds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of output items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ItemIds, A::Error> {
                let mut ids = Vec::new();
                while let Some(ItemId(id)) = seq.next_element()? {
                    ids.extend(id);
                }
                Ok(ItemIds(ids))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ItemIds, A::Error> {
                IgnoredAny.visit_map(map).map(|_| ItemIds::default())
            }
            forward_to_nothing!(ItemIds::default());
        }
        d.deserialize_any(Ids)
    }
}

impl<'de> Deserialize<'de> for ItemId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ItemId, D::Error> {
        struct Id;
        impl<'de> Visitor<'de> for Id {
            type Value = ItemId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an output item")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemId, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "id" {
                        // Small, or not an id: any value reads as one.
                        id = map.next_value::<Value>()?.as_str().map(str::to_owned);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ItemId(id))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ItemId, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| ItemId::default())
            }
            forward_to_nothing!(ItemId::default());
        }
        d.deserialize_any(Id)
    }
}

/// A list the API answers (`{"object": "list", "data": […]}`).
#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    data: ItemIds,
}

/// The ids of the items a list answers (a response's input items, a
/// conversation's items), read as leniently as a response's output, those
/// a URL can carry only.
pub(crate) fn listed_ids(body: &[u8]) -> Vec<String> {
    let listed = serde_json::from_slice::<Listed>(body).map(|listed| listed.data.0).unwrap_or_default();
    listed.into_iter().filter(|id| crate::is_stored_id(id)).collect()
}

/// The id of what a create answered (`{"id": …}`: a conversation), if a
/// URL can carry it.
pub(crate) fn created_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ItemId>(body).ok()?.0.filter(|id| crate::is_stored_id(id))
}

impl WholeResponse {
    /// The response as OpenAI stores it, if it does (and its id is one the
    /// gateway can name in a URL).
    fn stored(&self) -> Option<StoredResponse> {
        if self.store == Some(false) {
            return None;
        }
        let id = self.id.as_deref().filter(|id| crate::is_stored_id(id))?;
        let mut stored = StoredResponse { id: id.to_owned(), items: Vec::new() };
        self.add_items_to(&mut stored);
        Some(stored)
    }

    fn add_items_to(&self, stored: &mut StoredResponse) {
        for id in &self.output.0 {
            stored.add_item(id);
        }
    }
}

/// One event of a Responses API stream: its type, the text it adds, the
/// output item it begins or ends, or (the first and the last) the whole
/// response.
#[derive(Deserialize)]
struct ResponseEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    item: ItemId,
    #[serde(default)]
    response: Option<WholeResponse>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    /// A whole answer's `message` has the same fields.
    #[serde(default, borrow, alias = "message")]
    delta: Option<Delta<'a>>,
    /// A legacy completion's text.
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    /// `null` in some OpenAI-compatible answers.
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

/// The text a chunk (or a whole answer) carries: a legacy completion's
/// text, a message's content or refusal, its tool calls' names and
/// arguments.
fn push_texts(chunk: &Chunk<'_>, seen: &mut Seen) {
    for text in chunk.choices.iter().filter_map(|c| c.text.as_ref()) {
        seen.push_text(text);
    }
    for delta in chunk.choices.iter().filter_map(|c| c.delta.as_ref()) {
        for text in [&delta.content, &delta.refusal].into_iter().flatten() {
            seen.push_text(text);
        }
        for f in delta.tool_calls.iter().flatten().filter_map(|t| t.function.as_ref()) {
            for text in [&f.name, &f.arguments].into_iter().flatten() {
                seen.push_text(text);
            }
        }
    }
}

impl Adapter for OpenAi {
    fn read(&self, op: Operation, body: &Body) -> Result<Fields, Invalid> {
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(Invalid::new("model", "expected a model name")),
        };
        if op == Operation::Embeddings {
            return Ok(Fields { model, choices: 1, ..Fields::default() });
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Invalid::new("stream", "expected true or false")),
        };
        if op == Operation::Responses {
            // Answered later: its usage is known only when it is fetched,
            // which the gateway does not proxy.
            if body.get("background").and_then(Value::as_bool) == Some(true) {
                return Err(Invalid::new(
                    "background",
                    "Tollgate does not take background responses: their usage is known only when the response \
                     is fetched later, which the gateway does not meter; send the request without it",
                ));
            }
            let max_output = count_field(body, "max_output_tokens")?;
            let continues = match body.get("previous_response_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => return Err(Invalid::new("previous_response_id", "expected a response id")),
            };
            let references = references(body.get("input"), "input")?;
            let conversation = match body.get("conversation") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(Value::Object(c)) if c.get("id").is_some_and(Value::is_string) => {
                    c.get("id").and_then(Value::as_str).map(str::to_owned)
                }
                Some(_) => return Err(Invalid::new("conversation", "expected a conversation id, or {\"id\": …}")),
            };
            return Ok(Fields {
                model,
                stream,
                max_output,
                choices: 1,
                continues,
                references,
                conversation,
                ..Fields::default()
            });
        }
        let include_usage = stream
            && body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
        let completion = count_field(body, "max_completion_tokens")?;
        let max_tokens = count_field(body, "max_tokens")?;
        let mut max_output = match (completion, max_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut choices = count_field(body, "n")?.unwrap_or(1).max(1);
        if op == Operation::Completions {
            max_output = Some(max_tokens.unwrap_or(COMPLETIONS_DEFAULT_OUTPUT));
            // `best_of` candidates are generated (and billed) on the server.
            choices = choices.max(count_field(body, "best_of")?.unwrap_or(1));
        }
        Ok(Fields { model, stream, include_usage, max_output, choices, ..Fields::default() })
    }

    fn input_tokens(&self, op: Operation, body: &Body, encoding: Encoding) -> u64 {
        let count = |text: &str| tokens::count(encoding, text);
        // A text, texts, token ids, or lists of token ids.
        let texts = |value: Option<&Value>| match value {
            Some(Value::String(s)) => count(s),
            Some(Value::Array(items)) if items.iter().all(Value::is_u64) => items.len() as u64,
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => count(s),
                    Value::Array(ts) => ts.len() as u64,
                    _ => 0,
                })
                .sum(),
            _ => 0,
        };
        match op {
            Operation::Embeddings => return texts(body.get("input")),
            Operation::Completions => return texts(body.get("prompt")) + texts(body.get("suffix")),
            _ => {}
        }
        let mut total = REPLY_PRIMING;
        let mut item = |item: &Value| {
            total += PER_MESSAGE;
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                total += PER_NAME + count(name);
            }
            if let Some(role) = item.get("role").and_then(Value::as_str) {
                total += count(role);
            }
            // A message's content; a Responses function call's output, a
            // reasoning item's summary.
            for content in [item.get("content"), item.get("output"), item.get("summary")].into_iter().flatten() {
                text_parts(content, |text| total += count(text));
                if let Value::Array(parts) = content {
                    let images = parts
                        .iter()
                        .filter(|p| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "input_image")))
                        .count();
                    total += PER_IMAGE * images as u64;
                }
            }
            // Chat's tool calls; a Responses function call is an item of
            // its own, its name counted above.
            let calls = item.get("tool_calls").and_then(Value::as_array).into_iter().flatten();
            for f in calls.filter_map(|call| call.get("function")) {
                for field in ["name", "arguments"] {
                    total += f.get(field).and_then(Value::as_str).map_or(0, count);
                }
            }
            // A Responses function call's arguments, a custom tool call's input.
            for field in ["arguments", "input"] {
                total += item.get(field).and_then(Value::as_str).map_or(0, count);
            }
        };
        // A Responses text is a message of its own, counted as `item` counts one.
        let mut plain = 0;
        if op == Operation::Responses {
            for (field, role) in [("instructions", "developer"), ("input", "user")] {
                match body.get(field) {
                    Some(Value::String(text)) => plain += PER_MESSAGE + count(role) + count(text),
                    Some(Value::Array(items)) => items.iter().for_each(&mut item),
                    _ => {}
                }
            }
        } else {
            body.get("messages").and_then(Value::as_array).into_iter().flatten().for_each(item);
        }
        total += plain;
        if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
            total += count(&tools.to_string());
        }
        total
    }

    fn set_model(&self, body: &mut Body, model: &str) {
        body.insert("model".into(), Value::String(model.to_owned()));
    }

    fn set_max_output(&self, op: Operation, body: &mut Body, max: u64, style: LimitStyle) {
        // The Responses API and legacy completions have one field each.
        let only = match op {
            Operation::Responses => Some("max_output_tokens"),
            Operation::Completions => Some("max_tokens"),
            _ => None,
        };
        if let Some(field) = only {
            body.insert(field.into(), json!(max));
            return;
        }
        let mut set = false;
        for field in ["max_completion_tokens", "max_tokens"] {
            if body.get(field).is_some_and(|v| !v.is_null()) {
                body.insert(field.into(), json!(max));
                set = true;
            }
        }
        if !set {
            let field = match style {
                LimitStyle::MaxCompletionTokens => "max_completion_tokens",
                LimitStyle::MaxTokens => "max_tokens",
            };
            body.insert(field.into(), json!(max));
        }
    }

    fn answer(&self, op: Operation, body: &[u8]) -> Answer {
        if op == Operation::Responses {
            let Ok(whole) = serde_json::from_slice::<WholeResponse>(body) else { return Answer::default() };
            let usage = whole.usage.as_ref().map(ResponsesUsage::usage);
            return Answer { usage, stored: whole.stored(), unreported: None };
        }
        let usage = serde_json::from_slice::<Whole>(body).ok().and_then(|w| w.usage).map(|u| u.usage());
        // An OpenAI-compatible provider may report none: its output text is
        // read then, as a stream's would be, for an estimate.
        let unreported = match usage {
            None => serde_json::from_slice::<Chunk<'_>>(body).ok().map(|whole| {
                let mut seen = Seen::default();
                push_texts(&whole, &mut seen);
                seen
            }),
            Some(_) => None,
        };
        Answer { usage, stored: None, unreported }
    }

    fn event(&self, op: Operation, data: &[u8], seen: &mut Seen, strip_usage: bool) -> bool {
        if op == Operation::Responses {
            response_event(data, seen);
            return true;
        }
        if data == b"[DONE]" {
            seen.finished = true;
            seen.ended = true;
            return true;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else { return true };
        push_texts(&chunk, seen);
        match chunk.usage {
            Some(usage) => {
                seen.usage = Some(usage.usage());
                // The chunk the gateway asked for: it has no choices.
                !(strip_usage && chunk.choices.is_empty())
            }
            None => true,
        }
    }

    fn error_body(&self, error: &ErrorInfo<'_>) -> Value {
        let (kind, code) = match error.kind {
            ErrorKind::InvalidRequest => ("invalid_request_error", None),
            ErrorKind::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            ErrorKind::Forbidden => ("permission_denied", Some("model_not_allowed")),
            ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
            ErrorKind::QuotaExceeded => ("insufficient_quota", Some("insufficient_quota")),
            // OpenAI names the limit that bound: requests or tokens per minute.
            ErrorKind::RateLimited
                if error.details.get("meter").and_then(Value::as_str) == Some("tokens_per_minute") =>
            {
                ("tokens", Some("rate_limit_exceeded"))
            }
            ErrorKind::RateLimited => ("requests", Some("rate_limit_exceeded")),
            ErrorKind::NoCredential => ("invalid_request_error", Some("no_credential")),
            ErrorKind::Upstream => ("server_error", Some("upstream_error")),
            ErrorKind::UpstreamTimeout => ("server_error", Some("upstream_timeout")),
            ErrorKind::Internal => ("server_error", None),
        };
        let mut object = Map::new();
        object.insert("message".into(), json!(error.message));
        object.insert("type".into(), json!(kind));
        object.insert("param".into(), json!(error.field));
        object.insert("code".into(), json!(code));
        add_details(&mut object, &error.details);
        json!({ "error": object })
    }
}

/// The ids of the stored items a Responses input names rather than gives:
/// `{"type": "item_reference", "id"}` (the type may be left out, as long as
/// the item is no message), a reasoning item without its
/// `encrypted_content`, which OpenAI looks up by its id, and the approval
/// request an `mcp_approval_response` answers.
pub(crate) fn references(input: Option<&Value>, field: &str) -> Result<Vec<String>, Invalid> {
    let Some(Value::Array(items)) = input else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    for item in items.iter().filter_map(Value::as_object) {
        let absent = |field: &str| item.get(field).is_none_or(Value::is_null);
        let by_id = match item.get("type").and_then(Value::as_str) {
            Some("item_reference") => true,
            Some("reasoning") => item.get("encrypted_content").is_none_or(|c| c.is_null() || c == "") && !absent("id"),
            // It answers an approval request, an output item, by its id.
            Some("mcp_approval_response") => {
                match item.get("approval_request_id") {
                    Some(Value::String(id)) => ids.push(id.clone()),
                    Some(_) => {
                        return Err(Invalid::new(field, "an approval response's approval_request_id must be a string"));
                    }
                    None => {}
                }
                false
            }
            None => absent("type") && absent("role") && !absent("id"),
            Some(_) => false,
        };
        if by_id {
            match item.get("id") {
                Some(Value::String(id)) => ids.push(id.clone()),
                _ => return Err(Invalid::new(field, "an item named by reference needs its id, a string")),
            }
        }
    }
    if ids.len() > MAX_REFERENCES {
        let message = format!("names {} stored items by id; Tollgate takes at most {MAX_REFERENCES}", ids.len());
        return Err(Invalid::new(field, message));
    }
    Ok(ids)
}

/// The most stored items one input may name by id: each is looked up
/// before the call (a long conversation on the Vercel AI SDK names one or
/// two per earlier turn).
const MAX_REFERENCES: usize = 4096;

/// Reads one event of a Responses API stream: the id of the response it
/// carries (the first, `response.created`, does) and of the output items it
/// begins (`response.output_item.added`), the text it adds, and the
/// usage of the last (`response.completed`; `response.incomplete` or
/// `response.failed` when the response did not complete), after which
/// nothing follows.
fn response_event(data: &[u8], seen: &mut Seen) {
    let Ok(event) = serde_json::from_slice::<ResponseEvent<'_>>(data) else { return };
    if seen.stored.is_none()
        && let Some(response) = &event.response
    {
        seen.stored = response.stored();
    }
    if let Some(stored) = &mut seen.stored {
        if let Some(id) = &event.item.0 {
            stored.add_item(id);
        }
        if let Some(response) = &event.response {
            response.add_items_to(stored);
        }
    }
    match event.kind.as_ref() {
        "response.output_text.delta" | "response.refusal.delta" | "response.function_call_arguments.delta" => {
            if let Some(delta) = &event.delta {
                seen.push_text(delta);
            }
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            if let Some(usage) = event.response.and_then(|r| r.usage) {
                seen.usage = Some(usage.usage());
            }
            seen.finished = true;
            seen.ended = true;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::Request;

    fn read(body: Value) -> Result<Fields, Invalid> {
        OpenAi.read(Operation::ChatCompletions, body.as_object().unwrap())
    }

    #[test]
    fn reads_the_model_stream_flag_output_limit_and_choices() {
        let f = read(json!({"model": "gpt-4o", "stream": true, "max_tokens": 50, "n": 2})).unwrap();
        assert_eq!(
            f,
            Fields { model: Some("gpt-4o".into()), stream: true, max_output: Some(50), choices: 2, ..f.clone() }
        );
        assert!(!f.include_usage);
        let f = read(json!({"model": "o3", "max_completion_tokens": 30, "max_tokens": 90})).unwrap();
        assert_eq!(f.max_output, Some(30));
        let f = read(json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}})).unwrap();
        assert!(f.include_usage);
        assert_eq!(read(json!({"model": 5})).unwrap_err().field, "model");
        assert_eq!(read(json!({"max_tokens": -1})).unwrap_err().field, "max_tokens");
        assert_eq!(read(json!({"stream": "yes"})).unwrap_err().field, "stream");
    }

    #[test]
    fn input_is_counted_per_message_as_openai_does() {
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "hello world"}]}
        ]});
        let n = OpenAi.input_tokens(Operation::ChatCompletions, body.as_object().unwrap(), Encoding::O200kBase);
        // 3 priming + 2 × (3 + role) + "You are terse." (4) + "hello world" (2)
        assert_eq!(n, 3 + 2 * 3 + 2 + 4 + 2);
        let embed = json!({"model": "text-embedding-3-small", "input": ["hello world", "hi"]});
        assert_eq!(OpenAi.input_tokens(Operation::Embeddings, embed.as_object().unwrap(), Encoding::Cl100kBase), 3);
        let ids = json!({"model": "text-embedding-3-small", "input": [1, 2, 3]});
        assert_eq!(OpenAi.input_tokens(Operation::Embeddings, ids.as_object().unwrap(), Encoding::Cl100kBase), 3);
    }

    #[test]
    fn the_output_limit_is_lowered_in_the_field_the_client_used() {
        let check = |body: Value, style: LimitStyle, expected: Value| {
            let mut r = Request::parse(Operation::ChatCompletions, Bytes::from(body.to_string()), None).unwrap();
            r.limit_output(10, style);
            let sent: Value = serde_json::from_slice(&r.into_body()).unwrap();
            for (k, v) in expected.as_object().unwrap() {
                assert_eq!(&sent[k], v, "{k} in {sent}");
            }
        };
        check(
            json!({"max_tokens": 500}),
            LimitStyle::MaxCompletionTokens,
            json!({"max_tokens": 10, "max_completion_tokens": null}),
        );
        check(
            json!({"max_completion_tokens": 500}),
            LimitStyle::MaxTokens,
            json!({"max_completion_tokens": 10, "max_tokens": null}),
        );
        check(json!({}), LimitStyle::MaxCompletionTokens, json!({"max_completion_tokens": 10}));
        check(json!({}), LimitStyle::MaxTokens, json!({"max_tokens": 10}));
    }

    #[test]
    fn usage_is_read_with_cached_and_reasoning_tokens() {
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,
            "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}"#;
        let u = OpenAi.answer(Operation::ChatCompletions, body).usage.unwrap();
        assert_eq!(u, Usage { input: 20, output: 9, cached: 4, reasoning: 3 });
        // Some OpenAI-compatible APIs add the Responses API's names beside chat's.
        let both =
            br#"{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9,"input_tokens":20,"output_tokens":9,
            "prompt_tokens_details":{"cached_tokens":4},"input_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(OpenAi.answer(Operation::ChatCompletions, both).usage, Some(Usage { cached: 4, reasoning: 0, ..u }));
        let embed = br#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        assert_eq!(OpenAi.answer(Operation::Embeddings, embed).usage.unwrap(), Usage { input: 5, ..Usage::default() });
        assert_eq!(OpenAi.answer(Operation::ChatCompletions, b"{}").usage, None);
        assert_eq!(OpenAi.answer(Operation::ChatCompletions, body).unreported, None, "reported: nothing to estimate");
    }

    #[test]
    fn a_whole_answer_without_usage_shows_its_output_for_an_estimate() {
        let chat = br#"{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}},
            {"index": 1, "message": {"content": null, "refusal": "no", "tool_calls": null}}]}"#;
        let answer = OpenAi.answer(Operation::ChatCompletions, chat);
        assert_eq!(answer.usage, None);
        assert_eq!(answer.unreported.map(|seen| seen.text).as_deref(), Some("Hi theref{\"a\":1}no"));
        let legacy = br#"{"choices": [{"text": "one two", "index": 0}]}"#;
        let seen = OpenAi.answer(Operation::Completions, legacy).unreported.unwrap();
        assert_eq!(seen.output_estimate(Encoding::O200kBase), 2);
        assert_eq!(OpenAi.answer(Operation::ChatCompletions, b"not json").unreported, None);
    }

    #[test]
    fn a_stream_shows_its_text_and_usage_and_loses_the_usage_chunk_the_client_did_not_ask_for() {
        let mut seen = Seen::default();
        assert!(OpenAi.event(
            Operation::ChatCompletions,
            br#"{"choices":[{"delta":{"content":"Hi"}}],"usage":null}"#,
            &mut seen,
            true
        ));
        let tool = br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#;
        assert!(OpenAi.event(Operation::ChatCompletions, tool, &mut seen, true));
        let usage = br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#;
        assert!(!OpenAi.event(Operation::ChatCompletions, usage, &mut seen, true), "the usage chunk is removed");
        assert!(
            OpenAi.event(Operation::ChatCompletions, usage, &mut Seen::default(), false),
            "and kept when the client asked"
        );
        assert!(OpenAi.event(Operation::ChatCompletions, b"[DONE]", &mut seen, true));
        assert_eq!(seen.text, "Hi{\"a\"");
        assert_eq!(seen.usage, Some(Usage { input: 7, output: 2, ..Usage::default() }));
        assert!(seen.finished && seen.ended);
    }

    #[test]
    fn a_responses_request_is_read_counted_and_limited_in_max_output_tokens() {
        let body = json!({"model": "gpt-4o", "stream": true, "max_output_tokens": 500, "instructions": "You are terse.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello world"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "hi"}
        ]});
        let f = OpenAi.read(Operation::Responses, body.as_object().unwrap()).unwrap();
        assert_eq!(
            f,
            Fields { model: Some("gpt-4o".into()), stream: true, max_output: Some(500), choices: 1, ..f.clone() }
        );
        assert_eq!(f.continues, None);
        let next = json!({"model": "gpt-4o", "input": "and then?", "previous_response_id": "resp_1"});
        let f = OpenAi.read(Operation::Responses, next.as_object().unwrap()).unwrap();
        assert_eq!(f.continues.as_deref(), Some("resp_1"), "the stored response it goes on from");
        let bad = json!({"model": "gpt-4o", "input": "x", "previous_response_id": 7});
        assert_eq!(
            OpenAi.read(Operation::Responses, bad.as_object().unwrap()).unwrap_err().field,
            "previous_response_id"
        );
        let n = OpenAi.input_tokens(Operation::Responses, body.as_object().unwrap(), Encoding::O200kBase);
        // 3 priming + 4 items × 3 + "developer" (1) + "You are terse." (4)
        // + "user" (1) + "hello world" (2) + name "f" (1 + 1) + "{}" (1) + "hi" (1)
        assert_eq!(n, 3 + 4 * 3 + 1 + 4 + 1 + 2 + 2 + 1 + 1);
        let text = json!({"model": "gpt-4o", "input": "hello world"});
        let n = OpenAi.input_tokens(Operation::Responses, text.as_object().unwrap(), Encoding::O200kBase);
        assert_eq!(n, 3 + 3 + 1 + 2, "a string input is one user message");
        let bad = json!({"model": "gpt-4o", "input": "x", "max_output_tokens": "lots"});
        assert_eq!(OpenAi.read(Operation::Responses, bad.as_object().unwrap()).unwrap_err().field, "max_output_tokens");

        let streamed = json!({"model": "gpt-4o", "input": "hello world", "stream": true});
        let mut r = Request::parse(Operation::Responses, Bytes::from(streamed.to_string()), None).unwrap();
        assert_eq!(r.least_output(), RESPONSES_LEAST_OUTPUT);
        r.ask_for_stream_usage();
        r.limit_output(20, LimitStyle::MaxCompletionTokens);
        let sent: Value = serde_json::from_slice(&r.into_body()).unwrap();
        assert_eq!(sent["max_output_tokens"], 20);
        assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
        assert!(sent.get("stream_options").is_none(), "the Responses API always reports usage: {sent}");

        let background = json!({"model": "gpt-4o", "input": "x", "background": true});
        assert_eq!(OpenAi.read(Operation::Responses, background.as_object().unwrap()).unwrap_err().field, "background");
        let reasoning = json!({"model": "o3", "instructions": [{"role": "system", "content": "Think."}], "input": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hello world"}]},
            {"type": "custom_tool_call", "call_id": "c2", "name": "f", "input": "hi"}]});
        let n = OpenAi.input_tokens(Operation::Responses, reasoning.as_object().unwrap(), Encoding::O200kBase);
        // 3 priming + 3 items × 3 + "system" (1) + "Think." (2) + "hello world" (2) + name "f" (1 + 1) + "hi" (1)
        assert_eq!(n, 3 + 3 * 3 + 1 + 2 + 2 + 2 + 1);
    }

    #[test]
    fn a_responses_usage_is_read_whole_and_from_the_streams_last_event() {
        let usage = r#"{"input_tokens":20,"input_tokens_details":{"cached_tokens":4},"output_tokens":9,
            "output_tokens_details":{"reasoning_tokens":3},"total_tokens":29}"#;
        let whole = format!(r#"{{"id":"resp_1","object":"response","output":[],"usage":{usage}}}"#);
        let expected = Usage { input: 20, output: 9, cached: 4, reasoning: 3 };
        assert_eq!(OpenAi.answer(Operation::Responses, whole.as_bytes()).usage, Some(expected));

        let mut seen = Seen::default();
        let events = [
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","usage":null}}"#.to_owned(),
            r#"{"type":"response.output_text.delta","sequence_number":1,"delta":"Hi "}"#.to_owned(),
            r#"{"type":"response.function_call_arguments.delta","sequence_number":2,"delta":"{\"a\""}"#.to_owned(),
            r#"{"type":"response.output_text.done","sequence_number":3,"text":"Hi "}"#.to_owned(),
        ];
        for event in &events {
            assert!(OpenAi.event(Operation::Responses, event.as_bytes(), &mut seen, false));
        }
        assert_eq!(seen.text, "Hi {\"a\"");
        assert!(seen.usage.is_none() && !seen.ended);
        let completed = format!(r#"{{"type":"response.completed","sequence_number":4,"response":{whole}}}"#);
        assert!(OpenAi.event(Operation::Responses, completed.as_bytes(), &mut seen, false));
        assert_eq!(seen.usage, Some(expected));
        assert!(seen.finished && seen.ended, "response.completed is the stream's last word");
        assert_eq!(seen.stored.map(|s| s.id).as_deref(), Some("resp_1"), "named by response.created");
    }

    #[test]
    fn a_stored_responses_id_is_read_whole_and_from_the_stream_unless_store_is_false() {
        let stored = |op: Operation, body: &str| OpenAi.answer(op, body.as_bytes()).stored.map(|s| s.id);
        assert_eq!(stored(Operation::Responses, r#"{"id":"resp_9","store":true}"#).as_deref(), Some("resp_9"));
        assert_eq!(stored(Operation::Responses, r#"{"id":"resp_9"}"#).as_deref(), Some("resp_9"), "stored by default");
        assert_eq!(stored(Operation::Responses, r#"{"id":"resp_9","store":false}"#), None);
        assert_eq!(stored(Operation::Responses, r#"{"id":""}"#), None);
        assert_eq!(stored(Operation::Responses, r#"{"id":"resp/../x"}"#), None, "not an id a URL can carry as it is");
        assert_eq!(stored(Operation::ChatCompletions, r#"{"id":"chatcmpl-1"}"#), None, "chat keeps nothing to fetch");

        let mut seen = Seen::default();
        let created = r#"{"type":"response.created","response":{"id":"resp_8","store":false}}"#;
        OpenAi.event(Operation::Responses, created.as_bytes(), &mut seen, false);
        let added = r#"{"type":"response.output_item.added","item":{"id":"msg_8","type":"message"}}"#;
        OpenAi.event(Operation::Responses, added.as_bytes(), &mut seen, false);
        assert_eq!(seen.stored, None);
    }

    #[test]
    fn a_stored_responses_output_items_are_read_whole_and_as_the_stream_begins_them() {
        let whole = r#"{"id":"resp_9","output":[{"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"message","id":"msg_2","content":[{"type":"output_text","text":"hi"}]},{"type":"message"},
            {"type":"function_call","id":"fc/3"}],"usage":{"input_tokens":3,"output_tokens":2}}"#;
        let answer = OpenAi.answer(Operation::Responses, whole.as_bytes());
        let expected = StoredResponse { id: "resp_9".into(), items: vec!["rs_1".into(), "msg_2".into()] };
        assert_eq!(answer.stored, Some(expected.clone()), "only ids a URL can carry");
        assert_eq!(answer.usage.map(|u| (u.input, u.output)), Some((3, 2)));

        let mut seen = Seen::default();
        for event in [
            r#"{"type":"response.created","response":{"id":"resp_9","output":[]}}"#.to_owned(),
            r#"{"type":"response.output_item.added","output_index":0,"item":{"type":"reasoning","id":"rs_1"}}"#
                .to_owned(),
            r#"{"type":"response.output_item.done","output_index":0,"item":{"type":"reasoning","id":"rs_1"}}"#
                .to_owned(),
            r#"{"type":"response.output_item.added","output_index":1,"item":{"type":"message","id":"msg_2"}}"#
                .to_owned(),
        ] {
            OpenAi.event(Operation::Responses, event.as_bytes(), &mut seen, false);
        }
        assert_eq!(seen.stored, Some(expected.clone()), "each item once, as the stream begins it");
        // A stream cut here keeps what it named; the last event names them all again.
        let completed = format!(r#"{{"type":"response.completed","response":{whole}}}"#);
        OpenAi.event(Operation::Responses, completed.as_bytes(), &mut seen, false);
        assert_eq!(seen.stored, Some(expected));
    }

    #[test]
    fn an_upstreams_odd_output_items_never_cost_the_usage_beside_them() {
        let usage = r#""usage":{"input_tokens":3,"output_tokens":2}"#;
        for (output, items) in [
            (r#"{"x":1}"#, vec![]),
            ("null", vec![]),
            ("\"text\"", vec![]),
            (
                r#"[1,"a",null,[{"id":"in_a_list"}],{"id":5},{"id":{"id":"deep"}},{"id":"msg_ok","content":[{"id":"part"}]}]"#,
                vec!["msg_ok"],
            ),
        ] {
            let whole = format!(r#"{{"id":"resp_1","output":{output},{usage}}}"#);
            let answer = OpenAi.answer(Operation::Responses, whole.as_bytes());
            assert_eq!(answer.usage.map(|u| (u.input, u.output)), Some((3, 2)), "{whole}");
            assert_eq!(answer.stored.unwrap().items, items, "{whole}");
        }
        let mut seen = Seen::default();
        for event in [
            r#"{"type":"response.created","response":{"id":"resp_1","output":7}}"#,
            r#"{"type":"response.output_item.added","item":"odd"}"#,
            r#"{"type":"response.output_item.added","item":{"id":7}}"#,
            r#"{"type":"response.output_text.delta","delta":"hi"}"#,
        ] {
            OpenAi.event(Operation::Responses, event.as_bytes(), &mut seen, false);
        }
        let completed =
            format!(r#"{{"type":"response.completed","response":{{"id":"resp_1","output":[{{}}],{usage}}}}}"#);
        OpenAi.event(Operation::Responses, completed.as_bytes(), &mut seen, false);
        assert!(seen.ended && seen.usage.is_some(), "the last event was read");
        assert_eq!((seen.text.as_str(), seen.stored.unwrap().items.len()), ("hi", 0));
    }

    #[test]
    fn the_ids_a_list_or_a_create_answers_are_read_as_leniently() {
        let list = br#"{"object":"list","data":[{"id":"msg_1","content":[{"id":"part"}]},{"id":7},{},{"id":"a/b"},
            {"id":"fc_2"}],"has_more":false}"#;
        assert_eq!(listed_ids(list), ["msg_1", "fc_2"]);
        assert!(listed_ids(b"{\"data\":null}").is_empty() && listed_ids(b"not json").is_empty());
        assert_eq!(
            created_id(br#"{"id":"conv_1","object":"conversation","metadata":{"id":"x"}}"#).as_deref(),
            Some("conv_1")
        );
        assert_eq!((created_id(br#"{"id":"conv 1"}"#), created_id(b"[]"), created_id(b"{}")), (None, None, None));
    }

    #[test]
    fn stored_items_named_by_id_and_conversations_are_read_from_a_responses_input() {
        let read = |body: Value| OpenAi.read(Operation::Responses, body.as_object().unwrap());
        let f = read(json!({"model": "o3", "conversation": "conv_1", "input": [
            {"type": "item_reference", "id": "msg_1"},
            {"id": "fc_2"},
            {"type": "reasoning", "id": "rs_3", "summary": []},
            {"type": "reasoning", "id": "rs_4", "summary": [], "encrypted_content": "gAAA"},
            {"type": "reasoning", "id": "rs_8", "summary": [], "encrypted_content": ""},
            {"type": "mcp_approval_response", "approval_request_id": "mcpr_9", "approve": true},
            {"role": "assistant", "id": "msg_5", "content": "given whole"},
            {"type": "message", "id": "msg_6", "role": "user", "content": "given whole"},
            {"type": "function_call_output", "id": "fco_7", "call_id": "c", "output": "x"},
        ]}))
        .unwrap();
        assert_eq!(f.references, ["msg_1", "fc_2", "rs_3", "rs_8", "mcpr_9"], "what OpenAI must look up by id");
        assert_eq!(f.conversation.as_deref(), Some("conv_1"));
        let f = read(json!({"model": "o3", "input": "hi", "conversation": {"id": "conv_2"}})).unwrap();
        assert_eq!(f.conversation.as_deref(), Some("conv_2"));
        let f = read(json!({"model": "o3", "input": "hi", "conversation": null})).unwrap();
        assert!(f.references.is_empty() && f.conversation.is_none());
        assert_eq!(read(json!({"model": "o3", "input": "hi", "conversation": 7})).unwrap_err().field, "conversation");
        assert_eq!(read(json!({"model": "o3", "conversation": {"name": "x"}})).unwrap_err().field, "conversation");
        let bad = read(json!({"model": "o3", "input": [{"type": "item_reference", "id": 7}]})).unwrap_err();
        assert_eq!(bad.field, "input");
        let bad = read(json!({"model": "o3", "input": [{"type": "item_reference"}]})).unwrap_err();
        assert_eq!(bad.field, "input");
        let many: Vec<Value> = (0..=MAX_REFERENCES).map(|n| json!({"id": format!("msg_{n}")})).collect();
        let bad = read(json!({"model": "o3", "input": many})).unwrap_err();
        assert!(bad.field == "input" && bad.message.contains("at most 4096"), "{bad}");
    }

    #[test]
    fn a_legacy_completion_is_read_counted_and_streamed_as_chat_with_text_choices() {
        let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["hello world", "hi"], "suffix": "end",
            "n": 2, "best_of": 3, "stream": true});
        let f = OpenAi.read(Operation::Completions, body.as_object().unwrap()).unwrap();
        assert_eq!((f.max_output, f.choices, f.stream, f.include_usage), (Some(16), 3, true, false), "16 when absent");
        let n = OpenAi.input_tokens(Operation::Completions, body.as_object().unwrap(), Encoding::Cl100kBase);
        assert_eq!(n, 2 + 1 + 1, "each prompt and the suffix, nothing per message");
        let ids = json!({"model": "m", "prompt": [[1, 2, 3], [4]]});
        assert_eq!(OpenAi.input_tokens(Operation::Completions, ids.as_object().unwrap(), Encoding::Cl100kBase), 4);

        let mut r = Request::parse(Operation::Completions, Bytes::from(body.to_string()), None).unwrap();
        r.ask_for_stream_usage();
        r.limit_output(10, LimitStyle::MaxCompletionTokens);
        let sent: Value = serde_json::from_slice(&r.into_body()).unwrap();
        assert_eq!((&sent["max_tokens"], &sent["stream_options"]["include_usage"]), (&json!(10), &json!(true)));
        assert!(sent.get("max_completion_tokens").is_none(), "legacy completions know max_tokens only: {sent}");

        let mut seen = Seen::default();
        let piece = br#"{"object":"text_completion","choices":[{"text":"Hi there","index":0,"finish_reason":null}]}"#;
        assert!(OpenAi.event(Operation::Completions, piece, &mut seen, true));
        let usage = br#"{"object":"text_completion","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}"#;
        assert!(!OpenAi.event(Operation::Completions, usage, &mut seen, true), "the usage chunk the gateway asked for");
        assert!(OpenAi.event(Operation::Completions, b"[DONE]", &mut seen, true));
        assert_eq!(seen.text, "Hi there");
        assert_eq!(seen.usage, Some(Usage { input: 4, output: 2, ..Usage::default() }));
        assert!(seen.finished && seen.ended);
    }

    #[test]
    fn errors_have_openais_shape_with_details() {
        let mut details = Map::new();
        details.insert("meter".into(), json!("tokens"));
        let info = ErrorInfo { status: 429, kind: ErrorKind::QuotaExceeded, message: "over", field: None, details };
        let body = OpenAi.error_body(&info);
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert_eq!(body["error"]["code"], "insufficient_quota");
        assert_eq!(body["error"]["message"], "over");
        assert_eq!(body["error"]["meter"], "tokens");
    }
}
