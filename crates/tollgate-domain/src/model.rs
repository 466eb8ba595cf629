//! The records the service keeps, as the API shows them: plans, users and
//! gateway keys. Secrets never appear in these types.

use serde::{Deserialize, Serialize};

use crate::period::PeriodRule;
use crate::{KeyId, Limits, PeriodKind, PlanSlug, Scopes, UserId, time::Timestamp};

/// The alert thresholds a plan gets when none are given, in percent.
pub const DEFAULT_ALERT_THRESHOLDS: [u8; 3] = [75, 90, 100];

/// Output tokens the gateway reserves for a request that names no output
/// limit, unless the plan says otherwise.
pub const DEFAULT_OUTPUT_RESERVATION: i64 = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub slug: PlanSlug,
    pub name: String,
    /// Price per period in cents of `currency`, for display and the portal.
    pub price_cents: i64,
    pub currency: String,
    pub period: PeriodKind,
    pub limits: Limits,
    /// Requests per minute, per user; `None` is unlimited.
    pub rpm: Option<i64>,
    /// Tokens per minute, per user; `None` is unlimited.
    pub tpm: Option<i64>,
    /// Whether traffic on a user's own provider key counts toward quota.
    pub byok_counts: bool,
    /// Whether users on this plan must bring their own provider key.
    pub byok_required: bool,
    /// Models the plan may call; `None` allows every model.
    pub allowed_models: Option<Vec<String>>,
    /// Percentages of a limit at which alerts fire.
    pub alert_thresholds: Vec<u8>,
    pub stripe_price_id: Option<String>,
    /// Where the portal's upgrade button for this plan goes (a Stripe
    /// payment link, say); else the configured upgrade URL.
    pub payment_link: Option<String>,
    /// Output tokens the gateway reserves for a request that names no
    /// output limit (`max_tokens` and the like).
    pub default_output_reservation: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Plan {
    /// A monthly plan named after its slug: free, unlimited, no rate limits,
    /// the default alert thresholds.
    pub fn blank(slug: PlanSlug, now: Timestamp) -> Plan {
        Plan {
            name: slug.as_str().to_owned(),
            slug,
            price_cents: 0,
            currency: "usd".into(),
            period: PeriodKind::Month,
            limits: Limits::default(),
            rpm: None,
            tpm: None,
            byok_counts: false,
            byok_required: false,
            allowed_models: None,
            alert_thresholds: DEFAULT_ALERT_THRESHOLDS.to_vec(),
            stripe_price_id: None,
            payment_link: None,
            default_output_reservation: DEFAULT_OUTPUT_RESERVATION,
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Suspended,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }

    pub fn from_stored(raw: &str) -> Self {
        if raw == "suspended" { UserStatus::Suspended } else { UserStatus::Active }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub plan: PlanSlug,
    pub status: UserStatus,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    /// Start of the user's billing cycle; `anchored` periods run monthly
    /// from it, and a manual reset moves it.
    pub billing_anchor: Timestamp,
    /// The last manual reset or paid invoice: a new period began there.
    pub usage_reset_at: Option<Timestamp>,
    /// Limits that replace the plan's for this user, meter by meter.
    pub limit_overrides: Option<Limits>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Whose key it is: one of the app's users, or the app itself.
impl User {
    /// What decides this user's periods on `plan`.
    pub fn period_rule(&self, plan: &Plan) -> PeriodRule {
        PeriodRule { kind: plan.period, anchor: self.billing_anchor, reset_at: self.usage_reset_at }
    }

    /// Starts a new usage period at `now` (a manual reset, a plan change
    /// with `reset_usage`, a paid invoice): the billing anchor moves there.
    pub fn start_new_period(&mut self, now: Timestamp) {
        self.billing_anchor = now;
        self.usage_reset_at = Some(now);
    }

    /// The plan's limit for `meter`, or this user's override of it.
    pub fn base_limit(&self, plan: &Plan, meter: &crate::Meter) -> Option<i64> {
        match &self.limit_overrides {
            Some(overrides) if overrides.contains(meter) => overrides.get(meter),
            _ => plan.limits.get(meter),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    User,
    Service,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::User => "user",
            KeyKind::Service => "service",
        }
    }

    pub fn from_stored(raw: &str) -> Self {
        if raw == "service" { KeyKind::Service } else { KeyKind::User }
    }
}

/// Extra allowance for one user and meter, from `starts_at` until
/// `expires_at` (`None`: never).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub user_id: UserId,
    pub meter: crate::Meter,
    pub amount: i64,
    pub starts_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl Grant {
    pub fn active_at(&self, t: Timestamp) -> bool {
        self.starts_at <= t && self.expires_at.is_none_or(|e| t < e)
    }
}

/// A gateway key as listed: everything but the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: KeyId,
    pub kind: KeyKind,
    pub user_id: Option<UserId>,
    pub name: String,
    /// `tg_AbCd`, the first characters of the key.
    pub prefix: String,
    /// The last four characters, for `tg_AbCd…wxyz`.
    pub last4: String,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// When the key stops working. A time in the future is a rotation's
    /// grace period running out.
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

impl KeyRecord {
    /// Why the key cannot be used at `now`, if it cannot.
    pub fn refusal(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked_at.is_some_and(|t| t <= now) {
            Some("this key has been revoked")
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Some("this key has expired")
        } else {
            None
        }
    }
}

/// A user's own secret for a provider, as shown: never the secret itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    pub user_id: UserId,
    pub provider: crate::ProviderName,
    pub label: Option<String>,
    /// The secret's last four characters, for `…abcd`.
    pub last4: String,
    pub created_at: Timestamp,
    /// When the secret was last replaced.
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// The outcome of the last check against the provider, if one was asked for.
    pub validation: Option<Validation>,
}

/// What the provider said when the secret was checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub outcome: ValidationOutcome,
    pub checked_at: Timestamp,
    /// Ours, from the status code alone: a provider's body may echo the key.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationOutcome {
    /// The provider accepted the secret.
    Valid,
    /// The provider refused it (401 or 403).
    Invalid,
    /// The check could not tell: no answer, or an unexpected one.
    Unreachable,
}

impl ValidationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationOutcome::Valid => "valid",
            ValidationOutcome::Invalid => "invalid",
            ValidationOutcome::Unreachable => "unreachable",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, crate::Invalid> {
        match raw {
            "valid" => Ok(ValidationOutcome::Valid),
            "invalid" => Ok(ValidationOutcome::Invalid),
            "unreachable" => Ok(ValidationOutcome::Unreachable),
            other => Err(crate::Invalid::new(format!("{other:?} is not a validation outcome"))),
        }
    }
}
