//! A call's accounting: before it, a hold of the input (counted) plus its
//! output limit (the request's, or the plan's default output reservation)
//! on every limited meter, with the output limit lowered to what is left,
//! and a refusal without calling upstream when even the input does not
//! fit; the tokens-per-minute allowance. After it, one ledger event with the
//! provider's own usage (or an estimate, marked so), committed through the
//! metering writer in the same step that ends the hold.
//!
//! BYOK calls are recorded, not billable, and hold nothing unless the plan
//! counts them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_domain::usage::Amounts;
use tollgate_domain::{Meter, Timestamp, base62};
use tollgate_providers::{Encoding, LimitStyle, Request, StoredResponse, Usage};
use tollgate_store::{EventRow, PreparedEvent};

use super::refusal::{ProxyError, limited};
use crate::error::{ApiResult, LimitDetails};
use crate::handles::Handles;
use crate::metering::{Account, MeterState};
use crate::routes::RateWindows;
use crate::state::AppState;
use crate::vault::Source;

/// Who made a call and how, for its ledger event.
#[derive(Clone, Debug)]
pub struct CallInfo {
    pub key_id: Option<String>,
    pub route: &'static str,
    pub provider: String,
    pub model: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub source: Source,
    pub request_bytes: u64,
    pub started: Instant,
    pub at: Timestamp,
}

/// What a call holds until it is settled.
#[derive(Debug, Default)]
pub struct Held {
    /// The reservation on the quota, if the call counts and a meter is limited.
    pub reservation: Option<String>,
    /// Taken from the tokens-per-minute allowance: (who, tpm, tokens).
    pub tpm: Option<(String, i64, i64)>,
    /// Keeps the reservation from expiring while a long stream goes on;
    /// stops when the hold is settled or given up (dropped with it).
    keep_alive: Option<KeepAlive>,
}

#[derive(Debug)]
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Held {
    /// Keeps the reservation alive for as long as this is held: a stream
    /// may outlast the reservation TTL (which frees the holds of calls
    /// that died), and a hold that expired midway would let other calls
    /// take the room this one is spending. Renewed at once (the wait for
    /// the stream's first byte took some of the TTL), then every half TTL.
    pub fn keep_alive(&mut self, state: &AppState) {
        let Some(id) = self.reservation.clone() else { return };
        let metering = state.metering.clone();
        let every = metering.reservation_ttl() / 2;
        self.keep_alive = Some(KeepAlive(tokio::spawn(async move {
            loop {
                match metering.prolong(&id).await {
                    Ok(true) => {}
                    // Settled meanwhile (the task is stopped then, but may
                    // run once more), or expired before the stream began.
                    Ok(false) => return,
                    Err(e) => tracing::warn!(error = %e, "failed to prolong a streaming call's reservation"),
                }
                tokio::time::sleep(every).await;
            }
        })));
    }
}

/// The plan's per-minute request limit.
pub async fn take_request(state: &AppState, account: &Account) -> Result<(), ProxyError> {
    let Some(rpm) = account.plan.rpm else { return Ok(()) };
    state.rate_windows.take(account.user.id.as_str(), rpm, 1, Timestamp::now().millis()).await.map_err(|wait| {
        let retry = wait.div_ceil(1000).max(1);
        let details = LimitDetails {
            meter: "requests_per_minute".into(),
            limit: rpm,
            used: rpm,
            reset_at: Some(Timestamp::now().plus_seconds(retry as i64)),
        };
        let message =
            format!("more than {rpm} requests per minute for user {:?}; retry in {retry} s", account.user.id.as_str());
        limited(false, message, details, retry)
    })
}

/// Seconds until the account's period ends (an hour when it never does).
fn until_reset(account: &Account, now: Timestamp) -> (Option<Timestamp>, u64) {
    let end = account.period(now).end;
    let retry = end.map(|e| (e.unix_seconds() - now.unix_seconds()).max(1) as u64).unwrap_or(3600);
    (end, retry)
}

fn quota_refusal(account: &Account, meter: &Meter, state: &MeterState, needed: u64) -> ProxyError {
    let now = Timestamp::now();
    let (reset_at, retry) = until_reset(account, now);
    let limit = state.limit.unwrap_or(0);
    let message = format!(
        "quota exceeded: user {:?} has {} of {limit} {meter} left this period, and this request needs at least {needed}",
        account.user.id.as_str(),
        state.remaining().unwrap_or(0),
    );
    limited(true, message, LimitDetails { meter: meter.to_string(), limit, used: state.used, reset_at }, retry)
}

/// Holds what the call may spend, lowering the request's output limit to
/// what is left when that is less than it asks (or, asking nothing, than
/// the plan's default output reservation). `input` is the counted input.
pub async fn reserve(
    state: &AppState,
    account: &Account,
    request: &mut Request,
    input: u64,
    model: &str,
    style: LimitStyle,
) -> Result<Held, ProxyError> {
    let now = Timestamp::now();
    // Output tokens per choice at least, and at most as asked (embeddings: none).
    let (choices, asked) = if request.generates_output() {
        (request.choices(), request.max_output().unwrap_or(account.plan.default_output_reservation.max(1) as u64))
    } else {
        (0, 0)
    };
    // The least output per choice a call may be lowered to: the API's
    // minimum (below it the provider refuses the call), unless the client
    // asked for less itself.
    let least_output = request.least_output().min(asked).max(1);
    let [tokens, input_tokens, output_tokens, requests, cost] =
        [Meter::TOKENS, Meter::INPUT_TOKENS, Meter::OUTPUT_TOKENS, Meter::REQUESTS, Meter::COST_USD]
            .map(Meter::builtin);
    let limited_meter = |m: &Meter| account.limit(m, now).is_some();
    let mut held = Held::default();
    for attempt in 0..3 {
        // Room for output per choice, by what the token meters have left.
        let mut room: Option<u64> = None;
        for (meter, needs_input) in [(&tokens, true), (&input_tokens, true), (&output_tokens, false)] {
            if !limited_meter(meter) {
                continue;
            }
            let s = state.metering.state(account, meter, now).await?;
            let remaining = s.remaining().unwrap_or(0).max(0) as u64;
            let fixed = if needs_input { input } else { 0 };
            let least = fixed + if *meter == input_tokens { 0 } else { choices * least_output };
            if remaining < least {
                return Err(quota_refusal(account, meter, &s, least));
            }
            if *meter != input_tokens && choices > 0 {
                let r = (remaining - fixed) / choices;
                room = Some(room.map_or(r, |have| have.min(r)));
            }
        }
        let per_choice = room.map_or(asked, |r| r.min(asked));
        let output = per_choice * choices;
        let mut amounts: Vec<(Meter, i64)> = Vec::with_capacity(5);
        for (meter, amount) in
            [(&tokens, input + output), (&input_tokens, input), (&output_tokens, output), (&requests, 1)]
        {
            if limited_meter(meter) {
                amounts.push((meter.clone(), amount as i64));
            }
        }
        if limited_meter(&cost) {
            amounts.push((cost.clone(), state.metering.cost(Some(model), input as i64, 0, output as i64)));
        }
        let mut hold = HoldGuard { state, id: None };
        if !amounts.is_empty() {
            match state.metering.reserve(account, &amounts).await? {
                Ok(id) => hold.id = Some(id),
                // Another call took the room meanwhile: measure again.
                Err((meter, _)) if attempt < 2 && meter != requests && meter != cost => continue,
                Err((meter, s)) => {
                    let needed = amounts.iter().find(|(m, _)| *m == meter).map_or(0, |(_, n)| *n as u64);
                    return Err(quota_refusal(account, &meter, &s, needed));
                }
            }
        }
        // A request naming no limit is sent none while its reservation fits
        // (a limit the gateway made up could cut a reasoning model short, or
        // pass a small model's context): what it writes beyond the
        // reservation is settled, and the next call refused.
        if per_choice < asked {
            request.limit_output(per_choice, style);
        }
        if let Some(tpm) = account.plan.tpm {
            let who = RateWindows::tokens_of(account.user.id.as_str());
            // A call larger than a minute's allowance waits for a whole minute.
            let cost = ((input + output) as i64).min(tpm);
            if let Err(wait) = state.rate_windows.take(&who, tpm, cost, now.millis()).await {
                held.reservation = hold.id.take();
                release(state, &held).await;
                let retry = wait.div_ceil(1000).max(1);
                let details = LimitDetails {
                    meter: "tokens_per_minute".into(),
                    limit: tpm,
                    used: tpm,
                    reset_at: Some(Timestamp::now().plus_seconds(retry as i64)),
                };
                let message = format!(
                    "more than {tpm} tokens per minute for user {:?} (this call may use {}); retry in {retry} s",
                    account.user.id.as_str(),
                    input + output
                );
                return Err(limited(false, message, details, retry));
            }
            held.tpm = Some((who, tpm, cost));
        }
        held.reservation = hold.id.take();
        return Ok(held);
    }
    // Every path of the last attempt returns: a refusal is not retried then.
    unreachable!("the last attempt returns")
}

async fn release(state: &AppState, held: &Held) {
    if let Some(id) = &held.reservation
        && let Err(e) = state.metering.release(id).await
    {
        tracing::warn!(error = %e, "failed to release a reservation; it expires on its own");
    }
}

/// A hold not yet handed to the call's settlement: given back when
/// `reserve` ends without handing it over, by a refusal or because the
/// client went away while a shared rate window was asked.
struct HoldGuard<'a> {
    state: &'a AppState,
    id: Option<String>,
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let state = self.state.clone();
            tokio::spawn(async move {
                if let Err(e) = state.metering.release(&id).await {
                    tracing::warn!(error = %e, "failed to release a reservation; it expires on its own");
                }
            });
        }
    }
}

/// What a call spent.
#[derive(Clone, Debug)]
pub enum Spent {
    /// The provider's usage of the whole call.
    Reported(Usage),
    /// A call cut short (stream broken, client gone) or whose provider
    /// reported nothing: what the provider said so far, and the output
    /// tokens of the text that passed.
    Estimated { usage: Option<Usage>, output: u64 },
    /// Nothing: the provider refused or failed before it did any work.
    Nothing,
}

/// How a call ended, for its ledger event.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The status the client got (499 when it went away first).
    pub status: u16,
    /// Whether the provider answered 2xx (the call counts as a request).
    pub succeeded: bool,
    pub spent: Spent,
    pub first_byte: Option<Duration>,
    pub response_bytes: u64,
    /// The response as the provider stored it, to be fetched or built on
    /// by its maker only.
    pub stored: Option<StoredResponse>,
}

/// Everything needed to write a call's event once it ends.
pub struct Settlement {
    pub state: AppState,
    pub account: Arc<Account>,
    pub held: Held,
    pub info: CallInfo,
    pub input_estimate: u64,
    pub encoding: Encoding,
}

impl Settlement {
    /// The encoding the input was counted with, to count a cut stream's text.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Commits the call's event (which ends its hold); returns once it is
    /// durable. The event is queued to the writer before the first wait, so
    /// a caller that goes away meanwhile cannot leave the commit undone;
    /// when the writer's queue is full, the commit waits for room on a task
    /// of its own, for the same reason. (Not a task for every call: the
    /// commit would then often start on the other worker thread, and the
    /// answer wait for threads to wake each other.)
    pub async fn settle(self, outcome: Outcome) -> ApiResult<()> {
        let started = Instant::now();
        let settled = self.queue(&outcome).await;
        // The wait for the commit is part of every call's latency: shown apart.
        metrics::histogram!("tollgate_gateway_commit_seconds").record(started.elapsed().as_secs_f64());
        settled
    }

    /// For a call abandoned midway: its event is queued at once, and the
    /// rest waits on a task of its own.
    pub fn settle_later(self, outcome: Outcome) {
        let settled = self.queue(&outcome);
        tokio::spawn(async move {
            if let Err(e) = settled.await {
                tracing::error!(error = %e, "failed to record the usage of an abandoned call");
            }
        });
    }

    /// Queues the call's event with the writer before returning (so that
    /// the commit stands even if what awaits the rest is dropped); the rest
    /// waits for the commit and does what follows it. When the queue is
    /// full, a task of its own waits for room.
    fn queue(self, outcome: &Outcome) -> impl Future<Output = ApiResult<()>> + Send + 'static {
        let (event, used) = self.event(outcome);
        let queued = self.state.metering.try_record(vec![event], self.held.reservation.clone());
        async move {
            match queued {
                Ok(committed) => {
                    let committed = committed.await;
                    self.after(used, committed).await
                }
                Err(events) => tokio::spawn(self.record(events, used))
                    .await
                    .map_err(|e| crate::error::ApiError::Internal(anyhow::anyhow!("the settling task failed: {e}")))?,
            }
        }
    }

    /// Commits `events`, waiting for room in the writer's queue.
    async fn record(self, events: Vec<PreparedEvent>, used: i64) -> ApiResult<()> {
        let committed = self.state.metering.record(events, self.held.reservation.clone()).await;
        self.after(used, committed).await
    }

    /// What follows the commit: the tokens-per-minute allowance gets back
    /// what the call took beyond the `used` tokens, and a failed commit
    /// releases the hold. (A caller gone meanwhile can skip either; both
    /// only free early what expires on its own.)
    async fn after(&self, used: i64, committed: ApiResult<()>) -> ApiResult<()> {
        if let Some((who, tpm, taken)) = &self.held.tpm {
            self.state.rate_windows.give_back(who, *tpm, taken - used, Timestamp::now().millis()).await;
        }
        if committed.is_err() {
            release(&self.state, &self.held).await;
        }
        committed
    }

    /// The call's ledger event, and the tokens it used; counts the call in
    /// the gateway's metrics.
    fn event(&self, outcome: &Outcome) -> (PreparedEvent, i64) {
        let (usage, estimated) = match &outcome.spent {
            Spent::Reported(u) => (*u, false),
            Spent::Estimated { usage, output } => {
                let reported = usage.unwrap_or_default();
                let input = if reported.input > 0 { reported.input } else { self.input_estimate };
                (Usage { input, output: reported.output.max(*output), ..reported }, true)
            }
            Spent::Nothing => (Usage::default(), false),
        };
        let info = &self.info;
        let (input, output) = (usage.input as i64, usage.output as i64);
        let cached = usage.cached as i64;
        let cost = self.state.metering.cost(Some(&info.model), input, cached, output);
        let amounts = Amounts {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            reasoning_tokens: usage.reasoning as i64,
            requests: i64::from(outcome.succeeded),
            cost_micros: cost,
            ..Amounts::default()
        };
        let row = EventRow {
            // In time order, so that the ledger's index takes them at its end.
            id: format!("evt_{}", base62::time_ordered(info.at.millis(), 14)),
            user_id: self.account.user.id.to_string(),
            key_id: info.key_id.clone(),
            ts: info.at.millis(),
            route: Some(info.route.to_owned()),
            provider: Some(info.provider.clone()),
            model: Some(info.model.clone()),
            latency_ms: Some(info.started.elapsed().as_millis() as i64),
            ttft_ms: outcome.first_byte.map(|d| d.as_millis() as i64),
            status_code: Some(i64::from(outcome.status)),
            request_bytes: Some(info.request_bytes as i64),
            response_bytes: Some(outcome.response_bytes as i64),
            client_ip: info.client_ip.clone(),
            user_agent: info.user_agent.clone(),
            key_source: info.source.as_str().to_owned(),
            billable: info.source == Source::Platform,
            estimated,
            ..EventRow::default()
        };
        if let Some(first_byte) = outcome.first_byte {
            metrics::histogram!("tollgate_gateway_upstream_first_byte_seconds").record(first_byte.as_secs_f64());
        }
        let mut event = self.state.metering.prepare(&self.account, row, &amounts);
        // Anonymous demo callers share a user per address: theirs are nobody's.
        if let Some(stored) = outcome.stored.as_ref().filter(|_| info.key_id.is_some()) {
            event.response_id = Some(stored.id.clone());
            event.items = stored.items.clone();
        }
        let counted = ProviderMetrics::of(&info.provider);
        let calls = counted.calls.get(&outcome.status, || {
            metrics::counter!("tollgate_gateway_calls_total", "provider" => info.provider.clone(), "status" => outcome.status.to_string())
        });
        calls.increment(1);
        counted.input_tokens.increment(usage.input);
        counted.output_tokens.increment(usage.output);
        (event, input + output)
    }
}

/// The gateway's counters of one provider, registered once.
#[derive(Clone)]
struct ProviderMetrics {
    input_tokens: metrics::Counter,
    output_tokens: metrics::Counter,
    /// By the status of the call's answer.
    calls: Arc<Handles<u16, metrics::Counter>>,
}

impl ProviderMetrics {
    fn of(provider: &str) -> ProviderMetrics {
        static KEPT: Handles<String, ProviderMetrics> = Handles::new();
        KEPT.get(provider, || {
            let tokens = |kind: &'static str| {
                metrics::counter!("tollgate_gateway_tokens_total", "provider" => provider.to_owned(), "kind" => kind)
            };
            ProviderMetrics {
                input_tokens: tokens("input"),
                output_tokens: tokens("output"),
                calls: Arc::new(Handles::new()),
            }
        })
    }
}

/// Settles a call whose caller went away before it could (a client that
/// disconnected before the answer): estimated from the input alone.
pub struct Unsettled(pub Option<Settlement>);

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(settlement) = self.0.take() {
            let outcome = Outcome {
                status: 499,
                succeeded: false,
                spent: Spent::Estimated { usage: None, output: 0 },
                first_byte: None,
                response_bytes: 0,
                stored: None,
            };
            settlement.settle_later(outcome);
        }
    }
}

impl Unsettled {
    pub fn take(&mut self) -> Option<Settlement> {
        self.0.take()
    }
}
