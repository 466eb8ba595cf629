//! What every handler shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tollgate_domain::KeyHash;
use tollgate_store::Store;

use crate::audit::AuditLog;
use crate::auth::{FailureLimiter, KeyCache, LastUsed};
use crate::config::Config;
use crate::hooks::Hooks;
use crate::metering::Metering;
use crate::vault::Vault;

/// Shared by every handler; one `Arc`, so that axum's per-request clones
/// cost one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub key_cache: Arc<KeyCache>,
    pub failures: Arc<FailureLimiter>,
    pub last_used: Arc<LastUsed>,
    /// SHA-256 of the admin token; the token itself is not kept.
    pub admin_token_hash: Arc<KeyHash>,
    pub metrics: PrometheusHandle,
    pub metering: Arc<Metering>,
    pub rate_windows: Arc<crate::routes::RateWindows>,
    /// Users' provider credentials and the one resolution rule.
    pub vault: Arc<Vault>,
    pub audit: Arc<AuditLog>,
    /// Signs one-time portal links and CSRF tokens; derived from the
    /// master key, so every instance sharing it agrees.
    pub web_key: Arc<crate::web::SigningKey>,
    /// The LLM gateway's upstream client.
    pub gateway: crate::gateway::Gateway,
    /// The outbox's sender: webhooks and e-mail alerts.
    pub hooks: Arc<Hooks>,
    /// What several instances share through Redis, when configured.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl AppState {
    /// After a change to users, plans, keys or grants: forget verified
    /// keys, accounts and cached credentials here at once, and, when
    /// instances share Redis, tell the others to do the same (else they
    /// catch up within the cache TTL).
    pub fn invalidate_users(&self) {
        self.forget_cached();
        self.announce_change();
    }

    /// Tells the other instances (through Redis) to forget what they cached,
    /// after a change this instance already forgot, such as a replaced or
    /// removed credential.
    pub fn announce_change(&self) {
        if let Some(cluster) = &self.cluster {
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.announce().await });
        }
    }

    /// Forgets what this instance cached about users, plans and keys.
    pub fn forget_cached(&self) {
        self.key_cache.invalidate_all();
        self.metering.invalidate(None);
        self.vault.invalidate_all();
    }
}
