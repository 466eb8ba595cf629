//! The events other parts of the service emit, with their `data`. Ids,
//! names and outcomes only: never a secret (a credential event names the
//! provider and label, not even the last characters).

use serde_json::json;
use tollgate_domain::hooks::EventType;
use tollgate_domain::model::KeyRecord;
use tollgate_domain::{KeyId, PlanSlug, Timestamp, UserId};
use tollgate_store::NewEvent;

fn user_of(key: &KeyRecord) -> Option<&str> {
    key.user_id.as_ref().map(UserId::as_str)
}

/// `key.created`; a rotation's successor names the key it `replaces`.
pub fn key_created(key: &KeyRecord, replaces: Option<&KeyId>) -> NewEvent {
    let data = json!({
        "key_id": key.id,
        "user_id": key.user_id,
        "kind": key.kind,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "expires_at": key.expires_at,
        "replaces": replaces,
    });
    NewEvent::new(EventType::KeyCreated, user_of(key), data)
}

/// `key.revoked`; `revoked_at` is in the future when a rotation leaves the
/// old key a grace period.
pub fn key_revoked(key: &KeyRecord) -> NewEvent {
    let data = json!({
        "key_id": key.id,
        "user_id": key.user_id,
        "kind": key.kind,
        "name": key.name,
        "prefix": key.prefix,
        "revoked_at": key.revoked_at,
    });
    NewEvent::new(EventType::KeyRevoked, user_of(key), data)
}

/// `credential.updated`: `action` is `set` or `removed`.
pub fn credential_updated(user: &UserId, provider: &str, label: Option<&str>, action: &str) -> NewEvent {
    let data = json!({ "user_id": user, "provider": provider, "label": label, "action": action });
    NewEvent::new(EventType::CredentialUpdated, Some(user.as_str()), data)
}

/// `plan.changed`: `source` is `admin` or `stripe`.
pub fn plan_changed(user: &UserId, from: &PlanSlug, to: &PlanSlug, reset_usage: bool, source: &str) -> NewEvent {
    let data = json!({ "user_id": user, "from": from, "to": to, "reset_usage": reset_usage, "source": source });
    NewEvent::new(EventType::PlanChanged, Some(user.as_str()), data)
}

/// `usage.reset`: a new period began at `period_start`; `reason` is
/// `manual`, `plan_change` or `invoice.paid`.
pub fn usage_reset(user: &UserId, period_start: Timestamp, reason: &str) -> NewEvent {
    let data = json!({ "user_id": user, "period_start": period_start, "reason": reason });
    NewEvent::new(EventType::UsageReset, Some(user.as_str()), data)
}
