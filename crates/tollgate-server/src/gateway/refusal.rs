//! Errors on the proxy routes, in the provider's own shape so that SDKs
//! raise their usual exceptions (`RateLimitError`, `AuthenticationError`,
//! `PermissionDeniedError`…), whoever refused: Tollgate itself (auth,
//! policy, quota, credentials), or the provider (5xx → 502, timeouts →
//! 504, naming the provider). A provider's own 4xx is passed through as it
//! came and never reaches this type.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tollgate_providers::{Api, ErrorInfo, ErrorKind, error_body};

use crate::error::{ApiError, LimitDetails};

/// A refusal or failure of one proxied call.
#[derive(Debug)]
pub struct ProxyError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<String>,
    pub details: Map<String, Value>,
    pub retry_after: Option<u64>,
}

impl ProxyError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ProxyError {
        ProxyError { status, kind, message: message.into(), field: None, details: Map::new(), retry_after: None }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ProxyError {
        ProxyError::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message).field(field)
    }

    /// A provider that failed (502) or did not answer in time (504).
    pub fn upstream(provider: &str, timeout: bool, message: impl Into<String>) -> ProxyError {
        let (status, kind) = if timeout {
            (StatusCode::GATEWAY_TIMEOUT, ErrorKind::UpstreamTimeout)
        } else {
            (StatusCode::BAD_GATEWAY, ErrorKind::Upstream)
        };
        ProxyError::new(status, kind, message).detail("provider", json!(provider))
    }

    /// Names the request's field at fault (OpenAI's `param`).
    pub fn field(mut self, field: &str) -> ProxyError {
        self.field = Some(field.to_owned());
        self
    }

    pub fn detail(mut self, name: &str, value: Value) -> ProxyError {
        self.details.insert(name.to_owned(), value);
        self
    }

    fn limit(mut self, details: &LimitDetails, retry_after: u64) -> ProxyError {
        if let Ok(Value::Object(fields)) = serde_json::to_value(details) {
            self.details.extend(fields);
        }
        self.details.insert("retry_after".into(), json!(retry_after));
        self.retry_after = Some(retry_after);
        self
    }

    /// The response, in `api`'s error shape.
    pub fn into_response(self, api: Api) -> Response {
        if self.kind == ErrorKind::Internal {
            tracing::error!(error = %self.message, "a proxied call failed");
        }
        let info = ErrorInfo {
            status: self.status.as_u16(),
            kind: self.kind,
            message: &self.message,
            field: self.field.as_deref(),
            details: self.details,
        };
        let mut response = (self.status, axum::Json(error_body(api, &info))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<ApiError> for ProxyError {
    fn from(e: ApiError) -> ProxyError {
        let status = e.status();
        let message = e.to_string();
        match e {
            ApiError::InvalidRequest { field, .. } => {
                ProxyError { field, ..ProxyError::new(status, ErrorKind::InvalidRequest, message) }
            }
            ApiError::Unauthorized(_) => ProxyError::new(status, ErrorKind::Unauthorized, message),
            ApiError::Forbidden(_) => ProxyError::new(status, ErrorKind::Forbidden, message),
            ApiError::NotFound(_) => ProxyError::new(status, ErrorKind::NotFound, message),
            ApiError::Conflict(_) => ProxyError::new(status, ErrorKind::InvalidRequest, message),
            ApiError::RateLimited { retry_after_seconds, details, .. } => {
                let error = ProxyError::new(status, ErrorKind::RateLimited, message);
                match details {
                    Some(d) => error.limit(&d, retry_after_seconds),
                    None => ProxyError { retry_after: Some(retry_after_seconds), ..error }
                        .detail("retry_after", json!(retry_after_seconds)),
                }
            }
            ApiError::QuotaExceeded { retry_after_seconds, details, .. } => {
                ProxyError::new(status, ErrorKind::QuotaExceeded, message).limit(&details, retry_after_seconds)
            }
            ApiError::NoCredential { provider, .. } => {
                ProxyError::new(status, ErrorKind::NoCredential, message).detail("provider", json!(provider))
            }
            ApiError::Undecryptable(_) => ProxyError::new(status, ErrorKind::Internal, message),
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "a proxied call failed");
                ProxyError::new(status, ErrorKind::Internal, "internal error")
            }
        }
    }
}

/// A 429 for a meter of the quota or a per-minute limit.
pub fn limited(quota: bool, message: String, details: LimitDetails, retry_after: u64) -> ProxyError {
    let kind = if quota { ErrorKind::QuotaExceeded } else { ErrorKind::RateLimited };
    ProxyError::new(StatusCode::TOO_MANY_REQUESTS, kind, message).limit(&details, retry_after)
}
