//! Plans' vocabulary: meters, period kinds and per-meter limits.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Invalid;

/// A named counter: `tokens`, `input_tokens`, `output_tokens`, `requests`,
/// `cost_usd` (micro-dollars), or an app-defined one such as
/// `requests:analyze`: lowercase letters, digits and `_`, optionally followed
/// by `:` and a feature name of letters, digits, `_`, `-` and `.`.
///
/// The built-in meters borrow their `'static` names, so that naming one
/// (which every usage event does several times) allocates nothing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Meter(Cow<'static, str>);

impl Meter {
    pub const TOKENS: &'static str = "tokens";
    pub const INPUT_TOKENS: &'static str = "input_tokens";
    pub const OUTPUT_TOKENS: &'static str = "output_tokens";
    pub const REQUESTS: &'static str = "requests";
    pub const COST_USD: &'static str = "cost_usd";

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let (base, feature) = match raw.split_once(':') {
            Some((base, feature)) => (base, Some(feature)),
            None => (raw, None),
        };
        let base_ok =
            !base.is_empty() && base.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let feature_ok = feature.is_none_or(|f| {
            !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
        if base_ok && feature_ok && raw.len() <= 100 {
            Ok(Meter(Cow::Owned(raw.to_owned())))
        } else {
            Err(Invalid::new(format!(
                "meter {raw:?} is not a meter name: use a-z, 0-9 and '_', optionally ':' and a feature name"
            )))
        }
    }

    /// One of the built-in meters (`Meter::TOKENS`, …), without allocating.
    pub fn builtin(name: &'static str) -> Meter {
        debug_assert!(Meter::parse(name).is_ok(), "{name:?} is not a meter name");
        Meter(Cow::Borrowed(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Meter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Meter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Meter::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How a plan's quota period runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    /// The calendar month, UTC.
    Month,
    /// Monthly from the user's billing anchor.
    Anchored,
    /// Never resets.
    Lifetime,
}

impl PeriodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Month => "month",
            PeriodKind::Anchored => "anchored",
            PeriodKind::Lifetime => "lifetime",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "month" => Ok(PeriodKind::Month),
            "anchored" => Ok(PeriodKind::Anchored),
            "lifetime" => Ok(PeriodKind::Lifetime),
            other => Err(Invalid::new(format!("period {other:?} is not one of \"month\", \"anchored\", \"lifetime\""))),
        }
    }
}

/// A limit per meter per period; `None` means unlimited. A meter that is
/// absent is unlimited too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<Meter, Option<i64>>")]
pub struct Limits(BTreeMap<Meter, Option<i64>>);

impl TryFrom<BTreeMap<Meter, Option<i64>>> for Limits {
    type Error = Invalid;

    fn try_from(map: BTreeMap<Meter, Option<i64>>) -> Result<Self, Invalid> {
        Limits::new(map)
    }
}

impl Limits {
    pub fn new(limits: impl IntoIterator<Item = (Meter, Option<i64>)>) -> Result<Self, Invalid> {
        let map: BTreeMap<_, _> = limits.into_iter().collect();
        if let Some((meter, _)) = map.iter().find(|(_, limit)| limit.is_some_and(|l| l < 0)) {
            return Err(Invalid::new(format!("the limit for {meter} must not be negative")));
        }
        Ok(Limits(map))
    }

    /// Whether the meter is named (with a limit or as unlimited).
    pub fn contains(&self, meter: &Meter) -> bool {
        self.0.contains_key(meter)
    }

    pub fn get(&self, meter: &Meter) -> Option<i64> {
        self.0.get(meter).copied().flatten()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Meter, Option<i64>)> {
        self.0.iter().map(|(m, l)| (m, *l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_names() {
        let check = |raw: &str, ok: bool| assert_eq!(Meter::parse(raw).is_ok(), ok, "{raw:?}");
        check("tokens", true);
        check("cost_usd", true);
        check("requests:analyze", true);
        check("requests:pr-review.v2", true);
        check("Tokens", false);
        check("requests:", false);
        check(":x", false);
        check("a b", false);
    }

    #[test]
    fn negative_limits_are_refused_and_null_is_unlimited() {
        let tokens = Meter::parse("tokens").unwrap();
        assert!(Limits::new([(tokens.clone(), Some(-1))]).is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"tokens":-5}"#).is_err());
        let limits: Limits = serde_json::from_str(r#"{"tokens":1000,"requests":null}"#).unwrap();
        assert_eq!(limits.get(&tokens), Some(1000));
        assert_eq!(limits.get(&Meter::parse("requests").unwrap()), None);
    }
}
