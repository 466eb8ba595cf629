//! The vault: the only place that sees users' provider credentials in
//! plaintext. It seals a secret on the way in, opens one for the one
//! resolution rule ([`Vault::resolve`]), checks one against its provider
//! when asked, and re-encrypts them all under a new master key
//! ([`rotate`], for `tollgate vault rotate`; webhook signing secrets too).
//!
//! It never logs, returns (except through `resolve`) or stores a plaintext
//! secret, and writes nothing to the audit log itself: routes audit what
//! they do, and the gateway's path stays one cached lookup and one
//! decryption.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{HeaderValue, InvalidHeaderValue};
use serde::Serialize;
use tollgate_domain::audit::{Actor, AuditAction, NewAuditEntry};
use tollgate_domain::model::{Credential, Plan, User, Validation, ValidationOutcome};
use tollgate_domain::provider::last4;
use tollgate_domain::{KnownProvider, ProviderName, SecretString, Timestamp, UserId};
use tollgate_store::NewEvent;
use tollgate_store::{NewCredential, Resealed, ResealedWebhook, Store, StoredCredential};
use tollgate_vault::{Keyring, MasterKeyId, Sealed, credential_aad, webhook_aad};

use crate::config::{Config, ProviderConfig};
use crate::error::{ApiError, ApiResult};

/// Where a resolved secret comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The user's own credential ("bring your own key").
    Byok,
    /// The platform's key from the environment.
    Platform,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Byok => "byok",
            Source::Platform => "platform",
        }
    }

    /// From the ledger's `key_source` (anything but `byok` is the platform's).
    pub fn of(key_source: &str) -> Source {
        if key_source == "byok" { Source::Byok } else { Source::Platform }
    }
}

/// A secret to call a provider with, and where it came from.
#[derive(Debug)]
pub struct Resolved {
    pub source: Source,
    pub secret: SecretString,
}

/// How long a validation call may take in all.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The `anthropic-version` header Anthropic's API requires.
const ANTHROPIC_VERSION: &str = "2023-06-01";

type Slot = (UserId, ProviderName);

pub struct Vault {
    keyring: Keyring,
    store: Arc<Store>,
    config: Arc<Config>,
    /// Sealed credentials (never plaintext) and known absences, so that
    /// resolving costs no store round trip while fresh.
    cache: Mutex<HashMap<Slot, (Instant, Option<Sealed>)>>,
    /// Moves on every forgetting: a value read from the store before it
    /// moved may be older than the change, and is not cached.
    generation: std::sync::atomic::AtomicU64,
    /// Last uses, written to the store in batches.
    uses: Mutex<HashMap<Slot, Timestamp>>,
    http: reqwest::Client,
}

impl Vault {
    pub fn new(keyring: Keyring, store: Arc<Store>, config: Arc<Config>) -> anyhow::Result<Vault> {
        let http = reqwest::Client::builder()
            .timeout(VALIDATION_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to build the HTTP client for credential validation")?;
        Ok(Vault {
            keyring,
            store,
            config,
            cache: Mutex::new(HashMap::new()),
            generation: Default::default(),
            uses: Mutex::new(HashMap::new()),
            http,
        })
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The one resolution rule: the user's own credential for `provider`,
    /// else (unless the plan requires the user's own) the platform key,
    /// else a `no_credential` error naming the provider. Cheap enough for
    /// every proxied request: a cached sealed value, one decryption, no
    /// write (the last use is gathered in memory).
    pub async fn resolve(&self, user: &User, plan: &Plan, provider: &ProviderName) -> ApiResult<Resolved> {
        match self.own(user, provider).await? {
            Some(own) => Ok(own),
            None => self.platform(user, plan, provider),
        }
    }

    /// The credential from `source` alone, whatever the rule would pick
    /// now: a response a provider stored is reached in the account that
    /// made it.
    pub async fn resolve_from(
        &self,
        source: Source,
        user: &User,
        plan: &Plan,
        provider: &ProviderName,
    ) -> ApiResult<Resolved> {
        match source {
            Source::Platform if plan.byok_required => Err(ApiError::NoCredential {
                message: format!(
                    "this was made with the platform's {provider} key, which plan {:?} no longer lets its users use",
                    plan.slug.as_str()
                ),
                provider: provider.to_string(),
            }),
            Source::Platform => self.platform(user, plan, provider),
            Source::Byok => self.own(user, provider).await?.ok_or_else(|| ApiError::NoCredential {
                message: format!(
                    "this was made with user {:?}'s own {provider} key, which they no longer have",
                    user.id.as_str()
                ),
                provider: provider.to_string(),
            }),
        }
    }

    /// The user's own credential for `provider`, if they have one.
    async fn own(&self, user: &User, provider: &ProviderName) -> ApiResult<Option<Resolved>> {
        let Some(sealed) = self.sealed(&user.id, provider).await? else { return Ok(None) };
        let secret = self.open(&user.id, provider, &sealed)?;
        self.touch(&user.id, provider);
        Ok(Some(Resolved { source: Source::Byok, secret }))
    }

    /// The platform's key for `provider`, unless the plan requires the
    /// user's own.
    fn platform(&self, user: &User, plan: &Plan, provider: &ProviderName) -> ApiResult<Resolved> {
        let no_credential = |message: String| ApiError::NoCredential { message, provider: provider.to_string() };
        if plan.byok_required {
            return Err(no_credential(format!(
                "plan {:?} requires users to bring their own {provider} key, and user {:?} has none",
                plan.slug.as_str(),
                user.id.as_str()
            )));
        }
        match self.config.provider(provider.as_str()) {
            Some(ProviderConfig { platform_key: Some(key), .. }) => {
                Ok(Resolved { source: Source::Platform, secret: key.clone() })
            }
            Some(p) => Err(no_credential(format!(
                "no {provider} credential: user {:?} has none, and no platform key is configured ({})",
                user.id.as_str(),
                p.api_key_env
            ))),
            None => Err(no_credential(format!(
                "no {provider} credential: user {:?} has none, and {provider} is not a configured provider",
                user.id.as_str()
            ))),
        }
    }

    /// Seals and stores `secret` as the user's credential for `provider`,
    /// replacing any. With `validate`, the provider is asked first and its
    /// answer stored with it. The secret's format is the caller's to check.
    pub async fn set(
        &self,
        user: &UserId,
        provider: &ProviderName,
        secret: &SecretString,
        label: Option<String>,
        validate: bool,
        events: &[NewEvent],
    ) -> ApiResult<Credential> {
        self.store.user(user).await?;
        let validation = match (validate, self.config.provider(provider.as_str())) {
            (false, _) => None,
            (true, Some(config)) => Some(check_with_provider(&self.http, config, secret).await),
            (true, None) => {
                return Err(ApiError::invalid(
                    "validate",
                    format!(
                        "validate: {provider} is not a configured provider, so there is nothing to check the key \
                         against; set TOLLGATE_{}_BASE_URL",
                        provider.as_str().to_ascii_uppercase().replace('-', "_")
                    ),
                ));
            }
        };
        let aad = credential_aad(user.as_str(), provider.as_str());
        let sealed = self
            .keyring
            .seal(secret.expose().as_bytes(), &aad)
            .map_err(|e| ApiError::invalid("secret", e.to_string()))?;
        let new = NewCredential {
            user_id: user.clone(),
            provider: provider.clone(),
            label,
            last4: last4(secret.expose()),
            sealed,
            validation,
            at: Timestamp::now(),
        };
        let stored = self.store.put_credential(&new, events).await?;
        self.forget(user, provider);
        Ok(stored.credential)
    }

    /// The user's credential for `provider` (never the secret), or 404.
    pub async fn status(&self, user: &UserId, provider: &ProviderName) -> ApiResult<Credential> {
        self.store.user(user).await?;
        match self.store.credential(user, provider).await? {
            Some(stored) => Ok(self.with_pending_use(stored.credential)),
            None => Err(not_set(user, provider)),
        }
    }

    /// The user's credentials (never the secrets); 404 for an unknown user.
    pub async fn list(&self, user: &UserId) -> ApiResult<Vec<Credential>> {
        self.store.user(user).await?;
        let credentials = self.store.credentials_of(user).await?;
        Ok(credentials.into_iter().map(|c| self.with_pending_use(c)).collect())
    }

    /// Deletes the user's credential for `provider`, or 404.
    pub async fn remove(&self, user: &UserId, provider: &ProviderName, events: &[NewEvent]) -> ApiResult<()> {
        self.store.user(user).await?;
        let removed = self.store.delete_credential(user, provider, events).await?;
        self.forget(user, provider);
        if removed { Ok(()) } else { Err(not_set(user, provider)) }
    }

    /// Forgets every cached credential (after users were deleted).
    pub fn invalidate_all(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.clear();
    }

    /// Writes gathered last-use times; on failure they are kept for the
    /// next attempt.
    pub async fn flush_uses(&self) {
        let uses: Vec<(UserId, ProviderName, Timestamp)> =
            std::mem::take(&mut *self.uses.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .map(|((u, p), t)| (u, p, t))
                .collect();
        if let Err(e) = self.store.record_credential_uses(&uses).await {
            tracing::warn!(error = %e, "failed to record credentials' last-use times; will retry");
            let mut pending = self.uses.lock().unwrap_or_else(|p| p.into_inner());
            for (u, p, t) in uses {
                let slot = pending.entry((u, p)).or_insert(t);
                *slot = (*slot).max(t);
            }
        }
    }

    /// Refuses to run with master keys that fit none of the stored
    /// credentials (and webhook secrets): for each key id in use, a
    /// configured key must open at least one of a few secrets sealed under it.
    pub async fn check_master_key(&self) -> anyhow::Result<()> {
        let current = self.keyring.current_id();
        if let Some(recorded) = self.store.setting(MASTER_KEY_SETTING).await.context("failed to read the settings")? {
            self.check_recorded_key(&recorded)?;
        }
        let mut in_use = self.store.credential_key_ids().await.context("failed to read the credentials' key ids")?;
        in_use.extend(self.store.webhook_key_ids().await.context("failed to read the webhook secrets' key ids")?);
        in_use.sort();
        in_use.dedup();
        for raw in &in_use {
            let id = MasterKeyId::parse(raw).map_err(|e| anyhow::anyhow!("a stored credential's key id: {e}"))?;
            if !self.keyring.knows(&id) {
                bail!(
                    "the master key does not match the stored credentials: they are encrypted under master key {id}, \
                     which is not configured (the current master key is {current}). Set TOLLGATE_MASTER_KEY to the \
                     key they were encrypted with (or restore the data directory's master.key); to move to a new \
                     key, list the old one in TOLLGATE_MASTER_KEYS_OLD and run `tollgate vault rotate`"
                );
            }
            let samples = self.store.credentials_sealed_with(raw, 3).await?;
            let webhooks = self.store.webhooks_sealed_with(raw, 3).await?;
            let opens = samples.iter().any(|s| {
                let aad = credential_aad(s.credential.user_id.as_str(), s.credential.provider.as_str());
                self.keyring.open(&s.sealed, &aad).is_ok()
            }) || webhooks
                .iter()
                .any(|w| self.keyring.open(&w.sealed, &webhook_aad(w.webhook.id.as_str())).is_ok());
            let sampled = !samples.is_empty() || !webhooks.is_empty();
            if sampled && !opens {
                bail!(
                    "the master key does not match the stored credentials: the configured key {id} opens none of \
                     the credentials marked as encrypted under it (they were altered). Set TOLLGATE_MASTER_KEY, or \
                     TOLLGATE_MASTER_KEYS_OLD, to the key they were encrypted with"
                );
            }
        }
        for retired in self.keyring.retired_ids().filter(|id| !in_use.iter().any(|u| u == id.as_str())) {
            tracing::info!(key_id = %retired, "no credential is encrypted under this retired master key any more; it can be removed from TOLLGATE_MASTER_KEYS_OLD");
        }
        let behind = in_use.iter().filter(|id| *id != current.as_str()).count();
        if behind > 0 {
            tracing::warn!(current = %current, "some credentials are encrypted under a retired master key; run `tollgate vault rotate`");
        }
        Ok(())
    }

    async fn sealed(&self, user: &UserId, provider: &ProviderName) -> ApiResult<Option<Sealed>> {
        let slot = (user.clone(), provider.clone());
        let ttl = self.config.key_cache_ttl;
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, sealed)) = cache.get(&slot)
                && at.elapsed() < ttl
            {
                return Ok(sealed.clone());
            }
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let sealed = self.store.credential(user, provider).await?.map(|s: StoredCredential| s.sealed);
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
                // Changed while it was read: the next call reads again.
                return Ok(sealed);
            }
            if cache.len() >= self.config.key_cache_capacity {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= self.config.key_cache_capacity {
                    cache.clear();
                }
            }
            cache.insert(slot, (Instant::now(), sealed.clone()));
        }
        Ok(sealed)
    }

    fn open(&self, user: &UserId, provider: &ProviderName, sealed: &Sealed) -> ApiResult<SecretString> {
        let aad = credential_aad(user.as_str(), provider.as_str());
        let undecryptable = |why: String| {
            ApiError::Undecryptable(format!(
                "the {provider} credential of user {:?} cannot be decrypted: {why}",
                user.as_str()
            ))
        };
        let plaintext = self.keyring.open(sealed, &aad).map_err(|e| undecryptable(e.to_string()))?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| undecryptable("it is not text".into()))?;
        Ok(SecretString::new(text))
    }

    /// After a credential was replaced or removed: its cached sealed value
    /// and its pending last use belong to the old secret.
    fn forget(&self, user: &UserId, provider: &ProviderName) {
        let slot = (user.clone(), provider.clone());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.remove(&slot);
        drop(cache);
        self.uses.lock().unwrap_or_else(|p| p.into_inner()).remove(&slot);
    }

    fn touch(&self, user: &UserId, provider: &ProviderName) {
        let now = Timestamp::now();
        let mut uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
        let slot = uses.entry((user.clone(), provider.clone())).or_insert(now);
        *slot = (*slot).max(now);
    }

    /// `last_used_at` including a use not yet written.
    fn with_pending_use(&self, mut credential: Credential) -> Credential {
        let slot = (credential.user_id.clone(), credential.provider.clone());
        let pending = self.uses.lock().unwrap_or_else(|p| p.into_inner()).get(&slot).copied();
        credential.last_used_at = credential.last_used_at.max(pending);
        credential
    }
}

fn not_set(user: &UserId, provider: &ProviderName) -> ApiError {
    ApiError::NotFound(format!("user {:?} has no {provider} credential", user.as_str()))
}

fn sensitive(value: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(value)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Calls the provider's cheapest authenticated endpoint (its models list;
/// GitHub's `/user`) through the configured base URL. The outcome is built
/// from the status code alone: a provider's error body may echo the key.
pub async fn check_with_provider(
    http: &reqwest::Client,
    provider: &ProviderConfig,
    secret: &SecretString,
) -> Validation {
    let base = &provider.base_url;
    let name = &provider.name;
    let (Ok(plain), Ok(bearer)) = (sensitive(secret.expose()), sensitive(&format!("Bearer {}", secret.expose())))
    else {
        return validation(ValidationOutcome::Invalid, format!("{name} keys cannot contain these characters"));
    };
    let request = match provider.known {
        Some(KnownProvider::Anthropic) => http
            .get(format!("{base}/v1/models"))
            .header("x-api-key", plain)
            .header("anthropic-version", ANTHROPIC_VERSION),
        Some(KnownProvider::Gemini) => http.get(format!("{base}/v1beta/models")).header("x-goog-api-key", plain),
        Some(KnownProvider::GitHub) => http
            .get(format!("{base}/user"))
            .header("accept", "application/vnd.github+json")
            .header("authorization", bearer),
        Some(KnownProvider::OpenAi | KnownProvider::Groq) | None => {
            http.get(format!("{base}/models")).header("authorization", bearer)
        }
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            validation(ValidationOutcome::Valid, format!("{name} accepted the key (HTTP {})", r.status().as_u16()))
        }
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
            validation(ValidationOutcome::Invalid, format!("{name} refused the key (HTTP {})", r.status().as_u16()))
        }
        Ok(r) => validation(
            ValidationOutcome::Unreachable,
            format!("{name} answered HTTP {}, so the key could not be checked", r.status().as_u16()),
        ),
        Err(e) => {
            let why = if e.is_timeout() {
                "it did not answer in time"
            } else if e.is_connect() {
                "the connection failed"
            } else {
                "the request failed"
            };
            validation(ValidationOutcome::Unreachable, format!("could not reach {name} at {base}: {why}"))
        }
    }
}

fn validation(outcome: ValidationOutcome, message: String) -> Validation {
    Validation { outcome, checked_at: Timestamp::now(), message }
}

/// The setting that holds the id of the master key a store's secrets are
/// sealed under: set by the first start (before anything is sealed), moved
/// by a rotation that left nothing under an older key.
const MASTER_KEY_SETTING: &str = "master_key_id";

impl Vault {
    /// Refuses a keyring that does not know the store's master key.
    fn check_recorded_key(&self, recorded: &str) -> anyhow::Result<()> {
        let id = MasterKeyId::parse(recorded).map_err(|e| anyhow::anyhow!("the stored master key id: {e}"))?;
        if !self.keyring.knows(&id) {
            bail!(
                "the master key does not match the database: it was set up with master key {id}, which is not \
                 configured (the current master key is {}). Every instance sharing a database needs the same key: \
                 set TOLLGATE_MASTER_KEY to the key of the instance that set it up (its data directory's \
                 master.key); to move to a new key, list the old one in TOLLGATE_MASTER_KEYS_OLD and run \
                 `tollgate vault rotate`",
                self.keyring.current_id()
            );
        }
        Ok(())
    }

    /// Records the current master key as the store's when it has none yet,
    /// once the key is kept (its file written). Two first starts racing on
    /// one database with different keys: one records its key, the other is
    /// refused here.
    pub async fn record_master_key(&self) -> anyhow::Result<()> {
        let current = self.keyring.current_id();
        self.store.set_setting_if_absent(MASTER_KEY_SETTING, current.as_str()).await?;
        let recorded = self.store.setting(MASTER_KEY_SETTING).await?.unwrap_or_default();
        self.check_recorded_key(&recorded)
    }
}

/// What a rotation did.
#[derive(Debug, Default)]
pub struct RotationReport {
    /// Credentials not under the current key when the rotation began.
    pub total: u64,
    pub resealed: u64,
    /// Replaced or deleted by someone else meanwhile; left as they are.
    pub changed_meanwhile: u64,
    /// Credentials (and webhook secrets) that would not open, each with the reason.
    pub failed: Vec<String>,
    /// Webhook signing secrets not under the current key when it began.
    pub webhooks_total: u64,
    pub webhooks_resealed: u64,
    /// Credentials and webhook secrets still not under the current key when
    /// it ended: changed meanwhile, made meanwhile by an instance that still
    /// seals with an old key, or failed. The old keys are needed while any
    /// is left.
    pub left: u64,
}

/// Re-encrypts every credential not under the keyring's current key, in
/// batches of `batch_size`, each batch in one transaction. An interrupted
/// run loses nothing: what was committed is under the current key, and the
/// next run finds only what is left. `progress` is told how many are done.
pub async fn rotate(
    store: &Store,
    keyring: &Keyring,
    batch_size: i64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<RotationReport> {
    let current = keyring.current_id().clone();
    let total = store.count_credentials_not_under(&current).await?;
    let mut report = RotationReport { total: u64::try_from(total).unwrap_or(0), ..RotationReport::default() };
    let mut after: Option<(UserId, ProviderName)> = None;
    let mut done = 0;
    loop {
        let cursor = after.as_ref().map(|(u, p)| (u, p));
        let batch = store.credentials_not_under(&current, cursor, batch_size).await?;
        let Some(last) = batch.last() else { break };
        after = Some((last.credential.user_id.clone(), last.credential.provider.clone()));
        let mut resealed = Vec::with_capacity(batch.len());
        for stored in &batch {
            let c = &stored.credential;
            let aad = credential_aad(c.user_id.as_str(), c.provider.as_str());
            match keyring.reseal(&stored.sealed, &aad) {
                Ok(Some(new)) => resealed.push(Resealed {
                    user_id: c.user_id.clone(),
                    provider: c.provider.clone(),
                    old: stored.sealed.clone(),
                    new,
                }),
                Ok(None) => {}
                Err(e) => report.failed.push(format!("{}/{}: {e}", c.user_id, c.provider)),
            }
        }
        let replaced = store.reseal_credentials(&resealed).await.context("failed to store re-encrypted credentials")?;
        let mut audit = Vec::new();
        for (r, done) in resealed.iter().zip(&replaced) {
            if *done {
                report.resealed += 1;
                audit.push(
                    NewAuditEntry::new(
                        Actor::System,
                        AuditAction::CredentialRotated,
                        format!("credential:{}/{}", r.user_id, r.provider),
                    )
                    .user(&r.user_id)
                    .detail("provider", r.provider.as_str())
                    .detail("from_key", r.old.key_id.as_str())
                    .detail("to_key", r.new.key_id.as_str()),
                );
            } else {
                report.changed_meanwhile += 1;
            }
        }
        store.insert_audit(&audit).await.context("failed to write the audit log")?;
        done += batch.len() as u64;
        progress(done);
    }
    // Webhook signing secrets, the same way: batched, each batch one
    // transaction, resumable.
    report.webhooks_total = u64::try_from(store.count_webhooks_not_under(&current).await?).unwrap_or(0);
    let mut after = None;
    loop {
        let batch = store.webhooks_not_under(&current, after.as_ref(), batch_size).await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.webhook.id.clone());
        let mut resealed = Vec::with_capacity(batch.len());
        for stored in &batch {
            let id = &stored.webhook.id;
            match keyring.reseal(&stored.sealed, &webhook_aad(id.as_str())) {
                Ok(Some(new)) => resealed.push(ResealedWebhook { id: id.clone(), old: stored.sealed.clone(), new }),
                Ok(None) => {}
                Err(e) => report.failed.push(format!("webhook {id}: {e}")),
            }
        }
        let replaced =
            store.reseal_webhooks(&resealed).await.context("failed to store re-encrypted webhook secrets")?;
        report.webhooks_resealed += replaced.iter().filter(|r| **r).count() as u64;
        report.changed_meanwhile += replaced.iter().filter(|r| !**r).count() as u64;
        done += batch.len() as u64;
        progress(done);
    }
    let left = store.count_credentials_not_under(&current).await? + store.count_webhooks_not_under(&current).await?;
    report.left = u64::try_from(left).unwrap_or(0);
    if report.left == 0 {
        store.set_setting(MASTER_KEY_SETTING, current.as_str()).await?;
    }
    Ok(report)
}
