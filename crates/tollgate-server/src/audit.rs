//! The audit log: who did what, to which thing, from where.
//!
//! Entries go through one writer task that commits whatever is queued in
//! one transaction (like the metering writer), so that audited admin
//! actions cost the store one write per burst rather than one per entry,
//! and never compete entry by entry with the metering writer for SQLite's
//! write lock. A caller waits for its entry to be committed: an answer
//! after an audited action means the entry is stored. The metering and
//! proxy paths write nothing here. No entry holds a secret.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tollgate_domain::audit::{Actor, AuditAction, NewAuditEntry};
use tollgate_store::Store;

use crate::auth::{Principal, client_ip};
use crate::error::ApiError;
use crate::state::AppState;

type Job = (NewAuditEntry, oneshot::Sender<Result<(), String>>);

/// Entries taken into one transaction at most.
const MAX_BATCH: usize = 512;

pub struct AuditLog {
    writer: RwLock<Option<mpsc::Sender<Job>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    pub fn start(store: Arc<Store>) -> Arc<AuditLog> {
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(run(store, rx));
        Arc::new(AuditLog { writer: RwLock::new(Some(tx)), task: Mutex::new(Some(task)) })
    }

    /// Writes `entry` and waits until it is committed.
    pub async fn record(&self, entry: NewAuditEntry) -> anyhow::Result<()> {
        let tx = self.writer.read().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = tx.ok_or_else(|| anyhow::anyhow!("the audit log is shut down"))?;
        let (reply, answer) = oneshot::channel();
        tx.send((entry, reply)).await.map_err(|_| anyhow::anyhow!("the audit log is shut down"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer stopped"))?
            .map_err(|e| anyhow::anyhow!("failed to write the audit log: {e}"))
    }

    /// Records an entry about something already done: a failure to write
    /// it is logged loudly rather than turned into a failed request.
    pub async fn note(&self, entry: NewAuditEntry) {
        let action = entry.action;
        if let Err(e) = self.record(entry).await {
            tracing::error!(error = %e, %action, "an audited action was not recorded in the audit log");
        }
    }

    /// Commits what is queued and stops the writer.
    pub async fn shutdown(&self) {
        self.writer.write().unwrap_or_else(|p| p.into_inner()).take();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(store: Arc<Store>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<NewAuditEntry>, Vec<_>) = batch.drain(..).unzip();
        let result = store.insert_audit(&entries).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, entries = entries.len(), "failed to write the audit log");
        }
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
    tracing::debug!("audit writer stopped: every queued entry is written");
}

/// Who makes a request and from where, for the audit log. Taken from the
/// principal that authentication put in the request.
#[derive(Clone, Debug)]
pub struct Origin {
    pub actor: Actor,
    pub client_ip: Option<IpAddr>,
}

impl Origin {
    /// An entry for `action` on `target`, by this origin, now.
    pub fn entry(&self, action: AuditAction, target: impl Into<String>) -> NewAuditEntry {
        let mut entry = NewAuditEntry::new(self.actor.clone(), action, target);
        entry.client_ip = self.client_ip.map(|ip| ip.to_string());
        entry
    }
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let actor = match parts.extensions.get::<Principal>() {
            Some(Principal::Admin) => Actor::Admin,
            Some(Principal::Key(k)) => Actor::Key(k.key.id.clone()),
            Some(Principal::Anonymous(_)) | None => {
                return Err(ApiError::Unauthorized("this route needs a key".into()));
            }
        };
        Ok(Origin { actor, client_ip: client_ip(parts, state.config.trust_forwarded_for) })
    }
}
