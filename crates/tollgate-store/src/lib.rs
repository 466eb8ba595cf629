//! Tollgate's storage. One [`Store`] over SQLite (the embedded default) or
//! Postgres, chosen at start.
//!
//! Each backend has its own migrations, embedded in the binary. The queries
//! are written once, in the SQL both dialects share (`$1` placeholders,
//! `ON CONFLICT`, `RETURNING`, integers for times), and run through
//! [`on_pool!`], which monomorphises the same code for each driver: there is
//! no second copy of a query to drift. Where a dialect differs, the code
//! matches on the backend explicitly.
//!
//! This crate knows nothing of HTTP.

mod audit;
mod billing;
mod credentials;
mod error;
mod grants;
mod hooks;
mod keys;
mod plans;
mod settings;
mod usage;
mod users;
mod web;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use audit::AuditFilter;
pub use billing::{BillingChange, BillingOutcome};
pub use credentials::{NewCredential, Resealed, StoredCredential};
pub use error::StoreError;
pub use hooks::{
    AfterAttempt, Announce, Attempt, AttemptRow, DeliveryRow, DueDelivery, NewEvent, ResealedWebhook, StoredWebhook,
    WebhookPatch,
};
pub use keys::{KeyForAuth, NewKey};
pub use plans::default_plans;
pub use usage::{
    Committed, CounterRef, DailyRow, EVENT_COLUMNS, EventRow, Kept, Owned, PreparedEvent, Recorded, ResponseOwner,
    Watch, Watcher, counter_sums,
};
pub use users::{NewUser, Updated, UserPatch};
pub use web::{SessionOwner, WebSession};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs `$body` with `$p` bound to the concrete pool of whichever backend
/// is in use.
macro_rules! on_pool {
    (pool: $pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::Pool::Sqlite($p) => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
    ($store:expr, $p:ident => $body:expr) => {
        $crate::on_pool!(pool: &$store.pool, $p => $body)
    };
}
pub(crate) use on_pool;

pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Where the data lives.
#[derive(Clone)]
pub enum StoreConfig {
    /// A SQLite file, created if missing, in WAL mode. A commit is written
    /// to the log before it is acknowledged, so it survives a crash of the
    /// process; with `fsync_each_commit` the log is also synced to disk at
    /// every commit, so it survives a power loss, at the price of an fsync
    /// (milliseconds on many disks) in every commit's wait.
    Sqlite { path: std::path::PathBuf, fsync_each_commit: bool },
    /// A Postgres database URL. It may carry a password, so it is never
    /// printed whole.
    Postgres { url: String },
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Sqlite { path, fsync_each_commit } => {
                f.debug_struct("Sqlite").field("path", path).field("fsync_each_commit", fsync_each_commit).finish()
            }
            StoreConfig::Postgres { url } => f.debug_struct("Postgres").field("url", &redact_url(url)).finish(),
        }
    }
}

pub struct Store {
    pool: Pool,
    /// Where usage is committed: on SQLite a connection of its own, whose
    /// page cache stays warm from one commit to the next (a commit by
    /// another connection, which is rare, makes it stale; a pool hands out
    /// each connection in turn); on Postgres the pool.
    usage: Pool,
}

impl Store {
    /// Connects (creating the SQLite file if needed). Does not migrate.
    pub async fn open(config: &StoreConfig) -> anyhow::Result<Store> {
        let (pool, usage) = match config {
            StoreConfig::Sqlite { path, fsync_each_commit } => (
                Pool::Sqlite(open_sqlite(path, *fsync_each_commit, 8).await?),
                Pool::Sqlite(open_sqlite(path, *fsync_each_commit, 1).await?),
            ),
            StoreConfig::Postgres { url } => {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .with_context(|| format!("failed to connect to Postgres at {}", redact_url(url)))?;
                (Pool::Postgres(pool.clone()), Pool::Postgres(pool))
            }
        };
        Ok(Store { pool, usage })
    }

    /// Applies the migrations embedded in the binary that are not yet applied.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
            Pool::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
        }
        .context("failed to apply migrations")
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Whether the store answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Copies the SQLite write-ahead log into the database file as far as
    /// readers allow (a no-op on Postgres). Run periodically.
    pub async fn checkpoint(&self) -> Result<()> {
        if let Pool::Sqlite(p) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(p).await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(pool: &self.usage, p => p.close().await);
        on_pool!(self, p => p.close().await)
    }
}

async fn open_sqlite(path: &Path, fsync_each_commit: bool, connections: u32) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str("sqlite://")?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL (in WAL mode) writes each commit to the log before the
        // commit returns, and syncs the log at checkpoints: an acknowledged
        // write survives a crash of the process. FULL also syncs at every
        // commit, which a power loss needs.
        .synchronous(if fsync_each_commit { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Checkpoints run in the background (`Store::checkpoint`), not
        // inside whichever commit crosses the threshold: the single usage
        // writer never stalls copying pages.
        .pragma("wal_autocheckpoint", "0")
        // Multi-row statements keep a statement journal (the pages they
        // touch, to undo the statement alone); in memory it costs a copy,
        // not a temporary file's writes.
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-16384");
    SqlitePoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .with_context(|| format!("failed to open the SQLite database at {}", path.display()))
}

/// `postgres://user:secret@host/db?password=secret` →
/// `postgres://user:…@host/db?password=…`: a connection URL without the
/// passwords it may carry, in its user info or its parameters. The user
/// info ends at the last `@` (a password may hold `?`, `/` or `@`): when a
/// parameter holds one too, more is hidden, never less.
pub fn redact_url(url: &str) -> String {
    let without_userinfo = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:…{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    };
    // With the user info's password gone, the first `?` starts the parameters.
    let Some((base, query)) = without_userinfo.split_once('?') else { return without_userinfo };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=…"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(super::redact_url("postgres://u:pw@h:5432/db"), "postgres://u:…@h:5432/db");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            super::redact_url("postgres://u@h/db?sslmode=require&password=pw&sslpassword=x@y"),
            "postgres://u@h/db?sslmode=require&password=…&sslpassword=…"
        );
        assert_eq!(
            super::redact_url("postgres://u:p@ss@h/db?application_name=a"),
            "postgres://u:…@h/db?application_name=a"
        );
        assert_eq!(super::redact_url("postgres://u:p?ss/w@h/db"), "postgres://u:…@h/db");
        assert_eq!(super::redact_url("postgres://h/db?password=pw"), "postgres://h/db?password=…");
        let config = super::StoreConfig::Postgres { url: "postgres://u:hunter2@h/db".into() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
