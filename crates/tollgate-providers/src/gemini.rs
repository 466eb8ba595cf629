//! Gemini's `generateContent` / `streamGenerateContent`: the model is named
//! in the path; `generationConfig.maxOutputTokens` and `candidateCount`;
//! `usageMetadata` in every response and in every streamed chunk,
//! cumulative (the last one holds, they are never summed). The REST API
//! takes field names in camelCase or snake_case; both are read.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::tokens::{self, Encoding};
use crate::{
    Adapter, Answer, Body, ErrorInfo, ErrorKind, Fields, Invalid, LimitStyle, Operation, Seen, Usage, add_details,
};

pub struct Gemini;

const PER_CONTENT: u64 = 3;
/// An inline image or file part (Gemini's cost of an image up to 384 px;
/// larger ones are tiled at the same cost per tile).
const PER_IMAGE: u64 = 258;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            input: self.prompt_token_count + self.tool_use_prompt_token_count,
            output: self.candidates_token_count + self.thoughts_token_count,
            cached: self.cached_content_token_count,
            reasoning: self.thoughts_token_count,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Value>,
}

/// `camel` or its snake_case spelling.
fn field<'a>(object: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake)).filter(|v| !v.is_null())
}

fn config_of(body: &Body) -> Option<&Value> {
    body.get("generationConfig").or_else(|| body.get("generation_config")).filter(|v| !v.is_null())
}

impl Adapter for Gemini {
    fn read(&self, op: Operation, body: &Body) -> Result<Fields, Invalid> {
        let config = config_of(body);
        let number = |camel: &str, snake: &str| -> Result<Option<u64>, Invalid> {
            match config.and_then(|c| field(c, camel, snake)) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    Invalid::new(&format!("generationConfig.{camel}"), "expected a non-negative integer")
                }),
            }
        };
        let max_output = number("maxOutputTokens", "max_output_tokens")?;
        let choices = number("candidateCount", "candidate_count")?.unwrap_or(1).max(1);
        let stream = op == Operation::StreamGenerateContent;
        Ok(Fields { model: None, stream, include_usage: true, max_output, choices, ..Fields::default() })
    }

    fn input_tokens(&self, _op: Operation, body: &Body, encoding: Encoding) -> u64 {
        let count = |text: &str| tokens::count(encoding, text);
        let parts_tokens = |content: &Value| -> u64 {
            let parts = content.get("parts").and_then(Value::as_array);
            parts
                .into_iter()
                .flatten()
                .map(|part| {
                    if let Some(text) = part.get("text").and_then(Value::as_str) {
                        count(text)
                    } else if let Some(call) = field(part, "functionCall", "function_call")
                        .or_else(|| field(part, "functionResponse", "function_response"))
                    {
                        count(&call.to_string())
                    } else if field(part, "inlineData", "inline_data")
                        .or_else(|| field(part, "fileData", "file_data"))
                        .is_some()
                    {
                        PER_IMAGE
                    } else {
                        0
                    }
                })
                .sum()
        };
        let mut total = 0;
        if let Some(system) = body.get("systemInstruction").or_else(|| body.get("system_instruction")) {
            total += parts_tokens(system);
        }
        for content in body.get("contents").and_then(Value::as_array).into_iter().flatten() {
            total += PER_CONTENT + parts_tokens(content);
        }
        if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
            total += count(&tools.to_string());
        }
        total
    }

    fn set_model(&self, _body: &mut Body, _model: &str) {}

    fn set_max_output(&self, _op: Operation, body: &mut Body, max: u64, _style: LimitStyle) {
        let key = if body.contains_key("generation_config") { "generation_config" } else { "generationConfig" };
        let config = body.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !config.is_object() {
            *config = Value::Object(Map::new());
        }
        if let Value::Object(config) = config {
            let name = if config.contains_key("max_output_tokens") { "max_output_tokens" } else { "maxOutputTokens" };
            config.insert(name.into(), json!(max));
        }
    }

    fn answer(&self, _op: Operation, body: &[u8]) -> Answer {
        let usage = serde_json::from_slice::<Response>(body).ok().and_then(|r| r.usage_metadata).map(|u| u.usage());
        Answer { usage, stored: None, unreported: None }
    }

    fn event(&self, _op: Operation, data: &[u8], seen: &mut Seen, _strip_usage: bool) -> bool {
        let Ok(chunk) = serde_json::from_slice::<Response>(data) else { return true };
        for candidate in &chunk.candidates {
            for part in candidate.content.iter().flat_map(|c| &c.parts) {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    seen.push_text(text);
                } else if let Some(call) = field(part, "functionCall", "function_call") {
                    seen.push_text(&call.to_string());
                }
            }
            if candidate.finish_reason.is_some() {
                seen.finished = true;
            }
        }
        if let Some(usage) = chunk.usage_metadata {
            // Cumulative: the newest replaces what came before.
            seen.usage = Some(usage.usage());
        }
        true
    }

    fn error_body(&self, error: &ErrorInfo<'_>) -> Value {
        let status = match error.kind {
            ErrorKind::InvalidRequest | ErrorKind::NoCredential => "INVALID_ARGUMENT",
            ErrorKind::Unauthorized => "UNAUTHENTICATED",
            ErrorKind::Forbidden => "PERMISSION_DENIED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::QuotaExceeded | ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
            ErrorKind::Upstream => "UNAVAILABLE",
            ErrorKind::UpstreamTimeout => "DEADLINE_EXCEEDED",
            ErrorKind::Internal => "INTERNAL",
        };
        let mut object = Map::new();
        object.insert("code".into(), json!(error.status));
        object.insert("message".into(), json!(error.message));
        object.insert("status".into(), json!(status));
        add_details(&mut object, &error.details);
        json!({ "error": object })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::Request;

    #[test]
    fn the_output_limit_is_read_and_lowered_in_generation_config() {
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 300}});
        let mut r = Request::parse(Operation::GenerateContent, Bytes::from(body.to_string()), Some("gemini-2.5-flash"))
            .unwrap();
        assert_eq!((r.model(), r.max_output(), r.stream()), (Some("gemini-2.5-flash"), Some(300), false));
        r.limit_output(20, LimitStyle::MaxTokens);
        let sent: Value = serde_json::from_slice(&r.into_body()).unwrap();
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 20);
        let mut r =
            Request::parse(Operation::StreamGenerateContent, Bytes::from_static(b"{\"contents\":[]}"), None).unwrap();
        assert!(r.stream());
        r.limit_output(5, LimitStyle::MaxTokens);
        let sent: Value = serde_json::from_slice(&r.into_body()).unwrap();
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 5);
    }

    #[test]
    fn usage_counts_thoughts_as_output_and_the_last_streamed_metadata_holds() {
        let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":5,"thoughtsTokenCount":2,"cachedContentTokenCount":3}}"#;
        assert_eq!(
            Gemini.answer(Operation::GenerateContent, body).usage,
            Some(Usage { input: 8, output: 7, cached: 3, reasoning: 2 })
        );
        let mut seen = Seen::default();
        for (n, last) in [(1, false), (2, false), (3, true)] {
            let finish = if last { r#","finishReason":"STOP""# } else { "" };
            let chunk = format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"w{n} "}}],"role":"model"}}{finish}}}],"usageMetadata":{{"promptTokenCount":8,"candidatesTokenCount":{n}}}}}"#
            );
            Gemini.event(Operation::StreamGenerateContent, chunk.as_bytes(), &mut seen, false);
        }
        assert_eq!(seen.usage, Some(Usage { input: 8, output: 3, ..Usage::default() }), "never summed");
        assert_eq!(seen.text, "w1 w2 w3 ");
        assert!(seen.finished);
        assert!(!seen.ended, "server-sent events end with the body, not with a word");
    }

    #[test]
    fn errors_have_geminis_shape() {
        let info = ErrorInfo {
            status: 429,
            kind: ErrorKind::QuotaExceeded,
            message: "over",
            field: None,
            details: Map::new(),
        };
        assert_eq!(
            Gemini.error_body(&info),
            json!({"error": {"code": 429, "message": "over", "status": "RESOURCE_EXHAUSTED"}})
        );
    }
}
