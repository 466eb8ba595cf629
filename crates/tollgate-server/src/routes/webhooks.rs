//! `/admin/v1/webhooks`: endpoints (create returns the signing secret once,
//! never again), their deliveries with every attempt, and redelivery by
//! hand. Changes and redeliveries are written to the audit log, which
//! names an endpoint's host, never its whole URL (a path may hold a token).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::Timestamp;
use tollgate_domain::audit::AuditAction;
use tollgate_domain::hooks::{EndpointId, EventFilter, EventType, RETRY_WINDOW_MS, Webhook};
use tollgate_store::{AttemptRow, DeliveryRow, WebhookPatch};
use tollgate_vault::webhook_aad;

use crate::audit::Origin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Params};
use crate::hooks::event_body;
use crate::hooks::sign::WebhookSecret;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).patch(update).delete(remove))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/deliveries/{delivery_id}", get(delivery))
        .route("/webhooks/{id}/deliveries/{delivery_id}/redeliver", post(redeliver))
}

pub fn parse_id(raw: &str) -> ApiResult<EndpointId> {
    EndpointId::parse(raw).map_err(|e| ApiError::invalid("id", e.to_string()))
}

/// An http(s) URL with a host, at most 2048 characters.
fn check_url(raw: &str) -> ApiResult<String> {
    let raw = raw.trim();
    let parsed = reqwest::Url::parse(raw).ok();
    match parsed {
        Some(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() && raw.len() <= 2048 => {
            Ok(raw.to_owned())
        }
        _ => Err(ApiError::invalid("url", "url: an http:// or https:// URL with a host, at most 2048 characters")),
    }
}

fn check_events(names: &[String]) -> ApiResult<EventFilter> {
    for (i, name) in names.iter().enumerate().filter(|(_, n)| *n != "*") {
        EventType::parse(name).map_err(|e| ApiError::invalid(format!("events[{i}]"), format!("events[{i}]: {e}")))?;
    }
    EventFilter::new(names).map_err(|e| ApiError::invalid("events", format!("events: {e}")))
}

fn check_description(description: &Option<String>) -> ApiResult<()> {
    match description {
        Some(d) if d.chars().count() > 500 || d.chars().any(char::is_control) => {
            Err(ApiError::invalid("description", "description: at most 500 characters, no control characters"))
        }
        _ => Ok(()),
    }
}

/// The host an audit entry names, without path, query or credentials.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
}

fn target(id: &EndpointId) -> String {
    format!("webhook:{id}")
}

/// A new endpoint, as the JSON body and the `/ui` form give it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    pub url: String,
    /// Event types, or `["*"]` (the default) for all.
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

async fn create(
    State(state): State<AppState>,
    origin: Origin,
    Body(input): Body<WebhookIn>,
) -> ApiResult<impl IntoResponse> {
    let (webhook, secret) = create_webhook(&state, &origin, input).await?;
    let mut view = json!(webhook);
    view["secret"] = json!(secret.expose());
    Ok((StatusCode::CREATED, Json(view)))
}

/// Checks and stores a new endpoint with a new signing secret (sealed by
/// the vault), audited; the secret is returned to be shown this once.
pub async fn create_webhook(
    state: &AppState,
    origin: &Origin,
    input: WebhookIn,
) -> ApiResult<(Webhook, WebhookSecret)> {
    let url = check_url(&input.url)?;
    let events = check_events(&input.events.unwrap_or_else(|| vec!["*".into()]))?;
    check_description(&input.description)?;
    let now = Timestamp::now();
    let webhook = Webhook {
        id: EndpointId::generate(),
        url,
        events,
        description: input.description,
        enabled: input.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    let secret = WebhookSecret::generate();
    let sealed = state
        .vault
        .keyring()
        .seal(secret.expose().as_bytes(), &webhook_aad(webhook.id.as_str()))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    state.store.insert_webhook(&webhook, &sealed).await?;
    let entry = origin
        .entry(AuditAction::WebhookCreated, target(&webhook.id))
        .detail("host", host_of(&webhook.url))
        .detail("events", webhook.events.to_stored());
    state.audit.note(entry).await;
    Ok((webhook, secret))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "webhooks": state.store.webhooks().await? })))
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Webhook>> {
    Ok(Json(state.store.webhook(&parse_id(&id)?).await?.webhook))
}

/// For `Option<Option<T>>` fields: absent stays `None`, `null` becomes
/// `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change to an endpoint: only the fields given change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatchIn {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

async fn update(
    State(state): State<AppState>,
    origin: Origin,
    Path(id): Path<String>,
    Body(input): Body<WebhookPatchIn>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(update_webhook(&state, &origin, &parse_id(&id)?, input).await?))
}

/// Checks and applies a change to an endpoint, audited.
pub async fn update_webhook(
    state: &AppState,
    origin: &Origin,
    id: &EndpointId,
    input: WebhookPatchIn,
) -> ApiResult<Webhook> {
    let patch = WebhookPatch {
        url: input.url.as_deref().map(check_url).transpose()?,
        events: input.events.as_deref().map(check_events).transpose()?,
        description: input.description,
        enabled: input.enabled,
    };
    if let Some(d) = &patch.description {
        check_description(d)?;
    }
    let webhook = state.store.update_webhook(id, patch).await?;
    let entry = origin
        .entry(AuditAction::WebhookUpdated, target(id))
        .detail("host", host_of(&webhook.url))
        .detail("events", webhook.events.to_stored())
        .detail("enabled", webhook.enabled.to_string());
    state.audit.note(entry).await;
    // Deliveries that waited on a disabled endpoint may go now.
    state.hooks.wake();
    Ok(webhook)
}

async fn remove(State(state): State<AppState>, origin: Origin, Path(id): Path<String>) -> ApiResult<StatusCode> {
    delete_webhook(&state, &origin, &parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes an endpoint with its deliveries, audited.
pub async fn delete_webhook(state: &AppState, origin: &Origin, id: &EndpointId) -> ApiResult<()> {
    let webhook = state.store.webhook(id).await?.webhook;
    state.store.delete_webhook(id).await?;
    state.audit.note(origin.entry(AuditAction::WebhookDeleted, target(id)).detail("host", host_of(&webhook.url))).await;
    Ok(())
}

fn attempt_json(a: &AttemptRow) -> Value {
    json!({
        "at": Timestamp::from_millis(a.at),
        "duration_ms": a.duration_ms,
        "status_code": a.status_code,
        "error": a.error,
        "response": a.response,
        "manual": a.manual,
    })
}

/// A delivery as the admin sees it: its state, and every attempt.
fn delivery_json(d: &DeliveryRow, attempts: &[AttemptRow]) -> Value {
    let mine: Vec<Value> = attempts.iter().filter(|a| a.delivery_id == d.id).map(attempt_json).collect();
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "endpoint_id": d.endpoint_id,
        "kind": d.kind,
        "status": d.status,
        "attempt_count": d.attempts,
        "next_attempt_at": (d.status == "pending").then(|| Timestamp::from_millis(d.next_attempt_at)),
        "retry_until": Timestamp::from_millis(d.retry_until),
        "created_at": Timestamp::from_millis(d.created_at),
        "updated_at": Timestamp::from_millis(d.updated_at),
        "last_attempt": mine.last(),
        "attempts": mine,
    })
}

/// Which deliveries of an endpoint to list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`; any when absent.
    pub status: Option<String>,
    /// 1 to 500; 50 when absent.
    pub limit: Option<i64>,
    /// The last delivery of the previous page.
    pub cursor: Option<String>,
}

/// A page of an endpoint's deliveries, newest first.
pub struct Deliveries {
    pub rows: Vec<DeliveryRow>,
    /// Every attempt at the rows, oldest first.
    pub attempts: Vec<AttemptRow>,
    /// The cursor of the next page, when there may be one.
    pub next_cursor: Option<String>,
}

/// An endpoint's deliveries as `q` asks: the endpoint must exist, and a bad
/// status or limit is refused naming the field.
pub async fn list_deliveries(state: &AppState, id: &EndpointId, q: &DeliveryQuery) -> ApiResult<Deliveries> {
    state.store.webhook(id).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit: 1 to 500"));
    }
    if let Some(status) = &q.status
        && !matches!(status.as_str(), "pending" | "delivered" | "failed")
    {
        return Err(ApiError::invalid("status", "status: pending, delivered or failed"));
    }
    let rows = state.store.deliveries_of(id, q.status.as_deref(), q.cursor.as_deref(), limit).await?;
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let attempts = state.store.attempts_of(&ids).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|d| d.id.clone())).flatten();
    Ok(Deliveries { rows, attempts, next_cursor })
}

async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(q): Params<DeliveryQuery>,
) -> ApiResult<Json<Value>> {
    let page = list_deliveries(&state, &parse_id(&id)?, &q).await?;
    Ok(Json(json!({
        "deliveries": page.rows.iter().map(|d| delivery_json(d, &page.attempts)).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

async fn delivery(
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let (row, body) = state.store.delivery_of(&id, &delivery_id).await?;
    let attempts = state.store.attempts_of(std::slice::from_ref(&row.id)).await?;
    let mut view = delivery_json(&row, &attempts);
    view["payload"] = event_body(&body);
    Ok(Json(view))
}

/// `POST …/redeliver`: answers at once, with the delivery as it now stands.
async fn redeliver(
    State(state): State<AppState>,
    origin: Origin,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    redeliver_delivery(&state, &origin, &id, &delivery_id).await?;
    let (row, _) = state.store.delivery_of(&id, &delivery_id).await?;
    let attempts = state.store.attempts_of(std::slice::from_ref(&row.id)).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery_json(&row, &attempts))))
}

/// Sends a delivery again (whatever became of it), as the same message
/// (same `webhook-id`), with a new day of retries, audited. The attempt
/// shows in the delivery's attempts, marked `manual`.
pub async fn redeliver_delivery(
    state: &AppState,
    origin: &Origin,
    id: &EndpointId,
    delivery_id: &str,
) -> ApiResult<()> {
    state.store.redeliver(id, delivery_id, Timestamp::now(), RETRY_WINDOW_MS).await?;
    state.hooks.wake();
    let entry = origin.entry(AuditAction::WebhookRedelivered, target(id)).detail("delivery", delivery_id);
    state.audit.note(entry).await;
    Ok(())
}
