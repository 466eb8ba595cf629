//! Webhook endpoints (their signing secrets sealed, never plaintext), the
//! outbox of events, and deliveries with their attempts.
//!
//! An event is one outbox row holding its JSON body as it is sent. It is
//! written in the transaction of the change that caused it (for usage
//! alerts, the commit of the usage), so it is never lost nor sent for a
//! change that did not happen. Dispatching turns each event into one
//! delivery per subscribed endpoint (and an e-mail when asked); senders
//! claim due deliveries by moving their due time forward (a lease), so
//! that several instances never send the same delivery at once and a
//! crashed sender's claims come due again.

use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use tollgate_domain::hooks::{EndpointId, EventFilter, EventType, Webhook, delivery_id, event_id};
use tollgate_domain::{Invalid, Timestamp};
use tollgate_vault::{MasterKeyId, NONCE_LEN, Sealed};

use crate::{Result, Store, StoreError, on_pool};

/// An event about to be written to the outbox.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: String,
    pub kind: EventType,
    pub user_id: Option<String>,
    /// `{"type","timestamp","data"}`, exactly the bytes that are signed and sent.
    pub body: String,
    /// Whether the user is also told by e-mail (usage alerts).
    pub email_user: bool,
    pub at: Timestamp,
}

impl NewEvent {
    /// An event of `kind` about `user`, now, with `data`.
    pub fn new(kind: EventType, user: Option<&str>, data: Value) -> NewEvent {
        let at = Timestamp::now();
        let body = json!({ "type": kind.as_str(), "timestamp": at, "data": data }).to_string();
        NewEvent { id: event_id(), kind, user_id: user.map(str::to_owned), body, email_user: false, at }
    }

    pub fn emailed(mut self) -> NewEvent {
        self.email_user = true;
        self
    }
}

/// The outbox events that announce a change, made from what the change
/// stored (inside its transaction, so that they are written with it).
pub type Announce<'a, T> = &'a (dyn Fn(&T) -> Vec<NewEvent> + Send + Sync);

/// Writes `$event` (a `&NewEvent`) to the outbox through `$executor`.
macro_rules! insert_event {
    ($executor:expr, $event:expr) => {{
        let e: &$crate::hooks::NewEvent = $event;
        sqlx::query(
            "INSERT INTO outbox (id, type, user_id, body, email_user, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&e.id)
        .bind(e.kind.as_str())
        .bind(&e.user_id)
        .bind(&e.body)
        .bind(e.email_user)
        .bind(e.at.millis())
        .execute($executor)
    }};
}
pub(crate) use insert_event;

/// A webhook endpoint with its sealed secret, as the sender reads it.
#[derive(Clone, Debug)]
pub struct StoredWebhook {
    pub webhook: Webhook,
    pub sealed: Sealed,
}

/// Fields to change on an endpoint; `None` leaves one as it is.
#[derive(Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<EventFilter>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// An endpoint's secret re-encrypted by a rotation: replaces the old one
/// only if the row still holds it.
pub struct ResealedWebhook {
    pub id: EndpointId,
    pub old: Sealed,
    pub new: Sealed,
}

/// A delivery claimed for an attempt, with what it needs to be sent.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub user_id: Option<String>,
    pub body: String,
    /// `webhook` or `email`.
    pub kind: String,
    pub endpoint: Option<StoredWebhook>,
    pub recipient: Option<String>,
    /// Attempts made before this one.
    pub attempts: i64,
    pub retry_until: i64,
    pub manual: bool,
}

/// What became of one attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Timestamp,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// Where a delivery goes after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(Timestamp),
    /// Retries are over (a day passed).
    Failed,
}

impl AfterAttempt {
    fn status(self) -> &'static str {
        match self {
            AfterAttempt::Delivered => "delivered",
            AfterAttempt::RetryAt(_) => "pending",
            AfterAttempt::Failed => "failed",
        }
    }
}

/// A delivery as listed, with its attempts.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: Option<String>,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub retry_until: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response: Option<String>,
    pub manual: bool,
}

/// A claimed delivery joined with its event and endpoint.
#[derive(sqlx::FromRow)]
struct DueRow {
    id: String,
    event_id: String,
    event_type: String,
    user_id: Option<String>,
    body: String,
    kind: String,
    recipient: Option<String>,
    attempts: i64,
    retry_until: i64,
    manual: bool,
    w_id: Option<String>,
    url: Option<String>,
    events: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    key_id: Option<String>,
    nonce: Option<Vec<u8>>,
    ciphertext: Option<Vec<u8>>,
    w_created_at: Option<i64>,
    w_updated_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: String,
    url: String,
    events: String,
    description: Option<String>,
    enabled: bool,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: i64,
    updated_at: i64,
}

macro_rules! webhook_columns {
    () => {
        "id, url, events, description, enabled, key_id, nonce, ciphertext, created_at, updated_at"
    };
}

fn corrupt(message: String) -> StoreError {
    StoreError::Corrupt(Invalid::new(message))
}

impl TryFrom<WebhookRow> for StoredWebhook {
    type Error = StoreError;

    fn try_from(row: WebhookRow) -> Result<StoredWebhook> {
        let id = EndpointId::parse(&row.id)?;
        let nonce: [u8; NONCE_LEN] = row
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(format!("the webhook {id} has a nonce of {} bytes", row.nonce.len())))?;
        let key_id = MasterKeyId::parse(&row.key_id).map_err(|e| corrupt(format!("the webhook {id}: {e}")))?;
        Ok(StoredWebhook {
            webhook: Webhook {
                id,
                url: row.url,
                events: EventFilter::from_stored(&row.events)?,
                description: row.description,
                enabled: row.enabled,
                created_at: Timestamp::from_millis(row.created_at),
                updated_at: Timestamp::from_millis(row.updated_at),
            },
            sealed: Sealed { key_id, nonce, ciphertext: row.ciphertext },
        })
    }
}

fn webhook_not_found(id: &EndpointId) -> StoreError {
    StoreError::not_found(format!("no webhook endpoint {:?}", id.as_str()))
}

/// `$1, $2, …, $n` after `offset` placeholders.
fn numbered(n: usize, offset: usize) -> String {
    (1..=n).map(|i| format!("${}", i + offset)).collect::<Vec<_>>().join(", ")
}

impl Store {
    pub async fn insert_webhook(&self, webhook: &Webhook, sealed: &Sealed) -> Result<()> {
        let q = concat!(
            "INSERT INTO webhook_endpoints (",
            webhook_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        on_pool!(self, p => sqlx::query(q)
            .bind(webhook.id.as_str())
            .bind(&webhook.url)
            .bind(webhook.events.to_stored())
            .bind(&webhook.description)
            .bind(webhook.enabled)
            .bind(sealed.key_id.as_str())
            .bind(sealed.nonce.as_slice())
            .bind(sealed.ciphertext.as_slice())
            .bind(webhook.created_at.millis())
            .bind(webhook.updated_at.millis())
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn webhook(&self, id: &EndpointId) -> Result<StoredWebhook> {
        let q = concat!("SELECT ", webhook_columns!(), " FROM webhook_endpoints WHERE id = $1");
        let row: Option<WebhookRow> = on_pool!(self, p => sqlx::query_as(q).bind(id.as_str()).fetch_optional(p).await)?;
        row.ok_or_else(|| webhook_not_found(id))?.try_into()
    }

    /// Every endpoint, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let q = concat!("SELECT ", webhook_columns!(), " FROM webhook_endpoints ORDER BY created_at, id");
        let rows: Vec<WebhookRow> = on_pool!(self, p => sqlx::query_as(q).fetch_all(p).await)?;
        rows.into_iter().map(|r| StoredWebhook::try_from(r).map(|s| s.webhook)).collect()
    }

    pub async fn update_webhook(&self, id: &EndpointId, patch: WebhookPatch) -> Result<Webhook> {
        let mut webhook = self.webhook(id).await?.webhook;
        webhook.url = patch.url.unwrap_or(webhook.url);
        webhook.events = patch.events.unwrap_or(webhook.events);
        if let Some(description) = patch.description {
            webhook.description = description;
        }
        webhook.enabled = patch.enabled.unwrap_or(webhook.enabled);
        webhook.updated_at = Timestamp::now();
        let q = "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5, updated_at = $6 \
                 WHERE id = $1";
        let done = on_pool!(self, p => sqlx::query(q)
            .bind(id.as_str())
            .bind(&webhook.url)
            .bind(webhook.events.to_stored())
            .bind(&webhook.description)
            .bind(webhook.enabled)
            .bind(webhook.updated_at.millis())
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(webhook_not_found(id));
        }
        Ok(webhook)
    }

    /// Deletes an endpoint and, with it, its deliveries.
    pub async fn delete_webhook(&self, id: &EndpointId) -> Result<()> {
        let done = on_pool!(self, p => sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id.as_str())
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(webhook_not_found(id));
        }
        Ok(())
    }

    /// The master key ids that endpoints' secrets are sealed under.
    pub async fn webhook_key_ids(&self) -> Result<Vec<String>> {
        let q = "SELECT DISTINCT key_id FROM webhook_endpoints ORDER BY key_id";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).fetch_all(p).await)?)
    }

    /// Up to `limit` endpoints whose secret is sealed under `key_id`.
    pub async fn webhooks_sealed_with(&self, key_id: &str, limit: i64) -> Result<Vec<StoredWebhook>> {
        let q =
            concat!("SELECT ", webhook_columns!(), " FROM webhook_endpoints WHERE key_id = $1 ORDER BY id LIMIT $2");
        let rows: Vec<WebhookRow> = on_pool!(self, p => sqlx::query_as(q).bind(key_id).bind(limit).fetch_all(p).await)?;
        rows.into_iter().map(StoredWebhook::try_from).collect()
    }

    pub async fn count_webhooks_not_under(&self, current: &MasterKeyId) -> Result<i64> {
        let q = "SELECT COUNT(*) FROM webhook_endpoints WHERE key_id <> $1";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).bind(current.as_str()).fetch_one(p).await)?)
    }

    /// The next `limit` endpoints whose secret is not sealed under
    /// `current`, in id order after `after`.
    pub async fn webhooks_not_under(
        &self,
        current: &MasterKeyId,
        after: Option<&EndpointId>,
        limit: i64,
    ) -> Result<Vec<StoredWebhook>> {
        let q = concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhook_endpoints WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let rows: Vec<WebhookRow> = on_pool!(self, p => sqlx::query_as(q)
            .bind(current.as_str())
            .bind(after.map(EndpointId::as_str).unwrap_or(""))
            .bind(limit)
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(StoredWebhook::try_from).collect()
    }

    /// Replaces sealed secrets in one transaction, each only where the row
    /// still holds the old one. Says, for each, whether it was replaced.
    pub async fn reseal_webhooks(&self, batch: &[ResealedWebhook]) -> Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let q = "UPDATE webhook_endpoints SET key_id = $2, nonce = $3, ciphertext = $4 \
                 WHERE id = $1 AND key_id = $5 AND nonce = $6";
        let replaced = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let mut replaced = Vec::with_capacity(batch.len());
            for r in batch {
                let done = sqlx::query(q)
                    .bind(r.id.as_str())
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

    /// Makes the deliveries of up to `limit` events not yet dispatched, in
    /// one transaction: one per enabled endpoint that wants the event and
    /// existed when it happened, and, with `email` and when the event asks
    /// for it, one to the user's e-mail address. Returns how many events.
    pub async fn dispatch_events(
        &self,
        now: Timestamp,
        limit: i64,
        email: bool,
        retry_window_ms: i64,
    ) -> Result<usize> {
        let claim = if self.backend() == "postgres" {
            "UPDATE outbox SET dispatched_at = $1 WHERE dispatched_at IS NULL AND id IN \
             (SELECT id FROM outbox WHERE dispatched_at IS NULL ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id, type, user_id, email_user, created_at"
        } else {
            "UPDATE outbox SET dispatched_at = $1 WHERE dispatched_at IS NULL AND id IN \
             (SELECT id FROM outbox WHERE dispatched_at IS NULL ORDER BY created_at LIMIT $2) \
             RETURNING id, type, user_id, email_user, created_at"
        };
        let endpoints_q = concat!("SELECT ", webhook_columns!(), " FROM webhook_endpoints WHERE enabled = TRUE");
        let insert = "INSERT INTO deliveries (id, event_id, endpoint_id, kind, recipient, status, attempts, \
                      next_attempt_at, retry_until, created_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $6, $6)";
        let now = now.millis();
        let count = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let events: Vec<(String, String, Option<String>, bool, i64)> =
                sqlx::query_as(claim).bind(now).bind(limit).fetch_all(&mut *tx).await?;
            let endpoints: Vec<WebhookRow> = if events.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(endpoints_q).fetch_all(&mut *tx).await?
            };
            for (id, kind, user, email_user, created_at) in &events {
                let Ok(kind) = EventType::parse(kind) else {
                    tracing::warn!(event = %id, kind = %kind, "an outbox event of an unknown type is not sent");
                    continue;
                };
                for endpoint in &endpoints {
                    let wanted = EventFilter::from_stored(&endpoint.events).is_ok_and(|f| f.wants(kind));
                    if wanted && endpoint.created_at <= *created_at {
                        sqlx::query(insert)
                            .bind(delivery_id())
                            .bind(id)
                            .bind(&endpoint.id)
                            .bind("webhook")
                            .bind(None::<String>)
                            .bind(now)
                            .bind(now + retry_window_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if let (true, true, Some(user)) = (email, *email_user, user) {
                    let address: Option<Option<String>> = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
                        .bind(user)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(address) = address.flatten() {
                        sqlx::query(insert)
                            .bind(delivery_id())
                            .bind(id)
                            .bind(None::<String>)
                            .bind("email")
                            .bind(address)
                            .bind(now)
                            .bind(now + retry_window_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(events.len())
        })?;
        Ok(count)
    }

    /// Claims up to `limit` deliveries due at `now` for `lease_ms`: no
    /// other claim takes them until then (or until their attempt is
    /// recorded).
    pub async fn claim_deliveries(&self, now: Timestamp, lease_ms: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let claim = if self.backend() == "postgres" {
            "UPDATE deliveries SET next_attempt_at = $2 WHERE status = 'pending' AND next_attempt_at <= $1 AND id IN \
             (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
              ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id"
        } else {
            "UPDATE deliveries SET next_attempt_at = $2 WHERE status = 'pending' AND next_attempt_at <= $1 AND id IN \
             (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
              ORDER BY next_attempt_at LIMIT $3) RETURNING id"
        };
        let now = now.millis();
        let ids: Vec<String> = on_pool!(self, p => sqlx::query_scalar(claim)
            .bind(now)
            .bind(now + lease_ms)
            .bind(limit)
            .fetch_all(p)
            .await)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT d.id, d.event_id, o.type AS event_type, o.user_id, o.body, d.kind, d.recipient, d.attempts, d.retry_until, \
             d.manual, w.id AS w_id, w.url, w.events, w.description, w.enabled, w.key_id, w.nonce, w.ciphertext, \
             w.created_at AS w_created_at, w.updated_at AS w_updated_at \
             FROM deliveries d JOIN outbox o ON o.id = d.event_id \
             LEFT JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE d.id IN ({})",
            numbered(ids.len(), 0)
        );
        let rows: Vec<DueRow> = on_pool!(self, p => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            for id in &ids {
                q = q.bind(id);
            }
            q.fetch_all(p).await
        })?;
        let mut due = Vec::with_capacity(rows.len());
        for r in rows {
            let endpoint = match (r.w_id, r.url, r.events, r.enabled, r.key_id, r.nonce, r.ciphertext) {
                (Some(id), Some(url), Some(events), Some(enabled), Some(key_id), Some(nonce), Some(ciphertext)) => {
                    Some(StoredWebhook::try_from(WebhookRow {
                        id,
                        url,
                        events,
                        description: r.description,
                        enabled,
                        key_id,
                        nonce,
                        ciphertext,
                        created_at: r.w_created_at.unwrap_or_default(),
                        updated_at: r.w_updated_at.unwrap_or_default(),
                    })?)
                }
                _ => None,
            };
            due.push(DueDelivery {
                id: r.id,
                event_id: r.event_id,
                event_type: r.event_type,
                user_id: r.user_id,
                body: r.body,
                kind: r.kind,
                recipient: r.recipient,
                attempts: r.attempts,
                retry_until: r.retry_until,
                manual: r.manual,
                endpoint,
            });
        }
        Ok(due)
    }

    /// Records an attempt and where the delivery goes next, in one
    /// transaction.
    pub async fn record_attempt(&self, delivery: &DueDelivery, attempt: &Attempt, next: AfterAttempt) -> Result<()> {
        let insert = "INSERT INTO delivery_attempts (delivery_id, at, duration_ms, status_code, error, response, manual) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let update = "UPDATE deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3, \
                      manual = FALSE, updated_at = $4 WHERE id = $1";
        let next_at = match next {
            AfterAttempt::RetryAt(t) => t.millis(),
            _ => attempt.at.millis(),
        };
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(insert)
                .bind(&delivery.id)
                .bind(attempt.at.millis())
                .bind(attempt.duration_ms)
                .bind(attempt.status_code)
                .bind(&attempt.error)
                .bind(&attempt.response)
                .bind(delivery.manual)
                .execute(&mut *tx)
                .await?;
            sqlx::query(update)
                .bind(&delivery.id)
                .bind(next.status())
                .bind(next_at)
                .bind(Timestamp::now().millis())
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// An endpoint's deliveries, newest first, after the delivery `before`
    /// (a cursor), optionally of one status; at most `limit`.
    pub async fn deliveries_of(
        &self,
        endpoint: &EndpointId,
        status: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        let q = "SELECT d.id, d.event_id, o.type AS event_type, d.endpoint_id, d.kind, d.status, d.attempts, \
                 d.next_attempt_at, d.retry_until, d.created_at, d.updated_at \
                 FROM deliveries d JOIN outbox o ON o.id = d.event_id \
                 WHERE d.endpoint_id = $1 AND ($2 IS NULL OR d.status = $2) \
                 AND ($3 IS NULL OR d.created_at < (SELECT created_at FROM deliveries WHERE id = $3) \
                      OR (d.created_at = (SELECT created_at FROM deliveries WHERE id = $3) AND d.id < $3)) \
                 ORDER BY d.created_at DESC, d.id DESC LIMIT $4";
        Ok(on_pool!(self, p => sqlx::query_as(q)
            .bind(endpoint.as_str())
            .bind(status)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }

    /// One of an endpoint's deliveries, with the event's body.
    pub async fn delivery_of(&self, endpoint: &EndpointId, id: &str) -> Result<(DeliveryRow, String)> {
        let q = "SELECT d.id, d.event_id, o.type AS event_type, d.endpoint_id, d.kind, d.status, d.attempts, \
                 d.next_attempt_at, d.retry_until, d.created_at, d.updated_at \
                 FROM deliveries d JOIN outbox o ON o.id = d.event_id WHERE d.endpoint_id = $1 AND d.id = $2";
        let row: Option<DeliveryRow> =
            on_pool!(self, p => sqlx::query_as(q).bind(endpoint.as_str()).bind(id).fetch_optional(p).await)?;
        let row = row.ok_or_else(|| StoreError::not_found(format!("no delivery {id:?} of webhook {endpoint}")))?;
        let body: String = on_pool!(self, p => sqlx::query_scalar("SELECT body FROM outbox WHERE id = $1")
            .bind(&row.event_id)
            .fetch_one(p)
            .await)?;
        Ok((row, body))
    }

    /// The attempts at these deliveries, oldest first.
    pub async fn attempts_of(&self, deliveries: &[String]) -> Result<Vec<AttemptRow>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT delivery_id, at, duration_ms, status_code, error, response, manual FROM delivery_attempts \
             WHERE delivery_id IN ({}) ORDER BY id",
            numbered(deliveries.len(), 0)
        );
        Ok(on_pool!(self, p => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            for id in deliveries {
                q = q.bind(id);
            }
            q.fetch_all(p).await
        })?)
    }

    /// Makes a delivery of `endpoint` due now again, whatever became of it,
    /// with a new day of retries; its next attempt is marked manual.
    pub async fn redeliver(&self, endpoint: &EndpointId, id: &str, now: Timestamp, retry_window_ms: i64) -> Result<()> {
        let q = "UPDATE deliveries SET status = 'pending', next_attempt_at = $3, retry_until = $4, manual = TRUE, \
                 updated_at = $3 WHERE endpoint_id = $1 AND id = $2";
        let done = on_pool!(self, p => sqlx::query(q)
            .bind(endpoint.as_str())
            .bind(id)
            .bind(now.millis())
            .bind(now.millis() + retry_window_ms)
            .execute(p)
            .await
            .map(|d| d.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::not_found(format!("no delivery {id:?} of webhook {endpoint}")));
        }
        Ok(())
    }

    /// Deletes events older than `before` (ms) whose deliveries are all
    /// over (delivered or failed), with their deliveries and attempts.
    pub async fn prune_outbox(&self, before: i64) -> Result<u64> {
        let q = "DELETE FROM outbox WHERE dispatched_at IS NOT NULL AND created_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.id AND d.status = 'pending')";
        Ok(on_pool!(self, p => sqlx::query(q).bind(before).execute(p).await.map(|d| d.rows_affected()))?)
    }
}
