//! What a key may do. A user's key and a service key (the app's own) draw
//! from different sets.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Call the LLM gateway routes.
    #[serde(rename = "proxy")]
    Proxy,
    /// Read usage: one's own (user key) or any user's (service key).
    #[serde(rename = "usage:read")]
    UsageRead,
    /// Create, list and revoke one's own keys.
    #[serde(rename = "keys:manage")]
    KeysManage,
    /// Set and remove one's own provider credentials.
    #[serde(rename = "credentials:manage")]
    CredentialsManage,
    /// Record usage and check quotas (the metering API).
    #[serde(rename = "meter")]
    Meter,
    /// Read users' provider credentials to call providers directly.
    #[serde(rename = "credentials:read")]
    CredentialsRead,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Proxy,
        Scope::UsageRead,
        Scope::KeysManage,
        Scope::CredentialsManage,
        Scope::Meter,
        Scope::CredentialsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Proxy => "proxy",
            Scope::UsageRead => "usage:read",
            Scope::KeysManage => "keys:manage",
            Scope::CredentialsManage => "credentials:manage",
            Scope::Meter => "meter",
            Scope::CredentialsRead => "credentials:read",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Scope::ALL.into_iter().find(|s| s.as_str() == raw).ok_or_else(|| Invalid::new(format!("unknown scope {raw:?}")))
    }

    /// Whether a key of a user (as opposed to a service key) may hold it.
    pub fn allowed_for_user_key(self) -> bool {
        self != Scope::CredentialsRead
    }

    /// Whether a service key (the app's own) may hold it.
    pub fn allowed_for_service_key(self) -> bool {
        matches!(self, Scope::Meter | Scope::CredentialsRead | Scope::UsageRead)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, stored as one space-separated string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Scopes(scopes.into_iter().collect())
    }

    /// What a user key gets when its creator names no scopes.
    pub fn default_for_user_key() -> Self {
        Scopes::new([Scope::Proxy, Scope::UsageRead])
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_stored(&self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn from_stored(stored: &str) -> Result<Self, Invalid> {
        stored.split_whitespace().map(Scope::parse).collect::<Result<_, _>>().map(Scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let all = Scopes::new(Scope::ALL);
        assert_eq!(Scopes::from_stored(&all.to_stored()).unwrap(), all);
        assert_eq!(Scopes::from_stored("").unwrap(), Scopes::default());
        assert!(Scopes::from_stored("proxy admin").is_err());
    }

    #[test]
    fn json_names_are_the_documented_ones() {
        let json = serde_json::to_string(&Scopes::new(Scope::ALL)).unwrap();
        assert_eq!(json, r#"["proxy","usage:read","keys:manage","credentials:manage","meter","credentials:read"]"#);
    }
}
