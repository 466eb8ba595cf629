//! Quota periods. Counters are keyed by the start of the period an event
//! falls in, so a new period needs no job to reset anything.
//!
//! * `month`: the calendar month (UTC); a reset inside it starts a new
//!   period at the reset.
//! * `anchored`: monthly from the billing anchor, the anchor's day clamped
//!   to the month's last day (an anchor on the 31st gives Feb 28/29,
//!   Mar 31, Apr 30…); a reset moves the anchor.
//! * `lifetime`: from the last reset (or the beginning) on, without end.

use std::sync::Mutex;

use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use serde::Serialize;

use crate::{PeriodKind, Timestamp};

/// `[start, end)`; `end` is `None` for a lifetime period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

/// What decides a user's periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodRule {
    pub kind: PeriodKind,
    pub anchor: Timestamp,
    /// The last manual reset (or paid invoice), if any.
    pub reset_at: Option<Timestamp>,
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0).single().unwrap_or(t)
}

/// `anchor` moved by `months` (negative: back), its day clamped to the
/// target month's length; the time of day is kept.
pub fn add_months_clamped(anchor: DateTime<Utc>, months: i32) -> DateTime<Utc> {
    // chrono clamps the day to the end of the target month.
    if months >= 0 {
        anchor.checked_add_months(Months::new(months as u32))
    } else {
        anchor.checked_sub_months(Months::new(months.unsigned_abs()))
    }
    .unwrap_or(anchor)
}

impl PeriodRule {
    /// The period that `t` falls in.
    pub fn containing(&self, t: Timestamp) -> Period {
        self.containing_until(t).0
    }

    /// The period that `t` falls in, and the instant from which this rule
    /// gives another (`None`: never). Every instant from the period's start
    /// up to that one falls in the same period: a calendar month's period
    /// holds until the month ends, or until a reset set later in the month.
    pub fn containing_until(&self, t: Timestamp) -> (Period, Option<Timestamp>) {
        let period = self.compute(t);
        let until = match (self.kind, self.reset_at) {
            (PeriodKind::Month | PeriodKind::Lifetime, Some(reset)) if reset > t => match period.end {
                Some(end) => Some(end.min(reset)),
                None => Some(reset),
            },
            _ => period.end,
        };
        (period, until)
    }

    fn compute(&self, t: Timestamp) -> Period {
        let at = t.to_datetime();
        match self.kind {
            PeriodKind::Month => {
                let start = month_start(at);
                let end = start.checked_add_months(Months::new(1)).unwrap_or(start);
                let start = match self.reset_at {
                    Some(reset) if reset.to_datetime() > start && reset <= t => reset,
                    _ => Timestamp::from_millis(start.timestamp_millis()),
                };
                Period { start, end: Some(Timestamp::from_millis(end.timestamp_millis())) }
            }
            PeriodKind::Anchored => {
                let anchor = self.anchor.to_datetime();
                let mut k = (at.year() - anchor.year()) * 12 + at.month() as i32 - anchor.month() as i32;
                if add_months_clamped(anchor, k) > at {
                    k -= 1;
                }
                let start = add_months_clamped(anchor, k);
                let end = add_months_clamped(anchor, k + 1);
                Period {
                    start: Timestamp::from_millis(start.timestamp_millis()),
                    end: Some(Timestamp::from_millis(end.timestamp_millis())),
                }
            }
            PeriodKind::Lifetime => {
                let start = match self.reset_at {
                    Some(reset) if reset <= t => reset,
                    _ => Timestamp::from_millis(0),
                };
                Period { start, end: None }
            }
        }
    }
}

/// The last period a rule gave, kept for as long as it holds: working a
/// period out takes calendar arithmetic, and every call of a user asks for
/// the same one several times. A different rule (a reset, a plan change)
/// or an instant outside it works the period out again.
#[derive(Debug, Default)]
pub struct PeriodMemo(Mutex<Option<Kept>>);

#[derive(Clone, Copy, Debug)]
struct Kept {
    rule: PeriodRule,
    period: Period,
    until: Option<Timestamp>,
}

impl PeriodMemo {
    /// `rule.containing(t)`.
    pub fn containing(&self, rule: PeriodRule, t: Timestamp) -> Period {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match *kept {
            Some(k) if k.rule == rule && k.period.start <= t && k.until.is_none_or(|u| t < u) => k.period,
            _ => {
                let (period, until) = rule.containing_until(t);
                *kept = Some(Kept { rule, period, until });
                period
            }
        }
    }
}

impl Clone for PeriodMemo {
    fn clone(&self) -> Self {
        PeriodMemo(Mutex::new(*self.0.lock().unwrap_or_else(|p| p.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn check(kind: PeriodKind, anchor: &str, reset: Option<&str>, t: &str, start: &str, end: Option<&str>) {
        let rule = PeriodRule { kind, anchor: ts(anchor), reset_at: reset.map(ts) };
        let p = rule.containing(ts(t));
        assert_eq!(p.start, ts(start), "start for {t}");
        assert_eq!(p.end, end.map(ts), "end for {t}");
    }

    #[test]
    fn calendar_months() {
        let a = "2020-01-01T00:00:00Z";
        check(PeriodKind::Month, a, None, "2026-02-15T10:00:00Z", "2026-02-01T00:00:00Z", Some("2026-03-01T00:00:00Z"));
        check(PeriodKind::Month, a, None, "2026-12-31T23:59:59Z", "2026-12-01T00:00:00Z", Some("2027-01-01T00:00:00Z"));
        // A reset inside the month starts a new period there...
        let r = Some("2026-02-10T12:00:00Z");
        check(PeriodKind::Month, a, r, "2026-02-15T10:00:00Z", "2026-02-10T12:00:00Z", Some("2026-03-01T00:00:00Z"));
        // ...events before it stay in the old one, and next month is whole.
        check(PeriodKind::Month, a, r, "2026-02-05T10:00:00Z", "2026-02-01T00:00:00Z", Some("2026-03-01T00:00:00Z"));
        check(PeriodKind::Month, a, r, "2026-03-05T10:00:00Z", "2026-03-01T00:00:00Z", Some("2026-04-01T00:00:00Z"));
    }

    #[test]
    fn anchors_late_in_the_month_clamp_to_shorter_months() {
        let a = "2026-01-31T09:30:00Z";
        check(
            PeriodKind::Anchored,
            a,
            None,
            "2026-02-10T00:00:00Z",
            "2026-01-31T09:30:00Z",
            Some("2026-02-28T09:30:00Z"),
        );
        check(
            PeriodKind::Anchored,
            a,
            None,
            "2026-03-01T00:00:00Z",
            "2026-02-28T09:30:00Z",
            Some("2026-03-31T09:30:00Z"),
        );
        check(
            PeriodKind::Anchored,
            a,
            None,
            "2026-04-30T09:30:00Z",
            "2026-04-30T09:30:00Z",
            Some("2026-05-31T09:30:00Z"),
        );
        // Leap year: February has 29 days.
        let leap = "2028-01-30T00:00:00Z";
        check(
            PeriodKind::Anchored,
            leap,
            None,
            "2028-02-29T12:00:00Z",
            "2028-02-29T00:00:00Z",
            Some("2028-03-30T00:00:00Z"),
        );
        // Across the year boundary.
        let dec = "2026-12-15T00:00:00Z";
        check(
            PeriodKind::Anchored,
            dec,
            None,
            "2027-01-01T00:00:00Z",
            "2026-12-15T00:00:00Z",
            Some("2027-01-15T00:00:00Z"),
        );
        // Before the anchor: the month before it.
        check(
            PeriodKind::Anchored,
            dec,
            None,
            "2026-12-01T00:00:00Z",
            "2026-11-15T00:00:00Z",
            Some("2026-12-15T00:00:00Z"),
        );
    }

    #[test]
    fn lifetime_runs_from_the_last_reset() {
        let a = "2020-01-01T00:00:00Z";
        check(PeriodKind::Lifetime, a, None, "2026-02-15T10:00:00Z", "1970-01-01T00:00:00Z", None);
        let r = Some("2026-02-10T00:00:00Z");
        check(PeriodKind::Lifetime, a, r, "2026-02-15T10:00:00Z", "2026-02-10T00:00:00Z", None);
        check(PeriodKind::Lifetime, a, r, "2026-02-01T00:00:00Z", "1970-01-01T00:00:00Z", None);
    }

    fn instant() -> impl Strategy<Value = Timestamp> {
        // 2000-01-01 .. 2100-01-01, with the 28th–31st of months well covered.
        prop_oneof![
            (946_684_800_000i64..4_102_444_800_000).prop_map(Timestamp::from_millis),
            (2000i32..2100, 1u32..=12, 28u32..=31, 0u32..86_400).prop_filter_map("a real date", |(y, m, d, s)| {
                let date = chrono::NaiveDate::from_ymd_opt(y, m, d)?;
                let dt = date.and_hms_opt(s / 3600, (s / 60) % 60, s % 60)?.and_utc();
                Some(Timestamp::from_millis(dt.timestamp_millis()))
            }),
        ]
    }

    fn kind() -> impl Strategy<Value = PeriodKind> {
        prop_oneof![Just(PeriodKind::Month), Just(PeriodKind::Anchored)]
    }

    /// An offset of up to 40 days either way, in milliseconds.
    fn near() -> impl Strategy<Value = i64> {
        -40 * 86_400_000i64..40 * 86_400_000
    }

    fn any_kind() -> impl Strategy<Value = PeriodKind> {
        prop_oneof![Just(PeriodKind::Month), Just(PeriodKind::Anchored), Just(PeriodKind::Lifetime)]
    }

    #[test]
    fn a_reset_later_in_the_month_ends_what_the_memo_keeps() {
        let rule = PeriodRule {
            kind: PeriodKind::Month,
            anchor: ts("2020-01-01T00:00:00Z"),
            reset_at: Some(ts("2026-02-10T12:00:00Z")),
        };
        let memo = PeriodMemo::default();
        let before = memo.containing(rule, ts("2026-02-05T00:00:00Z"));
        assert_eq!(before.start, ts("2026-02-01T00:00:00Z"));
        assert_eq!(rule.containing_until(ts("2026-02-05T00:00:00Z")).1, Some(ts("2026-02-10T12:00:00Z")));
        assert_eq!(memo.containing(rule, ts("2026-02-10T11:59:59Z")), before);
        assert_eq!(memo.containing(rule, ts("2026-02-10T12:00:00Z")).start, ts("2026-02-10T12:00:00Z"));
        // Another rule (the reset moved) is worked out again.
        let moved = PeriodRule { reset_at: Some(ts("2026-02-03T00:00:00Z")), ..rule };
        assert_eq!(memo.containing(moved, ts("2026-02-11T00:00:00Z")).start, ts("2026-02-03T00:00:00Z"));
        assert_eq!(memo.containing(rule, ts("2026-02-04T00:00:00Z")), before);
    }

    proptest! {
        #[test]
        fn a_period_contains_its_instant_and_the_next_starts_where_it_ends(
            kind in kind(), anchor in instant(), t in instant(), reset in proptest::option::of(instant())
        ) {
            let rule = PeriodRule { kind, anchor, reset_at: if kind == PeriodKind::Anchored { None } else { reset } };
            let p = rule.containing(t);
            let end = p.end.unwrap();
            prop_assert!(p.start <= t && t < end, "{p:?} must contain {t:?}");
            let next = rule.containing(end);
            prop_assert_eq!(next.start, end, "periods are contiguous");
            let days = (end.millis() - p.start.millis()) as f64 / 86_400_000.0;
            prop_assert!(days <= 31.0 + 1e-9, "{days} days");
        }

        #[test]
        fn a_period_holds_from_its_start_until_the_rule_gives_another(
            kind in any_kind(), anchor in instant(), t in instant(), reset in proptest::option::of(near()),
            later in near(),
        ) {
            // A reset and a later instant within 40 days of `t`: in the
            // same month often enough.
            let rule = PeriodRule { kind, anchor, reset_at: reset.map(|r| Timestamp::from_millis(t.millis() + r)) };
            let later = later.abs();
            let (p, until) = rule.containing_until(t);
            prop_assert_eq!(p, rule.containing(t));
            prop_assert!(until.is_none_or(|u| t < u), "{until:?} must come after {t:?}");
            prop_assert_eq!(rule.containing(p.start), p, "from its start");
            let t2 = Timestamp::from_millis(t.millis() + later);
            match until {
                Some(u) if t2 >= u => prop_assert_ne!(rule.containing(t2), p, "past {:?}", u),
                _ => prop_assert_eq!(rule.containing(t2), p, "before {:?}", until),
            }
            if let Some(u) = until {
                prop_assert_ne!(rule.containing(u), p, "at {:?}", u);
                prop_assert_eq!(rule.containing(Timestamp::from_millis(u.millis() - 1)), p, "just before {:?}", u);
            }
        }

        #[test]
        fn the_memo_gives_what_the_rule_gives(
            base in instant(),
            rules in proptest::collection::vec((any_kind(), instant(), proptest::option::of(near())), 1..3),
            asks in proptest::collection::vec((0usize..3, near()), 1..40),
        ) {
            // Resets and asks within 40 days of one instant, mostly in one
            // month.
            let at = |offset: i64| Timestamp::from_millis(base.millis() + offset);
            let memo = PeriodMemo::default();
            for (which, offset) in asks {
                let (kind, anchor, reset) = rules[which % rules.len()];
                let rule = PeriodRule { kind, anchor, reset_at: reset.map(at) };
                let t = at(offset);
                prop_assert_eq!(memo.containing(rule, t), rule.containing(t), "{:?} at {:?}", rule, t);
            }
        }

        #[test]
        fn anchored_periods_start_on_the_anchor_day_clamped(anchor in instant(), t in instant()) {
            let rule = PeriodRule { kind: PeriodKind::Anchored, anchor, reset_at: None };
            let start = rule.containing(t).start.to_datetime();
            let a = anchor.to_datetime();
            let last_day = (start.with_day(1).unwrap() + Months::new(1) - chrono::Duration::days(1)).day();
            prop_assert_eq!(start.day(), a.day().min(last_day));
            prop_assert_eq!(start.time(), a.time());
            let days = (rule.containing(t).end.unwrap().millis() - rule.containing(t).start.millis()) / 86_400_000;
            prop_assert!((28..=31).contains(&days));
        }
    }
}
