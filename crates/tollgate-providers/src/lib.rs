//! Provider adapters, with no IO: everything the gateway needs to know about
//! a provider's wire JSON, and nothing else.
//!
//! * [`Request`]: a client's request body as the gateway reads it (the
//!   model, whether it streams, the output limit it asks for, the text whose
//!   tokens are counted before the call) and the few changes the gateway
//!   makes to it (the upstream model name, a lowered output limit, asking
//!   OpenAI-format upstreams for stream usage). A body the gateway does not
//!   change is forwarded byte for byte; one that names a key twice in an
//!   object is refused (`strict`), so that both read the same request.
//! * [`answer_of`]: the provider's own usage block of a whole response,
//!   and the response as the provider keeps it, if it does
//!   ([`StoredResponse`]: its id and its output items' ids).
//! * [`StreamTap`]: watches a streamed response as it passes, for its usage
//!   (OpenAI's last chunk, Anthropic's `message_start` + `message_delta`,
//!   Gemini's last cumulative `usageMetadata`) and its text (to estimate a
//!   cut stream), and removes the usage chunk a client did not ask for.
//! * [`error_body`]: an error in the provider's own shape, so that SDKs
//!   raise their usual exceptions for Tollgate's refusals too.
//! * [`tokens`]: tiktoken counts of input text.
//!
//! One module per wire format (`openai`, which also serves Groq and any
//! OpenAI-compatible API; `anthropic`; `gemini`), each implementing
//! [`Adapter`]; [`Api`] dispatches. Wire structs stay private to their
//! module. This crate knows nothing of HTTP clients, the store or quotas.

mod anthropic;
mod framing;
mod gemini;
mod openai;
mod strict;
pub mod tokens;

use bytes::Bytes;
use serde_json::{Map, Value};

pub use framing::StreamTap;
pub use tokens::Encoding;

/// The wire formats the gateway speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI's, also Groq's and every OpenAI-compatible API's.
    OpenAi,
    Anthropic,
    Gemini,
}

/// What a proxy route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/completions`: legacy text completion, which vLLM,
    /// llama.cpp and other OpenAI-compatible servers still serve.
    Completions,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Gemini `POST /v1beta/models/{model}:generateContent`.
    GenerateContent,
    /// Gemini `POST /v1beta/models/{model}:streamGenerateContent`.
    StreamGenerateContent,
}

impl Operation {
    /// Whether a stream reports its usage only when asked
    /// (`stream_options.include_usage`), as OpenAI's chat and legacy
    /// completions do.
    fn reports_stream_usage_when_asked(self) -> bool {
        matches!(self, Operation::ChatCompletions | Operation::Completions)
    }

    pub fn api(self) -> Api {
        match self {
            Operation::ChatCompletions | Operation::Completions | Operation::Embeddings | Operation::Responses => {
                Api::OpenAi
            }
            Operation::Messages => Api::Anthropic,
            Operation::GenerateContent | Operation::StreamGenerateContent => Api::Gemini,
        }
    }
}

/// Token counts of one call, the same way for every provider: `input`
/// includes the cached tokens, `output` the reasoning ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub reasoning: u64,
}

/// A request body the gateway cannot read; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    fn new(field: &str, message: impl Into<String>) -> Invalid {
        Invalid { field: field.to_owned(), message: format!("{field}: {}", message.into()) }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A request body: a JSON object.
type Body = Map<String, Value>;

/// What each wire format's module knows. Implemented once per module; the
/// gateway reaches them through [`Api`].
trait Adapter {
    /// The fields the gateway reads, from a body known to be a JSON object.
    fn read(&self, op: Operation, body: &Body) -> Result<Fields, Invalid>;

    /// Input tokens of the body as `encoding` counts them, with the format's
    /// per-message overhead.
    fn input_tokens(&self, op: Operation, body: &Body, encoding: Encoding) -> u64;

    /// Names the upstream model in the body (Gemini names it in the path).
    fn set_model(&self, body: &mut Body, model: &str);

    /// Sets the output limit to `max` tokens (per choice).
    fn set_max_output(&self, op: Operation, body: &mut Body, max: u64, style: LimitStyle);

    /// What the gateway reads from a whole (not streamed) response, in one
    /// pass over it.
    fn answer(&self, op: Operation, body: &[u8]) -> Answer;

    /// One event of `op`'s stream: what it says, and whether to pass it on.
    fn event(&self, op: Operation, data: &[u8], seen: &mut Seen, strip_usage: bool) -> bool;

    /// An error in this format's shape.
    fn error_body(&self, error: &ErrorInfo<'_>) -> Value;
}

impl Api {
    fn adapter(self) -> &'static dyn Adapter {
        match self {
            Api::OpenAi => &openai::OpenAi,
            Api::Anthropic => &anthropic::Anthropic,
            Api::Gemini => &gemini::Gemini,
        }
    }
}

/// What the gateway reads from a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fields {
    model: Option<String>,
    stream: bool,
    include_usage: bool,
    max_output: Option<u64>,
    choices: u64,
    /// The stored response a call goes on from (the Responses API's
    /// `previous_response_id`).
    continues: Option<String>,
    /// Stored items the input names by id rather than giving them (see
    /// [`Request::references`]).
    references: Vec<String>,
    /// The stored conversation the call adds to (the Responses API's
    /// `conversation`, an id or `{"id"}`).
    conversation: Option<String>,
}

/// Which output-limit field to set when the client gave none: OpenAI's own
/// API wants `max_completion_tokens` (its reasoning models refuse
/// `max_tokens`); other OpenAI-compatible APIs know `max_tokens` best.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitStyle {
    MaxCompletionTokens,
    MaxTokens,
}

/// What a stream has shown so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The provider's usage, once a chunk carried it (partial for Anthropic
    /// until `message_delta`).
    pub usage: Option<Usage>,
    /// Text and tool-call arguments that passed, for an estimate when the
    /// stream is cut (bounded: see [`MAX_TEXT`]).
    pub text: String,
    /// Whether the stream's own end marker passed (`[DONE]`,
    /// `response.completed`, `message_stop`, a final `finishReason`).
    pub finished: bool,
    /// Whether its last word passed: `[DONE]`, the Responses API's
    /// `response.completed` (or `.incomplete`, `.failed`), `message_stop`,
    /// the `]` closing Gemini's JSON array. Nothing but the body's end
    /// follows, and clients may stop reading there. (Gemini's server-sent
    /// events have no such word: a `finishReason` may come before the last
    /// counts.)
    pub ended: bool,
    /// Characters of text beyond [`MAX_TEXT`], counted but not kept.
    pub dropped_chars: u64,
    /// The response as the provider stores it (OpenAI's Responses API
    /// names it in its first event, and each output item as it begins).
    pub stored: Option<StoredResponse>,
    /// Anthropic's input so far in its parts: uncached, cache reads, cache
    /// writes (each event restates the parts it has).
    input_parts: (u64, u64, u64),
}

/// Text kept from a stream for estimates; beyond it, characters are counted.
pub const MAX_TEXT: usize = 1 << 20;

impl Seen {
    fn push_text(&mut self, text: &str) {
        if self.text.len() + text.len() <= MAX_TEXT {
            self.text.push_str(text);
        } else {
            self.dropped_chars += text.chars().count() as u64;
        }
    }

    /// Output tokens of the text that passed (characters past the kept
    /// text at four per token), for a stream cut before its usage.
    pub fn output_estimate(&self, encoding: Encoding) -> u64 {
        tokens::count(encoding, &self.text) + self.dropped_chars.div_ceil(4)
    }
}

/// A client's request on a proxy route, read once and changed in place.
#[derive(Debug)]
pub struct Request {
    op: Operation,
    raw: Bytes,
    body: Body,
    changed: bool,
    fields: Fields,
}

impl Request {
    /// Reads `raw` as `op`'s request. Gemini names the model in the path:
    /// give it as `path_model`.
    pub fn parse(op: Operation, raw: Bytes, path_model: Option<&str>) -> Result<Request, Invalid> {
        let body = strict::object(&raw)?;
        let mut fields = op.api().adapter().read(op, &body)?;
        if let Some(model) = path_model {
            fields.model = Some(model.to_owned());
        }
        Ok(Request { op, raw, body, changed: false, fields })
    }

    pub fn operation(&self) -> Operation {
        self.op
    }

    /// The model as the client named it.
    pub fn model(&self) -> Option<&str> {
        self.fields.model.as_deref()
    }

    pub fn stream(&self) -> bool {
        self.fields.stream
    }

    /// Whether the client asked for usage in the stream (OpenAI's
    /// `stream_options.include_usage`).
    pub fn client_wants_stream_usage(&self) -> bool {
        self.fields.include_usage
    }

    /// The stored response the call goes on from, as the client named it
    /// (the Responses API's `previous_response_id`).
    pub fn continues(&self) -> Option<&str> {
        self.fields.continues.as_deref()
    }

    /// The stored items the input names by id rather than gives (the
    /// Responses API's `item_reference`, a reasoning item without its
    /// `encrypted_content`, the request an `mcp_approval_response`
    /// answers), as the client named them.
    pub fn references(&self) -> &[String] {
        &self.fields.references
    }

    /// The stored conversation the call adds to (the Responses API's
    /// `conversation`).
    pub fn conversation(&self) -> Option<&str> {
        self.fields.conversation.as_deref()
    }

    /// The output limit the client asked for, per choice.
    pub fn max_output(&self) -> Option<u64> {
        self.fields.max_output
    }

    /// Whether the call generates output (embeddings do not).
    pub fn generates_output(&self) -> bool {
        self.op != Operation::Embeddings
    }

    /// The smallest output limit per choice the API takes (the Responses
    /// API refuses a `max_output_tokens` below 16; others take 1).
    pub fn least_output(&self) -> u64 {
        if self.op == Operation::Responses { openai::RESPONSES_LEAST_OUTPUT } else { 1 }
    }

    /// How many choices the client asked for (OpenAI's `n`; 1 elsewhere).
    pub fn choices(&self) -> u64 {
        self.fields.choices.max(1)
    }

    /// Input tokens as `encoding` counts them.
    pub fn input_tokens(&self, encoding: Encoding) -> u64 {
        self.op.api().adapter().input_tokens(self.op, &self.body, encoding)
    }

    /// Names `model` upstream (no change when it is the client's own).
    pub fn set_model(&mut self, model: &str) {
        if self.fields.model.as_deref() == Some(model) || self.op.api() == Api::Gemini {
            return;
        }
        self.op.api().adapter().set_model(&mut self.body, model);
        self.changed = true;
    }

    /// Lowers the output limit to `max` tokens per choice.
    pub fn limit_output(&mut self, max: u64, style: LimitStyle) {
        if !self.generates_output() || self.fields.max_output.is_some_and(|m| m <= max) {
            return;
        }
        self.op.api().adapter().set_max_output(self.op, &mut self.body, max, style);
        self.fields.max_output = Some(max);
        self.changed = true;
    }

    /// Asks an OpenAI-format upstream to end the stream with a usage chunk
    /// (`stream_options.include_usage`); the [`StreamTap`] removes it again
    /// when the client did not ask. Nothing to do for other formats, which
    /// always report usage.
    pub fn ask_for_stream_usage(&mut self) {
        if !self.op.reports_stream_usage_when_asked() || !self.fields.stream || self.fields.include_usage {
            return;
        }
        let options = self.body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Value::Object(options) = options {
            options.insert("include_usage".into(), Value::Bool(true));
        }
        self.changed = true;
    }

    /// The body to send upstream: the client's bytes when nothing changed.
    pub fn into_body(self) -> Bytes {
        if !self.changed {
            return self.raw;
        }
        // Serializing a map of JSON values cannot fail.
        Bytes::from(serde_json::to_vec(&self.body).unwrap_or_default())
    }

    /// A tap for this request's streamed response. `sse` says whether the
    /// upstream answers with server-sent events (Gemini does only with
    /// `alt=sse`; every other stream does).
    pub fn tap(&self, sse: bool) -> StreamTap {
        let strip = self.op.reports_stream_usage_when_asked() && !self.fields.include_usage;
        StreamTap::new(self.op, sse, strip)
    }
}

/// What the gateway reads from a whole response: the provider's usage
/// block, and the response as the provider keeps it, if it does (OpenAI's
/// Responses API, unless told not to store it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub usage: Option<Usage>,
    pub stored: Option<StoredResponse>,
    /// When the provider reported no usage (an OpenAI-compatible one may
    /// not): the output as a stream of it would have shown it, for an
    /// estimate ([`Seen::output_estimate`]).
    pub unreported: Option<Seen>,
}

/// A response the provider keeps: its id, under which it is fetched or
/// gone on from (`previous_response_id`), and its output items' ids, under
/// which a later input may name them (`item_reference`). Only ids a URL
/// can carry as they are ([`is_stored_id`]) are taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredResponse {
    pub id: String,
    pub items: Vec<String>,
}

impl StoredResponse {
    /// Adds the output item `id`, once.
    fn add_item(&mut self, id: &str) {
        if is_stored_id(id) && !self.items.iter().any(|item| item == id) {
            self.items.push(id.to_owned());
        }
    }
}

/// The stored items the `items` of an OpenAI Conversations API body (a
/// conversation made, or items added to one) name by id rather than give,
/// as [`Request::references`] reads a Responses input. The body must be a
/// JSON object naming each key once.
pub fn conversation_references(raw: &[u8]) -> Result<Vec<String>, Invalid> {
    let body = strict::object(raw)?;
    openai::references(body.get("items"), "items")
}

/// The ids of the items an OpenAI list answers (`data[].id`: a response's
/// input items, a conversation's items), those a URL can carry only.
pub fn listed_ids(body: &[u8]) -> Vec<String> {
    openai::listed_ids(body)
}

/// The id of what an OpenAI create answered (a conversation), if a URL can
/// carry it.
pub fn created_id(body: &[u8]) -> Option<String> {
    openai::created_id(body)
}

/// What a whole response of `op` says.
pub fn answer_of(op: Operation, body: &[u8]) -> Answer {
    op.api().adapter().answer(op, body)
}

/// Whether `id` looks like the id of something a provider stores: a
/// response's (`resp_…`), an item's (`msg_…`, `rs_…`, `fc_…`) or a
/// conversation's (`conv_…`): letters, digits, `-` and `_`, 1 to 128 of
/// them, safe in a URL's path as it is.
pub fn is_stored_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Why a request failed, in terms every format can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    QuotaExceeded,
    RateLimited,
    NoCredential,
    /// The provider failed (5xx) or could not be reached.
    Upstream,
    /// The provider did not answer in time.
    UpstreamTimeout,
    Internal,
}

/// An error to show in a provider's shape: its status, kind, message, the
/// field at fault, and further details (meter, limit, used, reset time…)
/// added to the error object.
pub struct ErrorInfo<'a> {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: &'a str,
    pub field: Option<&'a str>,
    pub details: Map<String, Value>,
}

/// `error` in `api`'s shape.
pub fn error_body(api: Api, error: &ErrorInfo<'_>) -> Value {
    api.adapter().error_body(error)
}

/// Adds `details` to the error object `target`, never replacing a field
/// the format itself defines.
fn add_details(target: &mut Map<String, Value>, details: &Map<String, Value>) {
    for (k, v) in details {
        target.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Text of a JSON value that may be a string or a list of parts with
/// `text` (OpenAI's and Anthropic's content).
fn text_parts<'a>(value: &'a Value, mut each: impl FnMut(&'a str)) {
    match value {
        Value::String(s) => each(s),
        Value::Array(parts) => {
            for part in parts {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    each(text);
                }
            }
        }
        _ => {}
    }
}

/// A non-negative integer field (`null` and absent are `None`).
fn count_field(body: &Body, field: &str) -> Result<Option<u64>, Invalid> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| Invalid::new(field, "expected a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: Operation, body: Value) -> Request {
        Request::parse(op, Bytes::from(body.to_string()), None).unwrap()
    }

    #[test]
    fn an_unchanged_body_is_forwarded_byte_for_byte() {
        let raw = Bytes::from_static(b"{ \"model\" : \"gpt-4o-mini\", \"messages\": [] , \"x\": 1}");
        let mut r = Request::parse(Operation::ChatCompletions, raw.clone(), None).unwrap();
        r.set_model("gpt-4o-mini");
        r.limit_output(100, LimitStyle::MaxTokens);
        assert_eq!(r.max_output(), Some(100));
        let mut r = Request::parse(Operation::ChatCompletions, raw.clone(), None).unwrap();
        r.set_model("gpt-4o-mini");
        assert_eq!(r.into_body(), raw);
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused_naming_the_body() {
        let e = Request::parse(Operation::ChatCompletions, Bytes::from_static(b"[1]"), None).unwrap_err();
        assert_eq!(e.field, "body");
        let e = Request::parse(Operation::Messages, Bytes::from_static(b"{nope"), None).unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.message.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn a_conversations_items_are_read_for_what_they_name_by_id() {
        let named = br#"{"items":[{"type":"item_reference","id":"msg_1"},{"role":"user","content":"hi"}]}"#;
        assert_eq!(conversation_references(named).unwrap(), ["msg_1"]);
        assert!(conversation_references(b"{}").unwrap().is_empty());
        let e = conversation_references(br#"{"items":[{"type":"item_reference","id":1}]}"#).unwrap_err();
        assert!(e.field == "items" && e.message.starts_with("items: "), "{e}");
        assert_eq!(conversation_references(br#"{"items":[],"items":[]}"#).unwrap_err().field, "body");
    }

    #[test]
    fn stream_usage_is_asked_for_only_when_an_openai_client_did_not() {
        let mut r = request(Operation::ChatCompletions, serde_json::json!({"model": "m", "stream": true}));
        r.ask_for_stream_usage();
        let body: Value = serde_json::from_slice(&r.into_body()).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
        let raw = serde_json::json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        let mut r = request(Operation::ChatCompletions, raw.clone());
        assert!(r.client_wants_stream_usage());
        r.ask_for_stream_usage();
        assert_eq!(r.into_body(), Bytes::from(raw.to_string()));
        let mut r = request(Operation::Messages, serde_json::json!({"model": "m", "stream": true, "max_tokens": 5}));
        r.ask_for_stream_usage();
        assert!(!r.changed);
    }
}
