//! Users' provider credentials ("bring your own key"): set, status, remove
//! for the admin (`/admin/v1/users/{id}/credentials…`) and for a user's own
//! key with `credentials:manage` (`/v1/me/credentials…`); resolution for
//! the app's service key with `credentials:read`
//! (`POST /v1/credentials/resolve`); and the audit log
//! (`GET /admin/v1/audit`).
//!
//! Secrets come in and, through `resolve` only, go out; every answer here
//! otherwise shows the status alone. The vault does the cryptography.
//! Setting, removing and reading the audit log are functions the web pages
//! call too (`set_credential`, `remove_credential`, `audit_page`), so the
//! same checks apply and the same entries are written.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::audit::{AuditAction, AuditEntry};
use tollgate_domain::model::{Credential, UserStatus};
use tollgate_domain::provider::check_secret_format;
use tollgate_domain::{ProviderName, Scope, SecretString, Timestamp, UserId};
use tollgate_store::AuditFilter;

use crate::audit::Origin;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Params};
use crate::hooks::events;
use crate::state::AppState;

/// Admin routes (nested under `/admin/v1`).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/users/{id}/credentials", get(admin_list))
        .route("/users/{id}/credentials/{provider}", get(admin_status).put(admin_set).delete(admin_remove))
        .route("/audit", get(audit_log))
}

/// Routes for keys: a user's own credentials, and resolution.
pub fn key_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me/credentials", get(my_list))
        .route("/v1/me/credentials/{provider}", get(my_status).put(my_set).delete(my_remove))
        .route("/v1/credentials/resolve", post(resolve))
}

/// The secret to store, and an optional label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialInput {
    secret: SecretString,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQuery {
    /// Ask the provider whether it accepts the secret, and keep the answer.
    #[serde(default)]
    validate: bool,
}

fn parse_user(raw: &str) -> ApiResult<UserId> {
    UserId::parse(raw).map_err(|e| ApiError::invalid("id", format!("id: {e}")))
}

fn parse_provider(raw: &str) -> ApiResult<ProviderName> {
    ProviderName::parse(raw).map_err(|e| ApiError::invalid("provider", format!("provider: {e}")))
}

fn check_label(label: Option<String>) -> ApiResult<Option<String>> {
    match label.map(|l| l.trim().to_owned()) {
        Some(l) if l.is_empty() || l.chars().count() > 100 || l.chars().any(char::is_control) => {
            Err(ApiError::invalid("label", "label: 1 to 100 characters, no control characters, or null"))
        }
        other => Ok(other),
    }
}

fn target(user: &UserId, provider: &ProviderName) -> String {
    format!("credential:{user}/{provider}")
}

fn view(credential: &Credential) -> Json<Value> {
    Json(serde_json::to_value(credential).unwrap_or_default())
}

/// Checks and stores `secret` as `user`'s credential for `provider`
/// (asking the provider first with `validate`), and audits it as done by
/// `origin`. The JSON routes and the web pages both call this.
pub(crate) async fn set_credential(
    state: &AppState,
    origin: &Origin,
    user: &UserId,
    provider: &str,
    secret: &SecretString,
    label: Option<String>,
    validate: bool,
) -> ApiResult<Credential> {
    let provider = parse_provider(provider)?;
    check_secret_format(&provider, secret.expose()).map_err(|e| ApiError::invalid("secret", format!("secret: {e}")))?;
    let label = check_label(label)?;
    let event = events::credential_updated(user, provider.as_str(), label.as_deref(), "set");
    let credential = state.vault.set(user, &provider, secret, label, validate, &[event]).await?;
    state.announce_change();
    state.hooks.wake();
    let mut entry = origin.entry(AuditAction::CredentialSet, target(user, &provider)).user(user);
    entry = entry.detail("provider", provider.as_str());
    if let Some(v) = &credential.validation {
        entry = entry.detail("validation", v.outcome.as_str());
    }
    state.audit.note(entry).await;
    Ok(credential)
}

/// Deletes `user`'s credential for `provider` (404 when there is none) and
/// audits it as done by `origin`.
pub(crate) async fn remove_credential(
    state: &AppState,
    origin: &Origin,
    user: &UserId,
    provider: &str,
) -> ApiResult<()> {
    let provider = parse_provider(provider)?;
    let event = events::credential_updated(user, provider.as_str(), None, "removed");
    state.vault.remove(user, &provider, &[event]).await?;
    state.announce_change();
    state.hooks.wake();
    let entry = origin.entry(AuditAction::CredentialRemoved, target(user, &provider)).user(user);
    state.audit.note(entry.detail("provider", provider.as_str())).await;
    Ok(())
}

async fn set(
    state: &AppState,
    origin: &Origin,
    user: UserId,
    provider: &str,
    query: SetQuery,
    input: CredentialInput,
) -> ApiResult<Json<Value>> {
    let credential = set_credential(state, origin, &user, provider, &input.secret, input.label, query.validate).await?;
    Ok(view(&credential))
}

async fn remove(state: &AppState, origin: &Origin, user: UserId, provider: &str) -> ApiResult<StatusCode> {
    remove_credential(state, origin, &user, provider).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(state: &AppState, user: &UserId) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "credentials": state.vault.list(user).await? })))
}

async fn status(state: &AppState, user: &UserId, provider: &str) -> ApiResult<Json<Value>> {
    Ok(view(&state.vault.status(user, &parse_provider(provider)?).await?))
}

// ---- admin ----

async fn admin_list(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    list(&state, &parse_user(&id)?).await
}

async fn admin_status(
    State(state): State<AppState>,
    Path((id, provider)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    status(&state, &parse_user(&id)?, &provider).await
}

async fn admin_set(
    State(state): State<AppState>,
    origin: Origin,
    Path((id, provider)): Path<(String, String)>,
    Params(query): Params<SetQuery>,
    Body(input): Body<CredentialInput>,
) -> ApiResult<Json<Value>> {
    set(&state, &origin, parse_user(&id)?, &provider, query, input).await
}

async fn admin_remove(
    State(state): State<AppState>,
    origin: Origin,
    Path((id, provider)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    remove(&state, &origin, parse_user(&id)?, &provider).await
}

// ---- a user's own ----

/// The caller's user, for a user's key with `credentials:manage`.
fn own_user(principal: &Principal) -> ApiResult<UserId> {
    principal.require_scope(Scope::CredentialsManage)?;
    Ok(principal.user_key()?.1.id.clone())
}

async fn my_list(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> ApiResult<Json<Value>> {
    list(&state, &own_user(&principal)?).await
}

async fn my_status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(provider): Path<String>,
) -> ApiResult<Json<Value>> {
    status(&state, &own_user(&principal)?, &provider).await
}

async fn my_set(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(provider): Path<String>,
    Params(query): Params<SetQuery>,
    Body(input): Body<CredentialInput>,
) -> ApiResult<Json<Value>> {
    set(&state, &origin, own_user(&principal)?, &provider, query, input).await
}

async fn my_remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Path(provider): Path<String>,
) -> ApiResult<StatusCode> {
    remove(&state, &origin, own_user(&principal)?, &provider).await
}

// ---- resolution ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveInput {
    user_id: UserId,
    provider: ProviderName,
}

/// The secret to call `provider` with for `user_id`, by the one resolution
/// rule, for apps that call providers themselves. Every read is written to
/// the audit log before the secret is returned; if it cannot be, the secret
/// is not returned.
async fn resolve(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    origin: Origin,
    Body(input): Body<ResolveInput>,
) -> ApiResult<Json<Value>> {
    principal.require_scope(Scope::CredentialsRead)?;
    let account = state.metering.account(&input.user_id).await?;
    if account.user.status == UserStatus::Suspended {
        return Err(ApiError::Forbidden(format!("user {:?} is suspended", input.user_id.as_str())));
    }
    let resolved = state.vault.resolve(&account.user, &account.plan, &input.provider).await?;
    let entry = origin
        .entry(AuditAction::CredentialResolved, target(&input.user_id, &input.provider))
        .user(&input.user_id)
        .detail("provider", input.provider.as_str())
        .detail("source", resolved.source.as_str());
    state.audit.record(entry).await?;
    Ok(Json(json!({
        "user_id": input.user_id,
        "provider": input.provider,
        "source": resolved.source,
        "secret": resolved.secret.expose(),
    })))
}

// ---- the audit log ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    #[serde(alias = "user_id")]
    pub user: Option<UserId>,
    /// An action (`credential.set`) or a family (`credential`).
    pub action: Option<String>,
    #[serde(alias = "from")]
    pub since: Option<Timestamp>,
    #[serde(alias = "to")]
    pub until: Option<Timestamp>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// A page of the audit log, newest first.
pub(crate) struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The cursor of the next (older) page, if there may be one.
    pub next_cursor: Option<String>,
}

/// Whether `action` names an audit action (`credential.set`) or a family
/// of them (`credential`).
pub(crate) fn is_audit_action(action: &str) -> bool {
    if action.contains('.') {
        AuditAction::parse(action).is_ok()
    } else {
        AuditAction::ALL.iter().any(|a| a.family() == action)
    }
}

/// Entries matching `q`, a page at a time: the one query behind
/// `GET /admin/v1/audit` and the dashboard's audit page.
pub(crate) async fn audit_page(state: &AppState, q: AuditQuery) -> ApiResult<AuditPage> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit: 1 to 1000"));
    }
    if let Some(action) = q.action.as_deref().filter(|a| !is_audit_action(a)) {
        let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::invalid(
            "action",
            format!("action: {action:?} is not an audit action or family; use one of {}", names.join(", ")),
        ));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>().map_err(|_| ApiError::invalid("cursor", "cursor: a next_cursor from a previous page"))?,
        ),
    };
    let filter = AuditFilter { user: q.user, action: q.action, since: q.since, until: q.until, before, limit };
    let entries = state.store.audit(&filter).await?;
    let next_cursor = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.id.to_string())).flatten();
    Ok(AuditPage { entries, next_cursor })
}

/// Entries newest first, filtered by user, action and time, a page at a
/// time (`next_cursor` until there is no more).
async fn audit_log(State(state): State<AppState>, Params(q): Params<AuditQuery>) -> ApiResult<Json<Value>> {
    let page = audit_page(&state, q).await?;
    Ok(Json(json!({ "entries": page.entries, "next_cursor": page.next_cursor })))
}
