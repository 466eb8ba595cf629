//! Issuing, listing, rotating and revoking gateway keys: the rules shared
//! by the admin routes and the self-service ones (which emit `key.created`
//! and `key.revoked`).

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::audit::{AuditAction, NewAuditEntry};
use tollgate_domain::model::{KeyKind, KeyRecord};
use tollgate_domain::{GatewayKey, KeyId, Scope, Scopes, Timestamp, UserId};
use tollgate_store::NewKey;

use crate::audit::Origin;
use crate::error::{ApiError, ApiResult};
use crate::hooks::events;
use crate::state::AppState;

/// What a caller may say about a new key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    #[serde(default)]
    pub grace_seconds: Option<i64>,
}

/// The longest grace period a rotation may leave the old key.
const MAX_GRACE_SECONDS: i64 = 30 * 24 * 3600;

/// A key as listed: never the secret; `last_used_at` includes uses not yet
/// written to the store.
pub fn view(state: &AppState, record: &KeyRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    value["last_used_at"] = json!(state.last_used.current(record));
    value
}

/// A key just made: its listing plus, this once, the secret.
pub fn created(state: &AppState, record: &KeyRecord, secret: &GatewayKey) -> (StatusCode, axum::Json<Value>) {
    let mut value = view(state, record);
    value["key"] = json!(secret.expose());
    (StatusCode::CREATED, axum::Json(value))
}

pub fn list(state: &AppState, records: &[KeyRecord]) -> axum::Json<Value> {
    axum::Json(json!({ "keys": records.iter().map(|r| view(state, r)).collect::<Vec<_>>() }))
}

/// Checks `input` and makes a new key record with a fresh secret.
/// `default_scopes` apply when none are named; `permitted` says which
/// scopes this kind of key (and this caller) may hand out.
pub fn prepare(
    kind: KeyKind,
    user_id: Option<UserId>,
    input: KeyInput,
    default_scopes: Option<Scopes>,
    permitted: impl Fn(Scope) -> bool,
) -> ApiResult<(NewKey, GatewayKey)> {
    let name = input.name.unwrap_or_else(|| "default".into());
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "name: 1 to 100 characters, no control characters"));
    }
    let scopes = match (input.scopes, default_scopes) {
        (Some(scopes), _) => Scopes::new(scopes),
        (None, Some(default)) => default,
        (None, None) => {
            return Err(ApiError::invalid("scopes", "scopes: name at least one scope"));
        }
    };
    if scopes.is_empty() {
        return Err(ApiError::invalid("scopes", "scopes: name at least one scope"));
    }
    if let Some(scope) = scopes.iter().find(|s| !permitted(*s)) {
        return Err(ApiError::invalid("scopes", format!("scopes: {:?} cannot be given to this key", scope.as_str())));
    }
    let now = Timestamp::now();
    if input.expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::invalid("expires_at", "expires_at: must be in the future"));
    }
    let secret = GatewayKey::generate();
    let record = KeyRecord {
        id: KeyId::generate(),
        kind,
        user_id,
        name: name.to_owned(),
        prefix: secret.display_prefix(),
        last4: secret.last4(),
        scopes,
        created_at: now,
        expires_at: input.expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    Ok((NewKey { record, hash: secret.hash() }, secret))
}

/// An audit entry about a key: its id is the target, its owner the user,
/// its kind, name and scopes the details.
pub fn audit_entry(origin: &Origin, action: AuditAction, key: &KeyRecord) -> NewAuditEntry {
    let mut entry = origin
        .entry(action, format!("key:{}", key.id))
        .detail("kind", key.kind.as_str())
        .detail("name", key.name.as_str())
        .detail("scopes", key.scopes.to_stored());
    if let Some(user) = &key.user_id {
        entry = entry.user(user);
    }
    entry
}

pub fn parse_key_id(raw: &str) -> ApiResult<KeyId> {
    KeyId::parse(raw).map_err(|e| ApiError::invalid("key_id", e.to_string()))
}

/// Stores a new key, notes it in the audit log and emits `key.created`.
pub async fn insert(state: &AppState, origin: &Origin, new: &NewKey) -> ApiResult<KeyRecord> {
    let record = state.store.insert_key(new, &[events::key_created(&new.record, None)]).await?;
    state.hooks.wake();
    state.audit.note(audit_entry(origin, AuditAction::KeyCreated, &record)).await;
    Ok(record)
}

/// Revokes a key at once (on this instance; others within the cache TTL),
/// notes it in the audit log and emits `key.revoked`.
pub async fn revoke(state: &AppState, origin: &Origin, id: &KeyId) -> ApiResult<KeyRecord> {
    let record = state.store.revoke_key(id, Timestamp::now(), &|r| vec![events::key_revoked(r)]).await?;
    state.invalidate_users();
    state.hooks.wake();
    state.audit.note(audit_entry(origin, AuditAction::KeyRevoked, &record)).await;
    Ok(record)
}

/// A successor with the same owner, name, scopes and expiry; the old key
/// works for `grace_seconds` more (0: stops now).
pub async fn rotate(state: &AppState, id: &KeyId, input: RotateInput) -> ApiResult<(KeyRecord, GatewayKey)> {
    let grace = input.grace_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::invalid("grace_seconds", format!("grace_seconds: 0 to {MAX_GRACE_SECONDS}")));
    }
    let old = state.store.key(id).await?;
    let now = Timestamp::now();
    let expires_at = old.expires_at.filter(|t| *t > now);
    let input = KeyInput { name: Some(old.name.clone()), scopes: Some(old.scopes.iter().collect()), expires_at };
    let (new, secret) = prepare(old.kind, old.user_id.clone(), input, None, |_| true)?;
    // The successor, and the old key's revocation (now, or when the grace
    // period ends).
    let announce = |(created, old): &(KeyRecord, KeyRecord)| {
        vec![events::key_created(created, Some(id)), events::key_revoked(old)]
    };
    let record = state.store.rotate_key(id, &new, now.plus_seconds(grace), &announce).await?;
    state.invalidate_users();
    state.hooks.wake();
    Ok((record, secret))
}
