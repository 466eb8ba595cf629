//! The audit log: append-only entries, read newest first.

use tollgate_domain::audit::{Actor, AuditAction, AuditEntry, NewAuditEntry};
use tollgate_domain::{Invalid, Timestamp, UserId};

use crate::{Result, Store, StoreError, on_pool};

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: String,
    user_id: Option<String>,
    client_ip: Option<String>,
    details: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<AuditEntry> {
        Ok(AuditEntry {
            id: row.id,
            time: Timestamp::from_millis(row.at),
            actor: Actor::from_stored(&row.actor)?,
            action: AuditAction::parse(&row.action)?,
            target: row.target,
            user_id: row.user_id.as_deref().map(UserId::parse).transpose()?,
            client_ip: row.client_ip,
            details: serde_json::from_str(&row.details)
                .map_err(|e| Invalid::new(format!("audit entry {} details: {e}", row.id)))?,
        })
    }
}

/// Which entries to read: all filters are optional; `before` is the cursor
/// (entries with a smaller id), `limit` the page size.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub user: Option<UserId>,
    /// An action (`credential.set`) or a family (`credential`).
    pub action: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub before: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Appends entries in one transaction.
    pub async fn insert_audit(&self, entries: &[NewAuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let q = "INSERT INTO audit_log (at, actor, action, target, user_id, client_ip, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let rows: Vec<(NewAuditEntry, String)> = entries
            .iter()
            .map(|e| {
                // A map of strings always serializes.
                let details = serde_json::to_string(&e.details).unwrap_or_else(|_| "{}".into());
                (e.clone(), details)
            })
            .collect();
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (e, details) in &rows {
                sqlx::query(q)
                    .bind(e.time.millis())
                    .bind(e.actor.to_stored())
                    .bind(e.action.as_str())
                    .bind(&e.target)
                    .bind(e.user_id.as_ref().map(UserId::as_str))
                    .bind(&e.client_ip)
                    .bind(details)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Entries matching `filter`, newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        // An action matches itself; a family (no dot) matches `family.*`.
        let (action, pattern) = match filter.action.as_deref() {
            None => (None, None),
            Some(a) if a.contains('.') => (Some(a.to_owned()), Some(a.to_owned())),
            Some(family) => (Some(family.to_owned()), Some(format!("{family}.%"))),
        };
        let q = "SELECT id, at, actor, action, target, user_id, client_ip, details FROM audit_log \
                 WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR action = $2 OR action LIKE $3) \
                 AND at >= $4 AND at < $5 AND id < $6 ORDER BY id DESC LIMIT $7";
        let rows: Vec<AuditRow> = on_pool!(self, p => sqlx::query_as(q)
            .bind(filter.user.as_ref().map(UserId::as_str))
            .bind(&action)
            .bind(&pattern)
            .bind(filter.since.map_or(i64::MIN, Timestamp::millis))
            .bind(filter.until.map_or(i64::MAX, Timestamp::millis))
            .bind(filter.before.unwrap_or(i64::MAX))
            .bind(filter.limit)
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }
}
