//! What the mock answers, whatever the wire format: the directives a test
//! gives (`[mock status=503]`, `x-mock: cut_after=3`), the input token count,
//! and the deterministic reply (words, or a call to the first tool offered).
//! Nothing here knows a provider's JSON.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::MockConfig;
use crate::record::Usage;

/// Tokens every message costs besides its words, as real chat formats do.
pub const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens every tool offered costs besides the words of its definition.
pub const TOOL_OVERHEAD: u64 = 8;
/// Bytes of a tool call's arguments per streamed fragment (one token each).
pub const ARGUMENT_FRAGMENT: usize = 8;

/// Per-request knobs, from `[mock …]` in the last user message with text
/// (so they hold for every step of a tool loop) and from the
/// `x-mock` header (the header wins where both name a knob).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Knobs {
    /// Answer with this status in the provider's error shape.
    pub status: Option<u16>,
    /// `Retry-After` seconds on a 429 (default 1).
    pub retry_after: Option<u32>,
    /// Close the stream abruptly after this many content chunks.
    pub cut_after: Option<u32>,
    /// Wait this long before the first byte (instead of the configured latency).
    pub latency: Option<Duration>,
    /// Pace the stream at this many tokens per second.
    pub tokens_per_second: Option<f64>,
    /// Reply length in tokens (still limited by the request's max tokens).
    pub tokens: Option<u64>,
    /// Report this many of the input tokens as cached.
    pub cached: u64,
    /// Report this many extra output tokens as reasoning.
    pub reasoning: u64,
    /// Never answer (until the mock shuts down).
    pub hang: bool,
    /// Leave the usage out of a whole chat or legacy completion, as some
    /// OpenAI-compatible servers do.
    pub no_usage: bool,
}

impl Knobs {
    /// Applies every `[mock …]` directive found in `text`.
    pub fn apply_text(&mut self, text: &str) -> Result<(), String> {
        let mut rest = text;
        while let Some(start) = rest.find("[mock") {
            let after = &rest[start + "[mock".len()..];
            let end = after.find(']').ok_or("a [mock …] directive is not closed by ']'")?;
            self.apply(&after[..end])?;
            rest = &after[end..];
        }
        Ok(())
    }

    /// Applies `name=value` pairs and flags separated by whitespace.
    pub fn apply(&mut self, directives: &str) -> Result<(), String> {
        for item in directives.split_whitespace() {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            let number =
                || value.parse::<u64>().map_err(|_| format!("mock directive {name}: {value:?} is not a number"));
            match name {
                "status" => {
                    let status = number()?;
                    if !(100..=599).contains(&status) {
                        return Err(format!("mock directive status: {status} is not an HTTP status"));
                    }
                    self.status = Some(status as u16);
                }
                "retry_after" => self.retry_after = Some(number()?.min(u32::MAX as u64) as u32),
                "cut_after" => self.cut_after = Some(number()?.min(u32::MAX as u64) as u32),
                "latency_ms" => self.latency = Some(Duration::from_millis(number()?)),
                "tps" => {
                    let tps = value.parse::<f64>().ok().filter(|t| t.is_finite() && *t > 0.0);
                    self.tokens_per_second =
                        Some(tps.ok_or(format!("mock directive tps: {value:?} is not a positive number"))?);
                }
                "tokens" => self.tokens = Some(number()?),
                "cached" => self.cached = number()?,
                "reasoning" => self.reasoning = number()?,
                "hang" if value.is_empty() => self.hang = true,
                "no_usage" if value.is_empty() => self.no_usage = true,
                _ => return Err(format!("unknown mock directive {item:?}")),
            }
        }
        Ok(())
    }
}

/// What a provider module read from a generation request.
pub struct Ask<'a> {
    pub input_tokens: u64,
    /// The text of the last user message that has text (a tool result alone
    /// has none): the reply's seed and the directives.
    pub last_user_text: String,
    /// How many messages the conversation has (so each step of a tool loop
    /// gets its own reply).
    pub turns: usize,
    /// `max_tokens`, `max_completion_tokens` or `maxOutputTokens`.
    pub max_tokens: Option<u64>,
    /// The tool to call (name, JSON schema of its arguments), when the
    /// request offers tools and does not end with a tool result.
    pub tool: Option<(&'a str, &'a Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCall,
}

pub enum Content {
    /// One token per piece; the first has no leading space.
    Text(Vec<&'static str>),
    Tool(ToolCall),
}

pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
    /// `arguments` as compact JSON, streamed in fragments of
    /// `ARGUMENT_FRAGMENT` bytes.
    pub arguments_json: String,
}

impl ToolCall {
    pub fn fragments(&self) -> Vec<&str> {
        let s = self.arguments_json.as_str();
        let mut out = Vec::with_capacity(s.len() / ARGUMENT_FRAGMENT + 1);
        let mut start = 0;
        while start < s.len() {
            let mut end = (start + ARGUMENT_FRAGMENT).min(s.len());
            while !s.is_char_boundary(end) {
                end += 1;
            }
            out.push(&s[start..end]);
            start = end;
        }
        out
    }
}

pub struct Reply {
    pub content: Content,
    pub finish: Finish,
    pub usage: Usage,
}

impl Reply {
    /// Output tokens that are text or a tool call (not reasoning).
    pub fn visible_tokens(&self) -> u64 {
        self.usage.output_tokens - self.usage.reasoning_tokens
    }

    /// The whole text of a text reply.
    pub fn text(&self) -> String {
        match &self.content {
            Content::Text(pieces) => pieces.concat(),
            Content::Tool(_) => String::new(),
        }
    }
}

/// Builds the deterministic reply to `ask`.
pub fn reply(ask: &Ask<'_>, knobs: &Knobs, config: &MockConfig) -> Reply {
    let cap = u64::from(config.max_output_tokens);
    let (content, finish, visible) = match ask.tool {
        Some((name, schema)) => {
            let arguments = sample(schema, 0);
            let arguments_json = arguments.to_string();
            let call = ToolCall { name: name.to_owned(), arguments, arguments_json };
            let tokens = 1 + call.fragments().len() as u64;
            (Content::Tool(call), Finish::ToolCall, tokens)
        }
        None => {
            let limit = ask.max_tokens.map(|m| m.min(cap));
            let wanted = knobs.tokens.map(|t| t.min(cap)).or(limit).unwrap_or(u64::from(config.output_tokens));
            let n = limit.map_or(wanted, |l| wanted.min(l));
            let finish = if ask.max_tokens.is_some_and(|m| n >= m) { Finish::Length } else { Finish::Stop };
            (Content::Text(generate(seed(&ask.last_user_text, ask.turns), n as usize)), finish, n)
        }
    };
    let usage = Usage {
        input_tokens: ask.input_tokens,
        output_tokens: visible + knobs.reasoning,
        cached_tokens: knobs.cached.min(ask.input_tokens),
        reasoning_tokens: knobs.reasoning,
    };
    Reply { content, finish, usage }
}

/// The words of every string in `value` (text, tool arguments, tool results),
/// skipping the fields that name rather than say something (ids, roles,
/// types, and the `status` of an output item sent back as input).
pub fn words(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(words).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "role" | "type" | "id" | "tool_call_id" | "tool_use_id" | "call_id" | "status" | "cache_control"
                )
            })
            .map(|(_, v)| words(v))
            .sum(),
        _ => 0,
    }
}

/// The input tokens of a conversation: every message costs
/// `MESSAGE_OVERHEAD` plus its words, every tool `TOOL_OVERHEAD` plus the
/// words of its definition.
pub fn input_tokens<'a>(messages: impl Iterator<Item = &'a Value>, tools: impl Iterator<Item = &'a Value>) -> u64 {
    let messages: u64 = messages.map(|m| MESSAGE_OVERHEAD + words(m)).sum();
    let tools: u64 = tools.map(|t| TOOL_OVERHEAD + words(t)).sum();
    messages + tools
}

/// The text of `content` when it is a string, or the `text` of its parts.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

const PIECES: [&str; 64] = [
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " lazy",
    " dog",
    " a",
    " mock",
    " reply",
    " from",
    " tollgate",
    " with",
    " words",
    " that",
    " count",
    " one",
    " token",
    " each",
    " and",
    " never",
    " change",
    " for",
    " same",
    " prompt",
    " so",
    " tests",
    " can",
    " compare",
    " what",
    " they",
    " read",
    " against",
    " usage",
    " numbers",
    " reported",
    " by",
    " this",
    " stand",
    " in",
    " which",
    " speaks",
    " openai",
    " anthropic",
    " gemini",
    " formats",
    " streams",
    " chunks",
    " quickly",
    " while",
    " gateway",
    " meters",
    " every",
    " call",
    " under",
    " quota",
    " plan",
    " limits",
    " keys",
    " users",
    " hello",
    " world",
    " again",
];

fn seed(text: &str, turns: usize) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes().chain((turns as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

fn generate(mut state: u64, n: usize) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let piece = PIECES[(state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 58) as usize];
        out.push(if i == 0 { &piece[1..] } else { piece });
    }
    out
}

/// A value that satisfies `schema`: its required properties, recursively,
/// with the first enum value, `"mock"`, `1` or `true`.
pub fn sample(schema: &Value, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(Value::as_array).and_then(|e| e.first()) {
            return sample(first, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.to_ascii_lowercase(),
        Some(Value::Array(types)) => {
            types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null").to_ascii_lowercase()
        }
        _ if schema.get("properties").is_some() => "object".to_owned(),
        _ => "string".to_owned(),
    };
    match kind.as_str() {
        "object" => {
            let mut out = Map::new();
            let properties = schema.get("properties");
            for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
            {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                out.insert(name.to_owned(), sample(property, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let item = schema.get("items").map_or(Value::from("mock"), |i| sample(i, depth + 1));
            Value::Array(vec![item; min.min(16) as usize])
        }
        "integer" | "number" => Value::from(1),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::from("mock"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn knobs(text: &str, header: &str) -> Result<Knobs, String> {
        let mut k = Knobs::default();
        k.apply_text(text)?;
        k.apply(header)?;
        Ok(k)
    }

    #[test]
    fn directives_come_from_the_message_and_the_header_wins() {
        let k = knobs("hi [mock status=503 tokens=7] there [mock hang]", "status=429 retry_after=3").unwrap();
        assert_eq!(k.status, Some(429));
        assert_eq!(k.retry_after, Some(3));
        assert_eq!(k.tokens, Some(7));
        assert!(k.hang);
        let k = knobs("", "cut_after=2 latency_ms=150 cached=10 reasoning=5 tps=20").unwrap();
        assert_eq!(k.cut_after, Some(2));
        assert_eq!(k.latency, Some(Duration::from_millis(150)));
        assert_eq!((k.cached, k.reasoning), (10, 5));
        assert_eq!(k.tokens_per_second, Some(20.0));
    }

    #[test]
    fn bad_directives_are_refused_with_their_name() {
        let check = |text: &str, header: &str, expected: &str| {
            let err = knobs(text, header).unwrap_err();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        };
        check("[mock stauts=500]", "", "stauts=500");
        check("", "status=abc", "status");
        check("", "status=99", "not an HTTP status");
        check("[mock tokens=5", "", "not closed");
        check("", "tps=0", "tps");
        check("", "hang=yes", "hang=yes");
    }

    #[test]
    fn words_skip_roles_types_and_ids() {
        let check = |value: Value, expected: u64| assert_eq!(words(&value), expected, "{value}");
        check(json!("one two  three"), 3);
        check(json!({"role": "user", "content": "hello there"}), 2);
        check(json!({"role": "user", "content": [{"type": "text", "text": "a b c"}]}), 3);
        check(json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny and warm"}), 3);
        check(json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}), 2);
        check(json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny and warm"}), 3);
        check(
            json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "status": "completed", "name": "f"}),
            1,
        );
        check(json!({"n": 5, "ok": true}), 0);
    }

    #[test]
    fn a_sample_satisfies_the_required_properties_of_a_schema() {
        let check = |schema: Value, expected: Value| assert_eq!(sample(&schema, 0), expected, "{schema}");
        check(
            json!({"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
                   "days": {"type": "integer"}, "extra": {"type": "string"}}, "required": ["city", "unit", "days"]}),
            json!({"city": "mock", "unit": "c", "days": 1}),
        );
        check(
            json!({"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}, "required": ["ok"]}),
            json!({"ok": true}),
        );
        check(json!({"type": ["string", "null"]}), json!("mock"));
        check(json!({"type": "array", "items": {"type": "number"}, "minItems": 2}), json!([1, 1]));
        check(json!({"anyOf": [{"type": "integer"}, {"type": "string"}]}), json!(1));
        check(json!({}), json!("mock"));
    }

    fn ask(text: &str, max_tokens: Option<u64>) -> Ask<'static> {
        Ask { input_tokens: 10, last_user_text: text.to_owned(), turns: 1, max_tokens, tool: None }
    }

    #[test]
    fn reply_length_follows_max_tokens_then_the_directive_then_the_default() {
        let config = MockConfig { output_tokens: 16, max_output_tokens: 100, ..MockConfig::default() };
        let check = |max: Option<u64>, tokens: Option<u64>, expected: u64, finish: Finish| {
            let knobs = Knobs { tokens, ..Knobs::default() };
            let r = reply(&ask("hi", max), &knobs, &config);
            assert_eq!((r.usage.output_tokens, r.finish), (expected, finish), "max {max:?} tokens {tokens:?}");
            assert_eq!(r.text().split_whitespace().count() as u64, expected);
        };
        check(None, None, 16, Finish::Stop);
        check(Some(5), None, 5, Finish::Length);
        check(Some(500), None, 100, Finish::Stop);
        check(None, Some(7), 7, Finish::Stop);
        check(Some(20), Some(7), 7, Finish::Stop);
        check(Some(3), Some(7), 3, Finish::Length);
        check(None, Some(1000), 100, Finish::Stop);
    }

    #[test]
    fn replies_are_deterministic_and_differ_by_prompt() {
        let config = MockConfig::default();
        let a = reply(&ask("hello", None), &Knobs::default(), &config).text();
        assert_eq!(a, reply(&ask("hello", None), &Knobs::default(), &config).text());
        assert_ne!(a, reply(&ask("goodbye", None), &Knobs::default(), &config).text());
        assert!(!a.starts_with(' '));
    }

    #[test]
    fn cached_and_reasoning_tokens_are_reported_within_bounds() {
        let knobs = Knobs { cached: 50, reasoning: 5, tokens: Some(3), ..Knobs::default() };
        let r = reply(&ask("hi", None), &knobs, &MockConfig::default());
        assert_eq!(r.usage, Usage { input_tokens: 10, output_tokens: 8, cached_tokens: 10, reasoning_tokens: 5 });
    }

    #[test]
    fn a_tool_call_costs_one_token_plus_one_per_fragment() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let ask = Ask { tool: Some(("get_weather", &schema)), ..ask("weather?", None) };
        let r = reply(&ask, &Knobs::default(), &MockConfig::default());
        let Content::Tool(call) = &r.content else { panic!("a tool call") };
        assert_eq!(call.arguments_json, r#"{"city":"mock"}"#);
        assert_eq!(call.fragments().concat(), call.arguments_json);
        assert_eq!(call.fragments().len(), 2);
        assert_eq!((r.usage.output_tokens, r.finish), (3, Finish::ToolCall));
    }
}
