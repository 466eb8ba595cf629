//! Anthropic's Messages API: `max_tokens` (required), `system`, content
//! blocks, tools; usage where `input_tokens` is the uncached part
//! (`cache_read_input_tokens` and `cache_creation_input_tokens` beside it);
//! streams report the input in `message_start` and the output, cumulative,
//! in `message_delta`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::tokens::{self, Encoding};
use crate::{
    Adapter, Answer, Body, ErrorInfo, ErrorKind, Fields, Invalid, LimitStyle, Operation, Seen, Usage, add_details,
    count_field, text_parts,
};

pub struct Anthropic;

const PER_MESSAGE: u64 = 3;
/// An image block: about what a 1092×1092 image costs (1.15 megapixels / 750).
const PER_IMAGE: u64 = 1600;

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Merged into `into`: fields this block has replace that one's
    /// (`message_delta` counts are cumulative).
    fn merge(&self, into: &mut Usage, cache: &mut (u64, u64, u64)) {
        if let Some(n) = self.input_tokens {
            cache.0 = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            cache.1 = n;
        }
        if let Some(n) = self.cache_creation_input_tokens {
            cache.2 = n;
        }
        into.input = cache.0 + cache.1 + cache.2;
        into.cached = cache.1;
        if let Some(n) = self.output_tokens {
            into.output = n;
        }
    }
}

#[derive(Deserialize)]
struct Whole {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    message: Option<Whole>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    delta: Option<BlockDelta<'a>>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<std::borrow::Cow<'a, str>>,
}

impl Adapter for Anthropic {
    fn read(&self, _op: Operation, body: &Body) -> Result<Fields, Invalid> {
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(Invalid::new("model", "expected a model name")),
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Invalid::new("stream", "expected true or false")),
        };
        let max_output = count_field(body, "max_tokens")?;
        Ok(Fields { model, stream, include_usage: stream, max_output, choices: 1, ..Fields::default() })
    }

    fn input_tokens(&self, _op: Operation, body: &Body, encoding: Encoding) -> u64 {
        let count = |text: &str| tokens::count(encoding, text);
        let mut total = 0;
        if let Some(system) = body.get("system") {
            text_parts(system, |text| total += count(text));
        }
        for message in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
            total += PER_MESSAGE;
            let Some(content) = message.get("content") else { continue };
            text_parts(content, |text| total += count(text));
            for block in content.as_array().into_iter().flatten() {
                match block.get("type").and_then(Value::as_str) {
                    Some("image") | Some("document") => total += PER_IMAGE,
                    Some("tool_use") => total += block.get("input").map_or(0, |i| count(&i.to_string())),
                    Some("tool_result") => {
                        if let Some(inner) = block.get("content") {
                            text_parts(inner, |text| total += count(text));
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
            total += count(&tools.to_string());
        }
        total
    }

    fn set_model(&self, body: &mut Body, model: &str) {
        body.insert("model".into(), Value::String(model.to_owned()));
    }

    fn set_max_output(&self, _op: Operation, body: &mut Body, max: u64, _style: LimitStyle) {
        body.insert("max_tokens".into(), json!(max));
    }

    fn answer(&self, _op: Operation, body: &[u8]) -> Answer {
        let usage = || {
            let wire = serde_json::from_slice::<Whole>(body).ok()?.usage?;
            let mut usage = Usage::default();
            wire.merge(&mut usage, &mut (0, 0, 0));
            Some(usage)
        };
        Answer { usage: usage(), stored: None, unreported: None }
    }

    fn event(&self, _op: Operation, data: &[u8], seen: &mut Seen, _strip_usage: bool) -> bool {
        let Ok(event) = serde_json::from_slice::<Event<'_>>(data) else { return true };
        match event.kind.as_ref() {
            "message_start" | "message_delta" => {
                let wire = match event.message {
                    Some(message) => message.usage,
                    None => event.usage,
                };
                if let Some(wire) = wire {
                    let mut usage = seen.usage.unwrap_or_default();
                    wire.merge(&mut usage, &mut seen.input_parts);
                    seen.usage = Some(usage);
                }
            }
            "content_block_delta" => {
                if let Some(delta) = event.delta {
                    for text in [&delta.text, &delta.partial_json, &delta.thinking].into_iter().flatten() {
                        seen.push_text(text);
                    }
                }
            }
            "message_stop" => {
                seen.finished = true;
                seen.ended = true;
            }
            _ => {}
        }
        true
    }

    fn error_body(&self, error: &ErrorInfo<'_>) -> Value {
        let kind = match error.kind {
            ErrorKind::InvalidRequest | ErrorKind::NoCredential => "invalid_request_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::QuotaExceeded | ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Upstream | ErrorKind::Internal => "api_error",
            ErrorKind::UpstreamTimeout => "timeout_error",
        };
        let mut object = Map::new();
        object.insert("type".into(), json!(kind));
        object.insert("message".into(), json!(error.message));
        add_details(&mut object, &error.details);
        json!({ "type": "error", "error": object })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_the_cache_parts_to_the_input() {
        let body = br#"{"usage":{"input_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,"output_tokens":7}}"#;
        let u = Anthropic.answer(Operation::Messages, body).usage.unwrap();
        assert_eq!(u, Usage { input: 16, output: 7, cached: 4, reasoning: 0 });
    }

    #[test]
    fn a_stream_takes_input_from_message_start_and_output_from_message_delta() {
        let mut seen = Seen::default();
        let start = br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":1}}}"#;
        Anthropic.event(Operation::Messages, start, &mut seen, false);
        Anthropic.event(
            Operation::Messages,
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            &mut seen,
            false,
        );
        Anthropic.event(
            Operation::Messages,
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
            &mut seen,
            false,
        );
        assert!(!seen.finished && !seen.ended);
        Anthropic.event(Operation::Messages, br#"{"type":"message_stop"}"#, &mut seen, false);
        assert_eq!(seen.usage, Some(Usage { input: 15, output: 9, cached: 3, reasoning: 0 }));
        assert_eq!(seen.text, "Hi");
        assert!(seen.finished && seen.ended);
    }

    #[test]
    fn a_cumulative_input_in_message_delta_keeps_the_cache_parts() {
        let mut seen = Seen::default();
        let start = br#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":1}}}"#;
        Anthropic.event(Operation::Messages, start, &mut seen, false);
        Anthropic.event(
            Operation::Messages,
            br#"{"type":"message_delta","usage":{"input_tokens":10,"output_tokens":4}}"#,
            &mut seen,
            false,
        );
        assert_eq!(seen.usage, Some(Usage { input: 16, output: 4, cached: 5, reasoning: 0 }));
    }

    #[test]
    fn errors_have_anthropics_shape() {
        let info = ErrorInfo {
            status: 401,
            kind: ErrorKind::Unauthorized,
            message: "bad key",
            field: None,
            details: Map::new(),
        };
        assert_eq!(
            Anthropic.error_body(&info),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}})
        );
    }
}
