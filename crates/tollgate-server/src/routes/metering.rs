//! The metering API (sidecar mode): record usage, check and reserve quota,
//! settle or release reservations. For a service key with scope `meter`,
//! the admin token, or a user's key with `meter` (for its own user only).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::usage::{Amounts, MAX_AMOUNT};
use tollgate_domain::{Meter, Scope, Timestamp, UserId};
use tollgate_store::EventRow;

use super::quota::RateWindows;
use super::usage::{HeaderValues, ratelimit_headers};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, without_values};
use crate::extract::{Body, RawBody};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/usage/events", post(record_events).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)))
        .route("/v1/quota/check", post(check))
        .route("/v1/quota/reservations/{id}/settle", post(settle))
        .route("/v1/quota/reservations/{id}", axum::routing::delete(release))
}

/// The largest batch body: room for [`MAX_BATCH`] events of some 3 KB each
/// (other routes take 2 MB).
const MAX_BATCH_BYTES: usize = 32 << 20;

/// Events allowed in one batch.
const MAX_BATCH: usize = 10_000;
/// How far in the future an event's timestamp may be (clock skew).
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// The user a metering call is about: any user for the admin token and
/// service keys, only its own for a user's key.
fn metered_user(principal: &Principal, given: Option<&str>, field: &str) -> ApiResult<UserId> {
    principal.require_scope(Scope::Meter)?;
    let own = principal.key().and_then(|k| k.user.as_ref()).map(|u| u.id.clone());
    match (given, own) {
        (Some(raw), own) => {
            let id = UserId::parse(raw).map_err(|e| ApiError::invalid(field, format!("{field}: {e}")))?;
            match own {
                Some(own) if own != id => Err(ApiError::Forbidden("a user's key meters only its own user".into())),
                _ => Ok(id),
            }
        }
        (None, Some(own)) => Ok(own),
        (None, None) => Err(ApiError::invalid(field, format!("{field}: missing"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    id: String,
    user_id: Option<String>,
    key_id: Option<String>,
    timestamp: Option<Timestamp>,
    feature: Option<String>,
    route: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cached_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    requests: Option<i64>,
    /// Micro-dollars; computed from the price table when absent.
    cost_usd: Option<i64>,
    /// Further meters and amounts.
    meters: Option<BTreeMap<Meter, i64>>,
    latency_ms: Option<i64>,
    ttft_ms: Option<i64>,
    status_code: Option<i64>,
    request_bytes: Option<i64>,
    response_bytes: Option<i64>,
    client_ip: Option<String>,
    user_agent: Option<String>,
    key_source: Option<String>,
    estimated: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    events: Vec<Value>,
}

/// The same batch when every event is well-formed: parsed in one pass,
/// without an intermediate `Value` per event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedBatch {
    events: Vec<EventIn>,
}

/// A refused event: where it was, and why.
struct Refused {
    field: String,
    message: String,
}

fn refuse(field: &str, message: impl Into<String>) -> Refused {
    Refused { field: field.to_owned(), message: format!("{field}: {}", message.into()) }
}

/// An amount: 0 to [`MAX_AMOUNT`] (absent is 0). The upper bound keeps
/// sums exact and away from `i64` overflow, which would turn a counter
/// negative and erase a quota.
fn amount(field: &str, value: Option<i64>) -> Result<i64, Refused> {
    match value {
        Some(v) if v < 0 => Err(refuse(field, "must not be negative")),
        Some(v) if v > MAX_AMOUNT => Err(refuse(field, format!("at most {MAX_AMOUNT}"))),
        v => Ok(v.unwrap_or(0)),
    }
}

/// Bytes allowed in an event's short text fields (model, provider, …);
/// with the user id they stay well under Postgres's index row size.
const MAX_TEXT: usize = 256;
/// Bytes allowed in an event's user agent.
const MAX_USER_AGENT: usize = 1024;

/// A text field of an event: no control characters (Postgres refuses a NUL
/// byte, and with it the whole group commit), and at most `max` bytes.
fn text(field: &str, value: &Option<String>, max: usize) -> Result<(), Refused> {
    match value {
        Some(v) if v.len() > max => Err(refuse(field, format!("at most {max} bytes"))),
        Some(v) if v.chars().any(char::is_control) => Err(refuse(field, "no control characters")),
        _ => Ok(()),
    }
}

/// A check's or settlement's amount: 0 to [`MAX_AMOUNT`].
fn checked_amount(value: i64) -> ApiResult<i64> {
    amount("amount", Some(value)).map_err(|r| ApiError::invalid("amount", r.message))
}

fn parse_event_json(raw: Value) -> Result<EventIn, Refused> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let message = without_values(&e.into_inner().to_string());
        let field = if path == "." { message.split('`').nth(1).unwrap_or("event").to_owned() } else { path };
        refuse(&field, message)
    })
}

async fn check_event(
    state: &AppState,
    principal: &Principal,
    e: EventIn,
    now: Timestamp,
) -> Result<tollgate_store::PreparedEvent, Refused> {
    if e.id.is_empty() || e.id.len() > 255 || e.id.chars().any(char::is_control) {
        return Err(refuse("id", "1 to 255 characters, no control characters"));
    }
    let user = metered_user(principal, e.user_id.as_deref(), "user_id").map_err(|err| match err {
        ApiError::InvalidRequest { message, .. } => Refused { field: "user_id".into(), message },
        other => refuse("user_id", other.to_string()),
    })?;
    let account = state.metering.account(&user).await.map_err(|err| refuse("user_id", err.to_string()))?;
    let ts = e.timestamp.unwrap_or(now);
    if ts.millis() > now.millis() + MAX_FUTURE_MS {
        return Err(refuse("timestamp", "more than 5 minutes in the future"));
    }
    if let Some(days) = state.config.retention_days
        && ts.millis() < now.millis() - days as i64 * 86_400_000
    {
        return Err(refuse("timestamp", format!("older than the {days}-day retention")));
    }
    let key_source = match e.key_source.as_deref() {
        None | Some("platform") => "platform",
        Some("byok") => "byok",
        Some(_) => return Err(refuse("key_source", "\"platform\" or \"byok\"")),
    };
    for (field, value, max) in [
        ("key_id", &e.key_id, MAX_TEXT),
        ("feature", &e.feature, MAX_TEXT),
        ("route", &e.route, MAX_TEXT),
        ("provider", &e.provider, MAX_TEXT),
        ("model", &e.model, MAX_TEXT),
        ("client_ip", &e.client_ip, MAX_TEXT),
        ("user_agent", &e.user_agent, MAX_USER_AGENT),
    ] {
        text(field, value, max)?;
    }
    let input = amount("input_tokens", e.input_tokens)?;
    let output = amount("output_tokens", e.output_tokens)?;
    let cached = amount("cached_tokens", e.cached_tokens)?;
    let reasoning = amount("reasoning_tokens", e.reasoning_tokens)?;
    let requests = amount("requests", Some(e.requests.unwrap_or(1)))?;
    let extra = e.meters.unwrap_or_default();
    for (meter, n) in &extra {
        amount(&format!("meters.{meter}"), Some(*n))?;
    }
    if let Some(feature) = &e.feature
        && Meter::parse(&format!("requests:{feature}")).is_err()
    {
        return Err(refuse("feature", "letters, digits, '_', '-' and '.' only"));
    }
    let cost = match e.cost_usd {
        Some(c) => amount("cost_usd", Some(c))?,
        None => state.metering.cost(e.model.as_deref(), input, cached, output),
    };
    let amounts = Amounts {
        input_tokens: input,
        output_tokens: output,
        cached_tokens: cached,
        reasoning_tokens: reasoning,
        requests,
        cost_micros: cost,
        feature: e.feature,
        extra,
    };
    let row = EventRow {
        id: e.id,
        user_id: user.to_string(),
        key_id: e.key_id,
        ts: ts.millis(),
        recorded_at: now.millis(),
        route: e.route,
        provider: e.provider,
        model: e.model,
        latency_ms: e.latency_ms,
        ttft_ms: e.ttft_ms,
        status_code: e.status_code,
        request_bytes: e.request_bytes,
        response_bytes: e.response_bytes,
        client_ip: e.client_ip,
        user_agent: e.user_agent,
        key_source: key_source.to_owned(),
        billable: key_source == "platform",
        estimated: e.estimated.unwrap_or(false),
        ..EventRow::default()
    };
    Ok(state.metering.prepare(&account, row, &amounts))
}

/// Records a batch. Valid events are committed (a 2xx means durable);
/// each invalid one is reported in `errors` with its index and field, and
/// does not stop the others. A batch with no valid event is a 400.
async fn record_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    // Checked before the body is read: the route takes up to 32 MB.
    principal.require_scope(Scope::Meter)?;
    let RawBody(body) = RawBody::from_request(request, &state).await?;
    // Well-formed batches parse in one pass; otherwise each event is parsed
    // on its own so that one bad event is reported and the others kept.
    let events: Vec<Result<EventIn, (Option<String>, Refused)>> = match serde_json::from_slice::<TypedBatch>(&body) {
        Ok(batch) => batch.events.into_iter().map(Ok).collect(),
        Err(_) => {
            let Batch { events } = crate::extract::parse_json(&body)?;
            events
                .into_iter()
                .map(|raw| {
                    let id = raw.get("id").and_then(Value::as_str).map(str::to_owned);
                    parse_event_json(raw).map_err(|r| (id, r))
                })
                .collect()
        }
    };
    if events.len() > MAX_BATCH {
        return Err(ApiError::invalid("events", format!("events: at most {MAX_BATCH} per batch")));
    }
    let now = Timestamp::now();
    let mut prepared = Vec::with_capacity(events.len());
    let mut errors = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        let (id, checked) = match event {
            Ok(e) => (Some(e.id.clone()), check_event(&state, &principal, e, now).await),
            Err((id, refused)) => (id, Err(refused)),
        };
        match checked {
            Ok(event) => prepared.push(event),
            Err(refused) => errors.push(json!({
                "index": index,
                "id": id,
                "field": format!("events[{index}].{}", refused.field),
                "message": refused.message,
            })),
        }
    }
    if prepared.is_empty() && !errors.is_empty() {
        let first = &errors[0];
        let mut body = ApiError::invalid(
            first["field"].as_str().unwrap_or("events"),
            format!("no event was valid; first: {}", first["message"].as_str().unwrap_or("")),
        )
        .body();
        body["error"]["errors"] = json!(errors);
        return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    let flags = state.metering.commit(prepared, None).await?;
    let accepted = flags.iter().filter(|f| **f).count();
    Ok(Json(json!({
        "accepted": accepted,
        "duplicates": flags.len() - accepted,
        "rejected": errors.len(),
        "errors": errors,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckIn {
    user_id: Option<String>,
    meter: Meter,
    amount: i64,
    #[serde(default)]
    reserve: bool,
    ttl_seconds: Option<u64>,
}

/// A refusal is a 200 with `allowed: false`, not an error.
async fn check(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Body(input): Body<CheckIn>,
) -> ApiResult<Response> {
    let user = metered_user(&principal, input.user_id.as_deref(), "user_id")?;
    checked_amount(input.amount)?;
    if input.ttl_seconds.is_some_and(|t| t == 0 || t > 86_400) {
        return Err(ApiError::invalid("ttl_seconds", "ttl_seconds: 1 to 86400"));
    }
    let account = state.metering.account(&user).await.map_err(|e| match e {
        ApiError::NotFound(m) => ApiError::invalid("user_id", format!("user_id: {m}")),
        other => other,
    })?;
    let ttl = input.ttl_seconds.map(Duration::from_secs);
    let outcome = state.metering.check(&account, &input.meter, input.amount, input.reserve, ttl).await?;
    let s = &outcome.state;
    let mut headers = HeaderMap::new();
    ratelimit_headers(&mut headers, &mut HeaderValues::new(), &input.meter, s, &outcome.period);
    // A plan's tokens-per-minute limit applies to tokens reserved through
    // checks; over it, the check is refused and says when to retry.
    let mut allowed = outcome.allowed;
    let mut reason = (!allowed).then_some("quota");
    let mut retry_after = None;
    if let (true, Some(tpm), Some(id)) =
        (input.meter.as_str() == Meter::TOKENS, account.plan.tpm, &outcome.reservation_id)
    {
        let who = RateWindows::tokens_of(account.user.id.as_str());
        if let Err(wait_ms) = state.rate_windows.take(&who, tpm, input.amount, Timestamp::now().millis()).await {
            state.metering.release(id).await?;
            allowed = false;
            reason = Some("tokens_per_minute");
            let secs = wait_ms.div_ceil(1000).max(1);
            retry_after = Some(secs);
            headers.insert(axum::http::header::RETRY_AFTER, secs.into());
        }
    }
    let reservation_id = if allowed { outcome.reservation_id.clone() } else { None };
    let body = CheckOut {
        allowed,
        reason,
        retry_after,
        user_id: &user,
        meter: &input.meter,
        limit: s.limit,
        used: s.used,
        reserved: s.reserved,
        remaining: s.remaining(),
        reset_at: outcome.period.end,
        period: &outcome.period,
        reservation_id,
    };
    Ok((headers, Json(body)).into_response())
}

/// The answer to a check (typed: it is serialized on every check).
#[derive(serde::Serialize)]
struct CheckOut<'a> {
    allowed: bool,
    reason: Option<&'static str>,
    retry_after: Option<u64>,
    user_id: &'a UserId,
    meter: &'a Meter,
    limit: Option<i64>,
    used: i64,
    reserved: i64,
    remaining: Option<i64>,
    reset_at: Option<Timestamp>,
    period: &'a tollgate_domain::period::Period,
    reservation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleIn {
    amount: i64,
}

async fn owns_reservation(state: &AppState, principal: &Principal, id: &str) -> ApiResult<()> {
    principal.require_scope(Scope::Meter)?;
    let not_found = || ApiError::NotFound(format!("no reservation {id:?}: it was settled, released or expired"));
    let (user, _) = state.metering.reservation(id).await?.ok_or_else(not_found)?;
    match principal.key().and_then(|k| k.user.as_ref()) {
        Some(own) if own.id != user => Err(not_found()),
        _ => Ok(()),
    }
}

async fn settle(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Body(input): Body<SettleIn>,
) -> ApiResult<Json<Value>> {
    checked_amount(input.amount)?;
    owns_reservation(&state, &principal, &id).await?;
    state.metering.settle(&id, input.amount).await?;
    Ok(Json(json!({ "reservation_id": id, "settled": input.amount })))
}

async fn release(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    owns_reservation(&state, &principal, &id).await?;
    state.metering.release(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
