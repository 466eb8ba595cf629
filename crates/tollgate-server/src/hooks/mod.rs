//! Telling the outside world: events go to the outbox (in the store, in
//! the transaction of the change they report: nothing is lost by a crash,
//! nothing sent for a change that did not happen), and one background task
//! per instance sends them.
//!
//! The sender dispatches new events into deliveries (one per subscribed
//! webhook endpoint, plus an e-mail to the user for usage alerts when SMTP
//! is configured), claims due deliveries with a lease, attempts each
//! (webhooks signed by the Standard Webhooks scheme; e-mails by SMTP), and
//! records every attempt. A failure is retried with exponential backoff and
//! jitter for a day; nothing is dropped before that. It wakes on a signal
//! (a commit that fired alerts, a change that wrote an event, a redelivery) and polls
//! every second for the rest (other instances' events, retries).
//!
//! It never logs a secret, a URL (which may hold a token) or a body.

pub mod email;
pub mod events;
pub mod sign;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tollgate_domain::Timestamp;
use tollgate_domain::hooks::{RETRY_WINDOW_MS, retry_delay_ms};
use tollgate_store::{AfterAttempt, Attempt, DueDelivery, Store};
use tollgate_vault::{Keyring, webhook_aad};

use self::sign::WebhookSecret;
use crate::config::HooksConfig;

/// Deliveries attempted at once by one instance.
const BATCH: i64 = 32;
/// Events dispatched per transaction.
const DISPATCH_BATCH: i64 = 200;
/// The longest wait between two looks at the outbox.
const POLL: Duration = Duration::from_secs(1);
/// The most of an answer's body kept with an attempt.
const RESPONSE_KEPT: usize = 1024;

pub struct Hooks {
    store: Arc<Store>,
    keyring: Keyring,
    config: HooksConfig,
    signal: Arc<Notify>,
    http: reqwest::Client,
    mailer: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    stopping: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Hooks {
    /// Starts the sender. `signal` wakes it (the metering engine's
    /// [`crate::metering::Metering::outbox_signal`]).
    pub fn start(
        store: Arc<Store>,
        keyring: Keyring,
        config: HooksConfig,
        signal: Arc<Notify>,
    ) -> anyhow::Result<Arc<Hooks>> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to build the HTTP client for webhooks")?;
        let mailer = match &config.smtp {
            Some(smtp) => {
                // The URL may hold a password: errors say which setting, not what it holds.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp.url.expose())
                    .map_err(|_| anyhow::anyhow!("TOLLGATE_SMTP_URL is not a usable SMTP URL"))?
                    .timeout(Some(config.timeout))
                    .build();
                Some((transport, smtp.from.clone()))
            }
            None => None,
        };
        let hooks = Arc::new(Hooks {
            store,
            keyring,
            config,
            signal,
            http,
            mailer,
            stopping: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(hooks.clone()));
        *hooks.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(hooks)
    }

    /// Wakes the sender (after a change it should act on at once).
    pub fn wake(&self) {
        self.signal.notify_one();
    }

    /// Lets the attempts in flight finish (within the webhook timeout), then
    /// stops. What is not sent stays in the outbox for the next start.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = task {
            let grace = self.config.timeout + Duration::from_secs(1);
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// How long a claim holds a delivery: longer than any attempt takes.
    fn lease_ms(&self) -> i64 {
        (self.config.timeout + Duration::from_secs(5)).as_millis() as i64
    }
}

async fn run(hooks: Arc<Hooks>) {
    // When the earliest retry this instance scheduled falls due.
    let mut next_retry: Option<Instant> = None;
    while !hooks.stopping.load(Ordering::SeqCst) {
        match round(&hooks).await {
            Ok((true, retry)) => {
                next_retry = earliest(next_retry, retry);
                continue;
            }
            Ok((false, retry)) => next_retry = earliest(next_retry, retry),
            Err(e) => tracing::warn!(error = %e, "failed to read the outbox; will retry"),
        }
        let wait = next_retry.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(POLL).min(POLL);
        let _ = tokio::time::timeout(wait, hooks.signal.notified()).await;
        if next_retry.is_some_and(|t| t <= Instant::now()) {
            next_retry = None;
        }
    }
    tracing::debug!("the outbox sender stopped");
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Dispatches new events and attempts the deliveries due. Says whether it
/// found work (then it runs again at once), and the earliest retry it
/// scheduled.
async fn round(hooks: &Hooks) -> anyhow::Result<(bool, Option<Instant>)> {
    let mut dispatched = 0;
    loop {
        let n = hooks
            .store
            .dispatch_events(Timestamp::now(), DISPATCH_BATCH, hooks.mailer.is_some(), RETRY_WINDOW_MS)
            .await?;
        dispatched += n;
        if (n as i64) < DISPATCH_BATCH {
            break;
        }
    }
    let due = hooks.store.claim_deliveries(Timestamp::now(), hooks.lease_ms(), BATCH).await?;
    let worked = dispatched > 0 || !due.is_empty();
    let retries = futures_util::future::join_all(due.iter().map(|d| attempt(hooks, d))).await;
    Ok((worked, retries.into_iter().flatten().min()))
}

/// One attempt at a delivery, recorded; returns when it is to be retried.
async fn attempt(hooks: &Hooks, delivery: &DueDelivery) -> Option<Instant> {
    let at = Timestamp::now();
    let started = Instant::now();
    let outcome = match delivery.kind.as_str() {
        "email" => send_email(hooks, delivery).await,
        _ => post_webhook(hooks, delivery).await,
    };
    let duration_ms = started.elapsed().as_millis() as i64;
    let (status_code, error, response) = match &outcome {
        Ok(sent) => (sent.status_code, None, sent.response.clone()),
        Err(failed) => (failed.status_code, Some(failed.error.clone()), failed.response.clone()),
    };
    let mut retry_at = None;
    let next = if outcome.is_ok() {
        AfterAttempt::Delivered
    } else {
        let failures = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
        let base = hooks.config.retry_base.as_millis() as u64;
        let delay = retry_delay_ms(failures, base, rand::random::<f64>());
        let when = Timestamp::from_millis(Timestamp::now().millis() + delay as i64);
        if when.millis() > delivery.retry_until {
            AfterAttempt::Failed
        } else {
            retry_at = Some(Instant::now() + Duration::from_millis(delay));
            AfterAttempt::RetryAt(when)
        }
    };
    let attempt = Attempt { at, duration_ms, status_code, error: error.clone(), response };
    let counted = match next {
        AfterAttempt::Delivered => "delivered",
        AfterAttempt::RetryAt(_) => "retrying",
        AfterAttempt::Failed => "failed",
    };
    metrics::counter!("tollgate_deliveries_total", "kind" => delivery.kind.clone(), "outcome" => counted).increment(1);
    if let Some(error) = &error {
        tracing::warn!(
            delivery = %delivery.id,
            event = %delivery.event_id,
            kind = %delivery.kind,
            attempt = delivery.attempts + 1,
            error = %error,
            outcome = counted,
            "a delivery attempt failed"
        );
    }
    if let Err(e) = hooks.store.record_attempt(delivery, &attempt, next).await {
        // The lease runs out and the delivery is tried again: at least once.
        tracing::error!(error = %e, delivery = %delivery.id, "failed to record a delivery attempt");
    }
    retry_at
}

struct Sent {
    status_code: Option<i64>,
    response: Option<String>,
}

struct Failed {
    status_code: Option<i64>,
    error: String,
    response: Option<String>,
}

fn failed(error: impl Into<String>) -> Failed {
    Failed { status_code: None, error: error.into(), response: None }
}

async fn post_webhook(hooks: &Hooks, delivery: &DueDelivery) -> Result<Sent, Failed> {
    let endpoint = delivery.endpoint.as_ref().ok_or_else(|| failed("the webhook endpoint is gone"))?;
    if !endpoint.webhook.enabled {
        return Err(failed("the webhook endpoint is disabled"));
    }
    let aad = webhook_aad(endpoint.webhook.id.as_str());
    let secret = hooks
        .keyring
        .open(&endpoint.sealed, &aad)
        .ok()
        .and_then(|plain| WebhookSecret::from_plaintext(&plain))
        .and_then(|s| s.key())
        .ok_or_else(|| failed("the endpoint's signing secret cannot be decrypted with the configured master keys"))?;
    let timestamp = Timestamp::now().unix_seconds();
    let signature = sign::sign(&secret, &delivery.event_id, timestamp, delivery.body.as_bytes());
    let sent = hooks
        .http
        .post(&endpoint.webhook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                "the endpoint did not answer in time"
            } else if e.is_connect() {
                "the connection to the endpoint failed"
            } else {
                "the request to the endpoint failed"
            };
            return Err(failed(why));
        }
    };
    let status = response.status();
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_KEPT {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_KEPT - kept.len())]),
            _ => break,
        }
    }
    let body = (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned());
    let code = Some(i64::from(status.as_u16()));
    if status.is_success() {
        Ok(Sent { status_code: code, response: body })
    } else {
        Err(Failed {
            status_code: code,
            error: format!("the endpoint answered HTTP {}", status.as_u16()),
            response: body,
        })
    }
}

async fn send_email(hooks: &Hooks, delivery: &DueDelivery) -> Result<Sent, Failed> {
    let (mailer, from) = hooks.mailer.as_ref().ok_or_else(|| failed("e-mail is not configured (TOLLGATE_SMTP_URL)"))?;
    let to: Mailbox = delivery
        .recipient
        .as_deref()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| failed("the user's e-mail address is not one SMTP accepts"))?;
    let (subject, text) =
        email::alert_text(&delivery.body).ok_or_else(|| failed("this event is not one that is e-mailed"))?;
    let message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{}@tollgate>", delivery.event_id)))
        .header(ContentType::TEXT_PLAIN)
        .body(text)
        .map_err(|e| failed(format!("the e-mail could not be built: {e}")))?;
    match mailer.send(message).await {
        Ok(answer) => Ok(Sent { status_code: Some(i64::from(u16::from(answer.code()))), response: None }),
        Err(e) => {
            let code = e.status().map(|c| i64::from(u16::from(c)));
            let why = if e.is_timeout() {
                "the SMTP server did not answer in time".to_owned()
            } else if e.is_permanent() || e.is_transient() {
                format!("the SMTP server refused the message ({})", code.unwrap_or_default())
            } else {
                "the SMTP connection failed".to_owned()
            };
            Err(Failed { status_code: code, error: why, response: None })
        }
    }
}

/// The JSON an event was sent with, for the admin API.
pub fn event_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}
