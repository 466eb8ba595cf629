//! What the mock received and what it answered, for tests to assert on:
//! in process through `MockServer::requests`, from other languages through
//! `GET /_mock/requests`. Recording keeps the raw body and headers (cheap
//! reference-counted copies) and builds the JSON only when asked.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Token counts, the same way for every provider: `input_tokens` includes
/// the cached ones and `output_tokens` the reasoning ones (Anthropic's wire
/// `input_tokens` is the uncached part; the sum is here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    /// GitHub's API, only `GET /user`: what validating a GitHub token asks.
    GitHub,
}

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// 1, 2, 3… in arrival order.
    pub seq: u64,
    pub provider: Provider,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The credential as the provider's convention carries it: the bearer
    /// token (OpenAI), `x-api-key` or else the bearer token (Anthropic),
    /// `x-goog-api-key` or `?key=` (Gemini), `Bearer` or `token` (GitHub).
    pub credential: Option<String>,
    /// The JSON body (`null` when there was none; a string when it was not JSON).
    pub body: Value,
    /// The status answered; `None` while no answer has been given (hang).
    pub status: Option<u16>,
    /// The usage the response carried, once it was sent whole: `None` for
    /// errors, cut streams, OpenAI streams without `include_usage`, and
    /// token counts (which use nothing).
    pub usage: Option<Usage>,
    /// Output tokens sent as text or tool calls (one per content chunk of a
    /// stream; reasoning tokens are reported, never sent).
    pub tokens_sent: u64,
    /// Whether the response was sent to its end.
    pub completed: bool,
}

impl Recorded {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

struct Entry {
    seq: u64,
    provider: Provider,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    credential: Option<String>,
    body: Bytes,
    status: Option<u16>,
    usage: Option<Usage>,
    tokens_sent: u64,
    completed: bool,
}

impl Entry {
    fn to_recorded(&self) -> Recorded {
        let mut headers = BTreeMap::<String, String>::new();
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let body = if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
        };
        Recorded {
            seq: self.seq,
            provider: self.provider,
            method: self.method.to_string(),
            path: self.uri.path().to_owned(),
            query: self.uri.query().map(str::to_owned),
            headers,
            credential: self.credential.clone(),
            body,
            status: self.status,
            usage: self.usage,
            tokens_sent: self.tokens_sent,
            completed: self.completed,
        }
    }
}

/// The last `limit` requests (none when `limit` is 0, as a benchmark wants).
pub(crate) struct Recorder {
    limit: usize,
    next: AtomicU64,
    entries: Mutex<VecDeque<Entry>>,
}

/// How a response ended, for `Recorder::finish`.
pub(crate) struct Outcome {
    pub status: u16,
    pub usage: Option<Usage>,
    pub tokens_sent: u64,
    pub completed: bool,
}

impl Recorder {
    pub fn new(limit: usize) -> Recorder {
        Recorder { limit, next: AtomicU64::new(1), entries: Mutex::new(VecDeque::new()) }
    }

    /// Records an arrival; returns its `seq` (0 when recording is off).
    pub fn start(
        &self,
        provider: Provider,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        credential: Option<&str>,
        body: &Bytes,
    ) -> u64 {
        if self.limit == 0 {
            return 0;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            seq,
            provider,
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            credential: credential.map(str::to_owned),
            body: body.clone(),
            status: None,
            usage: None,
            tokens_sent: 0,
            completed: false,
        };
        let mut entries = self.lock();
        if entries.len() == self.limit {
            entries.pop_front();
        }
        entries.push_back(entry);
        seq
    }

    pub fn finish(&self, seq: u64, outcome: Outcome) {
        if seq == 0 {
            return;
        }
        let mut entries = self.lock();
        if let Some(entry) = entries.iter_mut().rev().find(|e| e.seq == seq) {
            entry.status = Some(outcome.status);
            entry.usage = outcome.usage;
            entry.tokens_sent = outcome.tokens_sent;
            entry.completed = outcome.completed;
        }
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.lock().iter().map(Entry::to_recorded).collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
