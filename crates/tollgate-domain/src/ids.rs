//! Identifiers that cross the API. Each has one checking constructor.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Invalid, base62};

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The host app's own id for one of its users: 1 to 255 bytes, no control
/// characters, no surrounding white space.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);
string_newtype!(UserId);

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", self.0)
    }
}

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > 255 {
            return Err(Invalid::new("a user id is 1 to 255 bytes long"));
        }
        if raw.chars().any(char::is_control) || raw.trim() != raw {
            return Err(Invalid::new("a user id has no control characters and no leading or trailing white space"));
        }
        Ok(UserId(raw.to_owned()))
    }
}

/// A plan's slug: lowercase letters, digits, `-` and `_`, starting with a
/// letter or digit, at most 64 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PlanSlug(String);
string_newtype!(PlanSlug);

impl PlanSlug {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(PlanSlug(raw.to_owned()))
        } else {
            Err(Invalid::new(
                "a plan slug is 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
            ))
        }
    }
}

/// A gateway key's public id: `key_` + 20 base62 characters.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(String);
string_newtype!(KeyId);

impl KeyId {
    const PREFIX: &'static str = "key_";
    const RANDOM_LEN: usize = 20;

    pub fn generate() -> Self {
        KeyId(format!("{}{}", Self::PREFIX, base62::random(Self::RANDOM_LEN)))
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw.strip_prefix(Self::PREFIX) {
            Some(rest) if rest.len() == Self::RANDOM_LEN && base62::is_base62(rest) => Ok(KeyId(raw.to_owned())),
            _ => Err(Invalid::new("a key id is `key_` followed by 20 characters of 0-9, A-Z, a-z")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        let check = |raw: &str, ok: bool| assert_eq!(UserId::parse(raw).is_ok(), ok, "{raw:?}");
        check("u_42", true);
        check("auth0|5f1c", true);
        check("a@b.c", true);
        check("<script>alert(1)</script>", true);
        check("", false);
        check(" u", false);
        check("u\n", false);
        check(&"x".repeat(256), false);
    }

    #[test]
    fn plan_slugs() {
        let check = |raw: &str, ok: bool| assert_eq!(PlanSlug::parse(raw).is_ok(), ok, "{raw:?}");
        check("pro", true);
        check("team-2024_b", true);
        check("Pro", false);
        check("-pro", false);
        check("", false);
        check("a b", false);
    }

    #[test]
    fn key_ids_round_trip() {
        let id = KeyId::generate();
        assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
        assert!(KeyId::parse("key_short").is_err());
        assert!(KeyId::parse("tg_AAAAAAAAAAAAAAAAAAAA").is_err());
    }
}
