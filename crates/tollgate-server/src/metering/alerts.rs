//! Which counters a commit watches for usage alerts: those with a limit in
//! the user's current period (plan, overrides and grants, as
//! [`Account::limit`] says), with the plan's alert thresholds. The store
//! judges the crossing on the committed value inside the commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tollgate_domain::{Meter, Timestamp, UserId};
use tollgate_store::{CounterRef, Watch, Watcher};

use super::{Account, Accounts};

/// Looks the accounts of a commit's users up (cached: the events were just
/// prepared with them), once per user.
pub(super) struct Limits<'a> {
    pub accounts: &'a Accounts,
}

impl Limits<'_> {
    fn watch_of(account: &Account, meter: &str, period_start: i64, now: Timestamp) -> Option<Watch> {
        // Most counters have no limit: found by name, without parsing.
        let named = |limits: &tollgate_domain::Limits| limits.iter().find(|(m, _)| m.as_str() == meter).map(|(_, l)| l);
        let base = match account.user.limit_overrides.as_ref().and_then(named) {
            Some(overridden) => overridden,
            None => account.plan.limits.iter().find(|(m, _)| m.as_str() == meter).and_then(|(_, l)| l),
        };
        base?;
        let period = account.period(now);
        // Late events of a past period fire nothing.
        if period.start.millis() != period_start {
            return None;
        }
        let meter = Meter::parse(meter).ok()?;
        let limit = account.limit(&meter, now)?;
        Some(Watch {
            limit,
            thresholds: account.plan.alert_thresholds.clone(),
            period_end: period.end.map(Timestamp::millis),
        })
    }
}

impl Watcher for Limits<'_> {
    fn watch<'a>(
        &'a self,
        counters: &'a [CounterRef<'a>],
    ) -> Pin<Box<dyn Future<Output = Vec<Option<Watch>>> + Send + 'a>> {
        Box::pin(async move {
            let now = Timestamp::now();
            let mut out = Vec::with_capacity(counters.len());
            let mut current: Option<(&str, Option<Arc<Account>>)> = None;
            for (user, meter, start) in counters {
                if current.as_ref().is_none_or(|(u, _)| u != user) {
                    // Anonymous demo traffic has no user row, hence no alerts.
                    let account = match UserId::parse(user) {
                        Ok(id) => match self.accounts.get(&id).await {
                            Ok(account) => Some(account),
                            Err(crate::error::ApiError::NotFound(_)) => None,
                            Err(e) => {
                                tracing::error!(error = %e, "failed to read an account for usage alerts");
                                None
                            }
                        },
                        Err(_) => None,
                    };
                    current = Some((user, account));
                }
                let account = current.as_ref().and_then(|(_, a)| a.as_deref());
                out.push(account.and_then(|a| Limits::watch_of(a, meter, *start, now)));
            }
            out
        })
    }
}
