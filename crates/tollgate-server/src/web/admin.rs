//! `/ui`: the operator's dashboard. Sign-in with the admin token; then the
//! overview of all users, one user's page with its actions, plans and
//! model prices. Every action goes through the same functions as the
//! admin API (`routes::admin`, `routes::usage`, `routes::credentials`).
//!
//! A user's page shows the status of their own provider keys (never a
//! secret) and removes one; the audit log page reads the query behind
//! `GET /admin/v1/audit` (`routes::credentials`).

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tollgate_domain::model::UserStatus;
use tollgate_domain::{Limits, Meter, PeriodKind, PlanSlug, Timestamp, UserId};
use tollgate_store::SessionOwner;

use super::session::{AdminArea, Posted, Session, check_signin_token, parse_form, signin_token};
use super::view::{self, CredentialView, KeyView, PlanView};
use super::{
    Choice, DoneQuery, Empty, NewKey, ScopeChoice, UsageSection, WebError, field_message, notice, page, parse_scopes,
    scope_choices,
};
use crate::audit::Origin;
use crate::auth::{Principal, client_ip, verify_signin};
use crate::error::ApiError;
use crate::routes::admin::{self as api, PlanInput};
use crate::routes::credentials::{self, AuditQuery};
use crate::routes::keys::{self, KeyInput};
use crate::routes::usage::{self, GrantIn, PriceIn};
use crate::state::AppState;
use tollgate_domain::audit::{Actor, AuditAction, AuditEntry};

type Admin = Session<AdminArea>;
type AdminForm<T> = Posted<AdminArea, T>;

pub fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui", get(overview))
        .route("/ui/users", get(find_user))
        .route("/ui/users/{id}", get(user_page))
        .route("/ui/users/{id}/plan", post(change_plan))
        .route("/ui/users/{id}/grants", post(grant))
        .route("/ui/users/{id}/reset", post(reset))
        .route("/ui/users/{id}/status", post(set_status))
        .route("/ui/users/{id}/keys", post(create_key))
        .route("/ui/users/{id}/keys/{key_id}/revoke", post(revoke_key))
        .route("/ui/users/{id}/portal-link", post(portal_link))
        .route("/ui/users/{id}/credentials/{provider}/remove", post(remove_credential))
        .route("/ui/audit", get(audit_page))
        .route("/ui/plans", get(plans_page).post(create_plan))
        .route("/ui/plans/{slug}", get(plan_page).post(update_plan))
        .route("/ui/prices", get(prices_page).post(set_price))
        .route("/ui/prices/remove", post(remove_price))
}

/// The path of a user's page, with the id percent-encoded.
pub(crate) fn user_path(id: &UserId) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    /// Everything but the unreserved characters of RFC 3986.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    format!("/ui/users/{}", utf8_percent_encode(id.as_str(), SEGMENT))
}

fn parse_user(raw: &str) -> Result<UserId, WebError> {
    Ok(api::parse_user_id(raw)?)
}

/// Back to `path` after a form, with the notice `what` names.
pub(crate) fn done(path: &str, what: &str) -> Response {
    Redirect::to(&format!("{path}?done={what}")).into_response()
}

// ---- sign-in ----

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    pub portal: bool,
    pub csrf: String,
    pub error: Option<String>,
}

/// The sign-in page, with its form token and, for a new browser, the
/// cookie the token is tied to.
pub(crate) fn login_response(
    state: &AppState,
    headers: &HeaderMap,
    portal: bool,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, WebError> {
    let (csrf, cookie) = signin_token(state, headers);
    let mut response = page(&LoginPage { portal, csrf, error })?;
    *response.status_mut() = status;
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    login_response(&state, &headers, false, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub token: String,
}

/// Checks a sign-in form and the credential typed into it.
pub(crate) async fn signin(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
    portal: bool,
) -> Result<Result<Principal, Response>, WebError> {
    let form: LoginForm = parse_form(body)?;
    check_signin_token(state, &parts.headers, &form.csrf)?;
    let ip = client_ip(parts, state.config.trust_forwarded_for);
    let refused = |status, message: &str| login_response(state, &parts.headers, portal, status, Some(message.into()));
    if form.token.trim().is_empty() {
        return Ok(Err(refused(StatusCode::BAD_REQUEST, "Enter your token.")?));
    }
    match verify_signin(state, ip, &form.token).await {
        Ok(principal) => Ok(Ok(principal)),
        Err(ApiError::RateLimited { message, retry_after_seconds, .. }) => {
            let mut page = refused(StatusCode::TOO_MANY_REQUESTS, &message)?;
            page.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds.max(1)));
            Ok(Err(page))
        }
        Err(ApiError::Unauthorized(_) | ApiError::Forbidden(_)) => {
            let message = if portal {
                "That key is not valid, or it is not a key of a user."
            } else {
                "That is not the admin token."
            };
            Ok(Err(refused(StatusCode::UNAUTHORIZED, message)?))
        }
        Err(e) => Err(e.into()),
    }
}

async fn login(State(state): State<AppState>, parts: Parts, body: Bytes) -> Result<Response, WebError> {
    match signin(&state, &parts, &body, false).await? {
        Ok(Principal::Admin) => {
            let cookie =
                Admin::start(&state, &parts.headers, SessionOwner::Admin, tollgate_domain::Scopes::default()).await?;
            let origin = Origin { actor: Actor::Admin, client_ip: client_ip(&parts, state.config.trust_forwarded_for) };
            state.audit.note(origin.entry(AuditAction::AdminLogin, "ui")).await;
            Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response())
        }
        Ok(_) => Ok(login_response(
            &state,
            &parts.headers,
            false,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token.".into()),
        )?),
        Err(refusal) => Ok(refusal),
    }
}

async fn logout(State(state): State<AppState>, posted: AdminForm<Empty>) -> Result<Response, WebError> {
    let cookie = posted.session.end(&state).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}

// ---- overview ----

struct OverviewRow {
    id: String,
    path: String,
    plan: String,
    status: &'static str,
    meter: String,
    used: String,
    limit: String,
    percent: i64,
    level: &'static str,
    bar_value: i64,
    bar_max: i64,
    sparkline: String,
}

#[derive(Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage {
    csrf: String,
    notice: Option<&'static str>,
    rows: Vec<OverviewRow>,
}

/// Days a sparkline covers.
const SPARK_DAYS: i64 = 14;

async fn overview(State(state): State<AppState>, session: Admin) -> Result<Response, WebError> {
    let now = Timestamp::now();
    let today = now.millis().div_euclid(86_400_000) * 86_400_000;
    let from = today - (SPARK_DAYS - 1) * 86_400_000;
    let mut rows = Vec::new();
    for row in usage::overview_rows(&state, 500).await? {
        let mut daily = vec![0i64; SPARK_DAYS as usize];
        for r in state.store.daily_of(row.user.id.as_str(), from, today + 86_400_000).await? {
            if let Some(slot) = daily.get_mut(((r.day - from) / 86_400_000) as usize) {
                *slot = slot.saturating_add(r.used(Meter::TOKENS));
            }
        }
        let binding = row.binding.as_ref().and_then(|m| row.meters.iter().find(|(b, _)| b == m));
        let (meter, used, limit, percent, bar_value, bar_max) = match binding {
            Some((m, s)) => {
                let limit = s.limit.unwrap_or(0);
                let percent = if limit > 0 { (i128::from(s.used) * 100 / i128::from(limit)) as i64 } else { 100 };
                (
                    view::label(m),
                    view::amount(m, s.used),
                    view::amount(m, limit),
                    percent,
                    s.used.min(limit),
                    limit.max(1),
                )
            }
            None => ("—".into(), "—".into(), "unlimited".into(), 0, 0, 1),
        };
        let exhausted = binding.is_some_and(|(_, s)| s.limit.is_some_and(|l| s.used >= l));
        rows.push(OverviewRow {
            id: row.user.id.to_string(),
            path: user_path(&row.user.id),
            plan: row.user.plan.to_string(),
            status: row.user.status.as_str(),
            meter,
            used,
            limit,
            percent,
            level: view::level(percent, exhausted),
            bar_value: bar_value.max(0),
            bar_max,
            sparkline: super::chart::sparkline(&daily),
        });
    }
    page(&OverviewPage { csrf: session.csrf(&state.web_key), notice: None, rows })
}

#[derive(Deserialize)]
struct FindUser {
    #[serde(default)]
    id: String,
}

/// The overview's "go to user" box.
async fn find_user(_session: Admin, Query(q): Query<FindUser>) -> Result<Response, WebError> {
    let id = parse_user(q.id.trim())?;
    Ok(Redirect::to(&user_path(&id)).into_response())
}

// ---- one user ----

/// One calendar month of a user's history.
struct MonthRow {
    month: String,
    requests: String,
    tokens: String,
    cost: String,
}

/// Months the history table covers, this one included.
const HISTORY_MONTHS: u32 = 6;

/// A user's usage per calendar month, newest first, from the daily rollups.
async fn history(state: &AppState, id: &UserId, now: Timestamp) -> Result<Vec<MonthRow>, WebError> {
    use chrono::Datelike;
    let today = now.to_datetime().date_naive();
    let first =
        today.with_day(1).and_then(|d| d.checked_sub_months(chrono::Months::new(HISTORY_MONTHS - 1))).unwrap_or(today);
    let from = first.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0);
    let mut months: std::collections::BTreeMap<(i32, u32), (i64, i64, i64)> = std::collections::BTreeMap::new();
    for r in state.store.daily_of(id.as_str(), from, now.millis() + 86_400_000).await? {
        let day = Timestamp::from_millis(r.day).to_datetime();
        let m = months.entry((day.year(), day.month())).or_default();
        m.0 = m.0.saturating_add(r.used(Meter::REQUESTS));
        m.1 = m.1.saturating_add(r.used(Meter::TOKENS));
        m.2 = m.2.saturating_add(r.used(Meter::COST_USD));
    }
    Ok(months
        .into_iter()
        .rev()
        .map(|((y, m), (requests, tokens, cost))| MonthRow {
            month: chrono::NaiveDate::from_ymd_opt(y, m, 1).map(|d| d.format("%B %Y").to_string()).unwrap_or_default(),
            requests: view::number(requests),
            tokens: view::number(tokens),
            cost: view::money(cost),
        })
        .collect())
}

struct GrantRow {
    meter: String,
    amount: String,
    until: String,
}

#[derive(Template)]
#[template(path = "admin_user.html")]
struct UserPage {
    csrf: String,
    notice: Option<&'static str>,
    user_id: String,
    path: String,
    email: String,
    status: &'static str,
    suspended: bool,
    since: String,
    usage: UsageSection,
    plans: Vec<(String, String)>,
    grants: Vec<GrantRow>,
    history: Vec<MonthRow>,
    meters: Vec<String>,
    keys: Vec<KeyView>,
    new_key: Option<NewKey>,
    scope_choices: Vec<ScopeChoice>,
    keys_action: String,
    can_manage_keys: bool,
    credentials: Vec<CredentialView>,
    credentials_action: String,
    can_manage_credentials: bool,
    audit_path: String,
    portal: bool,
    portal_link: Option<(String, String)>,
}

/// Extras a user page shows once: a new key or a new portal link.
#[derive(Default)]
struct Once {
    new_key: Option<NewKey>,
    portal_link: Option<(String, String)>,
}

async fn render_user(
    state: &AppState,
    session: &Admin,
    id: &UserId,
    notice: Option<&'static str>,
    once: Once,
) -> Result<Response, WebError> {
    let account = state.metering.account(id).await?;
    let user = &account.user;
    let now = Timestamp::now();
    let path = user_path(id);
    let mut meters: Vec<String> = account.limited_meters(now).iter().map(Meter::to_string).collect();
    if !meters.iter().any(|m| m == Meter::TOKENS) {
        meters.insert(0, Meter::TOKENS.into());
    }
    let grants = account
        .grants
        .iter()
        .filter(|g| g.expires_at.is_none_or(|e| e > now))
        .map(|g| GrantRow {
            meter: view::label(&g.meter),
            amount: view::amount(&g.meter, g.amount),
            until: g.expires_at.map(view::date).unwrap_or_else(|| "no end".into()),
        })
        .collect();
    let mut response = page(&UserPage {
        csrf: session.csrf(&state.web_key),
        notice,
        user_id: user.id.to_string(),
        email: user.email.clone().unwrap_or_default(),
        status: user.status.as_str(),
        suspended: user.status == UserStatus::Suspended,
        since: view::date(user.created_at),
        usage: super::usage_section(state, &account).await?,
        plans: state.store.plans().await?.into_iter().map(|p| (p.slug.to_string(), p.name)).collect(),
        grants,
        history: history(state, id, now).await?,
        meters,
        keys: view::keys(state, &state.store.keys_of_user(id).await?),
        new_key: once.new_key,
        scope_choices: scope_choices(|_| true),
        keys_action: format!("{path}/keys"),
        can_manage_keys: true,
        credentials: view::credentials(&state.vault.list(id).await?),
        credentials_action: format!("{path}/credentials"),
        can_manage_credentials: true,
        audit_path: audit_href(&[("user", id.as_str())]),
        portal: false,
        portal_link: once.portal_link,
        path,
    })?;
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn user_page(
    State(state): State<AppState>,
    session: Admin,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, WebError> {
    render_user(&state, &session, &parse_user(&id)?, notice(q.done.as_deref()), Once::default()).await
}

#[derive(Deserialize)]
struct PlanChange {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    reset_usage: Option<String>,
}

async fn change_plan(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<PlanChange>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    let plan = PlanSlug::parse(&posted.form.plan).map_err(|e| WebError::invalid("plan", &e.to_string()))?;
    api::change_plan(&state, &posted.origin(), &id, plan, posted.form.reset_usage.is_some()).await?;
    Ok(done(&user_path(&id), "plan"))
}

#[derive(Deserialize)]
struct GrantForm {
    #[serde(default)]
    meter: String,
    #[serde(default)]
    amount: String,
}

async fn grant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<GrantForm>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    let meter = Meter::parse(posted.form.meter.trim()).map_err(|e| WebError::invalid("meter", &e.to_string()))?;
    let amount = whole_number("amount", &posted.form.amount)?;
    usage::add_grant(&state, &id, GrantIn { meter, amount, starts_at: None, expires_at: None }).await?;
    Ok(done(&user_path(&id), "grant"))
}

async fn reset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<Empty>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    usage::reset_usage(&state, &posted.origin(), &id).await?;
    Ok(done(&user_path(&id), "reset"))
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    status: String,
}

async fn set_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<StatusForm>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    let status = match posted.form.status.as_str() {
        "suspended" => UserStatus::Suspended,
        "active" => UserStatus::Active,
        _ => return Err(WebError::invalid("status", "status: active or suspended")),
    };
    api::set_status(&state, &id, status).await?;
    Ok(done(&user_path(&id), status.as_str()))
}

#[derive(Deserialize)]
pub(crate) struct KeyForm {
    #[serde(default)]
    pub name: String,
}

async fn create_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<KeyForm>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    let scopes = parse_scopes(&posted.all("scopes"))?;
    let input = KeyInput { name: Some(posted.form.name.clone()), scopes, expires_at: None };
    let (record, secret) = api::issue_user_key(&state, &posted.origin(), &id, input).await?;
    let new_key = NewKey { name: record.name, secret: secret.expose().to_owned() };
    render_user(&state, &posted.session, &id, None, Once { new_key: Some(new_key), ..Once::default() }).await
}

async fn revoke_key(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
    posted: AdminForm<Empty>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    let key_id = keys::parse_key_id(&key_id)?;
    let record = state.store.key(&key_id).await?;
    if record.user_id.as_ref() != Some(&id) {
        return Err(ApiError::NotFound(format!("user {:?} has no key {:?}", id.as_str(), key_id.as_str())).into());
    }
    keys::revoke(&state, &posted.origin(), &key_id).await?;
    Ok(done(&user_path(&id), "revoked"))
}

async fn portal_link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    posted: AdminForm<Empty>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    let link = super::portal::new_link(&state, &headers, &id, None).await?;
    let once = Once { portal_link: Some((link.url, view::date_time(link.expires_at))), ..Once::default() };
    render_user(&state, &posted.session, &id, None, once).await
}

async fn remove_credential(
    State(state): State<AppState>,
    Path((id, provider)): Path<(String, String)>,
    posted: AdminForm<Empty>,
) -> Result<Response, WebError> {
    let id = parse_user(&id)?;
    credentials::remove_credential(&state, &posted.origin(), &id, &provider).await?;
    Ok(Redirect::to(&format!("{}?done=credential-removed#credentials", user_path(&id))).into_response())
}

/// A whole number typed into `field`; spaces and thousands separators are
/// allowed.
fn whole_number(field: &str, raw: &str) -> Result<i64, WebError> {
    let cleaned: String = raw.chars().filter(|c| !matches!(c, ',' | '_' | ' ')).collect();
    cleaned.parse().map_err(|_| WebError::invalid(field, &format!("{field}: a whole number")))
}

// ---- plans ----

#[derive(Template)]
#[template(path = "admin_plans.html")]
struct PlansPage {
    csrf: String,
    notice: Option<&'static str>,
    plans: Vec<PlanView>,
    form: PlanFormView,
}

/// The values of a plan form.
#[derive(Default)]
struct PlanFormView {
    slug: String,
    name: String,
    price: String,
    currency: String,
    period: String,
    limits: String,
    rpm: String,
    tpm: String,
    byok_counts: bool,
    byok_required: bool,
    payment_link: String,
}

impl PlanFormView {
    fn of(plan: &tollgate_domain::model::Plan) -> Self {
        let optional = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        PlanFormView {
            slug: plan.slug.to_string(),
            name: plan.name.clone(),
            price: format!("{}.{:02}", plan.price_cents / 100, plan.price_cents % 100),
            currency: plan.currency.clone(),
            period: plan.period.as_str().into(),
            limits: plan
                .limits
                .iter()
                .map(|(m, l)| format!("{m} = {}", l.map(|l| l.to_string()).unwrap_or_else(|| "unlimited".into())))
                .collect::<Vec<_>>()
                .join("\n"),
            rpm: optional(plan.rpm),
            tpm: optional(plan.tpm),
            byok_counts: plan.byok_counts,
            byok_required: plan.byok_required,
            payment_link: plan.payment_link.clone().unwrap_or_default(),
        }
    }
}

async fn plans_page(
    State(state): State<AppState>,
    session: Admin,
    Query(q): Query<DoneQuery>,
) -> Result<Response, WebError> {
    let plans = state.store.plans().await?;
    let form =
        PlanFormView { currency: "usd".into(), period: "month".into(), price: "0.00".into(), ..Default::default() };
    page(&PlansPage {
        csrf: session.csrf(&state.web_key),
        notice: notice(q.done.as_deref()),
        plans: plans.iter().map(view::plan).collect(),
        form,
    })
}

#[derive(Template)]
#[template(path = "admin_plan.html")]
struct PlanPage {
    csrf: String,
    notice: Option<&'static str>,
    form: PlanFormView,
}

async fn plan_page(
    State(state): State<AppState>,
    session: Admin,
    Path(slug): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, WebError> {
    let slug = PlanSlug::parse(&slug).map_err(|e| WebError::invalid("slug", &e.to_string()))?;
    let plan = state.store.plan(&slug).await?;
    page(&PlanPage {
        csrf: session.csrf(&state.web_key),
        notice: notice(q.done.as_deref()),
        form: PlanFormView::of(&plan),
    })
}

#[derive(Deserialize)]
struct PlanForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    limits: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    tpm: String,
    byok_counts: Option<String>,
    byok_required: Option<String>,
    #[serde(default)]
    payment_link: String,
}

/// `20`, `20.5`, `20.50` → cents.
fn cents(raw: &str) -> Result<i64, WebError> {
    let bad = || WebError::invalid("price", "price: an amount such as 20 or 19.99");
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(0);
    }
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if fraction.len() > 2 || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit()) || whole.is_empty() {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    whole.checked_mul(100).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)
}

/// `tokens = 100000` lines, `unlimited` for no limit.
fn limits(raw: &str) -> Result<Limits, WebError> {
    let mut limits = Vec::new();
    for (i, line) in raw.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: &str| WebError::invalid("limits", &format!("limits, line {}: {why}", i + 1));
        let (meter, value) = line.split_once('=').ok_or_else(|| bad("write meter = number (or unlimited)"))?;
        let meter = Meter::parse(meter.trim()).map_err(|e| bad(&e.to_string()))?;
        let value = match value.trim() {
            "unlimited" | "" => None,
            v => Some(whole_number("limits", v).map_err(|_| bad("a whole number, or unlimited"))?),
        };
        limits.push((meter, value));
    }
    Limits::new(limits).map_err(|e| WebError::invalid("limits", &e.to_string()))
}

impl PlanForm {
    fn input(&self) -> Result<PlanInput, WebError> {
        let optional = |field: &str, raw: &str| match raw.trim() {
            "" => Ok(None),
            v => whole_number(field, v).map(Some),
        };
        Ok(PlanInput {
            slug: None,
            name: Some(self.name.trim().to_owned()).filter(|n| !n.is_empty()),
            price_cents: Some(cents(&self.price)?),
            currency: Some(self.currency.trim().to_owned()).filter(|c| !c.is_empty()),
            period: Some(PeriodKind::parse(&self.period).map_err(|e| WebError::invalid("period", &e.to_string()))?),
            limits: Some(limits(&self.limits)?),
            rpm: Some(optional("rpm", &self.rpm)?),
            tpm: Some(optional("tpm", &self.tpm)?),
            byok_counts: Some(self.byok_counts.is_some()),
            byok_required: Some(self.byok_required.is_some()),
            payment_link: Some(Some(self.payment_link.trim().to_owned()).filter(|l| !l.is_empty())),
            ..PlanInput::default()
        })
    }
}

async fn create_plan(State(state): State<AppState>, posted: AdminForm<PlanForm>) -> Result<Response, WebError> {
    let slug = PlanSlug::parse(posted.form.slug.trim()).map_err(|e| WebError::invalid("slug", &e.to_string()))?;
    let input = PlanInput { slug: Some(slug), ..posted.form.input()? };
    api::create_plan(&state, &posted.origin(), input).await?;
    Ok(done("/ui/plans", "created"))
}

async fn update_plan(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    posted: AdminForm<PlanForm>,
) -> Result<Response, WebError> {
    let slug = PlanSlug::parse(&slug).map_err(|e| WebError::invalid("slug", &e.to_string()))?;
    api::update_plan(&state, &posted.origin(), &slug, posted.form.input()?).await?;
    Ok(done(&format!("/ui/plans/{slug}"), "saved"))
}

// ---- the audit log ----

/// Entries on one page of the audit log.
const AUDIT_PAGE: i64 = 50;

/// `/ui/audit` with `pairs` (the empty ones left out) as its query.
fn audit_href(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(k, v);
    }
    let query = query.finish();
    if query.is_empty() { "/ui/audit".into() } else { format!("/ui/audit?{query}") }
}

/// The audit page's filters, as typed.
#[derive(Deserialize, Default)]
struct AuditForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
    /// A day, `2026-11-28` (UTC).
    #[serde(default)]
    from: String,
    /// A day, included.
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

impl AuditForm {
    /// The query of `GET /admin/v1/audit` these filters ask for.
    fn query(&self) -> Result<AuditQuery, ApiError> {
        let day = |field: &str, raw: &str, after: u64| -> Result<Option<Timestamp>, ApiError> {
            if raw.trim().is_empty() {
                return Ok(None);
            }
            let day = chrono::NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.checked_add_days(chrono::Days::new(after)))
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .ok_or_else(|| ApiError::invalid(field, format!("{field}: a day such as 2026-11-28")))?;
            Ok(Some(Timestamp::from_millis(day.and_utc().timestamp_millis())))
        };
        let user = match self.user.trim() {
            "" => None,
            raw => Some(UserId::parse(raw).map_err(|e| ApiError::invalid("user", format!("user: {e}")))?),
        };
        let text = |raw: &str| Some(raw.trim().to_owned()).filter(|t| !t.is_empty());
        Ok(AuditQuery {
            user,
            action: text(&self.action),
            since: day("from", &self.from, 0)?,
            // The whole of the last day: until the next one begins.
            until: day("to", &self.to, 1)?,
            cursor: text(&self.cursor),
            limit: Some(AUDIT_PAGE),
        })
    }
}

struct AuditRow {
    time: String,
    actor: String,
    actor_stored: String,
    action: &'static str,
    target: String,
    user: String,
    user_path: Option<String>,
    client_ip: String,
    details: Vec<(String, String)>,
}

impl AuditRow {
    fn of(entry: AuditEntry) -> AuditRow {
        let actor = match &entry.actor {
            Actor::Admin => "admin".to_owned(),
            Actor::System => "Tollgate (system)".to_owned(),
            Actor::Key(id) => format!("key {id}"),
            Actor::Portal(user) => format!("{user} in the portal"),
        };
        AuditRow {
            time: view::date_time_seconds(entry.time),
            actor,
            actor_stored: entry.actor.to_stored(),
            action: entry.action.as_str(),
            target: entry.target,
            user: entry.user_id.as_ref().map(|u| u.to_string()).unwrap_or_default(),
            user_path: entry.user_id.as_ref().map(user_path),
            client_ip: entry.client_ip.unwrap_or_default(),
            details: entry.details.into_iter().collect(),
        }
    }
}

/// The filters as the page shows them.
struct AuditFilterView {
    user: String,
    actions: Vec<Choice>,
    from: String,
    to: String,
    first_page: bool,
    /// The field a refusal names, and its message; empty if none.
    error_field: String,
    error: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    csrf: String,
    filter: AuditFilterView,
    rows: Vec<AuditRow>,
    newest_href: String,
    older_href: Option<String>,
}

/// Every family (`credential`: all its actions) followed by its actions.
fn action_choices(selected: &str) -> Vec<Choice> {
    let mut choices: Vec<Choice> = Vec::new();
    for action in AuditAction::ALL {
        let family = action.family();
        if !choices.iter().any(|c| c.value == family) {
            choices.push(Choice {
                value: family.to_owned(),
                label: format!("{family}: every action"),
                selected: selected == family,
            });
        }
        let value = action.as_str();
        choices.push(Choice { value: value.to_owned(), label: value.to_owned(), selected: selected == value });
    }
    choices
}

async fn audit_page(
    State(state): State<AppState>,
    session: Admin,
    Query(form): Query<AuditForm>,
) -> Result<Response, WebError> {
    let found = match form.query() {
        Ok(query) => credentials::audit_page(&state, query).await,
        Err(e) => Err(e),
    };
    let (rows, next, refusal) = match found {
        Ok(page) => (page.entries, page.next_cursor, None),
        Err(ApiError::InvalidRequest { message, field }) => {
            let field = field.unwrap_or_default();
            (Vec::new(), None, Some((field.clone(), field_message(&field, &message))))
        }
        Err(e) => return Err(e.into()),
    };
    let filters = [
        ("user", form.user.trim()),
        ("action", form.action.trim()),
        ("from", form.from.trim()),
        ("to", form.to.trim()),
    ];
    let older_href = next.map(|cursor| {
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", &cursor));
        audit_href(&pairs)
    });
    let refused = refusal.is_some();
    let (error_field, error) = refusal.unwrap_or_default();
    let mut response = page(&AuditPage {
        csrf: session.csrf(&state.web_key),
        filter: AuditFilterView {
            user: form.user.clone(),
            actions: action_choices(form.action.trim()),
            from: form.from.clone(),
            to: form.to.clone(),
            first_page: form.cursor.trim().is_empty(),
            error_field,
            error,
        },
        rows: rows.into_iter().map(AuditRow::of).collect(),
        newest_href: audit_href(&filters),
        older_href,
    })?;
    if refused {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

// ---- prices ----

struct PriceRow {
    model: String,
    input: String,
    cached_input: String,
    output: String,
}

#[derive(Template)]
#[template(path = "admin_prices.html")]
struct PricesPage {
    csrf: String,
    notice: Option<&'static str>,
    prices: Vec<PriceRow>,
}

/// Micro-dollars per million tokens as dollars, with at least two
/// decimals: `$0.15`, `$2.50`, `$0.075`.
fn dollars(micros: i64) -> String {
    let fraction = format!("{:06}", micros % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    format!("${}.{fraction:0<2}", micros / 1_000_000)
}

async fn prices_page(
    State(state): State<AppState>,
    session: Admin,
    Query(q): Query<DoneQuery>,
) -> Result<Response, WebError> {
    let mut prices = state.metering.prices();
    prices.sort_by(|a, b| a.0.cmp(&b.0));
    page(&PricesPage {
        csrf: session.csrf(&state.web_key),
        notice: notice(q.done.as_deref()),
        prices: prices
            .into_iter()
            .map(|(model, p)| PriceRow {
                model,
                input: dollars(p.input),
                cached_input: dollars(p.cached_input),
                output: dollars(p.output),
            })
            .collect(),
    })
}

#[derive(Deserialize)]
struct PriceForm {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    cached_input: String,
    #[serde(default)]
    output: String,
}

async fn set_price(State(state): State<AppState>, posted: AdminForm<PriceForm>) -> Result<Response, WebError> {
    let f = &posted.form;
    let number = |field: &str, raw: &str| -> Result<f64, WebError> {
        raw.trim()
            .trim_start_matches('$')
            .parse()
            .map_err(|_| WebError::invalid(field, &format!("{field}: US dollars per million tokens, such as 0.15")))
    };
    let cached_input = match f.cached_input.trim() {
        "" => None,
        v => Some(number("cached_input", v)?),
    };
    let input = PriceIn { input: number("input", &f.input)?, cached_input, output: number("output", &f.output)? };
    usage::set_price(&state, f.model.trim(), input).await?;
    Ok(done("/ui/prices", "price"))
}

#[derive(Deserialize)]
struct RemovePrice {
    #[serde(default)]
    model: String,
}

async fn remove_price(State(state): State<AppState>, posted: AdminForm<RemovePrice>) -> Result<Response, WebError> {
    usage::delete_price(&state, &posted.form.model).await?;
    Ok(done("/ui/prices", "price-removed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKUP: &str = "<script>alert(1)</script>";

    #[test]
    fn a_user_id_with_markup_renders_inert_in_the_overview() {
        let id = UserId::parse(&format!("u_{MARKUP}\"'")).unwrap();
        let row = OverviewRow {
            id: id.to_string(),
            path: user_path(&id),
            plan: "free".into(),
            status: "active",
            meter: "tokens".into(),
            used: "1".into(),
            limit: "10".into(),
            percent: 10,
            level: "green",
            bar_value: 1,
            bar_max: 10,
            sparkline: super::super::chart::sparkline(&[0, 1]),
        };
        let html = OverviewPage { csrf: "t".into(), notice: None, rows: vec![row] }.render().unwrap();
        assert!(!html.contains(MARKUP), "{html}");
        assert!(html.contains("u_&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;"), "{html}");
        assert!(html.contains("href=\"/ui/users/u_%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27\""), "{html}");
    }

    #[test]
    fn an_error_message_with_markup_renders_inert_on_the_sign_in_page() {
        let html = LoginPage { portal: false, csrf: MARKUP.into(), error: Some(MARKUP.into()) }.render().unwrap();
        assert!(!html.contains(MARKUP), "{html}");
        assert_eq!(html.matches("&#60;script&#62;").count(), 2, "{html}");
    }

    #[test]
    fn a_provider_key_label_with_markup_renders_inert_on_the_user_page() {
        let at = Timestamp::from_millis(1_790_000_000_000);
        let id = UserId::parse(&format!("u_{MARKUP}")).unwrap();
        let credential = tollgate_domain::model::Credential {
            user_id: id.clone(),
            provider: tollgate_domain::ProviderName::parse("my-llm").unwrap(),
            label: Some(MARKUP.into()),
            last4: "wxyz".into(),
            created_at: at,
            updated_at: at.plus_seconds(60),
            last_used_at: Some(at),
            validation: None,
        };
        let usage = UsageSection {
            plan_name: "Free".into(),
            plan_slug: "free".into(),
            period: String::new(),
            meters: Vec::new(),
            others: Vec::new(),
            chart: String::new(),
            chart_summary: String::new(),
            days: Vec::new(),
            by_model: Vec::new(),
            by_feature: Vec::new(),
        };
        let path = user_path(&id);
        let html = UserPage {
            csrf: "t".into(),
            notice: None,
            user_id: id.to_string(),
            email: String::new(),
            status: "active",
            suspended: false,
            since: String::new(),
            usage,
            plans: Vec::new(),
            grants: Vec::new(),
            history: Vec::new(),
            meters: Vec::new(),
            keys: Vec::new(),
            new_key: None,
            scope_choices: Vec::new(),
            keys_action: format!("{path}/keys"),
            can_manage_keys: true,
            credentials: view::credentials(&[credential]),
            credentials_action: format!("{path}/credentials"),
            can_manage_credentials: true,
            audit_path: audit_href(&[("user", id.as_str())]),
            portal: false,
            portal_link: None,
            path,
        }
        .render()
        .unwrap();
        assert!(!html.contains(MARKUP), "{html}");
        let section = &html[html.find("id=\"credentials\"").unwrap()..];
        assert!(
            section.contains("<td data-label=\"Label\">&#60;script&#62;alert(1)&#60;/script&#62;</td>"),
            "{section}"
        );
        assert!(section.contains("…wxyz") && section.contains("replaced 21 Sep 2026"), "{section}");
        assert!(
            section
                .contains("action=\"/ui/users/u_%3Cscript%3Ealert%281%29%3C%2Fscript%3E/credentials/my-llm/remove\"")
        );
        assert!(section.contains("href=\"/ui/audit?user=u_%3Cscript%3Ealert%281%29%3C%2Fscript%3E\""), "{section}");
    }

    #[test]
    fn audit_entries_with_markup_render_inert() {
        let user = UserId::parse(&format!("u_{MARKUP}")).unwrap();
        let entry = AuditEntry {
            id: 7,
            time: Timestamp::from_millis(1_790_000_000_000),
            actor: Actor::Portal(user.clone()),
            action: AuditAction::CredentialSet,
            target: format!("credential:{user}/openai"),
            user_id: Some(user),
            client_ip: Some("127.0.0.1".into()),
            details: [("provider".to_owned(), MARKUP.to_owned())].into_iter().collect(),
        };
        let form = AuditForm { user: MARKUP.into(), action: MARKUP.into(), ..AuditForm::default() };
        let html = AuditPage {
            csrf: "t".into(),
            filter: AuditFilterView {
                user: form.user.clone(),
                actions: action_choices(&form.action),
                from: MARKUP.into(),
                to: String::new(),
                first_page: true,
                error_field: "action".into(),
                error: MARKUP.into(),
            },
            rows: vec![AuditRow::of(entry)],
            newest_href: audit_href(&[("user", MARKUP)]),
            older_href: Some(audit_href(&[("user", MARKUP), ("cursor", "7")])),
        }
        .render()
        .unwrap();
        assert!(!html.contains(MARKUP), "{html}");
        // The filters, the actor, the target, the user, the detail, the error.
        assert!(html.matches("&#60;script&#62;alert(1)&#60;/script&#62;").count() >= 7, "{html}");
        assert!(
            html.contains("href=\"/ui/audit?user=%3Cscript%3Ealert%281%29%3C%2Fscript%3E&#38;cursor=7\""),
            "{html}"
        );
    }

    #[test]
    fn audit_filters_are_read_as_days_and_refusals_name_the_field() {
        let form = AuditForm { from: "2026-11-01".into(), to: "2026-11-30".into(), ..AuditForm::default() };
        let q = form.query().ok().unwrap();
        assert_eq!(q.since.map(|t| t.millis()), Some(1_793_491_200_000));
        assert_eq!(q.until.map(|t| t.millis()), Some(1_796_083_200_000), "the last day is included");
        assert_eq!(q.limit, Some(AUDIT_PAGE));
        assert!(q.user.is_none() && q.action.is_none() && q.cursor.is_none());
        let field = |form: AuditForm| match form.query() {
            Err(ApiError::InvalidRequest { field, .. }) => field,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(field(AuditForm { from: "November".into(), ..AuditForm::default() }).as_deref(), Some("from"));
        assert_eq!(field(AuditForm { to: "2026-13-01".into(), ..AuditForm::default() }).as_deref(), Some("to"));
        assert_eq!(field(AuditForm { user: "x".repeat(300), ..AuditForm::default() }).as_deref(), Some("user"));
        let families = action_choices("key");
        assert!(families.iter().any(|c| c.value == "key" && c.selected));
        assert!(families.iter().any(|c| c.value == "credential.set" && !c.selected));
    }

    #[test]
    fn form_amounts_are_read_as_people_type_them() {
        assert_eq!(cents("20").ok(), Some(2000));
        assert_eq!(cents("19.9").ok(), Some(1990));
        assert_eq!(cents("19.99").ok(), Some(1999));
        assert_eq!(cents("").ok(), Some(0));
        assert!(cents("1.999").is_err() && cents("-1").is_err() && cents("abc").is_err());
        assert_eq!(whole_number("amount", "5,000").ok(), Some(5000));
        let l = limits("tokens = 1000\nrequests = unlimited\n\nrequests:analyze=5").ok().unwrap();
        assert_eq!(l.get(&Meter::parse("tokens").unwrap()), Some(1000));
        assert!(l.contains(&Meter::parse("requests").unwrap()));
        assert_eq!(l.get(&Meter::parse("requests:analyze").unwrap()), Some(5));
        assert!(limits("tokens 1000").is_err());
        assert_eq!(dollars(150_000), "$0.15");
        assert_eq!(dollars(2_500_000), "$2.50");
        assert_eq!(dollars(0), "$0.00");
    }
}
