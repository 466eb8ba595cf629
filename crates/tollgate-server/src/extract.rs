//! Request extractors whose refusals are [`ApiError`]s naming the field at
//! fault, so that malformed JSON or a wrong type is a 400, never a 500.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, without_values};

/// A JSON body. Any content type is accepted, as curl users expect.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(Body)
    }
}

/// A body's bytes, read whole; one over the route's limit (or cut short)
/// is a 400 naming `body`, in Tollgate's JSON shape.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::invalid("body", e.body_text()))?;
        Ok(RawBody(bytes))
    }
}

/// Parses `bytes` as `T`, naming the field at fault on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("body", "the request body is empty; send a JSON object"));
    }
    // The usual case, a good body, parses in one plain pass; only a bad one
    // is parsed again, tracking the path, to name the field at fault.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid("body", format!("the request body is not valid JSON: {inner}"));
        }
        let message = without_values(&inner.to_string());
        let field = if path == "." { field_in_message(&message).unwrap_or("body".into()) } else { path };
        ApiError::invalid(field.clone(), format!("{field}: {message}"))
    })
}

/// `missing field `plan`` → `plan`.
fn field_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// Query parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(t)| Params(t))
            .map_err(|e| ApiError::invalid("query", without_values(&e.body_text())))
    }
}

/// A JSON body that may be left out entirely (then `T::default()`).
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::invalid("body", e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        parse_json(&bytes).map(OptionalBody)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        plan: String,
        scopes: Vec<u8>,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Sample>(body.as_bytes()).unwrap_err() {
            ApiError::InvalidRequest { field, .. } => field.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_field_at_fault_is_named() {
        assert_eq!(field_of(r#"{"scopes":[]}"#), "plan");
        assert_eq!(field_of(r#"{"plan":"a","scopes":[1,"x"]}"#), "scopes[1]");
        assert_eq!(field_of(r#"{"plan":5,"scopes":[]}"#), "plan");
        assert_eq!(field_of(r#"{"plan":"a","scopes":[],"extra":1}"#), "extra");
        assert_eq!(field_of(r#"{"plan":"#), "body");
        assert_eq!(field_of(""), "body");
        assert_eq!(field_of("[]"), "body");
    }
}
