//! The providers' side: one pooled HTTP client (keep-alive, TCP_NODELAY),
//! the upstream URL and headers of a call, and the three timeouts
//! (connect, first byte, idle between body pieces).
//!
//! What reaches a provider: the client's body (changed only as the
//! adapters say), its headers minus hop-by-hop ones and every credential
//! the client sent (the gateway key never leaves), and the resolved
//! provider secret in the provider's own header.

use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tollgate_domain::KnownProvider;
use tollgate_providers::{Api, Operation};

use super::refusal::ProxyError;
use crate::config::{GatewayConfig, ProviderConfig};
use crate::vault::{Resolved, Source};

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

fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "the connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "the response broke off".into()
    } else {
        "the request failed".into()
    }
}

pub struct Upstream {
    client: reqwest::Client,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Upstream> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("failed to build the HTTP client for the providers")?;
        Ok(Upstream {
            client,
            connect_timeout: config.connect_timeout,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
        })
    }

    /// Sends `call` and waits for the response's head.
    pub async fn send(&self, call: Call) -> Result<reqwest::Response, Failure> {
        let mut request = self.client.request(call.method, call.url).headers(call.headers);
        if let Some(body) = call.body {
            request = request.body(body);
        }
        match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_timeout() => Err(Failure::Timeout("connection", self.connect_timeout)),
            Ok(Err(e)) => Err(Failure::Broken(describe(&e))),
            Err(_) => Err(Failure::Timeout("response", self.first_byte_timeout)),
        }
    }

    /// The next piece of a response body; `None` at its end.
    pub async fn next(&self, response: &mut reqwest::Response) -> Result<Option<Bytes>, Failure> {
        match tokio::time::timeout(self.idle_timeout, response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(Failure::Broken(describe(&e))),
            Err(_) => Err(Failure::Timeout("data", self.idle_timeout)),
        }
    }

    /// A whole response body, up to `limit` bytes (more is a failure).
    pub async fn read(&self, response: &mut reqwest::Response, limit: usize) -> Result<Bytes, Failure> {
        let mut first: Option<Bytes> = None;
        let mut body = Vec::new();
        while let Some(chunk) = self.next(response).await? {
            if first.as_ref().map_or(0, Bytes::len) + body.len() + chunk.len() > limit {
                return Err(Failure::Broken(format!("the response is larger than {} MB", limit >> 20)));
            }
            match first.take() {
                // Most bodies come in one piece: keep it without a copy.
                None if body.is_empty() => first = Some(chunk),
                held => {
                    if let Some(held) = held {
                        body.extend_from_slice(&held);
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(body)))
    }
}

/// One call to a provider, ready to send.
pub struct Call {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Bytes>,
}

/// The upstream call for `op` (or `GET models` when `op` is `None`) to
/// `provider`: its URL, the client's headers less what must not pass, the
/// provider's credential header, and `body`.
pub fn call(
    provider: &ProviderConfig,
    api: Api,
    op: Option<Operation>,
    model: &str,
    parts: &Parts,
    credential: &Resolved,
    body: Option<Bytes>,
) -> Result<Call, ProxyError> {
    let secret = &credential.secret;
    let platform = credential.source == Source::Platform;
    let (uri, client_headers) = (&parts.uri, &parts.headers);
    let base = &provider.base_url;
    let (method, url) = match op {
        Some(Operation::ChatCompletions) => (Method::POST, format!("{base}/chat/completions")),
        Some(Operation::Embeddings) => (Method::POST, format!("{base}/embeddings")),
        Some(Operation::Messages) => (Method::POST, format!("{base}/v1/messages")),
        Some(op @ (Operation::GenerateContent | Operation::StreamGenerateContent)) => {
            let action =
                if op == Operation::StreamGenerateContent { "streamGenerateContent" } else { "generateContent" };
            let mut url = format!("{base}/v1beta/models/{model}:{action}");
            // Every query parameter but the key (the gateway key, if the
            // client sent it as `?key=`).
            let kept: Vec<&str> =
                uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("key=")).collect();
            if !kept.is_empty() {
                url.push('?');
                url.push_str(&kept.join("&"));
            }
            (Method::POST, url)
        }
        None if api == Api::Anthropic => (Method::GET, format!("{base}/v1/models")),
        None => (Method::GET, format!("{base}/models")),
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
    Ok(Call { method, url, headers, body })
}

/// The provider's response headers that pass back to the client.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(upstream.len());
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
