//! What one usage event adds to which meter.

use std::collections::BTreeMap;

use crate::Meter;

/// The largest amount one event, check or settlement may carry: 2^53, the
/// last integer that JSON numbers (doubles) and the Lua of a shared counter
/// store hold exactly. Sums of many such amounts still fit an `i64` only
/// when added with saturation, which is how they are added.
pub const MAX_AMOUNT: i64 = 1 << 53;

/// The measured amounts of one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub requests: i64,
    pub cost_micros: i64,
    /// The app's feature (`analyze` → meter `requests:analyze`).
    pub feature: Option<String>,
    /// Amounts for further meters the app names itself.
    pub extra: BTreeMap<Meter, i64>,
}

fn meter(name: &'static str) -> Meter {
    Meter::builtin(name)
}

impl Amounts {
    /// Every meter the event moves, with how much: `tokens` (input +
    /// output), `input_tokens`, `output_tokens`, `requests`, `cost_usd`,
    /// `requests:<feature>`, and the extra meters. Zero amounts are left out.
    pub fn meters(&self) -> Vec<(Meter, i64)> {
        let mut out: Vec<(Meter, i64)> = Vec::with_capacity(6 + self.extra.len());
        let mut add = |m: Meter, n: i64| {
            if n != 0 {
                match out.iter_mut().find(|(have, _)| *have == m) {
                    Some((_, sum)) => *sum = sum.saturating_add(n),
                    None => out.push((m, n)),
                }
            }
        };
        add(meter(Meter::TOKENS), self.input_tokens.saturating_add(self.output_tokens));
        add(meter(Meter::INPUT_TOKENS), self.input_tokens);
        add(meter(Meter::OUTPUT_TOKENS), self.output_tokens);
        add(meter(Meter::REQUESTS), self.requests);
        add(meter(Meter::COST_USD), self.cost_micros);
        if let Some(feature) = &self.feature
            && let Ok(m) = Meter::parse(&format!("requests:{feature}"))
        {
            add(m, self.requests);
        }
        for (m, n) in &self.extra {
            add(m.clone(), *n);
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_moves_the_documented_meters() {
        let amounts = Amounts {
            input_tokens: 10,
            output_tokens: 5,
            requests: 1,
            cost_micros: 7,
            feature: Some("analyze".into()),
            extra: [(meter("pages"), 3)].into(),
            ..Amounts::default()
        };
        let got: Vec<(String, i64)> = amounts.meters().into_iter().map(|(m, n)| (m.to_string(), n)).collect();
        let want = [
            ("cost_usd", 7),
            ("input_tokens", 10),
            ("output_tokens", 5),
            ("pages", 3),
            ("requests", 1),
            ("requests:analyze", 1),
            ("tokens", 15),
        ];
        assert_eq!(got, want.map(|(m, n)| (m.to_owned(), n)));
    }

    #[test]
    fn huge_amounts_saturate_instead_of_wrapping_negative() {
        let amounts = Amounts {
            input_tokens: i64::MAX,
            output_tokens: 1,
            extra: [(meter(Meter::TOKENS), i64::MAX)].into(),
            ..Amounts::default()
        };
        let tokens = amounts.meters().into_iter().find(|(m, _)| m.as_str() == Meter::TOKENS).map(|(_, n)| n);
        assert_eq!(tokens, Some(i64::MAX));
    }
}
