//! `tollgate mock-llm`: a fast, deterministic stand-in for the OpenAI,
//! Anthropic and Gemini HTTP APIs, for tests, the benchmark and `demo`.
//!
//! It speaks each provider's wire format (streaming included, usage where
//! each provider puts it, tool calls; for OpenAI chat completions, legacy
//! completions, `POST /v1/completions`, and the Responses API,
//! `POST /v1/responses`, whose answers it keeps for `GET` and `DELETE
//! /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` and `POST
//! /v1/responses/{id}/cancel`, with the Conversations API beside it),
//! checks each provider's credential header, and
//! takes per-request knobs that survive a gateway forwarding only the body:
//! `[mock status=503]` in the last user message (a completion's prompt), or
//! the `x-mock` header. It records what it received (`MockServer::requests`,
//! `GET /_mock/requests`). It must not log per request nor allocate
//! needlessly: the gateway benchmark measures against it.
//!
//! Wire JSON lives in one module per provider (`openai`, `anthropic`,
//! `gemini`), and one each for OpenAI's Responses API (`responses`) and
//! Conversations API (`conversations`); `reply`
//! decides what to answer; `stream` paces and cuts.

// A refusal is the whole HTTP answer, returned at most once per request:
// boxing it would only add an allocation to the error path.
#![allow(clippy::result_large_err)]

mod anthropic;
mod conversations;
mod gemini;
mod openai;
mod record;
mod reply;
mod responses;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use record::{Provider, Recorded, Usage};
pub use reply::{MESSAGE_OVERHEAD, TOOL_OVERHEAD};

use record::{Outcome, Recorder};
use reply::Knobs;

/// How the mock behaves unless a request's directives say otherwise.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Accepted credentials; empty accepts any non-empty one.
    pub api_keys: Vec<String>,
    /// Wait before the first byte of every answer.
    pub latency: Duration,
    /// Pace streams at this many tokens per second (`None`: as fast as possible).
    pub tokens_per_second: Option<f64>,
    /// Reply length when the request gives no max tokens.
    pub output_tokens: u32,
    /// The longest reply, whatever the request asks.
    pub max_output_tokens: u32,
    /// Requests kept for `requests()` (the newest); 0 records nothing.
    pub record_limit: usize,
}

impl Default for MockConfig {
    fn default() -> MockConfig {
        MockConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: Vec::new(),
            latency: Duration::ZERO,
            tokens_per_second: None,
            output_tokens: 16,
            max_output_tokens: 1024,
            record_limit: 10_000,
        }
    }
}

/// The running mock.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts the mock; it serves until `shutdown` (or until dropped).
pub async fn start(config: MockConfig) -> anyhow::Result<MockServer> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;
    let addr = listener.local_addr().context("failed to read the listening address")?;
    let (shutdown, signal) = watch::channel(false);
    let shared = Arc::new(Shared {
        recorder: Recorder::new(config.record_limit),
        responses: responses::Store::default(),
        conversations: conversations::Store::default(),
        config,
        shutdown: signal.clone(),
        ids: AtomicU64::new(first_id()),
        connections: AtomicU64::new(0),
    });
    let app = router(shared.clone());
    let accepted = shared.clone();
    let listener = listener.tap_io(move |tcp| {
        accepted.connections.fetch_add(1, Ordering::Relaxed);
        // Small SSE chunks must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let mut signal = signal;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(MockServer { addr, shared, shutdown, task: Some(task) })
}

impl MockServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: Anthropic's and Gemini's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the OpenAI SDKs' base URL.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/openai/v1`: Groq's base URL shape.
    pub fn groq_base_url(&self) -> String {
        format!("http://{}/openai/v1", self.addr)
    }

    /// What the mock received, oldest first (within `record_limit`).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorder.all()
    }

    /// How many connections the mock has accepted: a client that keeps
    /// its connections alive opens few.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    pub fn clear_requests(&self) {
        self.shared.recorder.clear();
    }

    /// Stops accepting, ends hanging and paced answers, and waits for the
    /// connections to close.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.await.context("the mock's server task failed")?.context("the mock's server failed")?;
        }
        Ok(())
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

pub(crate) struct Shared {
    pub config: MockConfig,
    pub recorder: Recorder,
    /// The Responses API's stored responses.
    pub responses: responses::Store,
    /// The Conversations API's conversations.
    pub conversations: conversations::Store,
    pub shutdown: watch::Receiver<bool>,
    ids: AtomicU64,
    /// Connections accepted so far.
    connections: AtomicU64,
}

impl Shared {
    /// A short id unique within this mock, and across its restarts, for
    /// response, item, conversation and tool-call ids.
    pub fn next_id(&self) -> String {
        format!("{:012x}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

/// Where this mock's ids start: a random point below 2⁴⁰, so that a mock
/// started again (`tollgate demo` on a kept data directory) does not give
/// the ids of the last one again, as a provider never does. The answers
/// stay deterministic; only the ids differ from one run to the next.
fn first_id() -> u64 {
    use std::hash::BuildHasher;
    1 + (std::collections::hash_map::RandomState::new().hash_one(std::process::id()) >> 24)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(openai::routes())
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model).post(gemini::action))
        .route("/openai/v1/models", get(openai::models_route))
        .route("/openai/v1/models/{id}", get(openai::model_route))
        .merge(anthropic::routes())
        .merge(gemini::routes())
        .route("/user", get(github_user))
        .route("/_mock/requests", get(list_requests).delete(clear_requests))
        .fallback(not_found)
        // Prompts with images run to megabytes; the providers take them.
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(shared)
}

/// Whose `GET /v1/models` a call is: OpenAI's, Anthropic's (its clients
/// send `anthropic-version`) or Gemini's stable version (its clients send
/// the key in `x-goog-api-key` or `?key=`).
fn models_of(headers: &HeaderMap, uri: &Uri) -> Provider {
    if headers.contains_key("anthropic-version") {
        Provider::Anthropic
    } else if headers.contains_key("x-goog-api-key") || query_param(uri, "key").is_some() {
        Provider::Gemini
    } else {
        Provider::OpenAi
    }
}

async fn models(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    match models_of(&call.headers, &call.uri) {
        Provider::Anthropic => anthropic::models(&shared, &call),
        Provider::Gemini => gemini::models(State(shared), call).await,
        _ => openai::models(&shared, &call),
    }
}

async fn model(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    match models_of(&call.headers, &call.uri) {
        Provider::Anthropic => anthropic::model(&shared, &call, &id),
        Provider::Gemini => gemini::model(State(shared), Path(id), call).await,
        _ => openai::model(&shared, &call, &id),
    }
}

/// GitHub's `GET /user`, the cheapest call that proves a token.
async fn github_user(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::GitHub, &call)?;
    Ok(exchange.answer(json!({ "login": "mock-user", "id": 1, "type": "User" }), None, 0))
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({ "requests": shared.recorder.all() })).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.recorder.clear();
    StatusCode::NO_CONTENT
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!("mock-llm has no route {method} {}", uri.path());
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": { "message": message, "type": "not_found" } }))).into_response()
}

impl Provider {
    /// The credential as this provider's clients send it.
    fn credential<'a>(self, headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = || header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        match self {
            Provider::OpenAi => bearer(),
            // `x-api-key`, or a bearer token as the current SDKs send the key.
            Provider::Anthropic => header("x-api-key").or_else(bearer),
            Provider::Gemini => header("x-goog-api-key").or_else(|| query_param(uri, "key").filter(|k| !k.is_empty())),
            Provider::GitHub => bearer().or_else(|| header("authorization")?.strip_prefix("token ")),
        }
    }

    /// An error in this provider's own JSON shape.
    fn error(self, status: StatusCode, message: &str) -> Response {
        let body = match self {
            Provider::OpenAi => openai::error_body(status, message),
            Provider::Anthropic => anthropic::error_body(status, message),
            Provider::Gemini => gemini::error_body(status, message),
            Provider::GitHub => json!({ "message": message, "documentation_url": "https://docs.github.com/rest" }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    fn unauthorized_message(self) -> &'static str {
        match self {
            Provider::OpenAi => "Incorrect API key provided. You can find your API key in your account settings.",
            Provider::Anthropic => "invalid x-api-key",
            Provider::Gemini => "API key not valid. Please pass a valid API key.",
            Provider::GitHub => "Bad credentials",
        }
    }
}

/// A request as the handlers read it: its method, URI, headers and whole
/// body (bounded by the router's body limit).
pub(crate) struct Incoming {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Incoming {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Incoming, Response> {
        let (mut parts, body) = request.into_parts();
        let headers = std::mem::take(&mut parts.headers);
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let body =
            Bytes::from_request(Request::from_parts(parts, body), state).await.map_err(IntoResponse::into_response)?;
        Ok(Incoming { method, uri, headers, body })
    }
}

impl Incoming {
    /// The credential as `provider`'s clients send it.
    pub fn credential(&self, provider: Provider) -> Option<&str> {
        provider.credential(&self.headers, &self.uri)
    }
}

/// A handler's answer: a refusal is a whole answer too.
pub(crate) type Answer = Result<Response, Response>;

/// One request in progress: recorded on arrival, finished with its outcome.
pub(crate) struct Exchange {
    pub shared: Arc<Shared>,
    pub provider: Provider,
    seq: u64,
}

impl Exchange {
    /// Records the request and checks its credential.
    pub fn open(shared: &Arc<Shared>, provider: Provider, call: &Incoming) -> Result<Exchange, Response> {
        let Incoming { method, uri, headers, body } = call;
        let credential = call.credential(provider);
        let seq = shared.recorder.start(provider, method, uri, headers, credential, body);
        let exchange = Exchange { shared: shared.clone(), provider, seq };
        let accepted = match credential {
            None | Some("") => false,
            Some(key) => shared.config.api_keys.is_empty() || shared.config.api_keys.iter().any(|k| k == key),
        };
        if !accepted {
            return Err(exchange.fail(StatusCode::UNAUTHORIZED, provider.unauthorized_message()));
        }
        Ok(exchange)
    }

    /// Parses the JSON body (a 400 in the provider's shape when it is not).
    pub fn json(&self, body: &Bytes) -> Result<Value, Response> {
        serde_json::from_slice(body)
            .map_err(|e| self.fail(StatusCode::BAD_REQUEST, &format!("the request body is not valid JSON: {e}")))
    }

    /// The knobs of this request: `text` directives, then the `x-mock` header.
    pub fn knobs(&self, text: &str, headers: &HeaderMap) -> Result<Knobs, Response> {
        let mut knobs = Knobs::default();
        let header = headers.get("x-mock").map(|v| v.to_str().unwrap_or("\u{fffd}"));
        knobs
            .apply_text(text)
            .and_then(|()| header.map_or(Ok(()), |h| knobs.apply(h)))
            .map_err(|message| self.fail(StatusCode::BAD_REQUEST, &message))?;
        Ok(knobs)
    }

    /// What to answer `ask` with: the reply its knobs and the config call
    /// for, after the wait they ask (see [`Exchange::wait`]); the knobs
    /// too, which pace a stream.
    pub async fn reply(&self, ask: &reply::Ask<'_>, headers: &HeaderMap) -> Result<(reply::Reply, Knobs), Response> {
        let knobs = self.knobs(&ask.last_user_text, headers)?;
        let reply = reply::reply(ask, &knobs, &self.shared.config);
        self.wait(&knobs).await?;
        Ok((reply, knobs))
    }

    /// Waits as the knobs say (latency, hang), then answers an injected
    /// status if there is one.
    pub async fn wait(&self, knobs: &Knobs) -> Result<(), Response> {
        let latency = knobs.latency.unwrap_or(self.shared.config.latency);
        let mut shutdown = self.shared.shutdown.clone();
        if knobs.hang {
            let _ = shutdown.wait_for(|stop| *stop).await;
            return Err(self.fail(StatusCode::SERVICE_UNAVAILABLE, "mock-llm is shutting down"));
        }
        if !latency.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(latency) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        }
        if let Some(status) = knobs.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = self.fail(status, &format!("mock-llm: injected status {}", status.as_u16()));
            if let Some(seconds) = knobs.retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS) {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return Err(response);
        }
        Ok(())
    }

    /// Answers `status` in the provider's error shape, and records it.
    pub fn fail(&self, status: StatusCode, message: &str) -> Response {
        self.refuse(self.provider.error(status, message))
    }

    /// Records a refusal whose body the status alone does not decide, and
    /// returns it.
    pub fn refuse(&self, response: Response) -> Response {
        self.finish(Outcome { status: response.status().as_u16(), usage: None, tokens_sent: 0, completed: true });
        response
    }

    pub fn finish(&self, outcome: Outcome) {
        self.shared.recorder.finish(self.seq, outcome);
    }

    /// Records a whole JSON answer and returns it.
    pub fn answer(&self, body: impl serde::Serialize, usage: Option<Usage>, tokens: u64) -> Response {
        self.finish(Outcome { status: 200, usage, tokens_sent: tokens, completed: true });
        axum::Json(body).into_response()
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A query parameter's first value, raw (not percent-decoded): the mock
/// reads only keys, ids, numbers and words from a query.
pub(crate) fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// `max_tokens`-like fields as a count (a 400 naming the field otherwise).
pub(crate) fn optional_count(body: &Value, field: &str) -> Result<Option<u64>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("{field}: expected a non-negative integer")),
    }
}
