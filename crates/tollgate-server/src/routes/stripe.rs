//! `POST /webhooks/stripe`: Stripe's events, verified over the raw body
//! (`Stripe-Signature`, several `v1` accepted, 300 s tolerance, constant
//! time), applied at most once by event id.
//!
//! * `invoice.paid`: a new period for the user with that `stripe_customer_id`.
//! * `customer.subscription.created` / `.updated`: the plan whose
//!   `stripe_price_id` is the first item's price.
//! * `customer.subscription.deleted`: the `free` plan.
//!
//! Unknown customers and prices, and other event types, are logged and
//! acknowledged (200), so that Stripe does not retry them. A replay is
//! acknowledged and changes nothing. The secret is never logged.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tollgate_domain::audit::{Actor, AuditAction};
use tollgate_domain::model::User;
use tollgate_domain::{PlanSlug, Timestamp};
use tollgate_store::{BillingChange, BillingOutcome, NewEvent};

use crate::audit::Origin;
use crate::auth::client_ip;
use crate::error::{ApiError, ApiResult};
use crate::hooks::events;
use crate::hooks::sign::verify_stripe;
use crate::state::AppState;

/// How far a signature's timestamp may be from now.
const TOLERANCE_SECONDS: i64 = 300;
/// Stripe's events are small; a larger body is not one.
const MAX_BODY: usize = 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/stripe", post(receive))
}

/// A customer field: the id, or an expanded object holding it.
fn customer_of(object: &Value) -> Option<String> {
    match &object["customer"] {
        Value::String(id) => Some(id.clone()),
        Value::Object(c) => c.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// What an event of `kind` asks for, if anything.
fn change_of(kind: &str, object: &Value) -> Option<BillingChange> {
    match kind {
        "invoice.paid" => Some(BillingChange::NewPeriod),
        "customer.subscription.created" | "customer.subscription.updated" => {
            let price = &object["items"]["data"][0]["price"];
            let id = price.as_str().or_else(|| price["id"].as_str())?;
            Some(BillingChange::PlanForPrice(id.to_owned()))
        }
        "customer.subscription.deleted" => PlanSlug::parse("free").ok().map(BillingChange::Plan),
        _ => None,
    }
}

/// The outbox events of a billing change.
fn announce((before, after): &(User, User)) -> Vec<NewEvent> {
    let mut out = Vec::new();
    if after.plan != before.plan {
        out.push(events::plan_changed(&after.id, &before.plan, &after.plan, false, "stripe"));
    }
    if after.usage_reset_at != before.usage_reset_at
        && let Some(start) = after.usage_reset_at
    {
        out.push(events::usage_reset(&after.id, start, "invoice.paid"));
    }
    out
}

/// Verifies, parses and applies one event; the body is read raw, so the
/// signature covers exactly the bytes Stripe sent.
async fn receive(State(state): State<AppState>, request: axum::extract::Request) -> ApiResult<Json<Value>> {
    let (parts, body) = request.into_parts();
    let origin = Origin { actor: Actor::System, client_ip: client_ip(&parts, state.config.trust_forwarded_for) };
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ApiError::invalid("body", "body: too large"))?;
    apply(&state, &origin, &parts.headers, &body).await
}

async fn apply(state: &AppState, origin: &Origin, headers: &HeaderMap, body: &Bytes) -> ApiResult<Json<Value>> {
    let Some(secret) = &state.config.hooks.stripe_webhook_secret else {
        return Err(ApiError::NotFound(
            "Stripe webhooks are not configured: set TOLLGATE_STRIPE_WEBHOOK_SECRET to the endpoint's signing secret"
                .into(),
        ));
    };
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    if let Err(e) = verify_stripe(secret.expose(), header, body, Timestamp::now().unix_seconds(), TOLERANCE_SECONDS) {
        tracing::warn!(reason = %e, "refused a Stripe event");
        metrics::counter!("tollgate_stripe_events_total", "outcome" => "refused").increment(1);
        return Err(ApiError::invalid("Stripe-Signature", e.to_string()));
    }
    let event: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::invalid("body", "the body is not a Stripe event (JSON)"))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(ApiError::invalid("body", "a Stripe event has an `id` and a `type`"));
    };
    let object = &event["data"]["object"];
    let customer = customer_of(object);
    let change = change_of(kind, object);
    let outcome = state.store.apply_billing_event(id, kind, customer.as_deref(), change, &announce).await?;
    let (said, reason) = match &outcome {
        BillingOutcome::Duplicate => {
            tracing::info!(stripe_event = id, kind, "a Stripe event seen before was acknowledged again");
            ("duplicate", None)
        }
        BillingOutcome::Ignored(why) => {
            tracing::info!(stripe_event = id, kind, reason = %why, "a Stripe event was acknowledged without a change");
            ("ignored", Some(why.clone()))
        }
        BillingOutcome::Applied { before, after } => {
            state.invalidate_users();
            state.hooks.wake();
            let (action, target) = if after.plan != before.plan {
                (AuditAction::UserPlanChanged, format!("user:{}", after.id))
            } else {
                (AuditAction::UsageReset, format!("user:{}", after.id))
            };
            let entry = origin
                .entry(action, target)
                .user(&after.id)
                .detail("from", before.plan.as_str())
                .detail("to", after.plan.as_str())
                .detail("stripe_event", id)
                .detail("stripe_type", kind);
            state.audit.note(entry).await;
            tracing::info!(stripe_event = id, kind, user = %after.id, "applied a Stripe event");
            ("applied", None)
        }
    };
    metrics::counter!("tollgate_stripe_events_total", "outcome" => said).increment(1);
    Ok(Json(json!({ "received": true, "id": id, "outcome": said, "reason": reason })))
}
