//! The HTTP surface, grouped by audience: operations (no auth),
//! self-service (a gateway key), admin (the admin token), and Stripe's
//! webhook (its own signature).
//!
//! Every response carries `X-Request-Id`; every request is logged by its
//! route pattern, never its query string (which may hold `?key=`).

pub(crate) mod admin;
pub(crate) mod credentials;
pub(crate) mod keys;
mod me;
mod metering;
mod ops;
mod quota;
mod stripe;
pub(crate) mod usage;
pub(crate) mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tollgate_domain::base62;
use tracing::Instrument;

use crate::auth::{require_admin, require_principal};
use crate::error::ApiError;
use crate::handles::Handles;
use crate::state::AppState;

pub use quota::RateWindows;
pub use usage::{HeaderValues, binding_meter, ratelimit_headers};

pub fn router(state: AppState) -> Router {
    let admin = admin::routes()
        .merge(usage::admin_routes())
        .merge(credentials::admin_routes())
        .merge(webhooks::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let me = me::routes()
        .merge(usage::me_routes())
        .merge(metering::routes())
        .merge(credentials::key_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), quota::headers))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_principal));
    // Everything but the proxy and the probes reads or changes what usage
    // built: it sees all usage acknowledged before it began.
    let settled = Router::new()
        .merge(stripe::routes())
        .nest("/admin/v1", admin)
        .merge(me)
        .merge(crate::web::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), ledger_caught_up));
    Router::new()
        .merge(ops::routes())
        .merge(crate::gateway::routes())
        .merge(settled)
        .route_layer(middleware::from_fn(tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Waits until the ledger holds the usage acknowledged so far (the
/// gateway's goes through a journal first).
async fn ledger_caught_up(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.metering.caught_up().await;
    next.run(req).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut response = ApiError::NotFound(format!("{} does not accept {method}", uri.path())).into_response();
    *response.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// The matched route pattern, passed out to [`observe`] on the response
/// (shared: it labels two metrics and a log line).
#[derive(Clone)]
struct RoutePattern(Arc<str>);

async fn tag_route(path: MatchedPath, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response.extensions_mut().insert(RoutePattern(path.as_str().into()));
    response
}

/// A method as a metric label: the standard ones by name, any other as
/// `OTHER` (a client cannot add label values at will).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The request counter and duration histogram of a method, route pattern
/// and status.
fn request_metrics(method: &'static str, route: &Arc<str>, status: u16) -> (metrics::Counter, metrics::Histogram) {
    static KEPT: Handles<(&'static str, Arc<str>, u16), (metrics::Counter, metrics::Histogram)> = Handles::new();
    KEPT.get(&(method, route.clone(), status), || {
        let labels = [("method", method.to_owned()), ("route", route.to_string()), ("status", status.to_string())];
        let requests = metrics::counter!("tollgate_http_requests_total", &labels);
        let duration = metrics::histogram!("tollgate_http_request_duration_seconds", "route" => route.to_string());
        (requests, duration)
    })
}

fn request_id(req: &Request) -> HeaderValue {
    req.headers()
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut id = String::with_capacity(24);
            id.push_str("req_");
            base62::push_random(&mut id, 20);
            HeaderValue::try_from(id).expect("base62 is a valid header value")
        })
}

/// Request id, access log and request metrics.
async fn observe(req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let method = req.method().clone();
    // A one-time portal link is a credential until it is used: not logged.
    let path = match req.uri().path() {
        p if p.starts_with("/portal/session/") => "/portal/session/…".to_owned(),
        p => p.to_owned(),
    };
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or(""), %method);
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let route = response.extensions().get::<RoutePattern>().map(|r| r.0.clone()).unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16();
    response.headers_mut().insert("x-request-id", id);
    let (requests, duration) = request_metrics(method_label(&method), &route, status);
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(%path, %route, status, latency_us = elapsed.as_micros() as u64, "request");
    });
    response
}
