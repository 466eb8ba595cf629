//! The audit log's vocabulary: who did what to which thing, and from where.
//! An entry never holds a secret: targets are ids and names only.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Invalid, KeyId, Timestamp, UserId};

macro_rules! actions {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// What happened.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum AuditAction {
            $(#[doc = $doc] $variant,)*
        }

        impl AuditAction {
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    CredentialSet => "credential.set", "A provider credential was stored or replaced.";
    CredentialRemoved => "credential.removed", "A provider credential was deleted.";
    CredentialResolved => "credential.resolved", "A credential was handed out by `POST /v1/credentials/resolve`.";
    CredentialRotated => "credential.rotated", "A credential was re-encrypted under a new master key.";
    KeyCreated => "key.created", "A gateway or service key was issued.";
    KeyRevoked => "key.revoked", "A key was revoked.";
    KeyRotated => "key.rotated", "A key was replaced by a successor.";
    PlanCreated => "plan.created", "A plan was created.";
    PlanUpdated => "plan.updated", "A plan was changed.";
    PlanDeleted => "plan.deleted", "A plan was deleted.";
    UserPlanChanged => "user.plan_changed", "A user was moved to another plan.";
    UsageReset => "usage.reset", "A user's usage period was restarted by hand.";
    AdminLogin => "admin.login", "Someone signed in to the admin dashboard.";
    WebhookCreated => "webhook.created", "A webhook endpoint was added.";
    WebhookUpdated => "webhook.updated", "A webhook endpoint was changed.";
    WebhookDeleted => "webhook.deleted", "A webhook endpoint was removed.";
    WebhookRedelivered => "webhook.redelivered", "A delivery was sent again by hand.";
}

impl AuditAction {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        AuditAction::ALL.iter().copied().find(|a| a.as_str() == raw).ok_or_else(|| {
            Invalid::new(format!(
                "{raw:?} is not an audit action; use one of {}",
                AuditAction::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The family (`credential`, `key`, …), the part before the dot.
    pub fn family(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or_default()
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuditAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AuditAction::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Who did it: the admin token (or the admin's dashboard session), a key (a
/// user's or the app's own), a user in the portal opened with a one-time
/// link, or Tollgate itself (a command such as `vault rotate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Key(KeyId),
    Portal(UserId),
    System,
}

impl Actor {
    /// `admin`, `system`, `portal:<user id>`, or the key's id (`key_…`).
    pub fn to_stored(&self) -> String {
        match self {
            Actor::Admin => "admin".into(),
            Actor::System => "system".into(),
            Actor::Portal(user) => format!("portal:{user}"),
            Actor::Key(id) => id.to_string(),
        }
    }

    pub fn from_stored(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "admin" => Ok(Actor::Admin),
            "system" => Ok(Actor::System),
            other => match other.strip_prefix("portal:") {
                Some(user) => UserId::parse(user).map(Actor::Portal),
                None => KeyId::parse(other).map(Actor::Key),
            },
        }
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_stored())
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Actor::from_stored(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An entry about to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEntry {
    pub time: Timestamp,
    pub actor: Actor,
    pub action: AuditAction,
    /// What it was done to: `credential:u_42/openai`, `key:key_…`,
    /// `plan:pro`, `user:u_42`.
    pub target: String,
    /// The user concerned, if any, for filtering by user.
    pub user_id: Option<UserId>,
    pub client_ip: Option<String>,
    /// Further facts (ids, names, outcomes), never a secret.
    pub details: BTreeMap<String, String>,
}

impl NewAuditEntry {
    pub fn new(actor: Actor, action: AuditAction, target: impl Into<String>) -> Self {
        NewAuditEntry {
            time: Timestamp::now(),
            actor,
            action,
            target: target.into(),
            user_id: None,
            client_ip: None,
            details: BTreeMap::new(),
        }
    }

    pub fn user(mut self, user: &UserId) -> Self {
        self.user_id = Some(user.clone());
        self
    }

    pub fn detail(mut self, name: &str, value: impl Into<String>) -> Self {
        self.details.insert(name.to_owned(), value.into());
        self
    }
}

/// An entry as stored and listed, newest first by `id`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub time: Timestamp,
    pub actor: Actor,
    pub action: AuditAction,
    pub target: String,
    pub user_id: Option<UserId>,
    pub client_ip: Option<String>,
    pub details: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_actors_round_trip_through_their_stored_form() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()).unwrap(), *action);
            assert!(["credential", "key", "plan", "user", "usage", "admin", "webhook"].contains(&action.family()));
        }
        assert!(AuditAction::parse("credential.stolen").unwrap_err().to_string().contains("credential.set"));
        let portal = Actor::Portal(UserId::parse("u_42").unwrap());
        for actor in [Actor::Admin, Actor::System, Actor::Key(KeyId::generate()), portal] {
            assert_eq!(Actor::from_stored(&actor.to_stored()).unwrap(), actor);
        }
        assert!(Actor::from_stored("root").is_err());
    }
}
