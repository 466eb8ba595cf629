//! Reading usage (current period, a past month, breakdowns, CSV), resets,
//! grants, the all-users overview, model prices, and the rate-limit
//! headers every authenticated response carries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use bytes::BytesMut;
use chrono::{NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::audit::AuditAction;
use tollgate_domain::model::{Grant, User};
use tollgate_domain::period::Period;
use tollgate_domain::pricing::Price;
use tollgate_domain::{Meter, Scope, Timestamp, UserId, base62};
use tollgate_store::{EVENT_COLUMNS, EventRow, UserPatch};

use crate::audit::Origin;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Params};
use crate::metering::{Account, MeterState};
use crate::state::AppState;

/// Admin routes (nested under `/admin/v1`).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/usage", get(overview))
        .route("/users/{id}/usage", get(user_usage))
        .route("/users/{id}/usage/reset", post(reset_usage_route))
        .route("/users/{id}/usage/events", get(user_events))
        .route("/users/{id}/grants", get(list_grants).post(add_grant_route))
        .route("/prices", get(list_prices))
        .route("/prices/{model}", put(set_price_route).delete(delete_price_route))
}

/// Self-service routes.
pub fn me_routes() -> Router<AppState> {
    Router::new().route("/v1/me/usage", get(my_usage))
}

/// Header values written one after another into one buffer and handed out
/// as slices of it: a response's rate-limit headers take one allocation,
/// not one per value. Numbers are written without `fmt`, which costs some
/// ten times as much as the digits.
pub struct HeaderValues(BytesMut);

impl HeaderValues {
    pub fn new() -> HeaderValues {
        HeaderValues(BytesMut::with_capacity(256))
    }

    /// Adds `s` to the value being written.
    pub fn push(&mut self, s: &str) -> &mut HeaderValues {
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Adds `n` in decimal to the value being written.
    pub fn push_number(&mut self, n: impl itoa::Integer) -> &mut HeaderValues {
        self.push(itoa::Buffer::new().format(n))
    }

    /// The value written since the last one was taken (numbers, meter names
    /// and durations: always visible ASCII; anything else would read `0`).
    pub fn take(&mut self) -> HeaderValue {
        HeaderValue::from_maybe_shared(self.0.split().freeze()).unwrap_or(HeaderValue::from_static("0"))
    }

    /// `n` as a header value.
    pub fn number(&mut self, n: impl itoa::Integer) -> HeaderValue {
        self.push_number(n).take()
    }

    /// `value` as a header value.
    pub fn of(&mut self, value: impl std::fmt::Display) -> HeaderValue {
        let _ = write!(self.0, "{value}");
        self.take()
    }
}

impl Default for HeaderValues {
    fn default() -> Self {
        HeaderValues::new()
    }
}

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_USED: HeaderName = HeaderName::from_static("x-ratelimit-used");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_RATELIMIT_RESOURCE: HeaderName = HeaderName::from_static("x-ratelimit-resource");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The rate-limit headers for one meter: GitHub's `X-RateLimit-*`, and the
/// IETF draft's `RateLimit-Policy` / `RateLimit`, set in `h`. None for an
/// unlimited meter. (On every response to a key: names are constants, the
/// values are written into `values`, and they go straight into the
/// response's map.)
pub fn ratelimit_headers(
    h: &mut HeaderMap,
    values: &mut HeaderValues,
    meter: &Meter,
    state: &MeterState,
    period: &Period,
) {
    let Some(limit) = state.limit else { return };
    let remaining = state.remaining().unwrap_or(0);
    let now = Timestamp::now();
    let reset = period.end.map(Timestamp::unix_seconds);
    let until = period.end.map(|e| (e.unix_seconds() - now.unix_seconds()).max(0));
    let window = period.end.map(|e| (e.unix_seconds() - period.start.unix_seconds()).max(0));
    h.insert(X_RATELIMIT_LIMIT, values.number(limit));
    h.insert(X_RATELIMIT_REMAINING, values.number(remaining));
    h.insert(X_RATELIMIT_USED, values.number(state.used));
    h.insert(X_RATELIMIT_RESET, values.number(reset.unwrap_or(0)));
    h.insert(X_RATELIMIT_RESOURCE, values.push(meter.as_str()).take());
    h.insert(RATELIMIT_POLICY, draft_item(values, meter, ("q", limit), ("w", window)));
    h.insert(RATELIMIT, draft_item(values, meter, ("r", remaining), ("t", until)));
}

/// An item of the IETF draft's headers, its second parameter when known:
/// `"tokens";q=1000;w=2592000`, `"tokens";r=250`.
fn draft_item(
    values: &mut HeaderValues,
    meter: &Meter,
    (first, n): (&str, i64),
    (second, m): (&str, Option<i64>),
) -> HeaderValue {
    values.push("\"").push(meter.as_str()).push("\";").push(first).push("=").push_number(n);
    if let Some(m) = m {
        values.push(";").push(second).push("=").push_number(m);
    }
    values.take()
}

/// The meter whose headers a response carries: `preferred` if limited,
/// else the limited meter with the largest share used.
pub async fn binding_meter(
    state: &AppState,
    account: &Account,
    preferred: &str,
) -> ApiResult<Option<(Meter, MeterState, Period)>> {
    let now = Timestamp::now();
    let period = account.period(now);
    let preferred = Meter::parse(preferred).expect("a built-in meter name");
    if account.limit(&preferred, now).is_some() {
        let s = state.metering.state(account, &preferred, now).await?;
        return Ok(Some((preferred, s, period)));
    }
    let mut best: Option<(Meter, MeterState, f64)> = None;
    for meter in account.limited_meters(now) {
        let s = state.metering.state(account, &meter, now).await?;
        let share = share(&s);
        if best.as_ref().is_none_or(|(_, _, b)| share > *b) {
            best = Some((meter, s, share));
        }
    }
    Ok(best.map(|(m, s, _)| (m, s, period)))
}

/// The share of its limit a meter has used: 0 when unlimited, infinite
/// for a limit of 0.
pub(crate) fn share(s: &MeterState) -> f64 {
    match s.limit {
        Some(0) => f64::INFINITY,
        Some(l) => s.used as f64 / l as f64,
        None => 0.0,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    /// `YYYY-MM`: that calendar month instead of the current period.
    period: Option<String>,
    group_by: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

fn month(raw: &str) -> ApiResult<Period> {
    let bad = || ApiError::invalid("period", "period: a month as YYYY-MM");
    let (y, m) = raw.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let start = NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)?;
    let end = start.checked_add_months(chrono::Months::new(1)).ok_or_else(bad)?;
    let ms = |d: NaiveDate| {
        Timestamp::from_millis(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()).timestamp_millis())
    };
    Ok(Period { start: ms(start), end: Some(ms(end)) })
}

fn meter_json(s: &MeterState) -> Value {
    json!({ "used": s.used, "limit": s.limit, "remaining": s.remaining(), "reserved": s.reserved })
}

/// The usage shape of DESIGN "Shapes", plus `groups` with `group_by`.
async fn usage_view(state: &AppState, account: &Account, q: &UsageQuery) -> ApiResult<Value> {
    let now = Timestamp::now();
    let user = account.user.id.as_str();
    let (period, current) = match &q.period {
        Some(raw) => (month(raw)?, false),
        None => (account.period(now), true),
    };
    let mut meters = serde_json::Map::new();
    if current {
        for (meter, s) in current_meters(state, account, now).await? {
            meters.insert(meter.to_string(), meter_json(&s));
        }
    } else {
        let end = period.end.map(Timestamp::millis).unwrap_or(i64::MAX);
        let rows = state.store.daily_of(user, period.start.millis(), end).await?;
        let mut used: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows.iter().filter(|r| account.counts(r.key_source == "byok")) {
            for (m, n) in r.meters() {
                let sum = used.entry(m.to_string()).or_default();
                *sum = sum.saturating_add(n);
            }
        }
        for meter in account.named_meters() {
            used.entry(meter.to_string()).or_insert(0);
        }
        for (name, n) in used {
            let limit = Meter::parse(&name).ok().and_then(|m| account.limit(&m, period.start));
            meters.insert(name, meter_json(&MeterState { limit, used: n, reserved: 0 }));
        }
    }
    let mut lifetime: serde_json::Map<String, Value> =
        state.store.lifetime_of(user).await?.into_iter().map(|(m, n)| (m, json!(n))).collect();
    lifetime.entry(Meter::TOKENS).or_insert(json!(0));
    let mut view = json!({
        "user_id": account.user.id,
        "plan": account.plan.slug,
        "period": period,
        "meters": meters,
        "lifetime": lifetime,
    });
    if let Some(group_by) = &q.group_by {
        view["group_by"] = json!(group_by);
        view["groups"] = groups(state, user, &period, group_by).await?;
    }
    Ok(view)
}

/// Every meter of the account's current period that its plan names (or
/// `tokens`) or that has a committed count, in name order.
pub(crate) async fn current_meters(
    state: &AppState,
    account: &Account,
    now: Timestamp,
) -> ApiResult<Vec<(Meter, MeterState)>> {
    let user = account.user.id.as_str();
    let period = account.period(now);
    let mut names: BTreeSet<String> =
        state.store.counters_of(user, period.start.millis()).await?.into_iter().map(|(m, _)| m).collect();
    names.extend(account.named_meters().iter().map(Meter::to_string));
    let mut meters = Vec::with_capacity(names.len());
    for name in names {
        let Ok(meter) = Meter::parse(&name) else { continue };
        let s = state.metering.state(account, &meter, now).await?;
        meters.push((meter, s));
    }
    Ok(meters)
}

/// One group of a usage breakdown: a day (`YYYY-MM-DD`), model, feature,
/// key id or provider (`None`: events that named none), and its sums.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupRow {
    pub key: Option<String>,
    pub events: i64,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cost_micros: i64,
    /// The `tokens` meter: input + output, and what was recorded on
    /// `tokens` itself (a settled reservation).
    pub tokens: i64,
}

/// A user's usage in `period`, from the daily rollups, grouped by `day`,
/// `model`, `feature`, `key` or `provider`, in key order.
pub(crate) async fn breakdown(
    state: &AppState,
    user: &str,
    period: &Period,
    group_by: &str,
) -> ApiResult<Vec<GroupRow>> {
    let end = period.end.map(Timestamp::millis).unwrap_or(i64::MAX);
    let rows = state.store.daily_of(user, period.start.millis(), end).await?;
    let mut sums: BTreeMap<String, GroupRow> = BTreeMap::new();
    for r in rows {
        let key = match group_by {
            "day" => Timestamp::from_millis(r.day).to_rfc3339()[..10].to_owned(),
            "model" => r.model.clone(),
            "feature" => r.feature.clone(),
            "key" => r.key_id.clone(),
            "provider" => r.provider.clone(),
            _ => return Err(ApiError::invalid("group_by", "group_by: day, model, feature, key or provider")),
        };
        let g = sums.entry(key).or_default();
        // The meters as the live counters count them, so that a settled
        // reservation's amount shows where the counter shows it.
        for (sum, n) in [
            (&mut g.events, r.events),
            (&mut g.requests, r.used(Meter::REQUESTS)),
            (&mut g.input_tokens, r.used(Meter::INPUT_TOKENS)),
            (&mut g.output_tokens, r.used(Meter::OUTPUT_TOKENS)),
            (&mut g.cached_tokens, r.cached_tokens),
            (&mut g.cost_micros, r.used(Meter::COST_USD)),
            (&mut g.tokens, r.used(Meter::TOKENS)),
        ] {
            *sum = sum.saturating_add(n);
        }
    }
    Ok(sums.into_iter().map(|(k, g)| GroupRow { key: (!k.is_empty()).then_some(k), ..g }).collect())
}

async fn groups(state: &AppState, user: &str, period: &Period, group_by: &str) -> ApiResult<Value> {
    let name = if group_by == "key" { "key_id" } else { group_by };
    Ok(json!(
        breakdown(state, user, period, group_by)
            .await?
            .into_iter()
            .map(|g| json!({
                name: g.key, "events": g.events, "requests": g.requests, "input_tokens": g.input_tokens,
                "output_tokens": g.output_tokens, "cached_tokens": g.cached_tokens, "tokens": g.tokens,
                "cost_usd": g.cost_micros,
            }))
            .collect::<Vec<_>>()
    ))
}

fn parse_user(raw: &str) -> ApiResult<UserId> {
    UserId::parse(raw).map_err(|e| ApiError::invalid("id", e.to_string()))
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/csv"))
}

async fn my_usage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Json<Value>> {
    principal.require_scope(Scope::UsageRead)?;
    let (_, user) = principal.user_key()?;
    let account = state.metering.account(&user.id).await?;
    Ok(Json(usage_view(&state, &account, &q).await?))
}

/// A user's usage; with `Accept: text/csv`, their ledger as CSV for
/// `from`..`to` (default: the current period).
async fn user_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Response> {
    let account = state.metering.account(&parse_user(&id)?).await?;
    if wants_csv(&headers) {
        return export_csv(&state, &account, q.from, q.to).await;
    }
    Ok(Json(usage_view(&state, &account, &q).await?).into_response())
}

async fn reset_usage_route(
    State(state): State<AppState>,
    origin: Origin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let account = reset_usage(&state, &origin, &parse_user(&id)?).await?;
    Ok(Json(usage_view(&state, &account, &UsageQuery::default()).await?))
}

/// Starts a new period now; lifetime totals stay.
pub(crate) async fn reset_usage(state: &AppState, origin: &Origin, id: &UserId) -> ApiResult<Arc<Account>> {
    let now = Timestamp::now();
    let patch = UserPatch { billing_anchor: Some(now), usage_reset_at: Some(now), ..UserPatch::default() };
    state.store.update_user(id, patch, &|_| vec![crate::hooks::events::usage_reset(id, now, "manual")]).await?;
    state.invalidate_users();
    state.hooks.wake();
    let entry = origin.entry(AuditAction::UsageReset, format!("user:{id}")).user(id);
    state.audit.note(entry).await;
    state.metering.account(id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantIn {
    pub meter: Meter,
    pub amount: i64,
    pub starts_at: Option<Timestamp>,
    /// Default: the end of the current period.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

async fn add_grant_route(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(input): Body<GrantIn>,
) -> ApiResult<impl IntoResponse> {
    let grant = add_grant(&state, &parse_user(&id)?, input).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// Adds allowance for one meter, by default until the end of the period.
pub(crate) async fn add_grant(state: &AppState, id: &UserId, input: GrantIn) -> ApiResult<Grant> {
    if input.amount <= 0 {
        return Err(ApiError::invalid("amount", "amount: must be positive"));
    }
    let account = state.metering.account(id).await?;
    let now = Timestamp::now();
    let starts_at = input.starts_at.unwrap_or(now);
    let expires_at = input.expires_at.or(account.period(now).end);
    if expires_at.is_some_and(|e| e <= starts_at) {
        return Err(ApiError::invalid("expires_at", "expires_at: must be after starts_at"));
    }
    let grant = Grant {
        id: format!("grant_{}", base62::random(20)),
        user_id: id.clone(),
        meter: input.meter,
        amount: input.amount,
        starts_at,
        expires_at,
        created_at: now,
    };
    let grant = state.store.insert_grant(&grant).await?;
    state.invalidate_users();
    Ok(grant)
}

async fn list_grants(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_user(&id)?;
    state.store.user(&id).await?;
    Ok(Json(json!({ "grants": state.store.grants_of(&id).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverviewQuery {
    limit: Option<usize>,
}

/// Every user with their meters, sorted by the largest share of a limit used.
async fn overview(State(state): State<AppState>, Params(q): Params<OverviewQuery>) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let users: Vec<Value> = overview_rows(&state, limit)
        .await?
        .into_iter()
        .map(|row| {
            let meters: serde_json::Map<String, Value> =
                row.meters.iter().map(|(m, s)| (m.to_string(), meter_json(s))).collect();
            json!({
                "user_id": row.user.id, "plan": row.user.plan, "status": row.user.status,
                "share": if row.share.is_finite() { row.share } else { 1.0 },
                "binding_meter": row.binding, "meters": meters,
            })
        })
        .collect();
    Ok(Json(json!({ "users": users })))
}

/// A user in the overview: their limited meters and the largest share of
/// a limit used (`binding` is that meter).
pub(crate) struct OverviewRow {
    pub user: User,
    pub share: f64,
    pub binding: Option<Meter>,
    pub meters: Vec<(Meter, MeterState)>,
}

/// The `limit` users with the largest share of a limit used, largest first.
pub(crate) async fn overview_rows(state: &AppState, limit: usize) -> ApiResult<Vec<OverviewRow>> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    let now = Timestamp::now();
    loop {
        let page = state.store.users(cursor.as_deref(), 1000, None).await?;
        let last = page.last().map(|u| u.id.to_string());
        for user in page.iter() {
            let account = state.metering.account(&user.id).await?;
            let mut meters = Vec::new();
            let mut best: Option<(Meter, f64)> = None;
            for meter in account.limited_meters(now) {
                let s = state.metering.state(&account, &meter, now).await?;
                let sh = share(&s);
                if best.as_ref().is_none_or(|(_, b)| sh > *b) {
                    best = Some((meter.clone(), sh));
                }
                meters.push((meter, s));
            }
            let (binding, share) = best.map(|(m, s)| (Some(m), s)).unwrap_or((None, 0.0));
            rows.push(OverviewRow { user: user.clone(), share, binding, meters });
        }
        if page.len() < 1000 {
            break;
        }
        cursor = last;
    }
    rows.sort_by(|a, b| b.share.total_cmp(&a.share).then_with(|| a.user.id.cmp(&b.user.id)));
    rows.truncate(limit);
    Ok(rows)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn event_json(e: &EventRow) -> Value {
    json!({
        "id": e.id, "user_id": e.user_id, "key_id": e.key_id,
        "timestamp": Timestamp::from_millis(e.ts), "recorded_at": Timestamp::from_millis(e.recorded_at),
        "feature": e.feature, "route": e.route, "provider": e.provider, "model": e.model,
        "input_tokens": e.input_tokens, "output_tokens": e.output_tokens, "cached_tokens": e.cached_tokens,
        "reasoning_tokens": e.reasoning_tokens, "requests": e.requests, "cost_usd": e.cost_micros,
        "meters": e.extra.as_deref().and_then(|x| serde_json::from_str::<Value>(x).ok()),
        "latency_ms": e.latency_ms, "ttft_ms": e.ttft_ms, "status_code": e.status_code,
        "request_bytes": e.request_bytes, "response_bytes": e.response_bytes,
        "client_ip": e.client_ip, "user_agent": e.user_agent, "key_source": e.key_source,
        "billable": e.billable, "estimated": e.estimated,
    })
}

fn range(account: &Account, from: Option<Timestamp>, to: Option<Timestamp>) -> ApiResult<(i64, i64)> {
    let period = account.period(Timestamp::now());
    let from = from.unwrap_or(period.start).millis();
    let to = to.map(Timestamp::millis).unwrap_or(i64::MAX);
    if to <= from {
        return Err(ApiError::invalid("to", "to: must be after from"));
    }
    Ok((from, to))
}

/// A page of a user's ledger (JSON), or all of it as CSV.
async fn user_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Params(q): Params<EventsQuery>,
) -> ApiResult<Response> {
    let account = state.metering.account(&parse_user(&id)?).await?;
    if wants_csv(&headers) {
        return export_csv(&state, &account, q.from, q.to).await;
    }
    let (from, to) = range(&account, q.from, q.to)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let after = match &q.cursor {
        Some(c) => {
            let (ts, id) = c.split_once(':').ok_or_else(|| ApiError::invalid("cursor", "cursor: as returned"))?;
            Some((ts.parse::<i64>().map_err(|_| ApiError::invalid("cursor", "cursor: as returned"))?, id.to_owned()))
        }
        None => None,
    };
    let user = account.user.id.as_str();
    let events = state.store.events_of(user, from, to, after.as_ref().map(|(t, i)| (*t, i.as_str())), limit).await?;
    let next = (events.len() as i64 == limit).then(|| events.last().map(|e| format!("{}:{}", e.ts, e.id))).flatten();
    let mut body = json!({ "events": events.iter().map(event_json).collect::<Vec<_>>(), "next_cursor": next });
    if q.cursor.is_none() {
        body["total"] = json!(state.store.count_events_of(user, from, to).await?);
    }
    Ok(Json(body).into_response())
}

fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The ledger as CSV, streamed page by page.
async fn export_csv(
    state: &AppState,
    account: &Account,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> ApiResult<Response> {
    let (from, to) = range(account, from, to)?;
    let columns: Vec<&str> = EVENT_COLUMNS
        .iter()
        .map(|c| {
            if *c == "ts" {
                "timestamp"
            } else if *c == "cost_micros" {
                "cost_usd"
            } else if *c == "extra" {
                "meters"
            } else {
                *c
            }
        })
        .collect();
    let header_line = format!("{}\n", columns.join(","));
    let store = state.store.clone();
    let user = account.user.id.to_string();
    let stream = futures_util::stream::unfold(Some((None::<(i64, String)>, true)), move |cursor| {
        let store = store.clone();
        let user = user.clone();
        let columns = columns.clone();
        let header_line = header_line.clone();
        async move {
            let (after, first) = cursor?;
            let page = match store.events_of(&user, from, to, after.as_ref().map(|(t, i)| (*t, i.as_str())), 1000).await
            {
                Ok(page) => page,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            };
            let mut out = if first { header_line } else { String::new() };
            for e in &page {
                let j = event_json(e);
                let line: Vec<String> = columns.iter().map(|c| csv_field(&j[*c])).collect();
                out.push_str(&line.join(","));
                out.push('\n');
            }
            let next = (page.len() == 1000).then(|| page.last().map(|e| (e.ts, e.id.clone()))).flatten();
            Some((Ok::<_, std::io::Error>(out), next.map(|n| (Some(n), false))))
        }
    });
    let mut response = HttpBody::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceIn {
    /// US dollars per million tokens.
    pub input: f64,
    pub cached_input: Option<f64>,
    pub output: f64,
}

fn price_json(model: &str, p: &Price) -> Value {
    let d = |micros: i64| micros as f64 / 1_000_000.0;
    json!({ "model": model, "input": d(p.input), "cached_input": d(p.cached_input), "output": d(p.output), "unit": "usd_per_million_tokens" })
}

async fn list_prices(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "prices": state.metering.prices().iter().map(|(m, p)| price_json(m, p)).collect::<Vec<_>>() }))
}

async fn set_price_route(
    State(state): State<AppState>,
    Path(model): Path<String>,
    Body(input): Body<PriceIn>,
) -> ApiResult<Json<Value>> {
    let price = set_price(&state, &model, input).await?;
    Ok(Json(price_json(&model, &price)))
}

/// Sets a model's price, here and in the store.
pub(crate) async fn set_price(state: &AppState, model: &str, input: PriceIn) -> ApiResult<Price> {
    if model.is_empty() || model.len() > 200 {
        return Err(ApiError::invalid("model", "model: 1 to 200 characters"));
    }
    for (field, v) in
        [("input", Some(input.input)), ("cached_input", input.cached_input), ("output", Some(input.output))]
    {
        if v.is_some_and(|v| !v.is_finite() || !(0.0..=1_000_000.0).contains(&v)) {
            return Err(ApiError::invalid(field, format!("{field}: dollars per million tokens, 0 or more")));
        }
    }
    let price = Price::dollars(input.input, input.cached_input.unwrap_or(input.input), input.output);
    state.store.set_price(model, price).await?;
    state.metering.set_price(model, Some(price));
    Ok(price)
}

async fn delete_price_route(State(state): State<AppState>, Path(model): Path<String>) -> ApiResult<StatusCode> {
    delete_price(&state, &model).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a price set through the API; a built-in one applies again.
pub(crate) async fn delete_price(state: &AppState, model: &str) -> ApiResult<()> {
    if !state.store.delete_price(model).await? {
        return Err(ApiError::NotFound(format!("no price set for {model:?}")));
    }
    state.metering.set_price(model, None);
    Ok(())
}
