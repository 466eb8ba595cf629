//! Reading usage (current period, a past month, breakdowns, CSV), resets,
//! grants, the all-users overview, model prices, and the rate-limit
//! headers every authenticated response carries.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use chrono::{NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::audit::AuditAction;
use tollgate_domain::model::Grant;
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
        .route("/users/{id}/usage/reset", post(reset_usage))
        .route("/users/{id}/usage/events", get(user_events))
        .route("/users/{id}/grants", get(list_grants).post(add_grant))
        .route("/prices", get(list_prices))
        .route("/prices/{model}", put(set_price).delete(delete_price))
}

/// Self-service routes.
pub fn me_routes() -> Router<AppState> {
    Router::new().route("/v1/me/usage", get(my_usage))
}

fn header_value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"))
}

/// The rate-limit headers for one meter: GitHub's `X-RateLimit-*`, and the
/// IETF draft's `RateLimit-Policy` / `RateLimit`. None for an unlimited meter.
pub fn ratelimit_headers(meter: &Meter, state: &MeterState, period: &Period) -> HeaderMap {
    let mut h = HeaderMap::new();
    let Some(limit) = state.limit else { return h };
    let remaining = state.remaining().unwrap_or(0);
    let now = Timestamp::now();
    let reset = period.end.map(Timestamp::unix_seconds);
    let until = period.end.map(|e| (e.unix_seconds() - now.unix_seconds()).max(0));
    let window = period.end.map(|e| (e.unix_seconds() - period.start.unix_seconds()).max(0));
    h.insert("x-ratelimit-limit", header_value(limit));
    h.insert("x-ratelimit-remaining", header_value(remaining));
    h.insert("x-ratelimit-used", header_value(state.used));
    h.insert("x-ratelimit-reset", header_value(reset.unwrap_or(0)));
    h.insert("x-ratelimit-resource", header_value(meter));
    let w = window.map(|w| format!(";w={w}")).unwrap_or_default();
    h.insert(HeaderName::from_static("ratelimit-policy"), header_value(format!("\"{meter}\";q={limit}{w}")));
    let t = until.map(|t| format!(";t={t}")).unwrap_or_default();
    h.insert(HeaderName::from_static("ratelimit"), header_value(format!("\"{meter}\";r={remaining}{t}")));
    h
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

fn share(s: &MeterState) -> f64 {
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
        let mut used: BTreeMap<String, i64> = state.metering_store_counters(user, period.start.millis()).await?;
        for meter in account.limited_meters(now) {
            used.entry(meter.to_string()).or_insert(0);
        }
        for (name, _) in used {
            let Ok(meter) = Meter::parse(&name) else { continue };
            meters.insert(name, meter_json(&state.metering.state(account, &meter, now).await?));
        }
    } else {
        let end = period.end.map(Timestamp::millis).unwrap_or(i64::MAX);
        let rows = state.store.daily_of(user, period.start.millis(), end).await?;
        let mut used: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows.iter().filter(|r| account.counts(r.key_source == "byok")) {
            for (m, n) in [
                ("tokens", r.input_tokens + r.output_tokens),
                ("input_tokens", r.input_tokens),
                ("output_tokens", r.output_tokens),
                ("requests", r.requests),
                ("cost_usd", r.cost_micros),
            ] {
                *used.entry(m.to_owned()).or_default() += n;
            }
            if !r.feature.is_empty() {
                *used.entry(format!("requests:{}", r.feature)).or_default() += r.requests;
            }
        }
        for meter in account.limited_meters(period.start) {
            used.entry(meter.to_string()).or_insert(0);
        }
        for (name, n) in used {
            let limit = Meter::parse(&name).ok().and_then(|m| account.limit(&m, period.start));
            meters.insert(name, meter_json(&MeterState { limit, used: n, reserved: 0 }));
        }
    }
    let lifetime: serde_json::Map<String, Value> =
        state.store.lifetime_of(user).await?.into_iter().map(|(m, n)| (m, json!(n))).collect();
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

async fn groups(state: &AppState, user: &str, period: &Period, group_by: &str) -> ApiResult<Value> {
    let end = period.end.map(Timestamp::millis).unwrap_or(i64::MAX);
    let rows = state.store.daily_of(user, period.start.millis(), end).await?;
    let mut sums: BTreeMap<String, [i64; 6]> = BTreeMap::new();
    for r in rows {
        let key = match group_by {
            "day" => Timestamp::from_millis(r.day).to_rfc3339()[..10].to_owned(),
            "model" => r.model,
            "feature" => r.feature,
            "key" => r.key_id,
            "provider" => r.provider,
            _ => return Err(ApiError::invalid("group_by", "group_by: day, model, feature, key or provider")),
        };
        let s = sums.entry(key).or_default();
        for (slot, n) in
            s.iter_mut().zip([r.events, r.requests, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost_micros])
        {
            *slot += n;
        }
    }
    let name = if group_by == "key" { "key_id" } else { group_by };
    Ok(json!(
        sums.into_iter()
            .map(|(k, [events, requests, input, output, cached, cost])| json!({
                name: if k.is_empty() { Value::Null } else { json!(k) },
                "events": events, "requests": requests, "input_tokens": input, "output_tokens": output,
                "cached_tokens": cached, "tokens": input + output, "cost_usd": cost,
            }))
            .collect::<Vec<_>>()
    ))
}

impl AppState {
    /// Committed counters of a user's period, by meter.
    async fn metering_store_counters(&self, user: &str, period_start: i64) -> ApiResult<BTreeMap<String, i64>> {
        Ok(self.store.counters_of(user, period_start).await?.into_iter().collect())
    }
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

/// Starts a new period now; lifetime totals stay.
async fn reset_usage(State(state): State<AppState>, origin: Origin, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_user(&id)?;
    let now = Timestamp::now();
    let patch = UserPatch { billing_anchor: Some(now), usage_reset_at: Some(now), ..UserPatch::default() };
    state.store.update_user(&id, patch).await?;
    state.metering.invalidate(Some(&id));
    let entry = origin.entry(AuditAction::UsageReset, format!("user:{id}")).user(&id);
    state.audit.note(entry).await;
    state.hooks.emit(crate::hooks::events::usage_reset(&id, now, "manual")).await;
    let account = state.metering.account(&id).await?;
    Ok(Json(usage_view(&state, &account, &UsageQuery::default()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantIn {
    meter: Meter,
    amount: i64,
    starts_at: Option<Timestamp>,
    /// Default: the end of the current period.
    #[serde(default)]
    expires_at: Option<Timestamp>,
}

async fn add_grant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(input): Body<GrantIn>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_user(&id)?;
    if input.amount <= 0 {
        return Err(ApiError::invalid("amount", "amount: must be positive"));
    }
    let account = state.metering.account(&id).await?;
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
    state.metering.invalidate(Some(&id));
    Ok((StatusCode::CREATED, Json(grant)))
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
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = state.store.users(cursor.as_deref(), 1000, None).await?;
        let last = page.last().map(|u| u.id.to_string());
        for user in &page {
            let account = state.metering.account(&user.id).await?;
            let now = Timestamp::now();
            let mut meters = serde_json::Map::new();
            let mut best: Option<(String, f64)> = None;
            let names: BTreeSet<String> = account.limited_meters(now).iter().map(|m| m.to_string()).collect();
            for name in names {
                let meter = Meter::parse(&name).expect("a stored meter name");
                let s = state.metering.state(&account, &meter, now).await?;
                let sh = share(&s);
                if best.as_ref().is_none_or(|(_, b)| sh > *b) {
                    best = Some((name.clone(), sh));
                }
                meters.insert(name, meter_json(&s));
            }
            let (binding, sh) = best.map(|(m, s)| (Some(m), s)).unwrap_or((None, 0.0));
            rows.push((
                sh,
                json!({
                    "user_id": user.id, "plan": user.plan, "status": user.status,
                    "share": if sh.is_finite() { sh } else { 1.0 }, "binding_meter": binding, "meters": meters,
                }),
            ));
        }
        if page.len() < 1000 {
            break;
        }
        cursor = last;
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let users: Vec<Value> = rows.into_iter().take(limit).map(|(_, v)| v).collect();
    Ok(Json(json!({ "users": users })))
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
struct PriceIn {
    /// US dollars per million tokens.
    input: f64,
    cached_input: Option<f64>,
    output: f64,
}

fn price_json(model: &str, p: &Price) -> Value {
    let d = |micros: i64| micros as f64 / 1_000_000.0;
    json!({ "model": model, "input": d(p.input), "cached_input": d(p.cached_input), "output": d(p.output), "unit": "usd_per_million_tokens" })
}

async fn list_prices(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "prices": state.metering.prices().iter().map(|(m, p)| price_json(m, p)).collect::<Vec<_>>() }))
}

async fn set_price(
    State(state): State<AppState>,
    Path(model): Path<String>,
    Body(input): Body<PriceIn>,
) -> ApiResult<Json<Value>> {
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
    state.store.set_price(&model, price).await?;
    state.metering.set_price(&model, Some(price));
    Ok(Json(price_json(&model, &price)))
}

async fn delete_price(State(state): State<AppState>, Path(model): Path<String>) -> ApiResult<StatusCode> {
    if !state.store.delete_price(&model).await? {
        return Err(ApiError::NotFound(format!("no price set for {model:?}")));
    }
    state.metering.set_price(&model, None);
    Ok(StatusCode::NO_CONTENT)
}
