//! Start and stop: the data directory, the master key file and keyring, the
//! store, the vault's start-up check, the admin token, the listener, and the
//! background tasks (last-used times, housekeeping, the outbox's sender).

use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_domain::{KeyHash, Limits, Meter, PlanSlug, SecretString, Timestamp, base62};
use tollgate_store::{Store, StoreConfig, StoreError};
use tollgate_vault::{Keyring, MasterKey};

use crate::audit::AuditLog;
use crate::auth::{FailureLimiter, KeyCache, LastUsed};
use crate::cluster::{Cluster, RedisCounters};
use crate::config::Config;
use crate::hooks::Hooks;
use crate::metering::{CounterStore, MemoryCounters, Metering, MeteringConfig};
use crate::routes::{self, RateWindows};
use crate::state::{AppState, Shared};
use crate::vault::Vault;

/// The file, in the data directory, holding the generated master key.
pub const MASTER_KEY_FILE: &str = "master.key";
const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

/// A running service.
pub struct Server {
    pub addr: SocketAddr,
    /// The admin token made at this start, if none existed: show it once.
    pub generated_admin_token: Option<SecretString>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Stops accepting, lets requests in flight finish, writes what is
    /// pending, and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("the server task panicked")?
    }
}

/// Opens the store and applies migrations (what `tollgate migrate` does).
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if let StoreConfig::Sqlite { path, .. } = &config.store
        && let Some(parent) = path.parent()
    {
        create_private_dir(parent)?;
    }
    let store = Store::open(&config.store).await?;
    store.migrate().await?;
    Ok(store)
}

pub async fn start(config: Config) -> anyhow::Result<Server> {
    let (keyring, new_key) = load_keyring(&config)?;
    let store = Arc::new(open_store(&config).await?);
    let config = Arc::new(config);
    let vault = Arc::new(Vault::new(keyring, store.clone(), config.clone())?);
    if let Err(e) = vault.check_master_key().await {
        store.close().await;
        return Err(e);
    }
    // A new key is written only once it is known to fit the store.
    if let Some(key) = new_key {
        write_master_key_file(&config, &key)?;
    }
    if let Err(e) = vault.record_master_key().await {
        store.close().await;
        return Err(e);
    }
    store.seed_default_plans().await.context("failed to create the default plans")?;
    let (admin_token_hash, generated_admin_token) = admin_token(&config, &store).await?;
    if let Some(anonymous) = &config.anonymous {
        ensure_demo_plan(&store, &anonymous.plan).await?;
    }
    let mut prices = config.prices.clone();
    // Prices set through the admin API are newer than the file's.
    prices.extend(store.prices().await.context("failed to read model prices")?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let cluster = match &config.redis_url {
        Some(url) => Some(Cluster::connect(url.expose(), &config.redis_prefix).await?),
        None => None,
    };
    let counters: Arc<dyn CounterStore> = match &cluster {
        Some(cluster) => Arc::new(RedisCounters(cluster.clone())),
        None => Arc::new(MemoryCounters::default()),
    };
    let metering_config = MeteringConfig { account_ttl: config.key_cache_ttl, reservation_ttl: config.reservation_ttl };
    let metering = match &config.store {
        // The embedded store: the gateway's usage goes through the journal
        // beside it (unless another server on the same file holds it).
        StoreConfig::Sqlite { path, fsync_each_commit } => {
            let journal = crate::metering::Journal::path_for(path);
            let (sync, full) = (*fsync_each_commit, config.usage_journal_max_bytes);
            Metering::start_journaled(store.clone(), counters, metering_config, prices, &journal, sync, full).await?
        }
        StoreConfig::Postgres { .. } => Metering::start_with(store.clone(), counters, metering_config, prices),
    };
    let gateway = crate::gateway::Gateway::new(&config)?;
    let hooks = Hooks::start(store.clone(), vault.keyring().clone(), config.hooks.clone(), metering.outbox_signal())?;
    let state = AppState::new(Shared {
        gateway,
        hooks,
        metering,
        rate_windows: Arc::new(match &cluster {
            Some(cluster) => RateWindows::Shared(cluster.clone()),
            None => RateWindows::default(),
        }),
        cluster: cluster.clone(),
        web_key: Arc::new(crate::web::SigningKey::derive(vault.keyring())),
        key_cache: Arc::new(KeyCache::new(config.key_cache_ttl, config.key_cache_capacity)),
        failures: Arc::new(FailureLimiter::new(config.auth_failure_limit, config.auth_failure_window)),
        last_used: Arc::new(LastUsed::default()),
        admin_token_hash: Arc::new(admin_token_hash),
        metrics: metrics_handle(),
        audit: AuditLog::start(store.clone()),
        vault,
        store,
        config,
    });
    let flusher = tokio::spawn(flush_last_used_every(state.clone()));
    let listener_task = cluster.map(|cluster| tokio::spawn(cluster.listen(state.clone())));
    let housekeeper = tokio::spawn(housekeeping(state.clone()));
    let app = routes::router(state.clone());
    let (shutdown, signal) = oneshot::channel::<()>();
    tracing::info!(%addr, store = state.store.backend(), "tollgate is listening");
    let task = tokio::spawn(async move {
        crate::serve::serve(listener, app, async {
            let _ = signal.await;
        })
        .await;
        flusher.abort();
        if let Some(task) = &listener_task {
            task.abort();
        }
        housekeeper.abort();
        // Requests are done: commit what they queued, then stop the writer.
        state.metering.shutdown().await;
        state.audit.shutdown().await;
        state.hooks.shutdown().await;
        flush_last_used(&state).await;
        state.store.close().await;
        tracing::info!("tollgate stopped");
        Ok(())
    });
    Ok(Server { addr, generated_admin_token, shutdown, task })
}

/// How often the recorder folds the histogram samples recorded since into
/// its buckets. A scrape of `/metrics` does too; without this, a server
/// nobody scrapes would keep every sample of every request.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The buckets' upper bounds of every histogram in seconds: from a tenth of
/// a millisecond (what the gateway adds to a call) to five minutes (a slow
/// provider's first byte). Histograms with buckets, not summaries: they add
/// up across instances, and a sample costs a comparison per bucket where
/// a summary's quantile sketch cost some 500 instructions.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The buckets of the ingester's batch sizes, in events.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// The process-wide Prometheus recorder, installed on first use, with a
/// thread of its own for its upkeep.
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("tollgate_usage_ingest_batch_events".into()), BATCH_BUCKETS)
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (in tests that embed
            // the server); ours still renders what it records then.
            let _ = metrics::set_global_recorder(recorder);
            let upkept = handle.clone();
            let upkeep = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkept.run_upkeep();
                }
            });
            if let Err(e) = upkeep {
                tracing::warn!(error = %e, "failed to start the metrics upkeep thread; histograms fold only on scrapes");
            }
            handle
        })
        .clone()
}

async fn flush_last_used_every(state: AppState) {
    let mut tick = tokio::time::interval(state.config.last_used_flush);
    tick.tick().await;
    loop {
        tick.tick().await;
        flush_last_used(&state).await;
    }
}

async fn flush_last_used(state: &AppState) {
    let uses = state.last_used.take();
    if let Err(e) = state.store.record_last_used(&uses).await {
        tracing::warn!(error = %e, "failed to record key last-used times; will retry");
        state.last_used.restore(uses);
    }
    state.vault.flush_uses().await;
}

/// How long sent events (and their deliveries) are kept.
const OUTBOX_KEPT_DAYS: i64 = 30;

/// Every second: drop expired reservations and checkpoint SQLite's
/// write-ahead log. Every hour: delete raw events past the retention
/// period, and sent events of the outbox older than 30 days.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_retention: Option<std::time::Instant> = None;
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Err(e) = state.metering.expire().await {
            tracing::warn!(error = %e, "failed to expire reservations");
        }
        if let Err(e) = state.store.checkpoint().await {
            tracing::warn!(error = %e, "failed to checkpoint the write-ahead log");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(std::time::Instant::now());
            let before = Timestamp::now().millis() - OUTBOX_KEPT_DAYS * 86_400_000;
            match state.store.prune_outbox(before).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, "deleted sent events older than 30 days"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "failed to prune the outbox"),
            }
        }
        if let Some(days) = state.config.retention_days
            && last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
        {
            last_retention = Some(std::time::Instant::now());
            let before = Timestamp::now().millis() - i64::from(days) * 86_400_000;
            match state.store.delete_events_before(before).await {
                Ok(n) if n > 0 => tracing::info!(deleted = n, days, "deleted raw usage events past retention"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "failed to apply the retention period"),
            }
        }
    }
}

/// The plan anonymous demo traffic is metered on: created small if missing.
async fn ensure_demo_plan(store: &Store, slug: &PlanSlug) -> anyhow::Result<()> {
    match store.plan(slug).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound(_)) => {
            let now = Timestamp::now();
            let mut plan = tollgate_store::default_plans(now).remove(0);
            plan.slug = slug.clone();
            plan.name = "Demo".into();
            plan.limits =
                Limits::new([(Meter::parse(Meter::REQUESTS)?, Some(20)), (Meter::parse(Meter::TOKENS)?, Some(2_000))])?;
            plan.rpm = Some(10);
            plan.tpm = Some(2_000);
            match store.insert_plan(&plan).await {
                Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The admin token's hash: from the configured token, else the stored hash,
/// else a new token, whose hash is stored and which is returned to be shown
/// once.
async fn admin_token(config: &Config, store: &Store) -> anyhow::Result<(KeyHash, Option<SecretString>)> {
    if let Some(token) = &config.admin_token {
        return Ok((KeyHash::of(token.expose()), None));
    }
    if let Some(stored) = store.setting(ADMIN_TOKEN_SETTING).await? {
        return Ok((KeyHash::from_stored(stored), None));
    }
    let token = SecretString::new(format!("tga_{}", base62::random(40)));
    let hash = KeyHash::of(token.expose());
    if store.set_setting_if_absent(ADMIN_TOKEN_SETTING, hash.as_str()).await? {
        return Ok((hash, Some(token)));
    }
    // Another instance made one at the same moment; theirs stands.
    let stored = store.setting(ADMIN_TOKEN_SETTING).await?.context("the admin token hash vanished")?;
    Ok((KeyHash::from_stored(stored), None))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to restrict {}", dir.display()))
}

/// The vault's keyring: the configured master key (`TOLLGATE_MASTER_KEY`),
/// or else the key file in the data directory, plus the retired keys
/// (`TOLLGATE_MASTER_KEYS_OLD`). When there is no key file yet, a new key
/// is made and returned too, for [`write_master_key_file`] to keep once the
/// caller is sure of it.
pub fn load_keyring(config: &Config) -> anyhow::Result<(Keyring, Option<MasterKey>)> {
    let (current, new) = match &config.master_key {
        Some(key) => (key.clone(), None),
        None => {
            let path = config.data_dir.join(MASTER_KEY_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let key = MasterKey::from_base64(&zeroize::Zeroizing::new(text))
                        .with_context(|| format!("the master key file {}", path.display()))?;
                    (key, None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let key = MasterKey::generate();
                    (key.clone(), Some(key))
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to read the master key file {}", path.display()));
                }
            }
        }
    };
    Ok((Keyring::new(current, config.master_keys_old.iter().cloned()), new))
}

/// Creates the master key file (mode 0600) in the data directory.
pub fn write_master_key_file(config: &Config, key: &MasterKey) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let path = config.data_dir.join(MASTER_KEY_FILE);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("failed to create the master key file {}", path.display()))?;
    let text = key.to_base64();
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| std::io::Write::write_all(&mut file, b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write the master key file {}", path.display()))?;
    tracing::info!(path = %path.display(), key_id = %key.id(), "created a new master key file; back it up");
    Ok(())
}
