//! Sessions of the web pages and the one-time portal links already used.
//! Only the SHA-256 of a session id is stored; the id itself lives in the
//! browser's cookie.

use tollgate_domain::{KeyHash, KeyId, Scopes, Timestamp, UserId};

use crate::{Result, Store, StoreError, on_pool};

/// Who a web session belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOwner {
    /// The operator, signed in at `/ui` with the admin token.
    Admin,
    /// One user, at `/portal`: through a one-time link (`key: None`) or with
    /// one of their gateway keys, whose validity the session then follows.
    User { id: UserId, key: Option<KeyId> },
}

#[derive(Clone, Debug)]
pub struct WebSession {
    pub id_hash: KeyHash,
    pub owner: SessionOwner,
    /// What the session may do, as a key's scopes would say.
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id_hash: String,
    kind: String,
    user_id: Option<String>,
    key_id: Option<String>,
    scopes: String,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<SessionRow> for WebSession {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> Result<WebSession> {
        let owner = match (row.kind.as_str(), row.user_id) {
            ("admin", _) => SessionOwner::Admin,
            (_, Some(id)) => SessionOwner::User {
                id: UserId::parse(&id)?,
                key: row.key_id.as_deref().map(KeyId::parse).transpose()?,
            },
            (kind, None) => {
                return Err(StoreError::Corrupt(tollgate_domain::Invalid::new(format!(
                    "a {kind} web session without a user"
                ))));
            }
        };
        Ok(WebSession {
            id_hash: KeyHash::from_stored(row.id_hash),
            owner,
            scopes: Scopes::from_stored(&row.scopes)?,
            created_at: Timestamp::from_millis(row.created_at),
            expires_at: Timestamp::from_millis(row.expires_at),
        })
    }
}

impl Store {
    /// Stores a new session, and forgets sessions that have expired.
    pub async fn insert_web_session(&self, s: &WebSession) -> Result<()> {
        let (kind, user, key) = match &s.owner {
            SessionOwner::Admin => ("admin", None, None),
            SessionOwner::User { id, key } => ("portal", Some(id.as_str()), key.as_ref().map(KeyId::as_str)),
        };
        let q = "INSERT INTO web_sessions (id_hash, kind, user_id, key_id, scopes, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_pool!(self, p => sqlx::query(q)
        .bind(s.id_hash.as_str())
        .bind(kind)
        .bind(user)
        .bind(key)
        .bind(s.scopes.to_stored())
        .bind(s.created_at.millis())
        .bind(s.expires_at.millis())
        .execute(p)
        .await
        .map(|_| ())
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::not_found(format!("no user {:?}", user.unwrap_or_default()))
            }
            _ => StoreError::unique_as("a session with this id exists")(e),
        }))?;
        let q = "DELETE FROM web_sessions WHERE expires_at <= $1";
        on_pool!(self, p => sqlx::query(q).bind(s.created_at.millis()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// The session with this id hash, unless it has expired by `now`.
    pub async fn web_session(&self, id_hash: &KeyHash, now: Timestamp) -> Result<Option<WebSession>> {
        let q = "SELECT id_hash, kind, user_id, key_id, scopes, created_at, expires_at FROM web_sessions \
                 WHERE id_hash = $1 AND expires_at > $2";
        let row: Option<SessionRow> =
            on_pool!(self, p => sqlx::query_as(q).bind(id_hash.as_str()).bind(now.millis()).fetch_optional(p).await)?;
        row.map(WebSession::try_from).transpose()
    }

    pub async fn delete_web_session(&self, id_hash: &KeyHash) -> Result<()> {
        let q = "DELETE FROM web_sessions WHERE id_hash = $1";
        on_pool!(self, p => sqlx::query(q).bind(id_hash.as_str()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Marks the one-time link `id` as used; `false` if it already was.
    /// Ids of links past their expiry are forgotten (they fail on expiry).
    pub async fn use_portal_link(&self, id: &str, now: Timestamp, expires_at: Timestamp) -> Result<bool> {
        let q = "DELETE FROM portal_links_used WHERE expires_at <= $1";
        on_pool!(self, p => sqlx::query(q).bind(now.millis()).execute(p).await.map(|_| ()))?;
        let q = "INSERT INTO portal_links_used (id, used_at, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING";
        let inserted = on_pool!(self, p => sqlx::query(q)
            .bind(id)
            .bind(now.millis())
            .bind(expires_at.millis())
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        Ok(inserted == 1)
    }
}
