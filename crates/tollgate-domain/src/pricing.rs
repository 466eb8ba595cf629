//! Model prices and the cost of usage, in integer micro-dollars.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Micro-dollars per million tokens (so $2.50 per million is 2_500_000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input: i64,
    pub cached_input: i64,
    pub output: i64,
}

impl Price {
    /// Dollars per million tokens, as price lists write them.
    pub const fn dollars(input: f64, cached_input: f64, output: f64) -> Price {
        Price {
            input: (input * 1_000_000.0) as i64,
            cached_input: (cached_input * 1_000_000.0) as i64,
            output: (output * 1_000_000.0) as i64,
        }
    }

    /// The cost of one call, rounded to the nearest micro-dollar. Cached
    /// input tokens are part of the input tokens, billed at their own rate.
    pub fn cost_micros(&self, input_tokens: i64, cached_tokens: i64, output_tokens: i64) -> i64 {
        let cached = cached_tokens.clamp(0, input_tokens.max(0)) as i128;
        let uncached = input_tokens.max(0) as i128 - cached;
        let total = uncached * self.input as i128
            + cached * self.cached_input as i128
            + output_tokens.max(0) as i128 * self.output as i128;
        // Past i64 (only with absurd prices), the cost saturates.
        i64::try_from((total + 500_000) / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// List prices of current models (USD per million tokens: input, cached
/// input, output), as published by each provider.
const BUILT_IN: &[(&str, Price)] = &[
    // OpenAI
    ("gpt-5", Price::dollars(1.25, 0.125, 10.0)),
    ("gpt-5-mini", Price::dollars(0.25, 0.025, 2.0)),
    ("gpt-5-nano", Price::dollars(0.05, 0.005, 0.40)),
    ("gpt-4.1", Price::dollars(2.0, 0.50, 8.0)),
    ("gpt-4.1-mini", Price::dollars(0.40, 0.10, 1.60)),
    ("gpt-4.1-nano", Price::dollars(0.10, 0.025, 0.40)),
    ("gpt-4o", Price::dollars(2.50, 1.25, 10.0)),
    ("gpt-4o-mini", Price::dollars(0.15, 0.075, 0.60)),
    ("o3", Price::dollars(2.0, 0.50, 8.0)),
    ("o3-mini", Price::dollars(1.10, 0.55, 4.40)),
    ("o4-mini", Price::dollars(1.10, 0.275, 4.40)),
    ("text-embedding-3-small", Price::dollars(0.02, 0.02, 0.0)),
    ("text-embedding-3-large", Price::dollars(0.13, 0.13, 0.0)),
    // Anthropic
    ("claude-opus-4-1", Price::dollars(15.0, 1.50, 75.0)),
    ("claude-opus-4", Price::dollars(15.0, 1.50, 75.0)),
    ("claude-sonnet-4-5", Price::dollars(3.0, 0.30, 15.0)),
    ("claude-sonnet-4", Price::dollars(3.0, 0.30, 15.0)),
    ("claude-3-7-sonnet", Price::dollars(3.0, 0.30, 15.0)),
    ("claude-haiku-4-5", Price::dollars(1.0, 0.10, 5.0)),
    ("claude-3-5-haiku", Price::dollars(0.80, 0.08, 4.0)),
    // Google Gemini
    ("gemini-2.5-pro", Price::dollars(1.25, 0.31, 10.0)),
    ("gemini-2.5-flash", Price::dollars(0.30, 0.075, 2.50)),
    ("gemini-2.5-flash-lite", Price::dollars(0.10, 0.025, 0.40)),
    ("gemini-2.0-flash", Price::dollars(0.10, 0.025, 0.40)),
    // Groq
    ("llama-3.1-8b-instant", Price::dollars(0.05, 0.05, 0.08)),
    ("llama-3.3-70b-versatile", Price::dollars(0.59, 0.59, 0.79)),
    ("openai/gpt-oss-120b", Price::dollars(0.15, 0.15, 0.75)),
    ("openai/gpt-oss-20b", Price::dollars(0.10, 0.10, 0.50)),
];

/// Prices by model name: the built-in list with the operator's overrides.
#[derive(Clone, Debug)]
pub struct PriceTable(BTreeMap<String, Price>);

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable(BUILT_IN.iter().map(|(m, p)| (m.to_string(), *p)).collect())
    }
}

impl PriceTable {
    pub fn set(&mut self, model: &str, price: Price) {
        self.0.insert(model.to_owned(), price);
    }

    pub fn remove(&mut self, model: &str) -> bool {
        self.0.remove(model).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.0.iter().map(|(m, p)| (m.as_str(), p))
    }

    /// The price of `model`: an exact match; else without a
    /// `provider/` prefix; else the longest listed name that the model
    /// starts with followed by `-` (dated versions: `gpt-4o-2024-08-06`).
    pub fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.0.get(model) {
            return Some(*p);
        }
        let bare = model.split_once('/').map(|(_, m)| m).unwrap_or(model);
        if let Some(p) = self.0.get(bare) {
            return Some(*p);
        }
        self.0
            .iter()
            .filter(|(name, _)| {
                bare.len() > name.len() && bare.starts_with(name.as_str()) && bare.as_bytes()[name.len()] == b'-'
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_integer_micro_dollars() {
        let gpt4o = Price::dollars(2.50, 1.25, 10.0);
        // 1000 input (200 cached) + 500 output:
        // 800 × 2.5 + 200 × 1.25 + 500 × 10 = 7250 dollars per million → 7250 µ$.
        assert_eq!(gpt4o.cost_micros(1000, 200, 500), 7250);
        assert_eq!(gpt4o.cost_micros(1, 0, 0), 3, "2.5 µ$ rounds to 3");
        assert_eq!(gpt4o.cost_micros(0, 0, 0), 0);
    }

    #[test]
    fn models_are_found_by_name_prefix_and_provider() {
        let table = PriceTable::default();
        let check = |model: &str, expected: Option<&str>| {
            assert_eq!(table.lookup(model), expected.map(|m| table.0[m]), "{model}");
        };
        check("gpt-4o", Some("gpt-4o"));
        check("gpt-4o-mini-2024-07-18", Some("gpt-4o-mini"));
        check("gpt-4o-2024-08-06", Some("gpt-4o"));
        check("openai/gpt-4o-mini", Some("gpt-4o-mini"));
        check("groq/llama-3.1-8b-instant", Some("llama-3.1-8b-instant"));
        check("claude-sonnet-4-5-20250929", Some("claude-sonnet-4-5"));
        check("my-own-model", None);
        check("gpt-4ox", None);
    }
}
