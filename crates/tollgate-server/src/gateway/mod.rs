//! The LLM gateway: the proxy routes of the OpenAI, Anthropic and Gemini
//! APIs, metered and enforced.
//!
//! One call's path: the caller's key (any place a provider's SDK puts it)
//! → the plan's per-minute request limit → the body read by the provider
//! adapter (`tollgate-providers`) → the model routed to a provider
//! ([`route`]) and checked against the plan's allowed models → the
//! credential, by the vault's one resolution rule → the input counted, the
//! quota held and the output limit lowered to what is left
//! ([`accounting`]) → the upstream call ([`upstream`]) → the answer passed
//! back (a stream piece by piece, [`relay`]) → its usage committed before
//! the response ends. Beside the metered calls, the models (all or one)
//! and the providers' token counts are passed through unmetered, for the
//! models the plan allows.
//!
//! Every refusal on these routes is in the provider's error shape
//! ([`refusal`]), every response carries the rate-limit headers
//! ([`headers`]). The gateway never forwards the caller's key, never logs
//! a secret, and writes nothing to the audit log.

mod accounting;
mod headers;
mod refusal;
mod relay;
mod route;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;
use tollgate_domain::{KnownProvider, Scope, SecretString, Timestamp};
use tollgate_providers::tokens::{self, Encoding};
use tollgate_providers::{Api, ErrorKind, LimitStyle, Operation};
use tollgate_store::{Kept, Owned, Recorded, ResponseOwner};

use self::accounting::{CallInfo, Held, Outcome, Settlement, Spent, Unsettled};
use self::refusal::ProxyError;
use self::upstream::{Endpoint, Upstream};
use crate::auth::{Principal, authenticate, client_ip, presented_credential};
use crate::config::Config;
use crate::metering::Account;
use crate::state::AppState;
use crate::vault::Source;

/// The largest request body a proxy route takes (prompts with images run
/// to megabytes), and the largest whole response it reads.
const MAX_BODY: usize = 64 << 20;
/// Bodies larger than this are counted on a blocking thread.
const COUNT_INLINE: usize = 64 << 10;

/// What the gateway keeps between calls: the pooled upstream client.
pub struct Gateway {
    upstream: Arc<Upstream>,
}

impl Gateway {
    pub fn new(config: &Config) -> anyhow::Result<Gateway> {
        Ok(Gateway { upstream: Arc::new(Upstream::new(&config.gateway)?) })
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route("/v1/responses/input_tokens", post(input_tokens))
        .route("/v1/responses/{id}", get(stored_response).delete(stored_response))
        .route("/v1/responses/{id}/input_items", get(stored_response))
        .route("/v1/responses/{id}/cancel", post(stored_response))
        .route("/v1/conversations", post(stored_response))
        .route("/v1/conversations/{id}", get(stored_response).post(stored_response).delete(stored_response))
        .route("/v1/conversations/{id}/items", get(stored_response).post(stored_response))
        .route("/v1/conversations/{id}/items/{item_id}", get(stored_response).delete(stored_response))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1beta/models", get(models))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1beta/models/{target}", get(model).post(gemini))
        .route("/v1/models/{target}", get(model).post(gemini))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn chat_completions(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::OpenAi, req, Work::Call(Operation::ChatCompletions, None)).await
}

async fn embeddings(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::OpenAi, req, Work::Call(Operation::Embeddings, None)).await
}

async fn completions(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::OpenAi, req, Work::Call(Operation::Completions, None)).await
}

async fn responses(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::OpenAi, req, Work::Call(Operation::Responses, None)).await
}

/// `GET` and `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`
/// and `POST /v1/responses/{id}/cancel`: a response the provider stored,
/// for the user who made it through the gateway and no one else (on the
/// platform's key, every user's responses sit in one provider account).
/// Likewise OpenAI's Conversations API: `POST /v1/conversations` makes one
/// for the caller; `GET`, `POST` and `DELETE /v1/conversations/{id}`, and
/// its `items` (listed, added, one fetched or deleted), are theirs alone.
async fn stored_response(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::OpenAi, req, Work::Stored).await
}

async fn messages(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::Anthropic, req, Work::Call(Operation::Messages, None)).await
}

/// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`,
/// and the same under `/v1/` (the stable version, which Google's current
/// SDK calls by default).
async fn gemini(State(state): State<AppState>, req: Request) -> Response {
    let version = GeminiVersion::of(req.uri().path());
    let target = req.uri().path().trim_start_matches(version.prefix()).to_owned();
    let (model, op) = match target.rsplit_once(':') {
        Some((model, "generateContent")) => (model, Operation::GenerateContent),
        Some((model, "streamGenerateContent")) => (model, Operation::StreamGenerateContent),
        Some((model, "countTokens")) => {
            return proxy(state, Api::Gemini, req, Work::Count(Some(model.to_owned()))).await;
        }
        _ => {
            let message = format!(
                "models/{target} is not a method Tollgate proxies: use models/{{model}}:generateContent, \
                 :streamGenerateContent or :countTokens"
            );
            return ProxyError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message).into_response(Api::Gemini);
        }
    };
    let model = model.to_owned();
    proxy(state, Api::Gemini, req, Work::Call(op, Some(model))).await
}

/// Who is calling: a user's key with the `proxy` scope (or anonymous demo
/// traffic, when enabled), and their account.
struct Caller {
    account: Arc<Account>,
    key_id: Option<String>,
}

async fn identify(state: &AppState, parts: &Parts) -> Result<Caller, ProxyError> {
    if let Some(anonymous) = &state.config.anonymous
        && presented_credential(&parts.headers, parts.uri.query()).is_none()
        && let Some(ip) = client_ip(parts, state.config.trust_forwarded_for)
    {
        let account = state.metering.anonymous_account(ip, &anonymous.plan).await?;
        return Ok(Caller { account, key_id: None });
    }
    let principal = authenticate(state, parts).await?;
    principal.require_scope(Scope::Proxy)?;
    let Principal::Key(key) = &principal else {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "the gateway is called with a user's key (scope proxy), not the admin token",
        ));
    };
    let Some(user) = &key.user else {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "a service key cannot call the gateway: calls are metered per user, so use a user's key",
        ));
    };
    let account = state.metering.account(&user.id).await?;
    Ok(Caller { account, key_id: Some(key.key.id.to_string()) })
}

/// What a proxy route does for a caller: a metered call (with the model
/// its path names, Gemini's), the models (all, or the one named), a token
/// count (likewise), or a stored response of the caller's.
enum Work {
    Call(Operation, Option<String>),
    Models(Option<String>),
    Count(Option<String>),
    Stored,
}

/// Identifies the caller, does `work`, and answers in `api`'s shape.
async fn proxy(state: AppState, api: Api, req: Request, work: Work) -> Response {
    let (parts, body) = req.into_parts();
    let caller = match identify(&state, &parts).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(api),
    };
    let outcome = match work {
        Work::Call(op, path_model) => forward(&state, &caller, op, &parts, body, path_model).await,
        Work::Models(id) => list_models(&state, &caller, api, &parts, id.as_deref()).await,
        Work::Count(path_model) => count(&state, &caller, api, &parts, body, path_model).await,
        Work::Stored => stored(&state, &caller, &parts, body).await,
    };
    answered(&state, &caller, api, outcome).await
}

/// What a caller is answered on a proxy route: `outcome`, a refusal in
/// `api`'s shape, with the rate-limit headers (and the demo mark).
async fn answered(state: &AppState, caller: &Caller, api: Api, outcome: Result<Response, ProxyError>) -> Response {
    let mut response = outcome.unwrap_or_else(|e| e.into_response(api));
    add_rate_limits(state, &caller.account, &mut response).await;
    if caller.key_id.is_none() {
        response.headers_mut().insert("x-demo-mode", HeaderValue::from_static("true"));
    }
    response
}

async fn add_rate_limits(state: &AppState, account: &Account, response: &mut Response) {
    let headers = response.headers_mut();
    // Room for them all at once (a provider's answer came with it already).
    headers.reserve(upstream::OWN_HEADERS);
    if let Err(e) = headers::rate_limits(state, account, headers).await {
        tracing::warn!(error = %e, "failed to compute the rate-limit headers");
    }
}

/// The version of Gemini's API a call names in its path: the gateway passes
/// it on as it came, for the two take different fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum GeminiVersion {
    V1,
    V1Beta,
}

impl GeminiVersion {
    pub(crate) fn of(path: &str) -> GeminiVersion {
        if path.starts_with("/v1/") { GeminiVersion::V1 } else { GeminiVersion::V1Beta }
    }

    /// The path's start, before the model.
    fn prefix(self) -> &'static str {
        match self {
            GeminiVersion::V1 => "/v1/models/",
            GeminiVersion::V1Beta => "/v1beta/models/",
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GeminiVersion::V1 => "v1",
            GeminiVersion::V1Beta => "v1beta",
        }
    }
}

/// The route a call took, as logs, metrics and the ledger name it.
fn route_name(op: Operation, path: &str) -> &'static str {
    let v1 = GeminiVersion::of(path) == GeminiVersion::V1;
    match op {
        Operation::ChatCompletions => "/v1/chat/completions",
        Operation::Embeddings => "/v1/embeddings",
        Operation::Responses => "/v1/responses",
        Operation::Completions => "/v1/completions",
        Operation::Messages => "/v1/messages",
        Operation::GenerateContent if v1 => "/v1/models/{model}:generateContent",
        Operation::GenerateContent => "/v1beta/models/{model}:generateContent",
        Operation::StreamGenerateContent if v1 => "/v1/models/{model}:streamGenerateContent",
        Operation::StreamGenerateContent => "/v1beta/models/{model}:streamGenerateContent",
    }
}

/// Whether the query has `pair` (`alt=sse`) as one of its parameters.
fn query_has(uri: &axum::http::Uri, pair: &str) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|p| p == pair))
}

fn user_agent(parts: &Parts) -> Option<String> {
    let ua = parts.headers.get(header::USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().take(512).collect())
}

async fn forward(
    state: &AppState,
    caller: &Caller,
    op: Operation,
    parts: &Parts,
    body: axum::body::Body,
    path_model: Option<String>,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let at = Timestamp::now();
    let api = op.api();
    let account = &caller.account;
    accounting::take_request(state, account).await?;
    let body = read_body(body).await?;
    let request_bytes = body.len();
    let request = tollgate_providers::Request::parse(op, body, path_model.as_deref())
        .map_err(|e| ProxyError::invalid(&e.field, e.message))?;
    let requested = request.model().ok_or_else(|| ProxyError::invalid("model", "model: missing"))?.to_owned();
    let target = route::target(&state.config, api, &requested)?;
    route::allowed(&account.plan, &requested, &target)?;
    let provider = target.provider;
    let resolved = state.vault.resolve(&account.user, &account.plan, &provider.name).await?;
    let counts = account.counts(resolved.source == Source::Byok);
    // What a response gone on from brings along is input too.
    let carried = match resolved.source {
        Source::Platform => builds_on_own(state, caller, provider.name.as_str(), &request).await?,
        Source::Byok if counts => {
            carried_by(state, caller, provider.name.as_str(), resolved.source, &request).await?.unwrap_or(0)
        }
        Source::Byok => 0,
    };
    let exact = provider.known == Some(KnownProvider::OpenAi);
    let encoding = tokens::encoding_for(&target.model, exact);
    let (mut request, input) = count_input(request, encoding, request_bytes).await;
    let input = input + carried;
    let held = if counts {
        let style = if exact { LimitStyle::MaxCompletionTokens } else { LimitStyle::MaxTokens };
        accounting::reserve(state, account, &mut request, input, &target.model, style).await?
    } else {
        Held::default()
    };
    let info = CallInfo {
        key_id: caller.key_id.clone(),
        route: route_name(op, parts.uri.path()),
        provider: provider.name.to_string(),
        model: target.model.clone(),
        client_ip: client_ip(parts, state.config.trust_forwarded_for).map(|ip| ip.to_string()),
        user_agent: user_agent(parts),
        source: resolved.source,
        request_bytes: request_bytes as u64,
        started,
        at,
    };
    // From here on a call dropped midway (the client went away) still settles.
    let mut unsettled = Unsettled(Some(Settlement {
        state: state.clone(),
        account: account.clone(),
        held,
        info,
        input_estimate: input,
        encoding,
    }));
    request.set_model(&target.model);
    request.ask_for_stream_usage();
    let streaming = request.stream();
    let sse = op != Operation::StreamGenerateContent || query_has(&parts.uri, "alt=sse");
    let tap = request.tap(sse);
    let body = request.into_body();
    let call = upstream::call(provider, api, Endpoint::Call(op, &target.model), parts, &resolved, Some(body));
    let call = match call {
        Ok(call) => call,
        Err(e) => return Err(settle_failed(&mut unsettled, e).await),
    };
    let upstream = state.gateway.upstream.clone();
    let (head, mut response) = match upstream.send(call).await {
        Ok(response) => response.into_parts(),
        Err(failure) => return Err(settle_failed(&mut unsettled, failure.into_error(provider.name.as_str())).await),
    };
    let first_byte = started.elapsed();
    let status = head.status;
    if status.is_success() && streaming {
        let headers = upstream::response_headers(&head.headers);
        let mut settlement = unsettled.take().ok_or_else(settled_twice)?;
        settlement.held.keep_alive(state);
        let body = relay::body(upstream, response, tap, settlement, started);
        let mut out = Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        return Ok(out);
    }
    let bytes = match upstream.read(&mut response, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(failure) => return Err(settle_failed(&mut unsettled, failure.into_error(provider.name.as_str())).await),
    };
    let mut headers = upstream::response_headers(&head.headers);
    if status.is_server_error() {
        let message = format!(
            "{} answered HTTP {}{}",
            provider.name,
            status.as_u16(),
            upstream_message(&bytes, &resolved.secret).map(|m| format!(": {m}")).unwrap_or_default()
        );
        let error = ProxyError::upstream(provider.name.as_str(), false, message)
            .detail("upstream_status", Value::from(status.as_u16()));
        return Err(settle_failed(&mut unsettled, error).await);
    }
    let (spent, stored, body) = if status.is_success() {
        let answer = tollgate_providers::answer_of(op, &bytes);
        let spent = match answer.usage {
            Some(usage) => Spent::Reported(usage),
            None => {
                let output = answer.unreported.as_ref().map_or(0, |seen| seen.output_estimate(encoding));
                Spent::Estimated { usage: None, output }
            }
        };
        (spent, answer.stored, bytes)
    } else {
        // The provider's own refusal, as it came (less any echo of the secret).
        if status == StatusCode::TOO_MANY_REQUESTS && !headers.contains_key(header::RETRY_AFTER) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        (Spent::Nothing, None, scrub(bytes, &resolved.secret))
    };
    drop(resolved);
    let outcome = Outcome {
        status: status.as_u16(),
        succeeded: status.is_success(),
        spent,
        first_byte: Some(first_byte),
        response_bytes: body.len() as u64,
        stored,
    };
    let settlement = unsettled.take().ok_or_else(settled_twice)?;
    settlement.settle(outcome).await?;
    let mut out = Response::new(axum::body::Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Refuses a call on the platform's key whose input builds on what the
/// provider keeps for someone else: the platform's account holds every
/// user's responses. (On a user's own key, the account is theirs alone.)
/// A response gone on from, the items named by id and the conversation
/// added to must be the caller's own, made in that account (the platform's
/// key for `provider`), or they do not exist. Answers the tokens the
/// response gone on from brings along ([`carried_by`]).
async fn builds_on_own(
    state: &AppState,
    caller: &Caller,
    provider: &str,
    request: &tollgate_providers::Request,
) -> Result<u64, ProxyError> {
    let missing = async |ids: &[&str], kind: Kept| not_made_here(state, caller, provider, ids, kind).await;
    let not_found = |message: String, field: &str| {
        Err(ProxyError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message).field(field))
    };
    let carried = carried_by(state, caller, provider, Source::Platform, request).await?;
    if let Some(previous) = request.continues()
        && carried.is_none()
    {
        return not_found(format!("Previous response with id '{previous}' not found."), "previous_response_id");
    }
    // A conversation's history names each earlier answer: looked up at once.
    let items: Vec<&str> = request.references().iter().map(String::as_str).collect();
    if !items.is_empty()
        && let Some(at) = missing(&items, Kept::Item).await?
    {
        return not_found(format!("Item with id '{}' not found.", items[at]), "input");
    }
    if let Some(conversation) = request.conversation()
        && missing(&[conversation], Kept::Conversation).await?.is_some()
    {
        return not_found(format!("Conversation with id '{conversation}' not found."), "conversation");
    }
    Ok(carried.unwrap_or(0))
}

/// The tokens a call going on from a stored response (`previous_response_id`)
/// brings along: the provider puts that response's input and output before
/// the call's own, and charges them as its input. Known for a response the
/// caller's user made through the gateway with `source` for `provider`
/// (`None` for another: on a user's own key, the provider may know one
/// made elsewhere, and judges for itself); 0 going on from none.
async fn carried_by(
    state: &AppState,
    caller: &Caller,
    provider: &str,
    source: Source,
    request: &tollgate_providers::Request,
) -> Result<Option<u64>, ProxyError> {
    let Some(previous) = request.continues() else { return Ok(Some(0)) };
    let made = made_through(state, caller, &[previous], Kept::Response).await?.pop().flatten();
    Ok(made.filter(|o| made_with(o, provider, source)).map(|o| o.context_tokens.max(0) as u64))
}

/// Whether `made` was made for `provider` with a credential of `source`:
/// in the provider account a call with that credential reaches.
fn made_with(made: &ResponseOwner, provider: &str, source: Source) -> bool {
    made.provider == provider && made.key_source == source.as_str()
}

/// The first of `ids` (of `kind`) the caller's user did not make on the
/// platform's key for `provider`, if any.
async fn not_made_here(
    state: &AppState,
    caller: &Caller,
    provider: &str,
    ids: &[&str],
    kind: Kept,
) -> Result<Option<usize>, ProxyError> {
    let made = made_through(state, caller, ids, kind).await?;
    let here = |o: &ResponseOwner| made_with(o, provider, Source::Platform);
    Ok(made.iter().position(|made| !made.as_ref().is_some_and(here)))
}

/// Refuses, on the platform's key, a Conversations API body whose `items`
/// name by id a stored item the caller's user did not make there: the
/// provider would copy someone else's item into the conversation.
async fn items_are_own(state: &AppState, caller: &Caller, provider: &str, body: &[u8]) -> Result<(), ProxyError> {
    let named =
        tollgate_providers::conversation_references(body).map_err(|e| ProxyError::invalid(&e.field, e.message))?;
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    if !named.is_empty()
        && let Some(at) = not_made_here(state, caller, provider, &named, Kept::Item).await?
    {
        let message = format!("Item with id '{}' not found.", named[at]);
        return Err(ProxyError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message).field("items"));
    }
    Ok(())
}

fn settled_twice() -> ProxyError {
    ProxyError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal, "a call was settled twice")
}

/// Records a call that got no answer to pass back, and returns its error.
async fn settle_failed(unsettled: &mut Unsettled, error: ProxyError) -> ProxyError {
    if let Some(settlement) = unsettled.take() {
        let outcome = Outcome {
            status: error.status.as_u16(),
            succeeded: false,
            spent: Spent::Nothing,
            first_byte: None,
            response_bytes: 0,
            stored: None,
        };
        if let Err(e) = settlement.settle(outcome).await {
            return ProxyError::from(e);
        }
    }
    error
}

/// The client's whole body, up to [`MAX_BODY`].
async fn read_body(body: axum::body::Body) -> Result<Bytes, ProxyError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ProxyError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::InvalidRequest, "the request body is over 64 MB")
    })
}

/// Counts the input, on a blocking thread when the body is large.
async fn count_input(
    request: tollgate_providers::Request,
    encoding: Encoding,
    size: usize,
) -> (tollgate_providers::Request, u64) {
    if size <= COUNT_INLINE {
        let n = request.input_tokens(encoding);
        return (request, n);
    }
    let counted = tokio::task::spawn_blocking(move || {
        let n = request.input_tokens(encoding);
        (request, n)
    });
    match counted.await {
        Ok(done) => done,
        // The counting thread panicked, which `tokens::count` prevents.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A provider's error message, if its body has one, without the secret,
/// cut to 300 characters (after the secret is gone: cut first, a secret
/// across the cut would keep its start).
fn upstream_message(body: &[u8], secret: &SecretString) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = value.pointer("/error/message").and_then(Value::as_str)?;
    let message = match secret.expose() {
        "" => message.to_owned(),
        secret => message.replace(secret, "[redacted]"),
    };
    Some(message.chars().take(300).collect())
}

/// `body` with every occurrence of `secret` replaced: a provider's error
/// may echo the key it was given.
fn scrub(body: Bytes, secret: &SecretString) -> Bytes {
    let needle = secret.expose().as_bytes();
    if needle.is_empty() || !body.windows(needle.len()).any(|w| w == needle) {
        return body;
    }
    let text = String::from_utf8_lossy(&body).replace(secret.expose(), "[redacted]");
    Bytes::from(text)
}

/// `GET /v1/models` and `GET /v1beta/models`: the provider's list
/// (Anthropic's when the client sends `anthropic-version`, Gemini's on
/// `/v1beta/` or when the key comes as Gemini's clients send it, else the
/// default OpenAI-format provider's), narrowed to the plan's allowed models.
async fn models(State(state): State<AppState>, req: Request) -> Response {
    about_models(state, req, Work::Models(None)).await
}

/// `GET /v1/models/{model}` and `GET /v1beta/models/{model}`: one model of
/// the same provider's, if the plan allows it.
async fn model(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    about_models(state, req, Work::Models(Some(id))).await
}

/// The models of the provider whose API the client speaks.
async fn about_models(state: AppState, req: Request, work: Work) -> Response {
    let gemini_key = req.headers().contains_key("x-goog-api-key")
        || req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
    let api = if req.headers().contains_key("anthropic-version") {
        Api::Anthropic
    } else if gemini_key || GeminiVersion::of(req.uri().path()) == GeminiVersion::V1Beta {
        Api::Gemini
    } else {
        Api::OpenAi
    };
    proxy(state, api, req, work).await
}

/// The provider's list of models, or the one model `id`.
async fn list_models(
    state: &AppState,
    caller: &Caller,
    api: Api,
    parts: &Parts,
    id: Option<&str>,
) -> Result<Response, ProxyError> {
    let account = &caller.account;
    accounting::take_request(state, account).await?;
    let name = match api {
        Api::Anthropic => KnownProvider::Anthropic.name(),
        Api::Gemini => KnownProvider::Gemini.name(),
        Api::OpenAi => state.config.gateway.default_provider.as_str(),
    };
    let provider = state
        .config
        .provider(name)
        .ok_or_else(|| ProxyError::invalid("model", format!("provider {name:?} is not configured")))?;
    let allowed = |id: &str| route::allowed(&account.plan, id, &route::Target { provider, model: id.to_owned() });
    if let Some(id) = id {
        // It goes into the provider's URL, called with the platform's key.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':')) {
            return Err(ProxyError::invalid(
                "model",
                format!("model {id:?}: letters, digits, '-', '.', '_' and ':' only"),
            ));
        }
        allowed(id)?;
    }
    let resolved = state.vault.resolve(&account.user, &account.plan, &provider.name).await?;
    let call = upstream::call(provider, api, Endpoint::Models(id), parts, &resolved, None)?;
    let (status, headers, mut body) = fetch(state, name, call, &resolved.secret).await?;
    // OpenAI's and Anthropic's lists are `data` of `id`s; Gemini's `models`
    // of `name`s (`models/gemini-2.5-flash`).
    let (list_field, id_field) = if api == Api::Gemini { ("models", "name") } else { ("data", "id") };
    if status.is_success()
        && account.plan.allowed_models.is_some()
        && let Ok(mut list) = serde_json::from_slice::<Value>(&body)
        && let Some(items) = list.get_mut(list_field).and_then(Value::as_array_mut)
    {
        items.retain(|m| {
            m.get(id_field).and_then(Value::as_str).is_some_and(|id| allowed(id.trim_start_matches("models/")).is_ok())
        });
        body = Bytes::from(list.to_string());
    }
    Ok(reply(status, headers, body))
}

/// An unmetered call's whole answer from provider `name`: its status, the
/// headers that pass, and the body less any echo of `secret`; a 5xx is a
/// 502 naming the provider.
async fn fetch(
    state: &AppState,
    name: &str,
    call: upstream::Call,
    secret: &SecretString,
) -> Result<(StatusCode, axum::http::HeaderMap, Bytes), ProxyError> {
    let upstream = &state.gateway.upstream;
    let (head, mut response) = upstream.send(call).await.map_err(|f| f.into_error(name))?.into_parts();
    let bytes = upstream.read(&mut response, MAX_BODY).await.map_err(|f| f.into_error(name))?;
    if head.status.is_server_error() {
        return Err(ProxyError::upstream(name, false, format!("{name} answered HTTP {}", head.status.as_u16())));
    }
    Ok((head.status, upstream::response_headers(&head.headers), scrub(bytes, secret)))
}

fn reply(status: StatusCode, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let mut out = Response::new(axum::body::Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// A route of something the provider keeps (a response, a conversation),
/// passed on to the provider it was made through, with the credential that
/// made it (the user's own key or the platform's: the account it is in),
/// if the caller's user made it; else OpenAI's 404, whoever made it. A new
/// conversation is made for the caller. Unmetered (a response was metered
/// when made; keeping items costs nothing) but for the plan's per-minute
/// request limit.
async fn stored(
    state: &AppState,
    caller: &Caller,
    parts: &Parts,
    body: axum::body::Body,
) -> Result<Response, ProxyError> {
    let account = &caller.account;
    accounting::take_request(state, account).await?;
    // The router let through `responses/{id}`, `…/input_items`, `…/cancel`,
    // `conversations`, `conversations/{id}`, `…/items` and `…/items/{item_id}`.
    let rest = parts.uri.path().trim_start_matches("/v1/");
    let (collection, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (kind, noun) =
        if collection == "conversations" { (Kept::Conversation, "Conversation") } else { (Kept::Response, "Response") };
    if path.is_empty() {
        return new_conversation(state, caller, parts, body).await;
    }
    // `{id}`, then `input_items`, `cancel` or `items`, then an item's id.
    let mut segments = path.split('/');
    let (id, under) = (segments.next().unwrap_or_default(), segments.next());
    // Each goes into the provider's URL.
    let item = segments.next();
    for (field, value) in [(format!("{}_id", noun.to_lowercase()), Some(id)), ("item_id".to_owned(), item)] {
        if let Some(value) = value.filter(|v| !tollgate_providers::is_stored_id(v)) {
            let message = format!("{field} {value:?}: 1 to 128 letters, digits, '-' and '_'");
            return Err(ProxyError::invalid(&field, message));
        }
    }
    if kind == Kept::Response && parts.method == Method::GET && query_has(&parts.uri, "stream=true") {
        return Err(ProxyError::invalid(
            "stream",
            "Tollgate does not stream a stored response again: only a background response can be, and the \
             gateway takes none; fetch it without stream",
        ));
    }
    let not_found =
        || ProxyError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, format!("{noun} with id '{id}' not found."));
    let made = made_through(state, caller, &[id], kind).await?.pop().flatten().ok_or_else(not_found)?;
    let provider = state.config.provider(&made.provider).ok_or_else(not_found)?;
    let source = Source::of(&made.key_source);
    let resolved = state.vault.resolve_from(source, &account.user, &account.plan, &provider.name).await?;
    let body = read_body(body).await?;
    let adds_items = parts.method == Method::POST && under == Some("items");
    if adds_items && source == Source::Platform {
        items_are_own(state, caller, provider.name.as_str(), &body).await?;
    }
    let body = (!body.is_empty()).then_some(body);
    let call = upstream::call(provider, Api::OpenAi, Endpoint::Stored(rest), parts, &resolved, body)?;
    let (status, headers, body) = fetch(state, provider.name.as_str(), call, &resolved.secret).await?;
    if status.is_success() {
        if parts.method == Method::DELETE {
            // The response or conversation with what it holds, or one item.
            let gone = item.unwrap_or(id);
            state.store.forget_kept(gone, &made.user_id).await.map_err(crate::error::ApiError::from)?;
        } else if matches!(under, Some("input_items" | "items")) && item.is_none() {
            // The items the user was shown in something of theirs are theirs
            // to name in a later input.
            keep_listed_items(state, &made, id, &body).await?;
        }
    }
    Ok(reply(status, headers, body))
}

/// Records the ids of a list's items (`data[].id`) as items of `holder`,
/// owned as `made` is.
async fn keep_listed_items(
    state: &AppState,
    made: &ResponseOwner,
    holder: &str,
    list: &[u8],
) -> Result<(), ProxyError> {
    let ids = tollgate_providers::listed_ids(list);
    let now = Timestamp::now().millis();
    let rows = ids.iter().map(|id| Owned {
        id,
        kind: Kept::Item,
        user_id: &made.user_id,
        provider: &made.provider,
        key_source: &made.key_source,
        event_id: "",
        created_at: now,
        item_of: Some(holder),
    });
    state.store.keep_owned(rows, Recorded::First).await.map_err(crate::error::ApiError::from)?;
    Ok(())
}

/// The OpenAI-format provider a call that names no model goes to.
fn default_provider(state: &AppState) -> Result<&crate::config::ProviderConfig, ProxyError> {
    let name = state.config.gateway.default_provider.as_str();
    state.config.provider(name).ok_or_else(|| {
        ProxyError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Internal,
            format!("the default provider {name:?} is not configured"),
        )
    })
}

/// `POST /v1/conversations`: a conversation made on the caller's
/// credential for the default OpenAI-format provider, recorded as theirs
/// before it is answered.
async fn new_conversation(
    state: &AppState,
    caller: &Caller,
    parts: &Parts,
    body: axum::body::Body,
) -> Result<Response, ProxyError> {
    must_be_a_user(caller)?;
    let account = &caller.account;
    let provider = default_provider(state)?;
    let name = provider.name.as_str();
    let resolved = state.vault.resolve(&account.user, &account.plan, &provider.name).await?;
    let body = read_body(body).await?;
    if resolved.source == Source::Platform {
        items_are_own(state, caller, provider.name.as_str(), &body).await?;
    }
    let call = upstream::call(provider, Api::OpenAi, Endpoint::Stored("conversations"), parts, &resolved, Some(body))?;
    let (status, headers, body) = fetch(state, name, call, &resolved.secret).await?;
    if status.is_success() {
        let Some(made) = tollgate_providers::created_id(&body) else {
            return Err(ProxyError::upstream(
                name,
                false,
                format!("{name} answered a conversation without a usable id"),
            ));
        };
        let row = Owned {
            id: &made,
            kind: Kept::Conversation,
            user_id: account.user.id.as_str(),
            provider: provider.name.as_str(),
            key_source: resolved.source.as_str(),
            event_id: "",
            created_at: Timestamp::now().millis(),
            item_of: None,
        };
        state.store.keep_owned([row], Recorded::Newest).await.map_err(crate::error::ApiError::from)?;
    }
    Ok(reply(status, headers, body))
}

/// Anonymous demo callers share a user per address, so they may not reach
/// what a provider keeps at all.
fn must_be_a_user(caller: &Caller) -> Result<(), ProxyError> {
    if caller.key_id.is_none() {
        return Err(ProxyError::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "stored responses and conversations are reached with a user's key, not in anonymous demo mode",
        ));
    }
    Ok(())
}

/// How the caller's user made each of `ids`, responses, items or
/// conversations as `kind` says (the provider and the credential), in
/// order; `None` for one they did not make, whoever did (a user deleted
/// and made again under the same id did not), or not of that kind.
async fn made_through(
    state: &AppState,
    caller: &Caller,
    ids: &[&str],
    kind: Kept,
) -> Result<Vec<Option<ResponseOwner>>, ProxyError> {
    must_be_a_user(caller)?;
    let user = &caller.account.user;
    let mine = |o: &ResponseOwner| {
        o.user_id == user.id.as_str() && o.created_at >= user.created_at.millis() && o.kind == kind.as_str()
    };
    // Each id once, however often it is named.
    let mut wanted: Vec<&str> = ids.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found: HashMap<String, ResponseOwner> = HashMap::new();
    for again in [false, true] {
        let missing: Vec<&str> = wanted.iter().copied().filter(|id| !found.contains_key(*id)).collect();
        if missing.is_empty() {
            break;
        }
        if again {
            // Made a moment ago, it is known once the ledger has its call.
            state.metering.caught_up().await;
        }
        let owners = state.store.response_owners(&missing).await.map_err(crate::error::ApiError::from)?;
        found.extend(owners.into_iter().filter(mine).map(|owner| (owner.response_id.clone(), owner)));
    }
    Ok(ids.iter().map(|id| found.get(*id).cloned()).collect())
}

/// `POST /v1/messages/count_tokens` (Anthropic's), OpenAI's `POST
/// /v1/responses/input_tokens` and Gemini's `models/{model}:countTokens`:
/// the provider's own count of a request's input, passed back. Providers
/// do not charge for it, so nothing is held or recorded; the call takes a
/// request of the plan's per-minute limit, its model must be one the plan
/// allows, and on the platform's key what it builds on must be the
/// caller's own, as for a call.
async fn count_tokens(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::Anthropic, req, Work::Count(None)).await
}

async fn input_tokens(State(state): State<AppState>, req: Request) -> Response {
    proxy(state, Api::OpenAi, req, Work::Count(None)).await
}

async fn count(
    state: &AppState,
    caller: &Caller,
    api: Api,
    parts: &Parts,
    body: axum::body::Body,
    path_model: Option<String>,
) -> Result<Response, ProxyError> {
    let account = &caller.account;
    accounting::take_request(state, account).await?;
    let body = read_body(body).await?;
    // Read as the call whose input it counts: the same fields, each key once.
    let op = match api {
        Api::OpenAi => Operation::Responses,
        Api::Anthropic => Operation::Messages,
        Api::Gemini => Operation::GenerateContent,
    };
    let mut request = tollgate_providers::Request::parse(op, body, path_model.as_deref())
        .map_err(|e| ProxyError::invalid(&e.field, e.message))?;
    let (provider, model) = match request.model() {
        Some(requested) => {
            let target = route::target(&state.config, api, requested)?;
            route::allowed(&account.plan, requested, &target)?;
            (target.provider, target.model)
        }
        // OpenAI's may leave it out (the previous response's is counted
        // with): the default provider counts it, and no model is used.
        None if api == Api::OpenAi => (default_provider(state)?, String::new()),
        None => return Err(ProxyError::invalid("model", "model: missing")),
    };
    let resolved = state.vault.resolve(&account.user, &account.plan, &provider.name).await?;
    if resolved.source == Source::Platform {
        builds_on_own(state, caller, provider.name.as_str(), &request).await?;
    }
    if !model.is_empty() {
        request.set_model(&model);
    }
    let body = request.into_body();
    let call = upstream::call(provider, api, Endpoint::CountTokens(&model), parts, &resolved, Some(body))?;
    let (status, headers, body) = fetch(state, provider.name.as_str(), call, &resolved.secret).await?;
    Ok(reply(status, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_message_loses_the_secret_wherever_the_cut_falls() {
        let secret = SecretString::new("sk-platform-secret-0123456789");
        for at in [0, 280, 290, 299, 320] {
            let message = format!("{}{} was refused", "x".repeat(at), secret.expose());
            let body = serde_json::to_vec(&serde_json::json!({"error": {"message": message}})).unwrap();
            let seen = upstream_message(&body, &secret).unwrap();
            assert!(seen.chars().count() <= 300);
            assert!(!seen.contains("sk-platform"), "{at}: {seen}");
        }
        let body = br#"{"error": {"message": "overloaded"}}"#;
        assert_eq!(upstream_message(body, &SecretString::new("")).as_deref(), Some("overloaded"));
        let scrubbed = scrub(Bytes::from_static(b"key sk-platform-secret-0123456789 echoed"), &secret);
        assert_eq!(&scrubbed[..], b"key [redacted] echoed");
    }
}
