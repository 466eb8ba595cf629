//! A string that must never be printed: `Debug` and `Display` show only a
//! short, harmless hint, so a log line or an error cannot carry it by mistake.
//! Its memory is zeroized when it is dropped.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroize;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself. Call only where it must leave the process on
    /// purpose: a one-time display, a hash, an upstream request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(…)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

/// Read from a JSON string (a request body). There is deliberately no
/// `Serialize`: a secret leaves only through [`SecretString::expose`].
impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_display_shows_the_secret() {
        let s = SecretString::new("sk-very-secret-value");
        assert!(!format!("{s:?} {s}").contains("very-secret"));
        assert_eq!(s.expose(), "sk-very-secret-value");
    }

    #[test]
    fn it_is_read_from_json_and_not_shown_by_debug_of_its_holder() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Input {
            secret: SecretString,
        }
        let input: Input = serde_json::from_str(r#"{"secret":"sk-abc-123"}"#).unwrap();
        assert_eq!(input.secret.expose(), "sk-abc-123");
        assert!(!format!("{input:?}").contains("abc-123"));
    }
}
