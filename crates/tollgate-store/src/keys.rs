//! Gateway keys, of users and of the app itself. Only hashes are stored.

use tollgate_domain::model::{KeyKind, KeyRecord, User};
use tollgate_domain::{KeyHash, KeyId, Scopes, Timestamp, UserId};

use crate::hooks::{Announce, NewEvent, insert_event};
use crate::{Result, Store, StoreError, on_pool};

macro_rules! columns {
    () => {
        "id, kind, user_id, name, prefix, last4, scopes, created_at, expires_at, revoked_at, last_used_at"
    };
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    kind: String,
    user_id: Option<String>,
    name: String,
    prefix: String,
    last4: String,
    scopes: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<KeyRecord> {
        Ok(KeyRecord {
            id: KeyId::parse(&row.id)?,
            kind: KeyKind::from_stored(&row.kind),
            user_id: row.user_id.as_deref().map(UserId::parse).transpose()?,
            name: row.name,
            prefix: row.prefix,
            last4: row.last4,
            scopes: Scopes::from_stored(&row.scopes)?,
            created_at: Timestamp::from_millis(row.created_at),
            expires_at: row.expires_at.map(Timestamp::from_millis),
            revoked_at: row.revoked_at.map(Timestamp::from_millis),
            last_used_at: row.last_used_at.map(Timestamp::from_millis),
        })
    }
}

/// A key about to be stored: its record and the hash of its secret.
pub struct NewKey {
    pub record: KeyRecord,
    pub hash: KeyHash,
}

/// What authentication needs to know about a presented key.
pub struct KeyForAuth {
    pub key: KeyRecord,
    /// The owner, for a user's key.
    pub user: Option<User>,
}

fn key_not_found(id: &KeyId) -> StoreError {
    StoreError::not_found(format!("no key {:?}", id.as_str()))
}

/// Inserts a [`NewKey`] through `$executor` (a pool or a transaction).
/// A macro rather than a generic function: sqlx's executor bounds make a
/// generic future lose `Send`.
macro_rules! insert_key {
    ($executor:expr, $new:expr) => {{
        let new: &NewKey = $new;
        let r = &new.record;
        sqlx::query(
            "INSERT INTO api_keys (id, hash, kind, user_id, name, prefix, last4, scopes, created_at, \
             expires_at, revoked_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(r.id.as_str())
        .bind(new.hash.as_str())
        .bind(r.kind.as_str())
        .bind(r.user_id.as_ref().map(UserId::as_str))
        .bind(&r.name)
        .bind(&r.prefix)
        .bind(&r.last4)
        .bind(r.scopes.to_stored())
        .bind(r.created_at.millis())
        .bind(r.expires_at.map(Timestamp::millis))
        .bind(r.revoked_at.map(Timestamp::millis))
        .bind(r.last_used_at.map(Timestamp::millis))
        .execute($executor)
        .await
        .map(|_| ())
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::not_found(format!(
                "no user {:?}",
                r.user_id.as_ref().map(UserId::as_str).unwrap_or_default()
            )),
            _ => StoreError::unique_as("a key with this id or secret exists")(e),
        })
    }};
}

impl Store {
    /// Stores a new key, writing `events` to the outbox in the same
    /// transaction.
    pub async fn insert_key(&self, new: &NewKey, events: &[NewEvent]) -> Result<KeyRecord> {
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            insert_key!(&mut *tx, new)?;
            for event in events {
                insert_event!(&mut *tx, event).await?;
            }
            tx.commit().await?;
        });
        Ok(new.record.clone())
    }

    pub async fn key(&self, id: &KeyId) -> Result<KeyRecord> {
        let q = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = $1");
        let row: Option<KeyRow> = on_pool!(self, p => sqlx::query_as(q).bind(id.as_str()).fetch_optional(p).await)?;
        row.ok_or_else(|| key_not_found(id))?.try_into()
    }

    /// The key with this hash and its owner, if any key has it.
    pub async fn key_for_auth(&self, hash: &KeyHash) -> Result<Option<KeyForAuth>> {
        let q = concat!("SELECT ", columns!(), " FROM api_keys WHERE hash = $1");
        let row: Option<KeyRow> = on_pool!(self, p => sqlx::query_as(q).bind(hash.as_str()).fetch_optional(p).await)?;
        let Some(row) = row else { return Ok(None) };
        let key = KeyRecord::try_from(row)?;
        let user = match &key.user_id {
            Some(id) => Some(self.user(id).await?),
            None => None,
        };
        Ok(Some(KeyForAuth { key, user }))
    }

    /// A user's keys, newest first, revoked ones included.
    pub async fn keys_of_user(&self, user: &UserId) -> Result<Vec<KeyRecord>> {
        let q = concat!("SELECT ", columns!(), " FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id");
        let rows: Vec<KeyRow> = on_pool!(self, p => sqlx::query_as(q).bind(user.as_str()).fetch_all(p).await)?;
        rows.into_iter().map(KeyRecord::try_from).collect()
    }

    /// The app's own keys, newest first.
    pub async fn service_keys(&self) -> Result<Vec<KeyRecord>> {
        let q = concat!("SELECT ", columns!(), " FROM api_keys WHERE kind = 'service' ORDER BY created_at DESC, id");
        let rows: Vec<KeyRow> = on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await)?;
        rows.into_iter().map(KeyRecord::try_from).collect()
    }

    /// Revokes a key at `at`. Revoking a revoked key changes nothing.
    /// Revokes a key at `at` (unless it stops earlier already), writing the
    /// events `announce` makes of the key as revoked to the outbox in the
    /// same transaction.
    pub async fn revoke_key(&self, id: &KeyId, at: Timestamp, announce: Announce<'_, KeyRecord>) -> Result<KeyRecord> {
        let q = "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND (revoked_at IS NULL OR revoked_at > $2)";
        let select = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = $1");
        let record = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(q).bind(id.as_str()).bind(at.millis()).execute(&mut *tx).await?;
            let row: Option<KeyRow> = sqlx::query_as(select).bind(id.as_str()).fetch_optional(&mut *tx).await?;
            let record = KeyRecord::try_from(row.ok_or_else(|| key_not_found(id))?)?;
            for event in announce(&record) {
                insert_event!(&mut *tx, &event).await?;
            }
            tx.commit().await?;
            record
        });
        Ok(record)
    }

    /// Stores `new` as the successor of `old`, which stops working at
    /// `old_until`. A key that is revoked or already rotated cannot be.
    /// `announce` makes the events of the rotation from the new key and the
    /// old one as it now stands; they go to the outbox in the same
    /// transaction.
    pub async fn rotate_key(
        &self,
        old: &KeyId,
        new: &NewKey,
        old_until: Timestamp,
        announce: Announce<'_, (KeyRecord, KeyRecord)>,
    ) -> Result<KeyRecord> {
        let now = Timestamp::now();
        let q = "UPDATE api_keys SET revoked_at = $2, replaced_by = $3 \
                 WHERE id = $1 AND replaced_by IS NULL AND (revoked_at IS NULL OR revoked_at > $4)";
        let select = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = $1");
        let updated = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let done = sqlx::query(q)
                .bind(old.as_str())
                .bind(old_until.millis())
                .bind(new.record.id.as_str())
                .bind(now.millis())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                insert_key!(&mut *tx, new)?;
                let row: KeyRow = sqlx::query_as(select).bind(old.as_str()).fetch_one(&mut *tx).await?;
                for event in announce(&(new.record.clone(), KeyRecord::try_from(row)?)) {
                    insert_event!(&mut *tx, &event).await?;
                }
                tx.commit().await?;
            }
            Ok::<_, StoreError>(done.rows_affected() == 1)
        })?;
        if !updated {
            // Say why: missing, revoked, or rotated before.
            let existing = self.key(old).await?;
            return Err(StoreError::Conflict(format!(
                "key {:?} is revoked or was already rotated; rotate its successor instead",
                existing.id.as_str()
            )));
        }
        Ok(new.record.clone())
    }

    /// Writes last-used times gathered in memory, in one transaction. An
    /// older time never replaces a newer one.
    pub async fn record_last_used(&self, uses: &[(KeyId, Timestamp)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let q = "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (id, at) in uses {
                sqlx::query(q).bind(id.as_str()).bind(at.millis()).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }
}
