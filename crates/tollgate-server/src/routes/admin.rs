//! `/admin/v1`: plans, users, keys and service keys. Reached only with the
//! admin token (see `auth::require_admin`). Changes to plans, a user's plan
//! and keys are written to the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tollgate_domain::audit::AuditAction;
use tollgate_domain::model::{KeyKind, Plan, User, UserStatus};
use tollgate_domain::{Limits, PeriodKind, PlanSlug, Scope, Scopes, Timestamp, UserId};
use tollgate_store::{NewUser, Updated, UserPatch};

use super::keys::{self, KeyInput, RotateInput};
use crate::audit::Origin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, OptionalBody, Params};
use crate::hooks::events;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/plans", get(list_plans).post(create_plan_route))
        .route("/plans/{slug}", get(get_plan).put(replace_plan).patch(update_plan_route).delete(delete_plan))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).patch(update_user).delete(delete_user))
        .route("/users/{id}/suspend", post(suspend_user))
        .route("/users/{id}/unsuspend", post(unsuspend_user))
        .route("/users/{id}/plan", put(change_plan_route))
        .route("/users/{id}/portal-sessions", post(crate::web::create_portal_session))
        .route("/users/{id}/keys", get(list_user_keys).post(create_user_key))
        .route("/keys/{key_id}", get(get_key).delete(revoke_key))
        .route("/keys/{key_id}/rotate", post(rotate_key))
        .route("/service-keys", get(list_service_keys).post(create_service_key))
        .route("/service-keys/{key_id}", delete(revoke_key))
}

/// For `Option<Option<T>>` fields: absent stays `None`, `null` becomes
/// `Some(None)`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

// ---- plans ----

/// A plan as sent by the operator. On create and `PUT` absent fields take
/// their defaults; on `PATCH` they keep their current value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanInput {
    pub slug: Option<PlanSlug>,
    pub name: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    pub period: Option<PeriodKind>,
    pub limits: Option<Limits>,
    #[serde(default, deserialize_with = "present")]
    pub rpm: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub tpm: Option<Option<i64>>,
    pub byok_counts: Option<bool>,
    pub byok_required: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    pub allowed_models: Option<Option<Vec<String>>>,
    pub alert_thresholds: Option<Vec<u8>>,
    #[serde(default, deserialize_with = "present")]
    pub stripe_price_id: Option<Option<String>>,
    /// Where the portal's upgrade button for this plan goes.
    #[serde(default, deserialize_with = "present")]
    pub payment_link: Option<Option<String>>,
    pub default_output_reservation: Option<i64>,
}

impl PlanInput {
    /// Applies the fields given to `plan` and checks the result.
    pub(crate) fn apply(self, mut plan: Plan) -> ApiResult<Plan> {
        if let Some(slug) = self.slug
            && slug != plan.slug
        {
            return Err(ApiError::invalid("slug", "slug: a plan's slug cannot change"));
        }
        if let Some(name) = self.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(ApiError::invalid("name", "name: 1 to 100 characters"));
            }
            plan.name = name.to_owned();
        }
        if let Some(price) = self.price_cents {
            if price < 0 {
                return Err(ApiError::invalid("price_cents", "price_cents: must not be negative"));
            }
            plan.price_cents = price;
        }
        if let Some(currency) = self.currency {
            if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(ApiError::invalid("currency", "currency: a three-letter ISO code such as usd"));
            }
            plan.currency = currency.to_ascii_lowercase();
        }
        plan.period = self.period.unwrap_or(plan.period);
        plan.limits = self.limits.unwrap_or(plan.limits);
        for (field, value, target) in [("rpm", self.rpm, &mut plan.rpm), ("tpm", self.tpm, &mut plan.tpm)] {
            if let Some(value) = value {
                if value.is_some_and(|v| v <= 0) {
                    return Err(ApiError::invalid(field, format!("{field}: a positive number, or null for unlimited")));
                }
                *target = value;
            }
        }
        plan.byok_counts = self.byok_counts.unwrap_or(plan.byok_counts);
        plan.byok_required = self.byok_required.unwrap_or(plan.byok_required);
        if let Some(models) = self.allowed_models {
            if models.as_ref().is_some_and(|m| m.iter().any(|m| m.trim().is_empty())) {
                return Err(ApiError::invalid("allowed_models", "allowed_models: model names must not be empty"));
            }
            plan.allowed_models = models;
        }
        if let Some(mut thresholds) = self.alert_thresholds {
            if thresholds.iter().any(|t| !(1..=100).contains(t)) {
                return Err(ApiError::invalid("alert_thresholds", "alert_thresholds: whole percentages from 1 to 100"));
            }
            thresholds.sort_unstable();
            thresholds.dedup();
            plan.alert_thresholds = thresholds;
        }
        if let Some(price_id) = self.stripe_price_id {
            if price_id.as_ref().is_some_and(|p| p.trim().is_empty()) {
                return Err(ApiError::invalid("stripe_price_id", "stripe_price_id: a Stripe price id, or null"));
            }
            plan.stripe_price_id = price_id;
        }
        if let Some(link) = self.payment_link {
            let link = link.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
            if link.as_ref().is_some_and(|l| {
                !(l.starts_with("https://") || l.starts_with("http://"))
                    || l.len() > 2000
                    || l.contains(char::is_whitespace)
            }) {
                return Err(ApiError::invalid("payment_link", "payment_link: an http:// or https:// URL, or null"));
            }
            plan.payment_link = link;
        }
        if let Some(tokens) = self.default_output_reservation {
            if !(1..=10_000_000).contains(&tokens) {
                return Err(ApiError::invalid(
                    "default_output_reservation",
                    "default_output_reservation: output tokens, 1 to 10000000",
                ));
            }
            plan.default_output_reservation = tokens;
        }
        plan.updated_at = Timestamp::now();
        Ok(plan)
    }
}

fn parse_slug(raw: &str) -> ApiResult<PlanSlug> {
    PlanSlug::parse(raw).map_err(|e| ApiError::invalid("slug", e.to_string()))
}

async fn list_plans(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "plans": state.store.plans().await? })))
}

fn plan_target(slug: &PlanSlug) -> String {
    format!("plan:{slug}")
}

async fn create_plan_route(
    State(state): State<AppState>,
    origin: Origin,
    Body(input): Body<PlanInput>,
) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(create_plan(&state, &origin, input).await?)))
}

pub(crate) async fn create_plan(state: &AppState, origin: &Origin, input: PlanInput) -> ApiResult<Plan> {
    let slug = input.slug.clone().ok_or_else(|| ApiError::invalid("slug", "slug: missing"))?;
    let plan = input.apply(Plan::blank(slug, Timestamp::now()))?;
    let plan = state.store.insert_plan(&plan).await?;
    state.audit.note(origin.entry(AuditAction::PlanCreated, plan_target(&plan.slug))).await;
    Ok(plan)
}

async fn get_plan(State(state): State<AppState>, Path(slug): Path<String>) -> ApiResult<Json<Plan>> {
    Ok(Json(state.store.plan(&parse_slug(&slug)?).await?))
}

async fn replace_plan(
    State(state): State<AppState>,
    origin: Origin,
    Path(slug): Path<String>,
    Body(input): Body<PlanInput>,
) -> ApiResult<Json<Plan>> {
    let current = state.store.plan(&parse_slug(&slug)?).await?;
    let plan = input.apply(Plan::blank(current.slug, current.created_at))?;
    let plan = state.store.update_plan(&plan).await?;
    state.invalidate_users();
    state.audit.note(origin.entry(AuditAction::PlanUpdated, plan_target(&plan.slug))).await;
    Ok(Json(plan))
}

async fn update_plan_route(
    State(state): State<AppState>,
    origin: Origin,
    Path(slug): Path<String>,
    Body(input): Body<PlanInput>,
) -> ApiResult<Json<Plan>> {
    Ok(Json(update_plan(&state, &origin, &parse_slug(&slug)?, input).await?))
}

/// Changes the fields of a plan that `input` gives.
pub(crate) async fn update_plan(
    state: &AppState,
    origin: &Origin,
    slug: &PlanSlug,
    input: PlanInput,
) -> ApiResult<Plan> {
    let current = state.store.plan(slug).await?;
    let period_before = current.period;
    let plan = input.apply(current)?;
    // Counters are kept per period: another kind of period would start
    // every user of the plan over from zero.
    if plan.period != period_before {
        let users = state.store.users_on_plan(slug).await?;
        if users > 0 {
            return Err(ApiError::Conflict(format!(
                "period: plan {:?} has {users} user(s), whose usage would start over under a {} period; make a \
                 plan with the new period and move them to it (with reset_usage)",
                slug.as_str(),
                plan.period.as_str()
            )));
        }
    }
    let plan = state.store.update_plan(&plan).await?;
    state.invalidate_users();
    state.audit.note(origin.entry(AuditAction::PlanUpdated, plan_target(&plan.slug))).await;
    Ok(plan)
}

async fn delete_plan(State(state): State<AppState>, origin: Origin, Path(slug): Path<String>) -> ApiResult<StatusCode> {
    let slug = parse_slug(&slug)?;
    state.store.delete_plan(&slug).await?;
    state.audit.note(origin.entry(AuditAction::PlanDeleted, plan_target(&slug))).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- users ----

pub(crate) fn parse_user_id(raw: &str) -> ApiResult<UserId> {
    UserId::parse(raw).map_err(|e| ApiError::invalid("id", e.to_string()))
}

fn check_email(email: &Option<String>) -> ApiResult<()> {
    match email {
        Some(e) if e.len() > 254 || !e.contains('@') || e.chars().any(char::is_whitespace) => {
            Err(ApiError::invalid("email", "email: not an e-mail address"))
        }
        _ => Ok(()),
    }
}

/// A plan the request names: unknown is the request's fault (400).
async fn existing_plan(state: &AppState, slug: PlanSlug) -> ApiResult<PlanSlug> {
    match state.store.plan(&slug).await {
        Ok(plan) => Ok(plan.slug),
        Err(tollgate_store::StoreError::NotFound(m)) => Err(ApiError::invalid("plan", format!("plan: {m}"))),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserCreate {
    id: UserId,
    plan: Option<PlanSlug>,
    email: Option<String>,
    stripe_customer_id: Option<String>,
    /// Start of the billing cycle (default: now).
    billing_anchor: Option<Timestamp>,
}

async fn create_user(State(state): State<AppState>, Body(input): Body<UserCreate>) -> ApiResult<impl IntoResponse> {
    check_email(&input.email)?;
    if input.id.as_str().starts_with(crate::metering::ANONYMOUS_PREFIX) {
        return Err(ApiError::invalid("id", "id: the prefix `anon:` is kept for anonymous demo traffic"));
    }
    let plan = input.plan.unwrap_or_else(|| PlanSlug::parse("free").expect("a valid slug"));
    let plan = existing_plan(&state, plan).await?;
    let user = state
        .store
        .insert_user(NewUser {
            id: input.id,
            plan,
            email: input.email,
            stripe_customer_id: input.stripe_customer_id,
            billing_anchor: input.billing_anchor,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserList {
    cursor: Option<String>,
    limit: Option<i64>,
    plan: Option<PlanSlug>,
}

async fn list_users(State(state): State<AppState>, Params(q): Params<UserList>) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit: 1 to 1000"));
    }
    let users = state.store.users(q.cursor.as_deref(), limit, q.plan.as_ref()).await?;
    let next = (users.len() as i64 == limit).then(|| users.last().map(|u| u.id.to_string())).flatten();
    Ok(Json(json!({ "users": users, "next_cursor": next })))
}

async fn get_user(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<User>> {
    Ok(Json(state.store.user(&parse_user_id(&id)?).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    #[serde(default, deserialize_with = "present")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    stripe_customer_id: Option<Option<String>>,
    status: Option<UserStatus>,
    /// Limits replacing the plan's for this user; `null` removes them.
    #[serde(default, deserialize_with = "present")]
    limits: Option<Option<Limits>>,
}

async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(input): Body<UserUpdate>,
) -> ApiResult<Json<User>> {
    check_email(&input.email.clone().flatten())?;
    let patch = UserPatch {
        email: input.email,
        stripe_customer_id: input.stripe_customer_id,
        status: input.status,
        limit_overrides: input.limits,
        ..UserPatch::default()
    };
    let user = state.store.update_user(&parse_user_id(&id)?, patch, &|_| Vec::new()).await?.user;
    state.invalidate_users();
    Ok(Json(user))
}

/// Suspends a user (their keys get 403 at once) or lifts it.
pub(crate) async fn set_status(state: &AppState, id: &UserId, status: UserStatus) -> ApiResult<User> {
    let patch = UserPatch { status: Some(status), ..UserPatch::default() };
    let user = state.store.update_user(id, patch, &|_| Vec::new()).await?.user;
    state.invalidate_users();
    Ok(user)
}

async fn suspend_user(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<User>> {
    Ok(Json(set_status(&state, &parse_user_id(&id)?, UserStatus::Suspended).await?))
}

async fn unsuspend_user(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<User>> {
    Ok(Json(set_status(&state, &parse_user_id(&id)?, UserStatus::Active).await?))
}

async fn delete_user(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.store.delete_user(&parse_user_id(&id)?).await?;
    state.invalidate_users();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanChange {
    plan: PlanSlug,
    #[serde(default)]
    reset_usage: bool,
}

async fn change_plan_route(
    State(state): State<AppState>,
    origin: Origin,
    Path(id): Path<String>,
    Body(input): Body<PlanChange>,
) -> ApiResult<Json<User>> {
    Ok(Json(change_plan(&state, &origin, &parse_user_id(&id)?, input.plan, input.reset_usage).await?))
}

/// Moves a user to another plan; `reset_usage` starts a new period now.
pub(crate) async fn change_plan(
    state: &AppState,
    origin: &Origin,
    id: &UserId,
    plan: PlanSlug,
    reset_usage: bool,
) -> ApiResult<User> {
    let plan = existing_plan(state, plan).await?;
    let now = Timestamp::now();
    let patch = UserPatch {
        plan: Some(plan),
        billing_anchor: reset_usage.then_some(now),
        usage_reset_at: reset_usage.then_some(now),
        ..UserPatch::default()
    };
    // Told from the user as the change found them (under its lock).
    let announce = |(before, after): &(User, User)| {
        let mut out = Vec::new();
        if before.plan != after.plan {
            out.push(events::plan_changed(id, &before.plan, &after.plan, reset_usage, "admin"));
        }
        if reset_usage {
            out.push(events::usage_reset(id, now, "plan_change"));
        }
        out
    };
    let Updated { before, user } = state.store.update_user(id, patch, &announce).await?;
    state.invalidate_users();
    state.hooks.wake();
    let entry = origin
        .entry(AuditAction::UserPlanChanged, format!("user:{id}"))
        .user(id)
        .detail("from", before.plan.as_str())
        .detail("to", user.plan.as_str())
        .detail("reset_usage", reset_usage.to_string());
    state.audit.note(entry).await;
    Ok(user)
}

// ---- keys ----

async fn list_user_keys(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let user = state.store.user(&parse_user_id(&id)?).await?;
    Ok(keys::list(&state, &state.store.keys_of_user(&user.id).await?))
}

async fn create_user_key(
    State(state): State<AppState>,
    origin: Origin,
    Path(id): Path<String>,
    OptionalBody(input): OptionalBody<KeyInput>,
) -> ApiResult<impl IntoResponse> {
    let user = state.store.user(&parse_user_id(&id)?).await?;
    let (record, secret) = issue_user_key(&state, &origin, &user.id, input).await?;
    Ok(keys::created(&state, &record, &secret))
}

/// A key for `user` as the admin issues it: default scopes `proxy` and
/// `usage:read`, any scope a user's key may hold.
pub(crate) async fn issue_user_key(
    state: &AppState,
    origin: &Origin,
    user: &UserId,
    input: KeyInput,
) -> ApiResult<(tollgate_domain::model::KeyRecord, tollgate_domain::GatewayKey)> {
    let (new, secret) = keys::prepare(
        KeyKind::User,
        Some(user.clone()),
        input,
        Some(Scopes::default_for_user_key()),
        Scope::allowed_for_user_key,
    )?;
    let record = keys::insert(state, origin, &new).await?;
    Ok((record, secret))
}

async fn get_key(State(state): State<AppState>, Path(key_id): Path<String>) -> ApiResult<Json<Value>> {
    let record = state.store.key(&keys::parse_key_id(&key_id)?).await?;
    Ok(Json(keys::view(&state, &record)))
}

async fn revoke_key(
    State(state): State<AppState>,
    origin: Origin,
    Path(key_id): Path<String>,
) -> ApiResult<StatusCode> {
    keys::revoke(&state, &origin, &keys::parse_key_id(&key_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(
    State(state): State<AppState>,
    origin: Origin,
    Path(key_id): Path<String>,
    OptionalBody(input): OptionalBody<RotateInput>,
) -> ApiResult<impl IntoResponse> {
    let old = keys::parse_key_id(&key_id)?;
    let (record, secret) = keys::rotate(&state, &old, input).await?;
    let entry = keys::audit_entry(&origin, AuditAction::KeyRotated, &record);
    state.audit.note(entry.detail("replaces", old.as_str())).await;
    Ok(keys::created(&state, &record, &secret))
}

async fn list_service_keys(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(keys::list(&state, &state.store.service_keys().await?))
}

async fn create_service_key(
    State(state): State<AppState>,
    origin: Origin,
    Body(input): Body<KeyInput>,
) -> ApiResult<impl IntoResponse> {
    let (new, secret) = keys::prepare(KeyKind::Service, None, input, None, Scope::allowed_for_service_key)?;
    let record = keys::insert(&state, &origin, &new).await?;
    Ok(keys::created(&state, &record, &secret))
}
