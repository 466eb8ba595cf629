//! Users' provider credentials: only what the vault sealed is stored (the
//! master key's id, the nonce, the ciphertext), beside what is safe to show.

use tollgate_domain::model::{Credential, Validation, ValidationOutcome};
use tollgate_domain::{ProviderName, Timestamp, UserId};
use tollgate_vault::{MasterKeyId, NONCE_LEN, Sealed};

use crate::hooks::{NewEvent, insert_event};
use crate::{Result, Store, StoreError, on_pool};

macro_rules! columns {
    () => {
        "user_id, provider, label, last4, key_id, nonce, ciphertext, created_at, updated_at, last_used_at, \
         validation, validation_message, validated_at"
    };
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    user_id: String,
    provider: String,
    label: Option<String>,
    last4: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: i64,
    updated_at: i64,
    last_used_at: Option<i64>,
    validation: Option<String>,
    validation_message: Option<String>,
    validated_at: Option<i64>,
}

/// A credential with its sealed secret, as the vault reads it.
#[derive(Clone, Debug)]
pub struct StoredCredential {
    pub credential: Credential,
    pub sealed: Sealed,
}

/// A credential about to be stored (or to replace the user's current one
/// for that provider).
pub struct NewCredential {
    pub user_id: UserId,
    pub provider: ProviderName,
    pub label: Option<String>,
    pub last4: String,
    pub sealed: Sealed,
    pub validation: Option<Validation>,
    pub at: Timestamp,
}

/// A credential re-encrypted by a rotation: the new sealed value replaces
/// the old one only if the row still holds the old one.
pub struct Resealed {
    pub user_id: UserId,
    pub provider: ProviderName,
    pub old: Sealed,
    pub new: Sealed,
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(tollgate_domain::Invalid::new(message))
}

impl TryFrom<CredentialRow> for StoredCredential {
    type Error = StoreError;

    fn try_from(row: CredentialRow) -> Result<StoredCredential> {
        let user_id = UserId::parse(&row.user_id)?;
        let provider = ProviderName::parse(&row.provider)?;
        let nonce: [u8; NONCE_LEN] = row.nonce.as_slice().try_into().map_err(|_| {
            corrupt(format!("the credential {user_id}/{provider} has a nonce of {} bytes", row.nonce.len()))
        })?;
        let key_id = MasterKeyId::parse(&row.key_id)
            .map_err(|e| corrupt(format!("the credential {user_id}/{provider}: {e}")))?;
        let validation = match (row.validation, row.validated_at) {
            (Some(outcome), Some(at)) => Some(Validation {
                outcome: ValidationOutcome::parse(&outcome)?,
                checked_at: Timestamp::from_millis(at),
                message: row.validation_message.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(StoredCredential {
            credential: Credential {
                user_id,
                provider,
                label: row.label,
                last4: row.last4,
                created_at: Timestamp::from_millis(row.created_at),
                updated_at: Timestamp::from_millis(row.updated_at),
                last_used_at: row.last_used_at.map(Timestamp::from_millis),
                validation,
            },
            sealed: Sealed { key_id, nonce, ciphertext: row.ciphertext },
        })
    }
}

impl Store {
    /// Stores `new`, replacing the user's credential for that provider if
    /// there is one (its creation time stays; its last use is cleared).
    pub async fn put_credential(&self, new: &NewCredential, events: &[NewEvent]) -> Result<StoredCredential> {
        let q = concat!(
            "INSERT INTO credentials (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL, $9, $10, $11) \
             ON CONFLICT (user_id, provider) DO UPDATE SET label = excluded.label, last4 = excluded.last4, \
             key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at, last_used_at = NULL, validation = excluded.validation, \
             validation_message = excluded.validation_message, validated_at = excluded.validated_at \
             RETURNING ",
            columns!()
        );
        let v = new.validation.as_ref();
        let row: CredentialRow = on_pool!(self, p => async {
            let mut tx = p.begin().await?;
            let row = sqlx::query_as(q)
                .bind(new.user_id.as_str())
                .bind(new.provider.as_str())
                .bind(&new.label)
                .bind(&new.last4)
                .bind(new.sealed.key_id.as_str())
                .bind(new.sealed.nonce.as_slice())
                .bind(new.sealed.ciphertext.as_slice())
                .bind(new.at.millis())
                .bind(v.map(|v| v.outcome.as_str()))
                .bind(v.map(|v| v.message.as_str()))
                .bind(v.map(|v| v.checked_at.millis()))
                .fetch_one(&mut *tx)
                .await?;
            for event in events {
                insert_event!(&mut *tx, event).await?;
            }
            tx.commit().await.map(|()| row)
        }
        .await)
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::not_found(format!("no user {:?}", new.user_id.as_str()))
            }
            _ => StoreError::Database(e),
        })?;
        row.try_into()
    }

    /// The user's credential for `provider`, if any.
    pub async fn credential(&self, user: &UserId, provider: &ProviderName) -> Result<Option<StoredCredential>> {
        let q = concat!("SELECT ", columns!(), " FROM credentials WHERE user_id = $1 AND provider = $2");
        let row: Option<CredentialRow> = on_pool!(self, p => sqlx::query_as(q)
            .bind(user.as_str())
            .bind(provider.as_str())
            .fetch_optional(p)
            .await)?;
        row.map(StoredCredential::try_from).transpose()
    }

    /// A user's credentials, by provider.
    pub async fn credentials_of(&self, user: &UserId) -> Result<Vec<Credential>> {
        let q = concat!("SELECT ", columns!(), " FROM credentials WHERE user_id = $1 ORDER BY provider");
        let rows: Vec<CredentialRow> = on_pool!(self, p => sqlx::query_as(q).bind(user.as_str()).fetch_all(p).await)?;
        rows.into_iter().map(|r| StoredCredential::try_from(r).map(|s| s.credential)).collect()
    }

    /// Deletes the user's credential for `provider`; whether there was one.
    /// Deletes the user's credential for `provider`, writing `events` to the
    /// outbox in the same transaction when there was one; whether there was.
    pub async fn delete_credential(&self, user: &UserId, provider: &ProviderName, events: &[NewEvent]) -> Result<bool> {
        let q = "DELETE FROM credentials WHERE user_id = $1 AND provider = $2";
        let done = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let done = sqlx::query(q).bind(user.as_str()).bind(provider.as_str()).execute(&mut *tx).await?.rows_affected();
            if done > 0 {
                for event in events {
                    insert_event!(&mut *tx, event).await?;
                }
            }
            tx.commit().await.map(|()| done)
        })?;
        Ok(done > 0)
    }

    /// Writes last-use times gathered in memory, in one transaction. An
    /// older time never replaces a newer one.
    pub async fn record_credential_uses(&self, uses: &[(UserId, ProviderName, Timestamp)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let q = "UPDATE credentials SET last_used_at = $3 WHERE user_id = $1 AND provider = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $3)";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (user, provider, at) in uses {
                sqlx::query(q).bind(user.as_str()).bind(provider.as_str()).bind(at.millis()).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// The master key ids that stored credentials are sealed under.
    pub async fn credential_key_ids(&self) -> Result<Vec<String>> {
        let q = "SELECT DISTINCT key_id FROM credentials ORDER BY key_id";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).fetch_all(p).await)?)
    }

    /// Up to `limit` credentials sealed under `key_id`, to try opening.
    pub async fn credentials_sealed_with(&self, key_id: &str, limit: i64) -> Result<Vec<StoredCredential>> {
        let q =
            concat!("SELECT ", columns!(), " FROM credentials WHERE key_id = $1 ORDER BY user_id, provider LIMIT $2");
        let rows: Vec<CredentialRow> =
            on_pool!(self, p => sqlx::query_as(q).bind(key_id).bind(limit).fetch_all(p).await)?;
        rows.into_iter().map(StoredCredential::try_from).collect()
    }

    /// How many credentials are not sealed under `current`.
    pub async fn count_credentials_not_under(&self, current: &MasterKeyId) -> Result<i64> {
        let q = "SELECT COUNT(*) FROM credentials WHERE key_id <> $1";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).bind(current.as_str()).fetch_one(p).await)?)
    }

    /// The next `limit` credentials not sealed under `current`, in (user,
    /// provider) order after `after`: a rotation walks them in batches and
    /// a run that was interrupted starts again from the beginning, where
    /// only what is left remains.
    pub async fn credentials_not_under(
        &self,
        current: &MasterKeyId,
        after: Option<(&UserId, &ProviderName)>,
        limit: i64,
    ) -> Result<Vec<StoredCredential>> {
        let q = concat!(
            "SELECT ",
            columns!(),
            " FROM credentials WHERE key_id <> $1 AND (user_id > $2 OR (user_id = $2 AND provider > $3)) \
             ORDER BY user_id, provider LIMIT $4"
        );
        let (user, provider) = after.map(|(u, p)| (u.as_str(), p.as_str())).unwrap_or(("", ""));
        let rows: Vec<CredentialRow> = on_pool!(self, p => sqlx::query_as(q)
            .bind(current.as_str())
            .bind(user)
            .bind(provider)
            .bind(limit)
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(StoredCredential::try_from).collect()
    }

    /// Replaces sealed values in one transaction, each only where the row
    /// still holds the old one (a credential replaced or deleted meanwhile
    /// is left as it is). Says, for each, whether it was replaced.
    pub async fn reseal_credentials(&self, batch: &[Resealed]) -> Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let q = "UPDATE credentials SET key_id = $3, nonce = $4, ciphertext = $5 \
                 WHERE user_id = $1 AND provider = $2 AND key_id = $6 AND nonce = $7";
        let replaced = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let mut replaced = Vec::with_capacity(batch.len());
            for r in batch {
                let done = sqlx::query(q)
                    .bind(r.user_id.as_str())
                    .bind(r.provider.as_str())
                    .bind(r.new.key_id.as_str())
                    .bind(r.new.nonce.as_slice())
                    .bind(r.new.ciphertext.as_slice())
                    .bind(r.old.key_id.as_str())
                    .bind(r.old.nonce.as_slice())
                    .execute(&mut *tx)
                    .await?;
                replaced.push(done.rows_affected() == 1);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(replaced)
        })?;
        Ok(replaced)
    }
}
