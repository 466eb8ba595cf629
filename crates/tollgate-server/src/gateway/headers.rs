//! The rate-limit headers of a proxied response: GitHub's `X-RateLimit-*`
//! and the IETF draft's `RateLimit-Policy` / `RateLimit` for the meter that
//! binds (`tokens` when limited), and the fields LLM SDK users read:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`. Those describe
//! the plan's per-minute limits (`rpm`, `tpm`) when it has them, else the
//! period's `requests` and `tokens` quota; resets are durations as OpenAI
//! writes them (`1s`, `6m0s`, `720h0m0s`). An unlimited plan has none.

use std::fmt;

use axum::http::{HeaderMap, HeaderName};
use tollgate_domain::{Meter, Timestamp};

use crate::error::ApiResult;
use crate::metering::Account;
use crate::routes::{HeaderValues, RateWindows, binding_meter, ratelimit_headers};
use crate::state::AppState;

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Every rate-limit header for `account` now, set in `headers`.
pub async fn rate_limits(state: &AppState, account: &Account, headers: &mut HeaderMap) -> ApiResult<()> {
    // One buffer for every value of the response's headers.
    let mut values = HeaderValues::new();
    let binding = binding_meter(state, account, Meter::TOKENS).await?;
    if let Some((meter, s, period)) = &binding {
        ratelimit_headers(headers, &mut values, meter, s, period);
    }
    let now = Timestamp::now();
    // The binding meter's period and state serve again below rather than
    // being worked out a second time on every proxied call.
    let period = binding.as_ref().map_or_else(|| account.period(now), |(_, _, period)| *period);
    let user = account.user.id.as_str();
    let families = [
        ([LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS], account.plan.rpm, Meter::REQUESTS),
        ([LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS], account.plan.tpm, Meter::TOKENS),
    ];
    for (names, per_minute, meter) in families {
        let (limit, remaining, reset_ms) = match per_minute {
            Some(per_minute) => {
                let who = if meter == Meter::TOKENS { RateWindows::tokens_of(user) } else { user.to_owned() };
                let (remaining, reset_ms) = state.rate_windows.peek(&who, per_minute, now.millis()).await;
                (per_minute, remaining, reset_ms)
            }
            None => {
                let meter = Meter::builtin(meter);
                if account.limit(&meter, now).is_none() {
                    continue;
                }
                let s = match &binding {
                    Some((bound, s, _)) if *bound == meter => s.clone(),
                    _ => state.metering.state(account, &meter, now).await?,
                };
                let reset_ms = period.end.map_or(0, |end| (end.millis() - now.millis()).max(0) as u64);
                (s.limit.unwrap_or(0), s.remaining().unwrap_or(0), reset_ms)
            }
        };
        let [limit_name, remaining_name, reset_name] = names;
        headers.insert(limit_name, values.number(limit));
        headers.insert(remaining_name, values.number(remaining));
        headers.insert(reset_name, values.of(Reset(reset_ms)));
    }
    Ok(())
}

/// A time to a reset, in milliseconds, as OpenAI writes it: `0s`, `20ms`,
/// `1s`, `6m0s`, `2h0m5s`.
pub struct Reset(pub u64);

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms < 1000 {
            return if ms == 0 { f.write_str("0s") } else { write!(f, "{ms}ms") };
        }
        let s = ms.div_ceil(1000);
        let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
        match (h, m) {
            (0, 0) => write!(f, "{s}s"),
            (0, m) => write!(f, "{m}m{s}s"),
            (h, m) => write!(f, "{h}h{m}m{s}s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_as_openai_writes_them() {
        let check = |ms: u64, expected: &str| assert_eq!(Reset(ms).to_string(), expected, "{ms}");
        check(0, "0s");
        check(20, "20ms");
        check(1000, "1s");
        check(1001, "2s");
        check(360_000, "6m0s");
        check(7_205_000, "2h0m5s");
        check(30 * 86_400_000, "720h0m0s");
    }
}
