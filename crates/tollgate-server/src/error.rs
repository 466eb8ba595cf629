//! The one error type of Tollgate's own routes, and its one JSON shape:
//! `{"error": {"type": "...", "message": "...", ...details}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tollgate_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest { message: String, field: Option<String> },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after_seconds: u64, details: Option<LimitDetails> },
    #[error("{message}")]
    QuotaExceeded { message: String, retry_after_seconds: u64, details: LimitDetails },
    /// Neither the user's own credential nor a platform key for a provider
    /// (or the plan requires the user's own).
    #[error("{message}")]
    NoCredential { message: String, provider: String },
    /// A stored credential that does not decrypt: the message says which
    /// case (unknown master key, or altered / moved ciphertext), never more.
    #[error("{0}")]
    Undecryptable(String),
    /// Ours. The cause is logged; the caller sees only that it happened.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What a 429 names: the meter, its limit, what is used, when it resets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimitDetails {
    pub meter: String,
    pub limit: i64,
    pub used: i64,
    pub reset_at: Option<tollgate_domain::Timestamp>,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest { message: message.into(), field: Some(field.into()) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoCredential { .. } => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) | ApiError::Undecryptable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::NoCredential { .. } => "no_credential",
            ApiError::Internal(_) | ApiError::Undecryptable(_) => "internal",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind()));
        error.insert("message".into(), json!(self.to_string()));
        match self {
            ApiError::InvalidRequest { field: Some(field), .. } => {
                error.insert("field".into(), json!(field));
            }
            ApiError::RateLimited { retry_after_seconds, details, .. } => {
                error.insert("retry_after".into(), json!(retry_after_seconds));
                if let Some(d) = details {
                    error.extend(serde_json::to_value(d).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default());
                }
            }
            ApiError::NoCredential { provider, .. } => {
                error.insert("provider".into(), json!(provider));
            }
            ApiError::QuotaExceeded { retry_after_seconds, details, .. } => {
                error.insert("retry_after".into(), json!(retry_after_seconds));
                error.extend(
                    serde_json::to_value(details).ok().and_then(|v| v.as_object().cloned()).unwrap_or_default(),
                );
            }
            _ => {}
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = format!("{cause:#}"), "request failed"),
            ApiError::Undecryptable(message) => {
                tracing::error!(error = %message, "a stored credential did not decrypt")
            }
            _ => {}
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited { retry_after_seconds, .. } | ApiError::QuotaExceeded { retry_after_seconds, .. } =
            self
        {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds.max(1)));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

/// A serde message with the offending value taken out, since that value
/// may be a secret sent in the wrong field: `invalid type: string "sk-…",
/// expected u64` becomes `invalid type: string, expected u64`.
pub fn without_values(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some(end) = rest.find(", expected")
        {
            let kind = rest[..end].split_whitespace().next().unwrap_or("");
            return format!("{lead}{kind}{}", &rest[end..]);
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_taken_out_of_serde_messages() {
        let check = |input: &str, expected: &str| assert_eq!(without_values(input), expected);
        check(r#"invalid type: string "sk-secret", expected u64"#, "invalid type: string, expected u64");
        check("invalid type: integer `12345`, expected a string", "invalid type: integer, expected a string");
        check("unknown field `lissen`, expected one of `listen`", "unknown field `lissen`, expected one of `listen`");
        check("missing field `plan`", "missing field `plan`");
    }

    #[test]
    fn no_credential_names_the_provider() {
        let e = ApiError::NoCredential { message: "no openai key".into(), provider: "openai".into() };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            json!({"error": {"type": "no_credential", "message": "no openai key", "provider": "openai"}})
        );
    }

    #[test]
    fn rate_limited_errors_say_when_to_retry() {
        let response = ApiError::RateLimited { message: "slow down".into(), retry_after_seconds: 7, details: None }
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
