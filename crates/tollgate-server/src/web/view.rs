//! What the templates show, already formatted: numbers, money and dates;
//! meters with their level, warning and projection; keys; plans;
//! breakdowns. No secret passes through here.

use tollgate_domain::model::{Credential, KeyRecord, Plan, ValidationOutcome};
use tollgate_domain::period::Period;
use tollgate_domain::quota::projected_exhaustion;
use tollgate_domain::{Meter, ProviderName, Timestamp};

use crate::metering::{Account, MeterState};
use crate::routes::usage::GroupRow;
use crate::state::AppState;

/// `1234567` → `1,234,567`.
pub fn number(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Micro-dollars as dollars: `$1.23`, or `$0.000150` below a cent.
pub fn money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    if m != 0 && m < 10_000 {
        format!("{sign}${}.{:06}", m / 1_000_000, m % 1_000_000)
    } else {
        format!("{sign}${}.{:02}", number((m / 1_000_000) as i64), (m % 1_000_000) / 10_000)
    }
}

/// A plan price in cents of `currency`: `$20.00 usd` style, `free` for 0.
pub fn price(cents: i64, currency: &str) -> String {
    if cents == 0 {
        return "Free".into();
    }
    let amount = format!("{}.{:02}", number(cents / 100), cents % 100);
    match currency {
        "usd" => format!("${amount}"),
        "eur" => format!("€{amount}"),
        "gbp" => format!("£{amount}"),
        other => format!("{amount} {}", other.to_ascii_uppercase()),
    }
}

/// `28 Nov 2026`.
pub fn date(t: Timestamp) -> String {
    t.to_datetime().format("%-d %b %Y").to_string()
}

/// `28 Nov 2026, 14:05 UTC`.
pub fn date_time(t: Timestamp) -> String {
    t.to_datetime().format("%-d %b %Y, %H:%M UTC").to_string()
}

/// `28 Nov 2026, 14:05:09 UTC`.
pub fn date_time_seconds(t: Timestamp) -> String {
    t.to_datetime().format("%-d %b %Y, %H:%M:%S UTC").to_string()
}

/// A meter's amount in its unit.
pub fn amount(meter: &Meter, n: i64) -> String {
    if meter.as_str() == Meter::COST_USD { money(n) } else { number(n) }
}

/// What a meter is called on a page: `tokens`, `input tokens`,
/// `requests (analyze)`.
pub fn label(meter: &Meter) -> String {
    match meter.as_str().split_once(':') {
        Some((base, feature)) => format!("{} ({feature})", base.replace('_', " ")),
        None if meter.as_str() == Meter::COST_USD => "spend (USD)".into(),
        None => meter.as_str().replace('_', " "),
    }
}

/// One meter of the current period, as the usage meter shows it.
pub struct MeterView {
    pub name: String,
    pub label: String,
    pub used: i64,
    pub limit: Option<i64>,
    pub used_text: String,
    pub limit_text: String,
    pub remaining_text: String,
    /// Whole percent of the limit used (may pass 100).
    pub percent: i64,
    /// `value`/`max` of the `<progress>`: used capped at the limit.
    pub bar_value: i64,
    pub bar_max: i64,
    /// `green` below 75 %, `amber` from 75 %, `red` from 90 % and when
    /// exhausted.
    pub level: &'static str,
    pub exhausted: bool,
    pub warning: Option<String>,
    /// Whether the warning suggests adding an own provider key (usage on
    /// one does not count toward this plan's limits).
    pub suggests_own_key: bool,
    pub projection: Option<String>,
}

/// The level of a share of a limit, in whole percent.
pub fn level(percent: i64, exhausted: bool) -> &'static str {
    if exhausted || percent >= 90 {
        "red"
    } else if percent >= 75 {
        "amber"
    } else {
        "green"
    }
}

/// The meters of an account's current period.
pub fn meters(account: &Account, meters: &[(Meter, MeterState)], now: Timestamp) -> Vec<MeterView> {
    let period = account.period(now);
    meters.iter().map(|(m, s)| meter(account, &period, m, s, now)).collect()
}

fn meter(account: &Account, period: &Period, meter: &Meter, s: &MeterState, now: Timestamp) -> MeterView {
    let label = label(meter);
    let (percent, exhausted) = match s.limit {
        Some(0) => (100, true),
        Some(l) => ((i128::from(s.used) * 100 / i128::from(l)) as i64, s.used >= l),
        None => (0, false),
    };
    let level = level(percent, exhausted);
    let until = match period.end {
        Some(end) => format!("until the period resets on {}", date(end)),
        None => "until more allowance is granted (this plan's limits never reset)".into(),
    };
    let own_key = if account.plan.byok_counts {
        ""
    } else {
        " or add your own provider key (usage on your own key does not count toward this limit)"
    };
    let warning = match s.limit {
        Some(l) if exhausted => Some(format!(
            "Limit reached: all {} {label} of this period are used. Requests are refused {until}. \
             To keep going now, upgrade your plan{own_key}.",
            amount(meter, l)
        )),
        Some(_) if percent >= 90 => Some(format!(
            "Almost out: {percent}% of your {label} are used. At the limit, requests are refused {until}. \
             Upgrade your plan{own_key} to avoid the interruption."
        )),
        Some(_) if percent >= 75 => Some(format!(
            "{percent}% of your {label} are used. At the limit, requests are refused {until}. \
                 Upgrade your plan{own_key} to keep going past it."
        )),
        _ => None,
    };
    let projection = s.limit.filter(|_| !exhausted).and_then(|l| {
        let at = projected_exhaustion(s.used, l, period.start.millis(), now.millis())?;
        Some(match period.end {
            Some(end) if at >= end.millis() => {
                format!("At this pace the limit lasts until the period ends on {}.", date(end))
            }
            _ => format!("At this pace the limit is reached on {}.", date(Timestamp::from_millis(at))),
        })
    });
    MeterView {
        name: meter.to_string(),
        label,
        used: s.used,
        limit: s.limit,
        used_text: amount(meter, s.used),
        limit_text: s.limit.map(|l| amount(meter, l)).unwrap_or_else(|| "unlimited".into()),
        remaining_text: s.remaining().map(|r| amount(meter, r)).unwrap_or_else(|| "unlimited".into()),
        percent,
        bar_value: s.limit.map(|l| s.used.min(l)).unwrap_or(0).max(0),
        bar_max: s.limit.filter(|l| *l > 0).unwrap_or(1),
        level,
        exhausted,
        suggests_own_key: warning.is_some() && !account.plan.byok_counts,
        warning,
        projection,
    }
}

/// A gateway key as listed: never the secret.
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `tg_AbCd…wxyz`.
    pub shown: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub status: &'static str,
    pub active: bool,
}

pub fn keys(state: &AppState, records: &[KeyRecord]) -> Vec<KeyView> {
    let now = Timestamp::now();
    records
        .iter()
        .map(|k| {
            let status = match k.refusal(now) {
                Some(_) if k.revoked_at.is_some() => "revoked",
                Some(_) => "expired",
                None if k.revoked_at.is_some() => "ending (rotated)",
                None => "active",
            };
            KeyView {
                id: k.id.to_string(),
                name: k.name.clone(),
                shown: format!("{}…{}", k.prefix, k.last4),
                scopes: k.scopes.to_stored(),
                created: date(k.created_at),
                last_used: state.last_used.current(k).map(date_time).unwrap_or_else(|| "never".into()),
                status,
                active: k.refusal(now).is_none(),
            }
        })
        .collect()
}

/// A provider credential as listed: never the secret.
pub struct CredentialView {
    /// The provider's name (`openai`), for forms and links.
    pub provider: String,
    /// How people write it (`OpenAI`).
    pub provider_name: String,
    pub label: String,
    /// `…abcd`.
    pub shown: String,
    pub created: String,
    pub updated: Option<String>,
    pub last_used: String,
    /// The last check's outcome: `valid`, `invalid`, `unreachable`, or
    /// `unchecked`.
    pub check: &'static str,
    /// The outcome as the page says it: `accepted`, `refused`, …
    pub check_label: &'static str,
    /// What the last check found, and when; empty if never checked.
    pub check_text: String,
}

/// How people write a provider's name: `OpenAI`, or the name itself.
pub fn provider_name(provider: &ProviderName) -> String {
    provider.known().map(|k| k.display_name().to_owned()).unwrap_or_else(|| provider.to_string())
}

pub fn credentials(records: &[Credential]) -> Vec<CredentialView> {
    records
        .iter()
        .map(|c| {
            let (check, check_label, check_text) = match &c.validation {
                Some(v) => {
                    let label = match v.outcome {
                        ValidationOutcome::Valid => "accepted",
                        ValidationOutcome::Invalid => "refused",
                        ValidationOutcome::Unreachable => "could not check",
                    };
                    (v.outcome.as_str(), label, format!("{} · {}", v.message, date_time(v.checked_at)))
                }
                None => ("unchecked", "not checked", String::new()),
            };
            CredentialView {
                provider: c.provider.to_string(),
                provider_name: provider_name(&c.provider),
                label: c.label.clone().unwrap_or_default(),
                shown: format!("…{}", c.last4),
                created: date_time(c.created_at),
                updated: (c.updated_at != c.created_at).then(|| date_time(c.updated_at)),
                last_used: c.last_used_at.map(date_time).unwrap_or_else(|| "never".into()),
                check,
                check_label,
                check_text,
            }
        })
        .collect()
}

/// A plan as the plan pages list it.
pub struct PlanView {
    pub slug: String,
    pub name: String,
    pub price: String,
    pub period: &'static str,
    pub limits: Vec<(String, String)>,
    pub rate: String,
}

pub fn plan(plan: &Plan) -> PlanView {
    let mut limits: Vec<(String, String)> = plan
        .limits
        .iter()
        .map(|(m, l)| (label(m), l.map(|l| amount(m, l)).unwrap_or_else(|| "unlimited".into())))
        .collect();
    if limits.is_empty() {
        limits.push(("everything".into(), "unlimited".into()));
    }
    let per = |n: Option<i64>, what: &str| n.map(|n| format!("{} {what}/min", number(n)));
    let rate = [per(plan.rpm, "requests"), per(plan.tpm, "tokens")].into_iter().flatten().collect::<Vec<_>>();
    PlanView {
        slug: plan.slug.to_string(),
        name: plan.name.clone(),
        price: match plan.period {
            tollgate_domain::PeriodKind::Lifetime => price(plan.price_cents, &plan.currency),
            _ if plan.price_cents == 0 => "Free".into(),
            _ => format!("{} a month", price(plan.price_cents, &plan.currency)),
        },
        period: match plan.period {
            tollgate_domain::PeriodKind::Month => "calendar month",
            tollgate_domain::PeriodKind::Anchored => "monthly from sign-up",
            tollgate_domain::PeriodKind::Lifetime => "one allowance, no reset",
        },
        limits,
        rate: if rate.is_empty() { "no rate limit".into() } else { rate.join(", ") },
    }
}

/// One row of a breakdown table.
pub struct GroupView {
    pub name: String,
    pub requests: String,
    pub tokens: String,
    pub cost: String,
}

pub fn groups(rows: &[GroupRow], none: &str) -> Vec<GroupView> {
    let mut rows: Vec<&GroupRow> = rows.iter().collect();
    rows.sort_by(|a, b| b.tokens.cmp(&a.tokens).then(b.requests.cmp(&a.requests)));
    rows.into_iter()
        .map(|g| GroupView {
            name: g.key.clone().unwrap_or_else(|| none.to_owned()),
            requests: number(g.requests),
            tokens: number(g.tokens),
            cost: money(g.cost_micros),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_money_and_levels_read_as_people_write_them() {
        assert_eq!(number(0), "0");
        assert_eq!(number(999), "999");
        assert_eq!(number(1000), "1,000");
        assert_eq!(number(-1234567), "-1,234,567");
        assert_eq!(money(0), "$0.00");
        assert_eq!(money(1_234_567), "$1.23");
        assert_eq!(money(150), "$0.000150");
        assert_eq!(price(2000, "usd"), "$20.00");
        assert_eq!(price(0, "usd"), "Free");
        let check = |percent, exhausted, expected| assert_eq!(level(percent, exhausted), expected, "{percent}");
        check(0, false, "green");
        check(74, false, "green");
        check(75, false, "amber");
        check(89, false, "amber");
        check(90, false, "red");
        check(100, true, "red");
    }
}
