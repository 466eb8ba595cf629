//! Self-service routes, for any valid gateway key: who am I, my keys, the
//! plans on offer. A key reaches only its own user's data.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use tollgate_domain::Scope;
use tollgate_domain::audit::AuditAction;
use tollgate_domain::model::KeyKind;

use super::keys::{self, KeyInput};
use crate::audit::Origin;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::OptionalBody;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/me/keys", get(list_keys).post(create_key))
        .route("/v1/me/keys/{key_id}", delete(revoke_key))
        .route("/v1/plans", get(plans))
}

async fn me(Extension(principal): Extension<Principal>) -> Json<Value> {
    if let Principal::Anonymous(ip) = &principal {
        return Json(
            json!({ "user_id": format!("{}{ip}", crate::metering::ANONYMOUS_PREFIX), "anonymous": true, "admin": false, "key": null }),
        );
    }
    Json(match principal.key() {
        None => json!({ "user_id": null, "plan": null, "admin": true, "key": null }),
        Some(authed) => json!({
            "user_id": authed.user.as_ref().map(|u| &u.id),
            "plan": authed.user.as_ref().map(|u| &u.plan),
            "status": authed.user.as_ref().map(|u| u.status),
            "admin": false,
            "key": {
                "id": authed.key.id,
                "kind": authed.key.kind,
                "name": authed.key.name,
                "prefix": authed.key.prefix,
                "scopes": authed.key.scopes,
                "expires_at": authed.key.expires_at,
            },
        }),
    })
}

async fn list_keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    principal.require_scope(Scope::KeysManage)?;
    let (_, user) = principal.user_key()?;
    Ok(keys::list(&state, &state.store.keys_of_user(&user.id).await?))
}

/// A key for oneself, with no scope the calling key does not hold.
async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    OptionalBody(input): OptionalBody<KeyInput>,
) -> ApiResult<impl IntoResponse> {
    principal.require_scope(Scope::KeysManage)?;
    let (caller, user) = principal.user_key()?;
    let (new, secret) = keys::prepare(KeyKind::User, Some(user.id.clone()), input, Some(caller.scopes.clone()), |s| {
        caller.scopes.contains(s)
    })?;
    let record = keys::insert(&state, &new).await?;
    state.audit.note(keys::audit_entry(&origin, AuditAction::KeyCreated, &record)).await;
    Ok(keys::created(&state, &record, &secret))
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_scope(Scope::KeysManage)?;
    let (_, user) = principal.user_key()?;
    let id = keys::parse_key_id(&key_id)?;
    let record = state.store.key(&id).await?;
    // Another user's key is, to this caller, a key that does not exist.
    if record.user_id.as_ref() != Some(&user.id) {
        return Err(ApiError::NotFound(format!("no key {:?}", id.as_str())));
    }
    let record = keys::revoke(&state, &id).await?;
    state.audit.note(keys::audit_entry(&origin, AuditAction::KeyRevoked, &record)).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn plans(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "plans": state.store.plans().await? })))
}
