//! Token counts before a call, with tiktoken's encodings.
//!
//! OpenAI's models are counted with their own encoding: `o200k_base` for
//! GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the o-series and gpt-oss;
//! `cl100k_base` for GPT-4, GPT-3.5 and the embedding models. Other
//! providers' tokenizers are not public (Anthropic, Gemini) or differ
//! (Groq's Llama models): their input is approximated with `o200k_base`,
//! which lands within some ten per cent on English text. The count only
//! sizes the reservation and the output limit; what is settled is the
//! provider's own usage.
//!
//! Each encoding is loaded on first use, then shared: some 40 MB for
//! `o200k_base`, which is why it is not loaded at start (an idle gateway
//! stays small) and why other providers' models share it.
//!
//! Counts of texts seen lately are kept ([`Recent`]): a system prompt, a
//! tool list or a conversation's earlier turns come again with every call,
//! and tiktoken costs far more than hashing the text (some 27,000
//! instructions for a 40-byte message, against a few hundred).

use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::sync::{LazyLock, Mutex, PoisonError};

/// A tiktoken encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

/// The encoding of `model` on an OpenAI upstream (`exact`), or the
/// approximation used for every other provider.
pub fn encoding_for(model: &str, exact: bool) -> Encoding {
    if !exact {
        return Encoding::O200kBase;
    }
    let model = model.rsplit('/').next().unwrap_or(model);
    let older = ["gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-", "davinci", "babbage"];
    if model == "gpt-4" || older.iter().any(|p| model.starts_with(p)) {
        Encoding::Cl100kBase
    } else {
        Encoding::O200kBase
    }
}

/// Tokens of `text` in `encoding`. The tokenizer's pattern can give up on
/// pathological input; such text is counted at one token per two bytes, an
/// overestimate, rather than failing the request.
pub fn count(encoding: Encoding, text: &str) -> u64 {
    static RECENT: LazyLock<Recent> = LazyLock::new(Recent::new);
    if text.is_empty() {
        return 0;
    }
    RECENT.get_or(encoding, text, || tiktoken(encoding, text))
}

fn tiktoken(encoding: Encoding, text: &str) -> u64 {
    let bpe = match encoding {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| bpe.encode_ordinary(text).len() as u64))
        .unwrap_or_else(|_| (text.len() as u64).div_ceil(2))
}

/// Slots of [`Recent`]: 96 KiB.
const SLOTS: usize = 4096;

/// The counts of recent texts, direct-mapped by a hash of encoding and
/// text keyed at random for each process (SipHash: texts cannot be made to
/// collide from outside), and checked against the text's length too.
struct Recent {
    slots: Mutex<Box<[Slot]>>,
    keys: std::hash::RandomState,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    len: usize,
    tokens: u64,
}

impl Recent {
    fn new() -> Recent {
        Recent { slots: Mutex::new(vec![Slot::default(); SLOTS].into()), keys: std::hash::RandomState::new() }
    }

    /// The count kept for `text`, or `counted()` kept in its slot.
    fn get_or(&self, encoding: Encoding, text: &str, counted: impl FnOnce() -> u64) -> u64 {
        let hash = self.keys.hash_one((encoding as u8, text));
        let at = hash as usize % SLOTS;
        let kept = self.slots.lock().unwrap_or_else(PoisonError::into_inner)[at];
        if kept.hash == hash && kept.len == text.len() {
            return kept.tokens;
        }
        let tokens = counted();
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)[at] = Slot { hash, len: text.len(), tokens };
        tokens
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn openai_models_get_their_own_encoding_and_others_the_approximation() {
        let check = |model: &str, exact: bool, expected: Encoding| {
            assert_eq!(encoding_for(model, exact), expected, "{model} {exact}");
        };
        check("gpt-4o-mini", true, Encoding::O200kBase);
        check("gpt-4.1", true, Encoding::O200kBase);
        check("gpt-5", true, Encoding::O200kBase);
        check("o3-mini", true, Encoding::O200kBase);
        check("gpt-4", true, Encoding::Cl100kBase);
        check("gpt-4-turbo", true, Encoding::Cl100kBase);
        check("gpt-3.5-turbo", true, Encoding::Cl100kBase);
        check("text-embedding-3-small", true, Encoding::Cl100kBase);
        check("claude-sonnet-4-5", false, Encoding::O200kBase);
        check("llama-3.1-8b-instant", false, Encoding::O200kBase);
    }

    #[test]
    fn counts_are_tiktokens() {
        assert_eq!(count(Encoding::O200kBase, ""), 0);
        assert_eq!(count(Encoding::O200kBase, "hello world"), 2);
        assert_eq!(count(Encoding::Cl100kBase, "hello world"), 2);
        assert!(count(Encoding::O200kBase, &"word ".repeat(1000)) >= 1000);
        // Again, from the kept counts.
        assert_eq!(count(Encoding::O200kBase, "hello world"), 2);
    }

    #[test]
    fn a_text_is_counted_once_per_encoding_until_another_takes_its_slot() {
        let recent = Recent::new();
        let calls = Cell::new(0);
        let get = |encoding, text: &str| {
            recent.get_or(encoding, text, || {
                calls.set(calls.get() + 1);
                tiktoken(encoding, text)
            })
        };
        let prompt = "You are a helpful assistant who answers in French.";
        let n = tiktoken(Encoding::O200kBase, prompt);
        assert_eq!(get(Encoding::O200kBase, prompt), n);
        assert_eq!(get(Encoding::O200kBase, prompt), n);
        assert_eq!(calls.get(), 1, "the second count is the kept one");
        assert_eq!(get(Encoding::Cl100kBase, prompt), tiktoken(Encoding::Cl100kBase, prompt));
        assert_eq!(calls.get(), 2, "each encoding has its own count");
        // A text whose hash lands in the prompt's slot replaces it.
        let slot = |text: &str| recent.keys.hash_one((Encoding::O200kBase as u8, text)) as usize % SLOTS;
        let other = (0..).map(|i| format!("message {i}")).find(|t| slot(t) == slot(prompt)).unwrap();
        assert_eq!(get(Encoding::O200kBase, &other), tiktoken(Encoding::O200kBase, &other));
        assert_eq!(get(Encoding::O200kBase, prompt), n);
        assert_eq!(calls.get(), 4, "the prompt was counted again once its slot was taken");
    }
}
