//! The providers' side: one pooled HTTP client (keep-alive, TCP_NODELAY;
//! hyper's own, or reqwest when the environment names a proxy), the
//! upstream URL and headers of a call, and the three timeouts (connect,
//! first byte, idle between body pieces).
//!
//! What reaches a provider: the client's body (changed only as the
//! adapters say), its headers minus hop-by-hop ones and every credential
//! the client sent (the gateway key never leaves), and the resolved
//! provider secret in the provider's own header.

use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{self as http, HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tollgate_domain::KnownProvider;
use tollgate_providers::{Api, Operation};

use super::refusal::ProxyError;
use crate::config::{GatewayConfig, ProviderConfig};
use crate::vault::{Resolved, Source};

/// How long an unused connection to a provider stays open.
const IDLE_CONNECTION: Duration = Duration::from_secs(90);

/// The `anthropic-version` sent when the client sent none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Request headers never passed to a provider: hop-by-hop ones, the
/// client's credentials, and those the gateway sets itself.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "cookie",
    "accept-encoding",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Request headers that pick the account a provider bills: passed on with
/// the user's own key (their account, their choice), never with the
/// platform's key (a user could bill another project the key can reach).
const ACCOUNT_HEADERS: &[&str] = &["openai-organization", "openai-project", "x-goog-user-project"];

/// Response headers never passed back: hop-by-hop ones, the provider's own
/// rate-limit headers (Tollgate's replace them) and its request id (kept as
/// `x-upstream-request-id`; `x-request-id` is Tollgate's).
fn dropped_response_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "trailer"
            | "set-cookie"
            | "server"
            | "date"
            | "x-request-id"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
        || name.starts_with("ratelimit")
}

/// Why a call to a provider did not give a whole answer.
#[derive(Debug)]
pub enum Failure {
    /// No connection, or it broke.
    Broken(String),
    /// No answer in time; says which wait ran out.
    Timeout(&'static str, Duration),
}

impl Failure {
    pub fn into_error(self, provider: &str) -> ProxyError {
        match self {
            Failure::Broken(why) => ProxyError::upstream(provider, false, format!("{provider} failed: {why}")),
            Failure::Timeout(what, after) => ProxyError::upstream(
                provider,
                true,
                format!("{provider} did not answer in time: no {what} within {} s", after.as_secs()),
            ),
        }
    }
}

/// A provider's response body, from whichever client carried the call.
pub type Body = Either<Incoming, reqwest::Body>;

/// A provider's response: its head, and its body still to be read.
pub type Response = http::Response<Body>;

/// Whether `e`, or anything under it, is a timed-out connect.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Environment variables that name a proxy for outgoing calls.
const PROXY_VARIABLES: &[&str] = &["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// What carries calls to the providers.
enum Transport {
    /// hyper's pooled client, directly: the usual path.
    Direct(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    /// reqwest, which honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
    /// `NO_PROXY`: used when the environment names a proxy.
    Proxied(reqwest::Client),
}

pub struct Upstream {
    transport: Transport,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Upstream> {
        let proxied = PROXY_VARIABLES.iter().any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        let transport = if proxied {
            let client = reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .pool_idle_timeout(IDLE_CONNECTION)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .context("failed to build the HTTP client for the providers")?;
            Transport::Proxied(client)
        } else {
            let mut tcp = HttpConnector::new();
            tcp.enforce_http(false);
            tcp.set_nodelay(true);
            tcp.set_connect_timeout(Some(config.connect_timeout));
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_platform_verifier(rustls::crypto::aws_lc_rs::default_provider())
                .context("failed to set up TLS for the providers")?
                .https_or_http()
                .enable_http1()
                .wrap_connector(tcp);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(IDLE_CONNECTION)
                .pool_timer(TokioTimer::new())
                .build(tls);
            Transport::Direct(client)
        };
        Ok(Upstream {
            transport,
            connect_timeout: config.connect_timeout,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        })
    }

    /// Sends `call` and waits for the response's head.
    pub async fn send(&self, call: Call) -> Result<Response, Failure> {
        let connect_timeout = Failure::Timeout("connection", self.connect_timeout);
        let sent = async {
            match &self.transport {
                Transport::Direct(client) => {
                    let mut request = http::Request::new(Full::new(call.body.unwrap_or_default()));
                    *request.method_mut() = call.method;
                    *request.uri_mut() = call.uri;
                    *request.headers_mut() = call.headers;
                    match client.request(request).await {
                        Ok(response) => Ok(response.map(Either::Left)),
                        Err(e) if timed_out(&e) => Err(connect_timeout),
                        Err(e) if e.is_connect() => Err(Failure::Broken("the connection failed".into())),
                        Err(_) => Err(Failure::Broken("the request failed".into())),
                    }
                }
                Transport::Proxied(client) => {
                    let mut request = client.request(call.method, call.uri.to_string()).headers(call.headers);
                    if let Some(body) = call.body {
                        request = request.body(body);
                    }
                    match request.send().await {
                        Ok(response) => Ok(http::Response::from(response).map(Either::Right)),
                        Err(e) if e.is_timeout() => Err(connect_timeout),
                        Err(e) if e.is_connect() => Err(Failure::Broken("the connection failed".into())),
                        Err(_) => Err(Failure::Broken("the request failed".into())),
                    }
                }
            }
        };
        match tokio::time::timeout(self.first_byte_timeout, sent).await {
            Ok(sent) => sent,
            Err(_) => Err(Failure::Timeout("response", self.first_byte_timeout)),
        }
    }

    /// The next piece of a response body; `None` at its end.
    pub async fn next(&self, body: &mut Body) -> Result<Option<Bytes>, Failure> {
        loop {
            match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Ok(Some(data)),
                    // Trailers: nothing the client's body carries.
                    Err(_) => continue,
                },
                Ok(None) => return Ok(None),
                Ok(Some(Err(_))) => return Err(Failure::Broken("the response broke off".into())),
                Err(_) => return Err(Failure::Timeout("data", self.idle_timeout)),
            }
        }
    }

    /// A whole response body, up to `limit` bytes (more is a failure).
    pub async fn read(&self, body: &mut Body, limit: usize) -> Result<Bytes, Failure> {
        let mut first: Option<Bytes> = None;
        let mut whole = Vec::new();
        while let Some(chunk) = self.next(body).await? {
            if first.as_ref().map_or(0, Bytes::len) + whole.len() + chunk.len() > limit {
                return Err(Failure::Broken(format!("the response is larger than {} MB", limit >> 20)));
            }
            match first.take() {
                // Most bodies come in one piece: keep it without a copy.
                None if whole.is_empty() => first = Some(chunk),
                held => {
                    if let Some(held) = held {
                        whole.extend_from_slice(&held);
                    }
                    whole.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(whole)))
    }
}

/// One call to a provider, ready to send.
pub struct Call {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
}

/// Gemini's `models` URL and what follows it (`rest`), in the version the
/// client called, with every query parameter but the key (the gateway key,
/// if the client sent it as `?key=`).
fn gemini_url(base: &str, uri: &Uri, rest: &str) -> String {
    let version = super::GeminiVersion::of(uri.path()).as_str();
    with_query(format!("{base}/{version}/models{rest}"), uri)
}

/// `url` with the client's query, less the gateway key it may carry
/// (`key=`, as Gemini's clients send one).
fn with_query(mut url: String, uri: &Uri) -> String {
    let kept: Vec<&str> =
        uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("key=")).collect();
    if !kept.is_empty() {
        url.push('?');
        url.push_str(&kept.join("&"));
    }
    url
}

/// What a call asks a provider for.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// A metered call: `op` on `model` (as the provider names it).
    Call(Operation, &'a str),
    /// The list of models, or the one named.
    Models(Option<&'a str>),
    /// The provider's count of a request's input tokens (Anthropic's
    /// `messages/count_tokens`, Gemini's `:countTokens` of `model`,
    /// OpenAI's `responses/input_tokens`).
    CountTokens(&'a str),
    /// Something the provider keeps (OpenAI's stored responses and
    /// conversations): the path after `/v1/` (`responses/{id}`,
    /// `responses/{id}/input_items`, `conversations/{id}/items`…), with the
    /// client's method and query.
    Stored(&'a str),
}

/// The upstream call to `endpoint` of `provider` (which speaks `api`): its
/// URL, the client's headers less what must not pass, the provider's
/// credential header, and `body`.
pub fn call(
    provider: &ProviderConfig,
    api: Api,
    endpoint: Endpoint<'_>,
    parts: &Parts,
    credential: &Resolved,
    body: Option<Bytes>,
) -> Result<Call, ProxyError> {
    let secret = &credential.secret;
    let platform = credential.source == Source::Platform;
    let (uri, client_headers) = (&parts.uri, &parts.headers);
    let base = &provider.base_url;
    let (method, url) = match endpoint {
        Endpoint::Call(Operation::ChatCompletions, _) => (Method::POST, format!("{base}/chat/completions")),
        Endpoint::Call(Operation::Embeddings, _) => (Method::POST, format!("{base}/embeddings")),
        Endpoint::Call(Operation::Responses, _) => (Method::POST, format!("{base}/responses")),
        Endpoint::Call(Operation::Completions, _) => (Method::POST, format!("{base}/completions")),
        Endpoint::Call(Operation::Messages, _) => (Method::POST, format!("{base}/v1/messages")),
        Endpoint::Call(Operation::GenerateContent, model) => {
            (Method::POST, gemini_url(base, uri, &format!("/{model}:generateContent")))
        }
        Endpoint::Call(Operation::StreamGenerateContent, model) => {
            (Method::POST, gemini_url(base, uri, &format!("/{model}:streamGenerateContent")))
        }
        Endpoint::Models(one) => {
            let one = one.map(|id| format!("/{id}")).unwrap_or_default();
            let url = match api {
                Api::Anthropic => format!("{base}/v1/models{one}"),
                Api::Gemini => gemini_url(base, uri, &one),
                Api::OpenAi => format!("{base}/models{one}"),
            };
            (Method::GET, url)
        }
        Endpoint::CountTokens(model) => match api {
            Api::Anthropic => (Method::POST, format!("{base}/v1/messages/count_tokens")),
            Api::Gemini => (Method::POST, gemini_url(base, uri, &format!("/{model}:countTokens"))),
            Api::OpenAi => (Method::POST, format!("{base}/responses/input_tokens")),
        },
        Endpoint::Stored(rest) => (parts.method.clone(), with_query(format!("{base}/{rest}"), uri)),
    };
    let mut headers = HeaderMap::with_capacity(client_headers.len() + 3);
    for (name, value) in client_headers {
        let name_str = name.as_str();
        let dropped = DROPPED_REQUEST_HEADERS.contains(&name_str) || (platform && ACCOUNT_HEADERS.contains(&name_str));
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    if body.is_some() && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let secret_value = |text: &str| {
        let mut value = HeaderValue::from_str(text).map_err(|_| {
            ProxyError::invalid(
                "credential",
                format!("the {} credential holds characters a header cannot", provider.name),
            )
        })?;
        value.set_sensitive(true);
        Ok::<_, ProxyError>(value)
    };
    match provider.known {
        Some(KnownProvider::Anthropic) => {
            headers.insert(HeaderName::from_static("x-api-key"), secret_value(secret.expose())?);
            headers
                .entry(HeaderName::from_static("anthropic-version"))
                .or_insert(HeaderValue::from_static(ANTHROPIC_VERSION));
        }
        Some(KnownProvider::Gemini) => {
            headers.insert(HeaderName::from_static("x-goog-api-key"), secret_value(secret.expose())?);
        }
        _ => {
            headers.insert(header::AUTHORIZATION, secret_value(&format!("Bearer {}", secret.expose()))?);
        }
    }
    let uri = Uri::try_from(url).map_err(|_| {
        ProxyError::invalid("model", format!("the {} URL for this call is not a valid one", provider.name))
    })?;
    Ok(Call { method, uri, headers, body })
}

/// How many headers the gateway adds to a response at most: the rate-limit
/// ones, the request id, and the demo flag.
pub const OWN_HEADERS: usize = 16;

/// The provider's response headers that pass back to the client, in a map
/// with room for the gateway's own.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len() + OWN_HEADERS);
    for (name, value) in upstream {
        match name.as_str() {
            "x-request-id" | "request-id" => {
                headers.insert(HeaderName::from_static("x-upstream-request-id"), value.clone());
            }
            n if dropped_response_header(n) => {}
            _ => {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_headers_keep_the_providers_but_not_its_rate_limits_or_hop_by_hop_ones() {
        let mut upstream = HeaderMap::new();
        for (k, v) in [
            ("content-type", "text/event-stream"),
            ("x-request-id", "req_up"),
            ("openai-processing-ms", "12"),
            ("x-ratelimit-remaining-tokens", "5"),
            ("anthropic-ratelimit-requests-limit", "9"),
            ("transfer-encoding", "chunked"),
            ("retry-after", "3"),
        ] {
            upstream.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let kept = response_headers(&upstream);
        let mut names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "openai-processing-ms", "retry-after", "x-upstream-request-id"]);
    }
}
