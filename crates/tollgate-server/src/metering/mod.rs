//! The metering engine: every unit of usage recorded once and durably,
//! every quota enforced exactly. Used by the metering API (sidecar mode),
//! the usage routes, and later the gateway.
//!
//! * Committed usage lives in the store (ledger, counters); live counters
//!   and reservations in a [`CounterStore`].
//! * Writes go through one writer task ([`writer`]) that group-commits;
//!   with the embedded store, the gateway's usage is made durable in a
//!   journal ([`journal`]) and committed to the ledger behind.
//! * A reservation is granted only if `used + reserved + amount <= limit`,
//!   decided under one lock, so concurrent callers never get more than the
//!   limit between them.

mod alerts;
mod counters;
mod journal;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tollgate_domain::model::{Grant, Plan, User};
use tollgate_domain::period::{Period, PeriodMemo};
use tollgate_domain::pricing::{Price, PriceTable};
use tollgate_domain::quota::{Ask, CounterKey, Refusal};
use tollgate_domain::usage::Amounts;
use tollgate_domain::{Meter, Timestamp, UserId, base62};
use tollgate_store::{EventRow, PreparedEvent, Store, StoreError};

pub use counters::{CounterResult, CounterStore, MemoryCounters, NotLoaded, Parts};
pub use journal::{FULL as JOURNAL_FULL, Journal};
use writer::{Job, Progress, Writer};

use crate::error::{ApiError, ApiResult};

/// A user as quotas see them: with their plan and grants.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: User,
    pub plan: Plan,
    pub grants: Vec<Grant>,
    /// The period last asked for (a call asks several times).
    periods: PeriodMemo,
}

impl Account {
    pub fn new(user: User, plan: Plan, grants: Vec<Grant>) -> Account {
        Account { user, plan, grants, periods: PeriodMemo::default() }
    }

    pub fn period(&self, t: Timestamp) -> Period {
        self.periods.containing(self.user.period_rule(&self.plan), t)
    }

    /// The limit of `meter` at `t`: the plan's (or the user's override)
    /// plus active grants; `None` is unlimited.
    pub fn limit(&self, meter: &Meter, t: Timestamp) -> Option<i64> {
        let base = self.user.base_limit(&self.plan, meter)?;
        let granted: i64 = self.grants.iter().filter(|g| &g.meter == meter && g.active_at(t)).map(|g| g.amount).sum();
        Some(base.saturating_add(granted))
    }

    /// Meters with a limit at `t`.
    pub fn limited_meters(&self, t: Timestamp) -> Vec<Meter> {
        let mut meters = self.named_meters();
        meters.retain(|m| self.limit(m, t).is_some());
        meters
    }

    /// The meters a usage report shows even unused: those the plan or the
    /// user's overrides name (`null`, unlimited, included) and `tokens`.
    pub fn named_meters(&self) -> Vec<Meter> {
        let mut meters: Vec<Meter> = self.plan.limits.iter().map(|(m, _)| m.clone()).collect();
        if let Some(overrides) = &self.user.limit_overrides {
            meters.extend(overrides.iter().map(|(m, _)| m.clone()));
        }
        meters.push(Meter::builtin(Meter::TOKENS));
        meters.sort();
        meters.dedup();
        meters
    }

    pub fn key(&self, meter: &Meter, t: Timestamp) -> CounterKey {
        CounterKey {
            user: self.user.id.to_string(),
            meter: meter.to_string(),
            period_start: self.period(t).start.millis(),
        }
    }

    /// Whether usage from this key source counts toward quota.
    pub fn counts(&self, byok: bool) -> bool {
        !byok || self.plan.byok_counts
    }
}

/// One meter's state in the current period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterState {
    pub limit: Option<i64>,
    pub used: i64,
    pub reserved: i64,
}

impl MeterState {
    pub fn remaining(&self) -> Option<i64> {
        self.limit.map(|l| l.saturating_sub(self.used).saturating_sub(self.reserved).max(0))
    }
}

/// The answer to a quota check.
#[derive(Clone, Debug)]
pub struct CheckOutcome {
    pub allowed: bool,
    pub state: MeterState,
    pub period: Period,
    pub reservation_id: Option<String>,
}

/// User ids of anonymous demo traffic: `anon:` and the client address.
pub const ANONYMOUS_PREFIX: &str = "anon:";

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct MeteringConfig {
    pub account_ttl: Duration,
    pub reservation_ttl: Duration,
}

pub struct Metering {
    store: Arc<Store>,
    counters: Arc<dyn CounterStore>,
    writer: RwLock<Option<mpsc::Sender<Job>>>,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    /// The journal's progress, when there is one.
    journal: Option<Progress>,
    accounts: Arc<Accounts>,
    prices: RwLock<PriceTable>,
    config: MeteringConfig,
    /// Told when a commit wrote alerts to the outbox.
    outbox_signal: Arc<Notify>,
}

/// Users with plan and grants, cached for the account TTL; shared by the
/// engine and the writer (which judges alert thresholds against them).
pub(crate) struct Accounts {
    store: Arc<Store>,
    cache: Mutex<HashMap<UserId, (Instant, Arc<Account>)>>,
    ttl: Duration,
}

impl Accounts {
    fn cached(&self, id: &UserId) -> Option<Arc<Account>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(id).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, a)| a.clone())
    }

    fn insert(&self, id: UserId, account: Arc<Account>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 100_000 {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), account));
    }

    /// The user with plan and grants, from the cache while fresh.
    pub(crate) async fn get(&self, id: &UserId) -> ApiResult<Arc<Account>> {
        if let Some(account) = self.cached(id) {
            return Ok(account);
        }
        let user = match self.store.user(id).await {
            Ok(user) => user,
            Err(StoreError::NotFound(m)) => return Err(ApiError::NotFound(m)),
            Err(e) => return Err(e.into()),
        };
        let plan = self.store.plan(&user.plan).await?;
        let grants = self.store.grants_of(id).await?;
        let account = Arc::new(Account::new(user, plan, grants));
        self.insert(id.clone(), account.clone());
        Ok(account)
    }

    fn invalidate(&self, user: Option<&UserId>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match user {
            Some(id) => {
                cache.remove(id);
            }
            None => cache.clear(),
        }
    }
}

/// Jobs waiting for the writer at most; past them, a commit waits for room.
const QUEUE: usize = 65_536;

/// The writer's answer to a commit: which events were new.
async fn answered(answer: oneshot::Receiver<Result<Vec<bool>, String>>) -> ApiResult<Vec<bool>> {
    answer.await.map_err(|_| stopped())?.map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))
}

fn no_reservation(id: &str) -> ApiError {
    ApiError::NotFound(format!("no reservation {id:?}: it was settled, released or expired"))
}

fn stopped() -> ApiError {
    ApiError::Internal(anyhow::anyhow!("the metering writer has stopped"))
}

impl Metering {
    /// Starts the writer, with live counters in this process's memory;
    /// prices are the built-in ones with `overrides`.
    pub fn start(store: Arc<Store>, config: MeteringConfig, overrides: Vec<(String, Price)>) -> Arc<Metering> {
        Metering::start_with(store, Arc::new(MemoryCounters::default()), config, overrides)
    }

    /// Starts the writer with the given live counters (shared ones, for
    /// several instances).
    pub fn start_with(
        store: Arc<Store>,
        counters: Arc<dyn CounterStore>,
        config: MeteringConfig,
        overrides: Vec<(String, Price)>,
    ) -> Arc<Metering> {
        let (mut metering, writer, jobs) = Metering::unstarted(store, counters, config, overrides, QUEUE);
        metering.writer_task = Mutex::new(Some(writer::start(writer, jobs)));
        Arc::new(metering)
    }

    /// Starts the writer with the usage journal at `path` (the embedded
    /// store's): what a previous run left in it is committed first. When
    /// another process holds the journal (a second server on the same
    /// database), this one commits straight to the ledger.
    pub async fn start_journaled(
        store: Arc<Store>,
        counters: Arc<dyn CounterStore>,
        config: MeteringConfig,
        overrides: Vec<(String, Price)>,
        path: &std::path::Path,
        sync: bool,
        full: u64,
    ) -> anyhow::Result<Arc<Metering>> {
        let opened = Journal::open(path, sync, full)
            .map_err(|e| anyhow::anyhow!("failed to open the usage journal at {}: {e}", path.display()))?;
        let Some((journal, left)) = opened else {
            tracing::warn!(
                path = %path.display(),
                "another process holds the usage journal of this database: usage is committed to the ledger directly"
            );
            return Ok(Metering::start_with(store, counters, config, overrides));
        };
        let (mut metering, writer, jobs) = Metering::unstarted(store, counters, config, overrides, QUEUE);
        let (task, progress) = writer::start_journaled(writer, journal, left, jobs).await?;
        metering.writer_task = Mutex::new(Some(task));
        metering.journal = Some(progress);
        Ok(Arc::new(metering))
    }

    /// The engine, and the writer to start for it with its queue of
    /// `queue` jobs.
    fn unstarted(
        store: Arc<Store>,
        counters: Arc<dyn CounterStore>,
        config: MeteringConfig,
        overrides: Vec<(String, Price)>,
        queue: usize,
    ) -> (Metering, Writer, mpsc::Receiver<Job>) {
        let accounts =
            Arc::new(Accounts { store: store.clone(), cache: Mutex::new(HashMap::new()), ttl: config.account_ttl });
        let outbox_signal = Arc::new(Notify::new());
        let writer = Writer {
            store: store.clone(),
            counters: counters.clone(),
            accounts: accounts.clone(),
            outbox_signal: outbox_signal.clone(),
        };
        let (tx, rx) = mpsc::channel(queue);
        let mut prices = PriceTable::default();
        for (model, price) in overrides {
            prices.set(&model, price);
        }
        let metering = Metering {
            store,
            counters,
            writer: RwLock::new(Some(tx)),
            writer_task: Mutex::new(None),
            journal: None,
            accounts,
            prices: RwLock::new(prices),
            config,
            outbox_signal,
        };
        (metering, writer, rx)
    }

    /// Returns once the ledger holds all usage acknowledged before the
    /// call (at once without a journal): for reads of the ledger.
    pub async fn caught_up(&self) {
        if let Some(progress) = &self.journal {
            progress.caught_up().await;
        }
    }

    /// Notified whenever a commit writes usage alerts to the outbox, so
    /// that their sender need not wait for its next poll.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_signal.clone()
    }

    /// Lets the writer commit what is queued, then stops it.
    pub async fn shutdown(&self) {
        self.writer.write().unwrap_or_else(|p| p.into_inner()).take();
        let task = self.writer_task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The writer's queue, unless the writer has stopped.
    fn writer(&self) -> ApiResult<mpsc::Sender<Job>> {
        self.writer.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(stopped)
    }

    async fn send(&self, job: Job) -> ApiResult<()> {
        self.writer()?.send(job).await.map_err(|_| stopped())
    }

    /// Drops cached accounts (all, or one user's) after a change to users,
    /// plans or grants.
    pub fn invalidate(&self, user: Option<&UserId>) {
        self.accounts.invalidate(user);
    }

    /// The user with plan and grants; cached for the account TTL.
    pub async fn account(&self, id: &UserId) -> ApiResult<Arc<Account>> {
        self.accounts.get(id).await
    }

    /// The account of anonymous traffic from `ip`, on the demo plan. It has
    /// no row in the users table; its periods run by the calendar month.
    pub async fn anonymous_account(
        &self,
        ip: std::net::IpAddr,
        plan: &tollgate_domain::PlanSlug,
    ) -> ApiResult<Arc<Account>> {
        let id =
            UserId::parse(&format!("{ANONYMOUS_PREFIX}{ip}")).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
        if let Some(account) = self.accounts.cached(&id) {
            return Ok(account);
        }
        let plan = self.store.plan(plan).await?;
        let epoch = Timestamp::from_millis(0);
        let user = User {
            id: id.clone(),
            plan: plan.slug.clone(),
            status: tollgate_domain::model::UserStatus::Active,
            email: None,
            stripe_customer_id: None,
            billing_anchor: epoch,
            usage_reset_at: None,
            limit_overrides: None,
            created_at: epoch,
            updated_at: epoch,
        };
        let account = Arc::new(Account::new(user, plan, Vec::new()));
        self.accounts.insert(id, account.clone());
        Ok(account)
    }

    /// Makes sure the live counters know these keys' committed values.
    pub async fn ensure_loaded(&self, keys: &[CounterKey]) -> ApiResult<()> {
        let missing = self.counters.missing(keys).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Job::Load { keys: missing, reply }).await?;
        answer.await.map_err(|_| stopped())?.map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))
    }

    /// The state of one meter of `account` now.
    pub async fn state(&self, account: &Account, meter: &Meter, now: Timestamp) -> ApiResult<MeterState> {
        let key = account.key(meter, now);
        self.ensure_loaded(std::slice::from_ref(&key)).await?;
        let count = self.counters.count(&key).await?;
        Ok(MeterState { limit: account.limit(meter, now), used: count.used, reserved: count.reserved })
    }

    /// May `account` spend `amount` of `meter`? With `reserve`, the amount
    /// is held until settled, released or expired (`ttl`, default the
    /// configured one).
    pub async fn check(
        &self,
        account: &Account,
        meter: &Meter,
        amount: i64,
        reserve: bool,
        ttl: Option<Duration>,
    ) -> ApiResult<CheckOutcome> {
        let now = Timestamp::now();
        let period = account.period(now);
        let key = account.key(meter, now);
        self.ensure_loaded(std::slice::from_ref(&key)).await?;
        let limit = account.limit(meter, now);
        let before = self.counters.count(&key).await?;
        let state = MeterState { limit, used: before.used, reserved: before.reserved };
        if !reserve {
            let allowed = limit.is_none_or(|l| before.used.saturating_add(before.reserved).saturating_add(amount) <= l);
            return Ok(CheckOutcome { allowed, state, period, reservation_id: None });
        }
        let id = format!("res_{}", base62::random(20));
        let ttl_ms = ttl.unwrap_or(self.config.reservation_ttl).as_millis() as i64;
        match self.hold(&id, &[Ask { key, amount, limit }], now.millis(), ttl_ms).await? {
            Ok(()) => Ok(CheckOutcome { allowed: true, state, period, reservation_id: Some(id) }),
            Err(Refusal { count, .. }) => {
                let state = MeterState { limit, used: count.used, reserved: count.reserved };
                Ok(CheckOutcome { allowed: false, state, period, reservation_id: None })
            }
        }
    }

    /// Holds every amount (each of its meter, under that meter's limit) or
    /// none, for the configured TTL; a refusal names the first meter that
    /// does not fit, with its state. The gateway's hold for one call.
    pub async fn reserve(
        &self,
        account: &Account,
        amounts: &[(Meter, i64)],
    ) -> ApiResult<Result<String, (Meter, MeterState)>> {
        let now = Timestamp::now();
        let keys: Vec<CounterKey> = amounts.iter().map(|(meter, _)| account.key(meter, now)).collect();
        self.ensure_loaded(&keys).await?;
        let asks: Vec<Ask> = amounts
            .iter()
            .zip(keys)
            .map(|((meter, amount), key)| Ask { key, amount: *amount, limit: account.limit(meter, now) })
            .collect();
        let id = format!("res_{}", base62::random(20));
        let ttl_ms = self.config.reservation_ttl.as_millis() as i64;
        match self.hold(&id, &asks, now.millis(), ttl_ms).await? {
            Ok(()) => Ok(Ok(id)),
            Err(Refusal { index, count, limit }) => Ok(Err((
                amounts[index].0.clone(),
                MeterState { limit: Some(limit), used: count.used, reserved: count.reserved },
            ))),
        }
    }

    /// Holds every ask or none, its counters loaded. A shared counter store
    /// may drop a counter between its load and the hold ([`NotLoaded`]):
    /// it is loaded again and the hold tried once more.
    async fn hold(&self, id: &str, asks: &[Ask], now: i64, ttl_ms: i64) -> ApiResult<Result<(), Refusal>> {
        match self.counters.reserve(id, asks, now, ttl_ms).await {
            Err(e) if e.is::<NotLoaded>() => {
                let keys: Vec<CounterKey> = asks.iter().map(|a| a.key.clone()).collect();
                self.ensure_loaded(&keys).await?;
                Ok(self.counters.reserve(id, asks, now, ttl_ms).await?)
            }
            other => Ok(other?),
        }
    }

    /// The user and meter a live reservation holds.
    pub async fn reservation(&self, id: &str) -> ApiResult<Option<(UserId, Meter)>> {
        let Some(parts) = self.counters.holds(id).await? else { return Ok(None) };
        Ok(parts.first().and_then(|(key, _)| Some((UserId::parse(&key.user).ok()?, Meter::parse(&key.meter).ok()?))))
    }

    /// Records `amount` of the reserved meter as used (an event whose id is
    /// the reservation's, so a repeated settle counts once) and ends the hold.
    pub async fn settle(&self, id: &str, amount: i64) -> ApiResult<bool> {
        let (user, _) = self.reservation(id).await?.ok_or_else(|| no_reservation(id))?;
        let account = self.account(&user).await?;
        self.settle_for(&account, id, amount).await
    }

    /// [`Metering::settle`] for the account already in hand: anonymous demo
    /// traffic has no users row to look its account up by once the cached
    /// one is gone.
    pub async fn settle_for(&self, account: &Account, id: &str, amount: i64) -> ApiResult<bool> {
        let (user, meter) = self.reservation(id).await?.ok_or_else(|| no_reservation(id))?;
        if user != account.user.id {
            return Err(no_reservation(id));
        }
        let now = Timestamp::now();
        // Only the reserved meter moves, as the hold was on it alone.
        // `requests` and `cost_usd` have ledger columns that move nothing
        // else; any other meter (`tokens`, one side of the tokens, a
        // feature's or the app's own) is recorded as the event's own meter,
        // which the daily rollups keep too.
        let amounts = match meter.as_str() {
            Meter::REQUESTS => Amounts { requests: amount, ..Amounts::default() },
            Meter::COST_USD => Amounts { cost_micros: amount, ..Amounts::default() },
            _ => Amounts { extra: BTreeMap::from([(meter, amount)]), ..Amounts::default() },
        };
        let row = EventRow {
            id: id.to_owned(),
            user_id: user.to_string(),
            ts: now.millis(),
            key_source: "platform".into(),
            // Platform usage, counted toward quota: billable, as a metered
            // event from the platform's key is.
            billable: true,
            ..EventRow::default()
        };
        let event = self.prepare(account, row, &amounts);
        let flags = self.commit(vec![event], Some(id.to_owned())).await?;
        Ok(flags[0])
    }

    /// Keeps a live hold for another reservation TTL from now (a call still
    /// under way); whether it existed.
    pub async fn prolong(&self, id: &str) -> ApiResult<bool> {
        let ttl_ms = self.config.reservation_ttl.as_millis() as i64;
        Ok(self.counters.prolong(id, Timestamp::now().millis(), ttl_ms).await?)
    }

    /// The reservation TTL.
    pub fn reservation_ttl(&self) -> Duration {
        self.config.reservation_ttl
    }

    pub async fn release(&self, id: &str) -> ApiResult<bool> {
        Ok(self.counters.release(id).await?)
    }

    /// The event `row` with `amounts` filled in, and what it adds to
    /// counters (in the period of its time) and lifetime totals. The cost is computed from the price
    /// table unless `amounts.cost_micros` is set.
    pub fn prepare(&self, account: &Account, mut row: EventRow, amounts: &Amounts) -> PreparedEvent {
        row.input_tokens = amounts.input_tokens;
        row.output_tokens = amounts.output_tokens;
        row.cached_tokens = amounts.cached_tokens;
        row.reasoning_tokens = amounts.reasoning_tokens;
        row.requests = amounts.requests;
        row.cost_micros = amounts.cost_micros;
        row.feature = amounts.feature.clone();
        if !amounts.extra.is_empty() {
            row.extra = serde_json::to_string(&amounts.extra).ok();
        }
        if row.key_source.is_empty() {
            row.key_source = "platform".into();
        }
        if row.recorded_at == 0 {
            row.recorded_at = Timestamp::now().millis();
        }
        let counted = account.counts(row.key_source == "byok");
        let period_start = counted.then(|| account.period(Timestamp::from_millis(row.ts)).start.millis());
        let extra = amounts.extra.iter().filter(|(_, n)| **n != 0).map(|(m, n)| (m.clone(), *n)).collect();
        PreparedEvent { row, meters: amounts.meters(), period_start, extra, ..PreparedEvent::default() }
    }

    /// The cost of a call in micro-dollars; unknown models cost 0 and are
    /// counted so the operator sees them.
    pub fn cost(&self, model: Option<&str>, input: i64, cached: i64, output: i64) -> i64 {
        let Some(model) = model else { return 0 };
        match self.prices.read().unwrap_or_else(|p| p.into_inner()).lookup(model) {
            Some(price) => price.cost_micros(input, cached, output),
            None => {
                metrics::counter!("tollgate_unknown_model_events_total", "model" => model.to_owned()).increment(1);
                0
            }
        }
    }

    pub fn prices(&self) -> Vec<(String, Price)> {
        self.prices.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(m, p)| (m.to_owned(), *p)).collect()
    }

    pub fn set_price(&self, model: &str, price: Option<Price>) {
        let mut prices = self.prices.write().unwrap_or_else(|p| p.into_inner());
        // Without an override, a built-in price (if any) applies again.
        match price.or_else(|| PriceTable::default().iter().find(|(m, _)| *m == model).map(|(_, p)| *p)) {
            Some(p) => prices.set(model, p),
            None => {
                prices.remove(model);
            }
        }
    }

    /// Commits events through the writer; returns when they are durable,
    /// with whether each was new.
    pub async fn commit(&self, events: Vec<PreparedEvent>, settles: Option<String>) -> ApiResult<Vec<bool>> {
        self.submit(events, settles, false).await
    }

    /// [`Metering::commit`] for events whose ids were just made for them
    /// (the gateway's), so none can be a repeat: they may be made durable
    /// in the journal and committed to the ledger behind.
    pub async fn record(&self, events: Vec<PreparedEvent>, settles: Option<String>) -> ApiResult<()> {
        self.submit(events, settles, true).await.map(|_| ())
    }

    /// [`Metering::record`] queued now, without waiting: the future it
    /// returns waits for the commit, and dropping it does not undo the
    /// commit. The events come back when the writer's queue is full.
    pub fn try_record(
        &self,
        events: Vec<PreparedEvent>,
        settles: Option<String>,
    ) -> Result<impl Future<Output = ApiResult<()>> + use<>, Vec<PreparedEvent>> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Commit { events, settles, fresh: true, reply };
        if let Ok(tx) = self.writer()
            && let Err(mpsc::error::TrySendError::Full(Job::Commit { events, .. })) = tx.try_send(job)
        {
            return Err(events);
        }
        // Queued; or the writer has stopped, and the answer's sender is
        // gone with the job.
        Ok(async move { answered(answer).await.map(|_| ()) })
    }

    async fn submit(&self, events: Vec<PreparedEvent>, settles: Option<String>, fresh: bool) -> ApiResult<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Job::Commit { events, settles, fresh, reply }).await?;
        answered(answer).await
    }

    /// Drops expired reservations; run periodically.
    pub async fn expire(&self) -> ApiResult<usize> {
        Ok(self.counters.expire(Timestamp::now().millis()).await?)
    }
}
