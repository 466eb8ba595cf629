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

use std::panic::AssertUnwindSafe;

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
    if text.is_empty() {
        return 0;
    }
    let bpe = match encoding {
        Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| bpe.encode_ordinary(text).len() as u64))
        .unwrap_or_else(|_| (text.len() as u64).div_ceil(2))
}

#[cfg(test)]
mod tests {
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
    }
}
