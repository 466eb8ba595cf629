//! The web pages: the admin dashboard (`/ui`) and the user portal
//! (`/portal`), rendered on the server with askama templates (escaped by
//! default), charts drawn as SVG by plotters, and two embedded assets (a
//! style sheet and a small script for copy buttons). Every page works
//! without JavaScript.
//!
//! The pages reuse the rules and queries of the JSON routes (`routes::`);
//! this module only gathers, formats and renders. It never renders a
//! secret, except a new key's one-time display.

mod admin;
mod chart;
mod portal;
mod session;
pub(crate) mod view;
mod webhooks;

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

pub use portal::create_portal_session;
pub use session::SigningKey;

use tollgate_domain::{Scope, Scopes, Timestamp};

use crate::error::ApiError;
use crate::metering::Account;
use crate::state::AppState;

/// The routes of both areas and their assets, with the security headers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(admin::routes())
        .merge(portal::routes())
        .merge(webhooks::routes())
        .route("/assets/tollgate.css", get(style))
        .route("/assets/copy.js", get(script))
        .route("/assets/favicon.svg", get(icon))
        .route("/favicon.ico", get(icon))
        .layer(middleware::from_fn(security_headers))
}

const STYLE: &str = include_str!("../../assets/tollgate.css");
const SCRIPT: &str = include_str!("../../assets/copy.js");
const ICON: &str = include_str!("../../assets/favicon.svg");

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// The policy every page is served with: nothing from elsewhere, no inline
/// script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
    // Pages show one person's data (and once, a new key): never cached.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Renders a template as an HTML response.
pub(crate) fn page(template: &impl Template) -> Result<Response, WebError> {
    let html = template.render().map_err(|e| ApiError::Internal(anyhow::anyhow!("failed to render a page: {e}")))?;
    Ok(Html(html).into_response())
}

/// What a page handler can fail with, shown as an HTML page.
#[derive(Debug)]
pub(crate) enum WebError {
    Api(ApiError),
    /// A form without the token of the session (or sign-in) that served it.
    Csrf,
}

impl WebError {
    pub fn invalid(field: &str, message: &str) -> WebError {
        WebError::Api(ApiError::invalid(field, message))
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError::Api(e)
    }
}

impl From<tollgate_store::StoreError> for WebError {
    fn from(e: tollgate_store::StoreError) -> Self {
        WebError::Api(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from a page of this session. Go back, reload the page and try again.".into(),
            ),
            WebError::Api(e) => {
                if let ApiError::Internal(cause) = e {
                    tracing::error!(error = format!("{cause:#}"), "page failed");
                }
                let title = match e.status() {
                    StatusCode::BAD_REQUEST => "That did not work",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::CONFLICT => "That conflicts with what exists",
                    StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "Not allowed",
                    _ => "Something went wrong on our side",
                };
                (e.status(), title, e.to_string())
            }
        };
        let body = ErrorPage { status: status.as_u16(), title, message }
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>Error</p>".into());
        let mut response = (status, Html(body)).into_response();
        if let WebError::Api(ApiError::RateLimited { retry_after_seconds, .. }) = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds.max(1)));
        }
        response
    }
}

/// The usage part of a user's page, shared by the portal and the admin's
/// view of one user.
pub(crate) struct UsageSection {
    pub plan_name: String,
    pub plan_slug: String,
    pub period: String,
    /// Meters with a limit.
    pub meters: Vec<view::MeterView>,
    /// Meters counted without a limit.
    pub others: Vec<view::MeterView>,
    pub chart: String,
    pub chart_summary: String,
    pub days: Vec<(String, String)>,
    pub by_model: Vec<view::GroupView>,
    pub by_feature: Vec<view::GroupView>,
}

/// Most days a chart shows.
const CHART_DAYS: i64 = 62;

pub(crate) async fn usage_section(state: &AppState, account: &Account) -> Result<UsageSection, WebError> {
    let now = Timestamp::now();
    let period = account.period(now);
    let user = account.user.id.as_str();
    let meters = crate::routes::usage::current_meters(state, account, now).await?;
    let by_day = crate::routes::usage::breakdown(state, user, &period, "day").await?;
    let by_model = crate::routes::usage::breakdown(state, user, &period, "model").await?;
    let by_feature = crate::routes::usage::breakdown(state, user, &period, "feature").await?;
    // Every day of the period (a lifetime one: the last weeks), at most
    // CHART_DAYS of them, so that quiet days show as gaps.
    let day_of = |t: Timestamp| t.to_datetime().date_naive();
    let last = match period.end {
        Some(end) => day_of(Timestamp::from_millis(end.millis() - 1)),
        None => day_of(now),
    };
    let first = day_of(period.start).max(last - chrono::Days::new(CHART_DAYS as u64 - 1));
    let totals: std::collections::HashMap<String, i64> =
        by_day.iter().filter_map(|g| Some((g.key.clone()?, g.tokens))).collect();
    let days: Vec<(chrono::NaiveDate, i64)> = first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| (d, totals.get(&d.format("%Y-%m-%d").to_string()).copied().unwrap_or(0)))
        .collect();
    let total: i64 = days.iter().map(|d| d.1).sum();
    let busiest = days.iter().max_by_key(|d| d.1).filter(|d| d.1 > 0);
    let chart_summary = match busiest {
        Some((d, n)) => format!(
            "Tokens per day, {} to {}: {} in all; the busiest day was {} with {}.",
            days[0].0.format("%-d %b"),
            last.format("%-d %b"),
            view::number(total),
            d.format("%-d %b"),
            view::number(*n)
        ),
        None => "Tokens per day: nothing used in this period yet.".into(),
    };
    let (meters, others) = view::meters(account, &meters, now).into_iter().partition(|m| m.limit.is_some());
    Ok(UsageSection {
        plan_name: account.plan.name.clone(),
        plan_slug: account.plan.slug.to_string(),
        period: match period.end {
            Some(end) => format!("{} – {}", view::date(period.start), view::date(end)),
            None => format!("since {}", view::date(period.start)),
        },
        meters,
        others,
        chart: chart::daily(&days),
        chart_summary,
        days: days
            .iter()
            .filter(|(d, _)| *d <= day_of(now))
            .map(|(d, n)| (d.format("%-d %b %Y").to_string(), view::number(*n)))
            .collect(),
        by_model: view::groups(&by_model, "(no model)"),
        by_feature: view::groups(&by_feature, "(no feature)"),
    })
}

/// A new key, shown this once.
pub(crate) struct NewKey {
    pub name: String,
    pub secret: String,
}

/// A scope a key form offers.
pub(crate) struct ScopeChoice {
    pub value: &'static str,
    pub checked: bool,
}

/// The scopes a key form offers: those `allowed`, with the usual ones ticked.
pub(crate) fn scope_choices(allowed: impl Fn(Scope) -> bool) -> Vec<ScopeChoice> {
    let usual = Scopes::default_for_user_key();
    Scope::ALL
        .into_iter()
        .filter(|s| s.allowed_for_user_key() && allowed(*s))
        .map(|s| ScopeChoice { value: s.as_str(), checked: usual.contains(s) })
        .collect()
}

/// Scopes named in a form; an unknown one is the form's fault.
pub(crate) fn parse_scopes(values: &[String]) -> Result<Option<Vec<Scope>>, WebError> {
    if values.is_empty() {
        return Ok(None);
    }
    values
        .iter()
        .map(|v| Scope::parse(v).map_err(|e| WebError::invalid("scopes", &e.to_string())))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A notice after a form was handled (`?done=…`): fixed texts only, so a
/// link cannot put words on the page.
pub(crate) fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "plan" => "The plan was changed.",
        "grant" => "The tokens were granted.",
        "reset" => "Usage was reset: a new period starts now.",
        "suspended" => "The user is suspended: their keys are refused.",
        "active" => "The user is active again.",
        "revoked" => "The key was revoked.",
        "created" => "The plan was created.",
        "saved" => "Saved.",
        "price" => "The price was saved.",
        "price-removed" => "The price override was removed.",
        "provider-key-saved" => "Your provider key was saved.",
        "provider-key-accepted" => "Your provider key was saved, and the provider accepted it.",
        "provider-key-refused" => {
            "Your provider key was saved, but the provider refused it: check that you copied the whole key."
        }
        "provider-key-unchecked" => "Your provider key was saved; the provider could not be reached to check it.",
        "provider-key-removed" => "Your provider key was removed.",
        "credential-removed" => "The provider key was removed.",
        "webhook-saved" => "The endpoint was saved.",
        "webhook-deleted" => "The endpoint was deleted, with its deliveries.",
        "redelivered" => "The delivery will be sent again now.",
        _ => return None,
    })
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct DoneQuery {
    pub done: Option<String>,
}

/// An option of a `<select>`.
pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// The message of a refusal as shown next to its field: without the
/// leading `field: ` the JSON error carries, and starting with a capital.
pub(crate) fn field_message(field: &str, message: &str) -> String {
    let text = message.strip_prefix(&format!("{field}: ")).unwrap_or(message);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An empty form: only its CSRF token matters.
#[derive(serde::Deserialize)]
pub(crate) struct Empty {}
