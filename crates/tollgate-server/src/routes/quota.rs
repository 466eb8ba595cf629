//! Middleware for the routes a user's key (or anonymous demo traffic)
//! reaches: the plan's requests-per-minute limit, anonymous quota, and the
//! rate-limit headers of the meter that binds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tollgate_domain::period::Period;
use tollgate_domain::{Meter, Timestamp};

use super::usage::{HeaderValues, binding_meter, ratelimit_headers};
use crate::auth::Principal;
use crate::cluster::Cluster;
use crate::error::{ApiError, LimitDetails};
use crate::metering::{Account, MeterState};
use crate::state::AppState;

/// Per-user GCRA windows: a user may burst up to the whole per-minute
/// allowance, then one request per `60 s / limit`. In this process's memory
/// for one instance, in Redis when several share it.
pub enum RateWindows {
    Memory(Mutex<HashMap<String, f64>>),
    Shared(Arc<Cluster>),
}

impl Default for RateWindows {
    fn default() -> Self {
        RateWindows::Memory(Mutex::default())
    }
}

const WINDOW_MS: f64 = 60_000.0;

impl RateWindows {
    /// The window of `user`'s tokens per minute (`tpm`); their requests per
    /// minute (`rpm`) are in the window named by the user id alone.
    pub fn tokens_of(user: &str) -> String {
        format!("tpm:{user}")
    }

    /// Takes `cost` from `who`'s allowance of `per_minute`; `Err` holds the
    /// milliseconds to wait. Should Redis fail, the call is let through (a
    /// rate limit is a brake, not a quota) and the failure logged.
    pub async fn take(&self, who: &str, per_minute: i64, cost: i64, now_ms: i64) -> Result<(), u64> {
        match self {
            RateWindows::Memory(windows) => memory_take(windows, who, per_minute, cost, now_ms),
            RateWindows::Shared(cluster) => cluster.take(who, per_minute, cost).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "failed to take from a rate window in Redis; letting the call through");
                Ok(())
            }),
        }
    }

    /// Gives back `cost` taken earlier (an estimate that turned out
    /// larger than what was used), never past an empty window.
    pub async fn give_back(&self, who: &str, per_minute: i64, cost: i64, now_ms: i64) {
        if cost <= 0 {
            return;
        }
        match self {
            RateWindows::Memory(windows) => {
                let interval = WINDOW_MS / per_minute.max(1) as f64;
                let mut windows = windows.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(tat) = windows.get_mut(who) {
                    *tat = (*tat - cost as f64 * interval).max(now_ms as f64);
                }
            }
            RateWindows::Shared(cluster) => {
                if let Err(e) = cluster.give_back(who, per_minute, cost).await {
                    tracing::warn!(error = %e, "failed to give back to a rate window in Redis");
                }
            }
        }
    }

    /// What is left of `who`'s allowance of `per_minute` now, and the
    /// milliseconds until all of it is back.
    pub async fn peek(&self, who: &str, per_minute: i64, now_ms: i64) -> (i64, u64) {
        match self {
            RateWindows::Memory(windows) => {
                let interval = WINDOW_MS / per_minute.max(1) as f64;
                let now = now_ms as f64;
                let tat = windows.lock().unwrap_or_else(|p| p.into_inner()).get(who).copied().unwrap_or(now).max(now);
                let busy = tat - now;
                let remaining = ((WINDOW_MS - busy) / interval).floor().clamp(0.0, per_minute as f64) as i64;
                (remaining, busy.ceil() as u64)
            }
            RateWindows::Shared(cluster) => cluster.peek(who, per_minute).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "failed to read a rate window in Redis");
                (per_minute, 0)
            }),
        }
    }
}

fn memory_take(
    windows: &Mutex<HashMap<String, f64>>,
    who: &str,
    per_minute: i64,
    cost: i64,
    now_ms: i64,
) -> Result<(), u64> {
    let interval = WINDOW_MS / per_minute.max(1) as f64;
    let now = now_ms as f64;
    let mut windows = windows.lock().unwrap_or_else(|p| p.into_inner());
    if windows.len() > 100_000 {
        windows.retain(|_, tat| *tat > now);
    }
    let tat = windows.get(who).copied().unwrap_or(now).max(now);
    let new_tat = tat + cost as f64 * interval;
    if new_tat - now > WINDOW_MS {
        return Err((new_tat - now - WINDOW_MS).ceil() as u64);
    }
    windows.insert(who.to_owned(), new_tat);
    Ok(())
}

/// What a per-minute request refusal names as its meter.
const RPM_METER: &str = "requests_per_minute";

/// Takes a request of the plan's per-minute limit; the refusal when none
/// is left (with `Retry-After`), its headers naming the limit that binds:
/// the minute's, nothing left until the retry.
async fn take_request(state: &AppState, account: &Account) -> Option<Response> {
    let rpm = account.plan.rpm?;
    let wait = state.rate_windows.take(account.user.id.as_str(), rpm, 1, Timestamp::now().millis()).await.err()?;
    let retry = wait.div_ceil(1000).max(1);
    let now = Timestamp::now();
    let minute = Period { start: now.plus_seconds(-60), end: Some(now.plus_seconds(retry as i64)) };
    let refusal = ApiError::RateLimited {
        message: format!(
            "more than {rpm} requests per minute for user {:?}; retry in {retry} s",
            account.user.id.as_str()
        ),
        retry_after_seconds: retry,
        details: Some(LimitDetails { meter: RPM_METER.into(), limit: rpm, used: rpm, reset_at: minute.end }),
    };
    let mut response = refusal.into_response();
    let meter = Meter::parse(RPM_METER).expect("a meter name");
    let full = MeterState { limit: Some(rpm), used: rpm, reserved: 0 };
    ratelimit_headers(response.headers_mut(), &mut HeaderValues::new(), &meter, &full, &minute);
    Some(response)
}

pub async fn headers(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let principal = req.extensions().get::<Principal>().cloned();
    let account = match &principal {
        Some(Principal::Key(k)) => match &k.user {
            Some(user) => state.metering.account(&user.id).await?,
            None => return Ok(next.run(req).await),
        },
        Some(Principal::Anonymous(ip)) => return anonymous(&state, *ip, req, next).await,
        _ => return Ok(next.run(req).await),
    };
    if let Some(refused) = take_request(&state, &account).await {
        return Ok(refused);
    }
    let mut response = next.run(req).await;
    if !response.headers().contains_key("x-ratelimit-limit")
        && let Some((meter, s, period)) = binding_meter(&state, &account, Meter::REQUESTS).await?
    {
        ratelimit_headers(response.headers_mut(), &mut HeaderValues::new(), &meter, &s, &period);
    }
    Ok(response)
}

/// Anonymous demo traffic: one request of the demo plan's quota per call,
/// per client address.
async fn anonymous(state: &AppState, ip: std::net::IpAddr, req: Request, next: Next) -> Result<Response, ApiError> {
    let Some(anonymous) = &state.config.anonymous else { return Ok(next.run(req).await) };
    let account = state.metering.anonymous_account(ip, &anonymous.plan).await?;
    let requests = Meter::parse(Meter::REQUESTS).expect("a built-in meter name");
    if let Some(mut refused) = take_request(state, &account).await {
        refused.headers_mut().insert("x-demo-mode", HeaderValue::from_static("true"));
        return Ok(refused);
    }
    let outcome = state.metering.check(&account, &requests, 1, true, None).await?;
    let demo = |mut response: Response| {
        response.headers_mut().insert("x-demo-mode", HeaderValue::from_static("true"));
        response
    };
    let Some(reservation) = outcome.reservation_id else {
        let s = &outcome.state;
        let reset = outcome.period.end;
        let retry = reset.map(|r| (r.unix_seconds() - Timestamp::now().unix_seconds()).max(1) as u64).unwrap_or(3600);
        let error = ApiError::QuotaExceeded {
            message: "the anonymous demo quota for this address is used up; use an API key".into(),
            retry_after_seconds: retry,
            details: LimitDetails {
                meter: Meter::REQUESTS.into(),
                limit: s.limit.unwrap_or(0),
                used: s.used,
                reset_at: reset,
            },
        };
        let mut response = axum::response::IntoResponse::into_response(error);
        ratelimit_headers(response.headers_mut(), &mut HeaderValues::new(), &requests, s, &outcome.period);
        return Ok(demo(response));
    };
    let mut response = next.run(req).await;
    state.metering.settle_for(&account, &reservation, 1).await?;
    let after = state.metering.state(&account, &requests, Timestamp::now()).await?;
    ratelimit_headers(response.headers_mut(), &mut HeaderValues::new(), &requests, &after, &outcome.period);
    Ok(demo(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gcra_allows_a_burst_of_the_whole_minute_then_spaces_requests() {
        let w = RateWindows::default();
        for _ in 0..10 {
            assert!(w.take("u", 10, 1, 0).await.is_ok());
        }
        let wait = w.take("u", 10, 1, 0).await.unwrap_err();
        assert_eq!(wait, 6000, "one more after 60 s / 10");
        assert!(w.take("u", 10, 1, 6000).await.is_ok());
        assert!(w.take("other", 10, 1, 0).await.is_ok(), "users are apart");
    }

    #[tokio::test]
    async fn an_allowance_given_back_can_be_taken_again_and_peeking_says_what_is_left() {
        let w = RateWindows::default();
        assert_eq!(w.peek("u", 100, 0).await, (100, 0));
        assert!(w.take("u", 100, 80, 0).await.is_ok());
        assert_eq!(w.peek("u", 100, 0).await, (20, 48_000));
        assert!(w.take("u", 100, 50, 0).await.is_err());
        w.give_back("u", 100, 60, 0).await;
        assert_eq!(w.peek("u", 100, 0).await, (80, 12_000));
        w.give_back("u", 100, 1_000, 0).await;
        assert_eq!(w.peek("u", 100, 0).await, (100, 0), "never past an empty window");
    }
}
