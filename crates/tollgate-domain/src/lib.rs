//! Tollgate's rules, with no IO: the gateway-key format, the identifiers and
//! names that cross the API, scopes and plans, providers and the audit log's
//! vocabulary, and the events Tollgate sends out.
//!
//! This crate knows nothing of HTTP, SQL or async runtimes. Every type here
//! that carries a rule has a private field and one checking constructor, so a
//! value that exists is a valid one ("parse, don't validate").

pub mod audit;
pub mod base62;
pub mod hooks;
pub mod ids;
pub mod key;
pub mod model;
pub mod period;
pub mod plan;
pub mod pricing;
pub mod provider;
pub mod quota;
pub mod scope;
pub mod secret;
pub mod time;
pub mod usage;

pub use ids::{KeyId, PlanSlug, UserId};
pub use key::{GatewayKey, KeyHash, KeyParseError};
pub use plan::{Limits, Meter, PeriodKind};
pub use provider::{KnownProvider, ProviderName};
pub use scope::{Scope, Scopes};
pub use secret::SecretString;
pub use time::Timestamp;

/// Why a value given to one of the checking constructors was refused. The
/// message names the rule, never the value, so it is safe to show and log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid(message.into())
    }
}
