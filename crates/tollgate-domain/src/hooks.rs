//! What Tollgate tells the outside world: the event types its webhooks and
//! e-mails carry, which ones an endpoint wants, when a usage alert fires,
//! and when a failed delivery is tried again.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Invalid, base62};

macro_rules! event_types {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// The kinds of event sent to webhooks.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $(#[doc = $doc] $variant,)*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            /// When the event is sent, in a sentence.
            pub fn description(self) -> &'static str {
                match self {
                    $(EventType::$variant => $doc,)*
                }
            }
        }
    };
}

event_types! {
    UsageThreshold => "usage.threshold", "A meter's committed usage reached one of the plan's alert thresholds.";
    QuotaExceeded => "quota.exceeded", "A meter's quota is used up (used >= limit) for the period.";
    KeyCreated => "key.created", "A gateway or service key was issued (also by a rotation).";
    KeyRevoked => "key.revoked", "A key was revoked (or a rotation ends its grace period).";
    CredentialUpdated => "credential.updated", "A user's provider credential was set, replaced or removed.";
    PlanChanged => "plan.changed", "A user was moved to another plan (by an admin or by Stripe).";
    UsageReset => "usage.reset", "A user's usage period was restarted (by hand, a plan change or a paid invoice).";
}

impl EventType {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        EventType::ALL.iter().copied().find(|e| e.as_str() == raw).ok_or_else(|| {
            Invalid::new(format!(
                "{raw:?} is not an event type; use one of {}",
                EventType::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventType::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Which events an endpoint receives: all of them (`["*"]`), or the types
/// listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<EventType>),
}

impl EventFilter {
    /// `["*"]` is every event; otherwise at least one known type.
    pub fn new(names: &[String]) -> Result<Self, Invalid> {
        if names.iter().any(|n| n == "*") {
            return Ok(EventFilter::All);
        }
        if names.is_empty() {
            return Err(Invalid::new("name at least one event type, or \"*\" for all"));
        }
        names.iter().map(|n| EventType::parse(n)).collect::<Result<_, _>>().map(EventFilter::Only)
    }

    pub fn wants(&self, event: EventType) -> bool {
        match self {
            EventFilter::All => true,
            EventFilter::Only(types) => types.contains(&event),
        }
    }

    /// `*`, or the types separated by spaces.
    pub fn to_stored(&self) -> String {
        match self {
            EventFilter::All => "*".into(),
            EventFilter::Only(types) => types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" "),
        }
    }

    pub fn from_stored(raw: &str) -> Result<Self, Invalid> {
        EventFilter::new(&raw.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    pub fn names(&self) -> Vec<&'static str> {
        match self {
            EventFilter::All => vec!["*"],
            EventFilter::Only(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

impl Serialize for EventFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// A webhook endpoint's public id: `whk_` + 20 base62 characters.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct EndpointId(String);

impl EndpointId {
    const PREFIX: &'static str = "whk_";

    pub fn generate() -> Self {
        EndpointId(format!("{}{}", Self::PREFIX, base62::random(20)))
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.strip_prefix(Self::PREFIX) {
            Some(rest) if rest.len() == 20 && base62::is_base62(rest) => Ok(EndpointId(raw.to_owned())),
            _ => Err(Invalid::new("a webhook endpoint id is `whk_` followed by 20 characters of 0-9, A-Z, a-z")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EndpointId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Where events are sent, as shown: never the signing secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Webhook {
    pub id: EndpointId,
    pub url: String,
    pub events: EventFilter,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: crate::Timestamp,
    pub updated_at: crate::Timestamp,
}

/// A new event's id (`msg_…`, sent as `webhook-id`) or delivery's id (`dlv_…`).
pub fn event_id() -> String {
    format!("msg_{}", base62::random(24))
}

pub fn delivery_id() -> String {
    format!("dlv_{}", base62::random(24))
}

/// What a commit did to one limited counter, and what it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossing {
    pub before: i64,
    pub after: i64,
    pub limit: i64,
}

impl Crossing {
    /// Whether `before < limit × percent / 100 <= after`, in exact
    /// integer arithmetic. A limit of 0 (nothing allowed) has no
    /// thresholds to cross.
    pub fn crosses(&self, percent: u8) -> bool {
        if self.limit <= 0 {
            return false;
        }
        let mark = i128::from(self.limit) * i128::from(percent);
        i128::from(self.before) * 100 < mark && mark <= i128::from(self.after) * 100
    }

    /// The thresholds this change crosses, in ascending order.
    pub fn thresholds(&self, thresholds: &[u8]) -> Vec<u8> {
        let mut crossed: Vec<u8> = thresholds.iter().copied().filter(|t| self.crosses(*t)).collect();
        crossed.sort_unstable();
        crossed.dedup();
        crossed
    }

    /// Whether this change uses the quota up: `before < limit <= after`.
    pub fn exhausts(&self) -> bool {
        self.crosses(100)
    }
}

/// The longest wait between two attempts at a delivery.
pub const MAX_RETRY_DELAY_MS: u64 = 60 * 60 * 1000;
/// How long a failing delivery is tried for.
pub const RETRY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The wait before attempt `failed + 1`, after `failed` failures:
/// `base × 2^(failed − 1)`, at most an hour, scaled by `jitter` (taken
/// from `[0, 1)`) into its upper half, so that receivers coming back
/// are not hit by every sender at once.
pub fn retry_delay_ms(failed: u32, base_ms: u64, jitter: f64) -> u64 {
    let exponent = failed.saturating_sub(1).min(40);
    let full = base_ms.saturating_mul(1u64 << exponent).clamp(1, MAX_RETRY_DELAY_MS);
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    full / 2 + ((full / 2) as f64 * jitter) as u64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn event_types_round_trip_and_unknown_ones_are_named() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()).unwrap(), *t);
        }
        let e = EventType::parse("usage.thresold").unwrap_err().to_string();
        assert!(e.contains("usage.thresold") && e.contains("usage.threshold"), "{e}");
    }

    #[test]
    fn filters() {
        let f = |names: &[&str]| EventFilter::new(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(f(&["*"]).unwrap(), EventFilter::All);
        assert!(f(&[]).is_err());
        assert!(f(&["key.created", "nope"]).is_err());
        let only = f(&["usage.threshold", "key.created", "key.created"]).unwrap();
        assert!(only.wants(EventType::KeyCreated) && !only.wants(EventType::UsageReset));
        assert_eq!(only.to_stored(), "usage.threshold key.created");
        assert_eq!(EventFilter::from_stored(&only.to_stored()).unwrap(), only);
        assert_eq!(EventFilter::from_stored("*").unwrap(), EventFilter::All);
    }

    #[test]
    fn endpoint_ids() {
        let id = EndpointId::generate();
        assert_eq!(EndpointId::parse(id.as_str()).unwrap(), id);
        assert!(EndpointId::parse("whk_short").is_err());
        assert!(EndpointId::parse("key_AAAAAAAAAAAAAAAAAAAA").is_err());
    }

    fn check(before: i64, after: i64, limit: i64, expected: &[u8]) {
        let c = Crossing { before, after, limit };
        assert_eq!(c.thresholds(&[75, 90, 100]), expected, "{before} -> {after} of {limit}");
    }

    #[test]
    fn thresholds_fire_when_committed_usage_reaches_them() {
        check(0, 74, 100, &[]);
        check(0, 75, 100, &[75]);
        check(74, 75, 100, &[75]);
        check(75, 80, 100, &[]);
        check(10, 95, 100, &[75, 90]);
        check(0, 100, 100, &[75, 90, 100]);
        check(99, 150, 100, &[100]);
        check(100, 150, 100, &[]);
        // 75 % of 3 is 2.25: reached at 3, not at 2.
        check(0, 2, 3, &[]);
        check(2, 3, 3, &[75, 90, 100]);
        check(0, 5, 0, &[]);
        check(i64::MAX - 10, i64::MAX, i64::MAX, &[100]);
    }

    #[test]
    fn retries_back_off_exponentially_to_an_hour_with_jitter_in_the_upper_half() {
        assert_eq!(retry_delay_ms(1, 10_000, 0.0), 5_000);
        assert_eq!(retry_delay_ms(1, 10_000, 0.999_999), 9_999);
        assert_eq!(retry_delay_ms(2, 10_000, 0.0), 10_000);
        assert_eq!(retry_delay_ms(4, 10_000, 0.0), 40_000);
        assert_eq!(retry_delay_ms(30, 10_000, 0.0), MAX_RETRY_DELAY_MS / 2);
        assert_eq!(retry_delay_ms(u32::MAX, u64::MAX, 1.0), MAX_RETRY_DELAY_MS);
        assert_eq!(retry_delay_ms(1, 0, f64::NAN), 0);
    }

    proptest! {
        #[test]
        fn a_threshold_is_crossed_by_exactly_one_of_two_consecutive_commits(
            limit in 1i64..1_000_000, a in 0i64..2_000_000, b in 0i64..2_000_000, c in 0i64..2_000_000, t in 1u8..=100
        ) {
            let mut v = [a, b, c];
            v.sort_unstable();
            let [x, y, z] = v;
            let first = Crossing { before: x, after: y, limit }.crosses(t);
            let second = Crossing { before: y, after: z, limit }.crosses(t);
            let whole = Crossing { before: x, after: z, limit }.crosses(t);
            prop_assert_eq!(first || second, whole);
            prop_assert!(!(first && second));
        }

        #[test]
        fn delays_grow_and_stay_within_an_hour(failed in 1u32..64, base in 1u64..100_000, jitter in 0.0f64..1.0) {
            let d = retry_delay_ms(failed, base, jitter);
            prop_assert!(d <= MAX_RETRY_DELAY_MS);
            prop_assert!(retry_delay_ms(failed + 1, base, 0.0) >= retry_delay_ms(failed, base, 0.0));
        }
    }
}
