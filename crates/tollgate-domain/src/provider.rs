//! LLM providers as Tollgate names them, the ones it knows by name, and
//! what a secret for each looks like.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Invalid;

/// A provider's name: `openai`, `anthropic`, `gemini`, `groq`, `github`, or
/// any other of 1 to 64 characters of `a-z`, `0-9`, `-` and `_`, starting
/// with a letter. (So it never holds the `|` that credential AAD uses.)
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ProviderName(String);

impl ProviderName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(ProviderName(raw.to_owned()))
        } else {
            Err(Invalid::new(
                "a provider name is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter (e.g. openai)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The built-in provider of this name, if it is one.
    pub fn known(&self) -> Option<KnownProvider> {
        KnownProvider::ALL.into_iter().find(|p| p.name() == self.0)
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ProviderName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ProviderName::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The providers Tollgate knows by name. Any other name is an
/// OpenAI-compatible provider at a configured base URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KnownProvider {
    OpenAi,
    Anthropic,
    Gemini,
    Groq,
    GitHub,
}

impl KnownProvider {
    pub const ALL: [KnownProvider; 5] = [
        KnownProvider::OpenAi,
        KnownProvider::Anthropic,
        KnownProvider::Gemini,
        KnownProvider::Groq,
        KnownProvider::GitHub,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KnownProvider::OpenAi => "openai",
            KnownProvider::Anthropic => "anthropic",
            KnownProvider::Gemini => "gemini",
            KnownProvider::Groq => "groq",
            KnownProvider::GitHub => "github",
        }
    }

    /// How people write it.
    pub fn display_name(self) -> &'static str {
        match self {
            KnownProvider::OpenAi => "OpenAI",
            KnownProvider::Anthropic => "Anthropic",
            KnownProvider::Gemini => "Gemini",
            KnownProvider::Groq => "Groq",
            KnownProvider::GitHub => "GitHub",
        }
    }

    /// The upstream base URL, as each provider's own SDK writes it.
    pub fn default_base_url(self) -> &'static str {
        match self {
            KnownProvider::OpenAi => "https://api.openai.com/v1",
            KnownProvider::Anthropic => "https://api.anthropic.com",
            KnownProvider::Gemini => "https://generativelanguage.googleapis.com",
            KnownProvider::Groq => "https://api.groq.com/openai/v1",
            KnownProvider::GitHub => "https://api.github.com",
        }
    }

    /// What every secret of this provider starts with.
    pub fn secret_prefixes(self) -> &'static [&'static str] {
        match self {
            KnownProvider::OpenAi => &["sk-"],
            KnownProvider::Anthropic => &["sk-ant-"],
            KnownProvider::Gemini => &["AIza"],
            KnownProvider::Groq => &["gsk_"],
            KnownProvider::GitHub => &["ghp_", "github_pat_"],
        }
    }
}

/// The shortest and longest secret accepted for any provider.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 8..=4096;

/// Checks that `secret` looks like a secret of `provider`: printable ASCII
/// without spaces, 8 to 4096 characters, and for a known provider its
/// documented prefix. The message names the rule, never the value.
pub fn check_secret_format(provider: &ProviderName, secret: &str) -> Result<(), Invalid> {
    if !SECRET_LEN.contains(&secret.len()) {
        return Err(Invalid::new(format!(
            "a provider secret is {} to {} characters long",
            SECRET_LEN.start(),
            SECRET_LEN.end()
        )));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new("a provider secret is printable ASCII, without spaces or line breaks"));
    }
    if secret.starts_with("tg_") {
        return Err(Invalid::new("this is a Tollgate gateway key, not the provider's own key"));
    }
    let Some(known) = provider.known() else { return Ok(()) };
    let starts = |p: KnownProvider| p.secret_prefixes().iter().find(|prefix| secret.starts_with(**prefix)).copied();
    let quoted = known.secret_prefixes().iter().map(|p| format!("`{p}…`")).collect::<Vec<_>>().join(" or ");
    let mine = starts(known);
    // Say so when the key is plainly another provider's: its prefix is
    // longer than ours (`sk-ant-` is Anthropic's even though `sk-` is ours).
    let theirs = KnownProvider::ALL
        .into_iter()
        .filter(|p| *p != known)
        .find(|p| starts(*p).is_some_and(|prefix| prefix.len() > mine.map_or(0, str::len)));
    if let Some(other) = theirs {
        return Err(Invalid::new(format!(
            "this looks like a key for {}, not {}: {} keys start with {quoted}",
            other.display_name(),
            known.display_name(),
            known.display_name()
        )));
    }
    match mine {
        Some(prefix) if secret.len() > prefix.len() => Ok(()),
        _ => Err(Invalid::new(format!("{} keys start with {quoted}", known.display_name()))),
    }
}

/// The last four characters, for display (`…abcd`). Secrets are ASCII and
/// at least 8 characters long once checked.
pub fn last4(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names() {
        let check = |raw: &str, ok: bool| assert_eq!(ProviderName::parse(raw).is_ok(), ok, "{raw:?}");
        check("openai", true);
        check("my-llm_2", true);
        check("OpenAI", false);
        check("2llm", false);
        check("a|b", false);
        check("", false);
        check(&"x".repeat(65), false);
        assert_eq!(ProviderName::parse("groq").unwrap().known(), Some(KnownProvider::Groq));
        assert_eq!(ProviderName::parse("together").unwrap().known(), None);
    }

    #[test]
    fn secrets_are_checked_per_known_provider() {
        let check = |provider: &str, secret: &str, expected: Result<(), &str>| {
            let got = check_secret_format(&ProviderName::parse(provider).unwrap(), secret);
            match expected {
                Ok(()) => assert!(got.is_ok(), "{provider} {secret:?}: {got:?}"),
                Err(part) => {
                    let message = got.expect_err(secret).to_string();
                    assert!(message.contains(part), "{provider} {secret:?}: {message:?} should contain {part:?}");
                    assert!(!message.contains(secret), "the message repeats the secret");
                }
            }
        };
        check("openai", "sk-proj-abcdef123456", Ok(()));
        check("openai", "sk-abcdefgh", Ok(()));
        check("openai", "pk-abcdefgh", Err("OpenAI keys start with `sk-…`"));
        check("openai", "sk-ant-api03-abcdef", Err("looks like a key for Anthropic, not OpenAI"));
        check("openai", "gsk_abcdefgh", Err("looks like a key for Groq"));
        check("anthropic", "sk-ant-api03-abcdef", Ok(()));
        check("anthropic", "sk-proj-abcdef", Err("Anthropic keys start with `sk-ant-…`"));
        check("gemini", &format!("AIza{}", "x".repeat(35)), Ok(()));
        check("gemini", "sk-abcdefgh", Err("looks like a key for OpenAI, not Gemini"));
        check("groq", "gsk_0123456789abcdef", Ok(()));
        check("groq", "sk-0123456789", Err("Groq keys start with `gsk_…`"));
        check("github", "ghp_0123456789abcdef", Ok(()));
        check("github", "github_pat_11AAAA_bbbb", Ok(()));
        check("github", "gho_0123456789", Err("`ghp_…` or `github_pat_…`"));
        check("together", "anything-goes-123", Ok(()));
        check("together", "short", Err("8 to 4096"));
        check("together", "has a space in it", Err("printable ASCII"));
        check("together", "line\nbreak-in-it", Err("printable ASCII"));
        check("openai", "sk-ümlaut-key", Err("printable ASCII"));
        check("openai", &format!("sk-{}", "a".repeat(5000)), Err("8 to 4096"));
        // The shape of a gateway key, built here so that no key-like literal sits in the source.
        let gateway_key_shape = format!("tg_{}{}", "A".repeat(32), "0".repeat(6));
        check("together", &gateway_key_shape, Err("Tollgate gateway key"));
    }

    #[test]
    fn last4_is_the_tail() {
        assert_eq!(last4("sk-abcdefgh1234"), "1234");
        assert_eq!(last4("abc"), "abc");
    }
}
