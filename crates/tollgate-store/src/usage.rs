//! The ledger and what it feeds: quota counters, lifetime totals and daily
//! rollups, all written in the transaction that appends the events.

use std::future::Future;
use std::pin::Pin;

use serde_json::json;
use sqlx::AssertSqlSafe;
use tollgate_domain::hooks::{Crossing, EventType};
use tollgate_domain::quota::CounterKey;
use tollgate_domain::usage::Amounts;
use tollgate_domain::{Meter, Timestamp};

/// Maps on the commit path hash short strings; a fast hash pays there.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use crate::hooks::{NewEvent, insert_event};
use crate::{Result, Store, on_pool};

/// One usage event as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct EventRow {
    pub id: String,
    pub user_id: String,
    pub key_id: Option<String>,
    pub ts: i64,
    pub recorded_at: i64,
    pub feature: Option<String>,
    pub route: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub requests: i64,
    pub cost_micros: i64,
    /// JSON object of further meters and amounts.
    pub extra: Option<String>,
    pub latency_ms: Option<i64>,
    pub ttft_ms: Option<i64>,
    pub status_code: Option<i64>,
    pub request_bytes: Option<i64>,
    pub response_bytes: Option<i64>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `platform` or `byok`.
    pub key_source: String,
    pub billable: bool,
    pub estimated: bool,
}

pub const EVENT_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "key_id",
    "ts",
    "recorded_at",
    "feature",
    "route",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "requests",
    "cost_micros",
    "extra",
    "latency_ms",
    "ttft_ms",
    "status_code",
    "request_bytes",
    "response_bytes",
    "client_ip",
    "user_agent",
    "key_source",
    "billable",
    "estimated",
];

/// An event with what it adds, applied only if the event is new: each
/// meter's amount goes to the user's lifetime totals and, when the event
/// counts toward quota, to the counter of its period.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreparedEvent {
    pub row: EventRow,
    /// What the event adds per meter (zero amounts left out).
    pub meters: Vec<(Meter, i64)>,
    /// The start (ms) of the quota period the event counts in; `None` when
    /// it does not count toward quota (a user's own key, on most plans).
    pub period_start: Option<i64>,
    /// The meters the event names itself (the ledger's `extra`), rolled up
    /// per day beside the built-in columns.
    pub extra: Vec<(Meter, i64)>,
    /// The id under which the provider stored the call's response (OpenAI's
    /// Responses API), kept in `gateway_responses` as the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// The ids of that response's output items, kept in `gateway_responses`
    /// as the user's too (`item_of` names the response).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// What a provider keeps for a user, named by the id it gave
/// (`gateway_responses.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// A response (OpenAI's `resp_…`).
    Response,
    /// An item of a response or a conversation (`msg_…`, `rs_…`, `fc_…`).
    Item,
    /// A conversation (`conv_…`).
    Conversation,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Response => "response",
            Kept::Item => "item",
            Kept::Conversation => "conversation",
        }
    }
}

/// One row of `gateway_responses` to write: who made what the provider
/// keeps under `id`, through which provider and credential, when (ms), in
/// which ledger event (empty for what no call made, as a conversation), and
/// what holds it (an item's response or conversation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owned<'a> {
    pub id: &'a str,
    pub kind: Kept,
    pub user_id: &'a str,
    pub provider: &'a str,
    pub key_source: &'a str,
    pub event_id: &'a str,
    pub created_at: i64,
    pub item_of: Option<&'a str>,
}

/// Who owns an id already recorded when it is recorded again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Its newest maker: the provider gave the id again (a restarted
    /// server), and only the provider gives such ids.
    Newest,
    /// Its first owner: the id was listed to a user, and a client may have
    /// chosen it (an input item sent with an id of its own), so it never
    /// takes over what someone else owns.
    First,
}

/// `INSERT` of `rows` rows into `gateway_responses`.
fn owned_upsert(rows: usize, numbered: bool, recorded: Recorded) -> String {
    let conflict = match recorded {
        Recorded::Newest => {
            "DO UPDATE SET kind = excluded.kind, user_id = excluded.user_id, provider = excluded.provider, \
             key_source = excluded.key_source, event_id = excluded.event_id, created_at = excluded.created_at, \
             item_of = excluded.item_of"
        }
        Recorded::First => "DO NOTHING",
    };
    format!(
        "INSERT INTO gateway_responses \
         (response_id, kind, user_id, provider, key_source, event_id, created_at, item_of) \
         VALUES {} ON CONFLICT (response_id) {conflict}",
        placeholders(rows, 8, numbered)
    )
}

macro_rules! bind_owned {
    ($q:expr, $o:expr) => {{
        let o: &Owned<'_> = $o;
        $q.bind(o.id)
            .bind(o.kind.as_str())
            .bind(o.user_id)
            .bind(o.provider)
            .bind(o.key_source)
            .bind(o.event_id)
            .bind(o.created_at)
            .bind(o.item_of)
    }};
}

/// `rows` with one per id (the last given), in id order: Postgres updates a
/// row once per statement, and concurrent writers lock rows in one order.
fn one_per_id<'a>(rows: impl IntoIterator<Item = Owned<'a>>) -> Vec<Owned<'a>> {
    let mut by_id: HashMap<&'a str, Owned<'a>> = HashMap::default();
    for row in rows {
        by_id.insert(row.id, row);
    }
    let mut rows: Vec<Owned<'a>> = by_id.into_values().collect();
    rows.sort_unstable_by_key(|row| row.id);
    rows
}

/// Who made what a provider keeps (`gateway_responses`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ResponseOwner {
    /// The id the provider gave it.
    pub response_id: String,
    /// `response`, `item` or `conversation` ([`Kept`]).
    pub kind: String,
    pub user_id: String,
    pub provider: String,
    /// The credential that made it, `platform` or `byok` (as the ledger's
    /// events say): the provider account it is in.
    pub key_source: String,
    /// When the call that made it began (ms).
    pub created_at: i64,
    /// The response an output item is part of; `None` for a response.
    pub item_of: Option<String>,
    /// For a response, the tokens a call going on from it brings along:
    /// what its call took in and gave, less its reasoning (which is not
    /// carried on), as its ledger event says; 0 for anything else.
    pub context_tokens: i64,
}

/// One day's sums for one combination of model, feature, key, provider and
/// key source.
#[derive(Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct DailyRow {
    pub day: i64,
    pub model: String,
    pub feature: String,
    pub key_id: String,
    pub provider: String,
    pub key_source: String,
    pub events: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub requests: i64,
    pub cost_micros: i64,
    /// The day's sums of the meters events named themselves.
    #[sqlx(skip)]
    pub extra: Vec<(String, i64)>,
}

impl DailyRow {
    /// What these events added to each meter, as the live counters add it
    /// (zero amounts left out).
    pub fn meters(&self) -> Vec<(Meter, i64)> {
        let amounts = Amounts {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_tokens: self.cached_tokens,
            reasoning_tokens: 0,
            requests: self.requests,
            cost_micros: self.cost_micros,
            feature: (!self.feature.is_empty()).then(|| self.feature.clone()),
            extra: self.extra.iter().filter_map(|(m, n)| Some((Meter::parse(m).ok()?, *n))).collect(),
        };
        amounts.meters()
    }

    /// What these events added to one meter.
    pub fn used(&self, meter: &str) -> i64 {
        self.meters().into_iter().find(|(m, _)| m.as_str() == meter).map_or(0, |(_, n)| n)
    }
}

/// A row of `usage_daily_meters` without its user: day, model, feature,
/// key, provider, key source, meter, used.
type MeterRollup = (i64, String, String, String, String, String, String, i64);

const DAY_MS: i64 = 86_400_000;
/// Rows per multi-row INSERT. Only these few sizes are used, so each table
/// has a handful of statement shapes that stay prepared in the statement
/// cache; a new size per batch would make SQLite parse a huge statement
/// every time. 256 × 26 parameters stays under SQLite's 32,766.
const SIZES: [usize; 4] = [256, 32, 4, 1];

/// `items` cut into runs of the sizes in [`SIZES`], largest first.
fn sized_chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let size = SIZES.into_iter().find(|s| *s <= items.len()).unwrap_or(1);
        let (head, tail) = items.split_at(size);
        out.push(head);
        items = tail;
    }
    out
}

/// `($1, $2), ($3, $4)` for Postgres; `(?, ?), (?, ?)` for SQLite, whose
/// driver looks `$N` names up in time quadratic in their number (a 256-row
/// insert took 40 times longer with them).
fn placeholders(rows: usize, columns: usize, numbered: bool) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            if numbered {
                out.push('$');
                out.push_str(&(r * columns + c + 1).to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

macro_rules! bind_event {
    ($q:expr, $e:expr) => {{
        let e: &EventRow = $e;
        $q.bind(&e.id)
            .bind(&e.user_id)
            .bind(&e.key_id)
            .bind(e.ts)
            .bind(e.recorded_at)
            .bind(&e.feature)
            .bind(&e.route)
            .bind(&e.provider)
            .bind(&e.model)
            .bind(e.input_tokens)
            .bind(e.output_tokens)
            .bind(e.cached_tokens)
            .bind(e.reasoning_tokens)
            .bind(e.requests)
            .bind(e.cost_micros)
            .bind(&e.extra)
            .bind(e.latency_ms)
            .bind(e.ttft_ms)
            .bind(e.status_code)
            .bind(e.request_bytes)
            .bind(e.response_bytes)
            .bind(&e.client_ip)
            .bind(&e.user_agent)
            .bind(&e.key_source)
            .bind(e.billable)
            .bind(e.estimated)
    }};
}

/// `table.column + excluded.column` in an upsert, saturating at the
/// largest `i64` instead of failing (Postgres) or turning into a float
/// (SQLite): one event's amounts are bounded, their sums over time are not.
macro_rules! saturating_add {
    ($table:literal, $column:literal) => {
        concat!(
            $column,
            " = CASE WHEN excluded.",
            $column,
            " <= 0 THEN ",
            $table,
            ".",
            $column,
            " + excluded.",
            $column,
            " WHEN ",
            $table,
            ".",
            $column,
            " > 9223372036854775807 - excluded.",
            $column,
            " THEN 9223372036854775807 ELSE ",
            $table,
            ".",
            $column,
            " + excluded.",
            $column,
            " END"
        )
    };
}

/// user, day, model, feature, key, provider, key source.
type RollupKey<'a> = (&'a str, i64, &'a str, &'a str, &'a str, &'a str, &'a str);

/// What one commit added: per event, whether it was new (a repeated id
/// adds nothing), and the sums it added to quota counters, one entry per
/// counter, for the live counters to follow; and how many alerts it fired.
#[derive(Debug, Default)]
pub struct Committed {
    pub new: Vec<bool>,
    pub counters: Vec<(CounterKey, i64)>,
    pub alerts: usize,
}

/// A counter a commit touches: user, meter, period start.
pub type CounterRef<'a> = (&'a str, &'a str, i64);

/// What a commit watches on a limited counter: when the commit carries
/// the counter across one of `thresholds` (percent of `limit`), or to the
/// limit, an alert is written to the outbox in the same transaction.
#[derive(Clone, Debug)]
pub struct Watch {
    pub limit: i64,
    pub thresholds: Vec<u8>,
    pub period_end: Option<i64>,
}

/// Says which counters of a commit are watched. Asked once per commit,
/// with the counters it touches (sorted by user), inside its transaction.
pub trait Watcher: Send + Sync {
    /// One entry per counter, in order.
    fn watch<'a>(
        &'a self,
        counters: &'a [CounterRef<'a>],
    ) -> Pin<Box<dyn Future<Output = Vec<Option<Watch>>> + Send + 'a>>;
}

/// The alert events a change of one watched counter fires: each threshold
/// crossed, and exhaustion.
fn alerts(counter: CounterRef<'_>, watch: &Watch, crossing: Crossing) -> Vec<(&'static str, u8, NewEvent)> {
    let (user, meter, period_start) = counter;
    let data = |threshold: Option<u8>| {
        let mut data = json!({
            "user_id": user,
            "meter": meter,
            "used": crossing.after,
            "limit": crossing.limit,
            "period_start": Timestamp::from_millis(period_start),
            "period_end": watch.period_end.map(Timestamp::from_millis),
        });
        if let Some(t) = threshold {
            data["threshold"] = json!(t);
        }
        data
    };
    let mut out = Vec::new();
    for t in crossing.thresholds(&watch.thresholds) {
        // A 100 % threshold is said to the user once, by the exhaustion e-mail.
        let event = NewEvent::new(EventType::UsageThreshold, Some(user), data(Some(t)));
        out.push(("threshold", t, if t < 100 { event.emailed() } else { event }));
    }
    if crossing.exhausts() {
        out.push(("exhausted", 100, NewEvent::new(EventType::QuotaExceeded, Some(user), data(None)).emailed()));
    }
    out
}

/// The sums a set of new events adds, keyed by borrowed strings so that
/// adding up allocates nothing per event; sorted before they are written,
/// so that concurrent writers (Postgres instances) take row locks in one
/// order.
#[derive(Default)]
struct Sums<'a> {
    counters: HashMap<(&'a str, &'a str, i64), i64>,
    lifetime: HashMap<(&'a str, &'a str), i64>,
    rollups: HashMap<RollupKey<'a>, [i64; 6]>,
    /// The rollups of meters events name themselves.
    meters: HashMap<(RollupKey<'a>, &'a str), i64>,
}

impl<'a> Sums<'a> {
    fn of(events: impl IntoIterator<Item = &'a PreparedEvent>) -> Sums<'a> {
        let mut sums = Sums::default();
        for e in events {
            let r = &e.row;
            for (meter, n) in &e.meters {
                let lifetime = sums.lifetime.entry((r.user_id.as_str(), meter.as_str())).or_default();
                *lifetime = lifetime.saturating_add(*n);
            }
            add_counted(&mut sums.counters, e);
            let key: RollupKey = (
                &r.user_id,
                r.ts.div_euclid(DAY_MS) * DAY_MS,
                r.model.as_deref().unwrap_or_default(),
                r.feature.as_deref().unwrap_or_default(),
                r.key_id.as_deref().unwrap_or_default(),
                r.provider.as_deref().unwrap_or_default(),
                &r.key_source,
            );
            for (meter, n) in &e.extra {
                let sum = sums.meters.entry((key, meter.as_str())).or_default();
                *sum = sum.saturating_add(*n);
            }
            let slots = sums.rollups.entry(key).or_default();
            for (slot, n) in
                slots.iter_mut().zip([1, r.input_tokens, r.output_tokens, r.cached_tokens, r.requests, r.cost_micros])
            {
                *slot = slot.saturating_add(n);
            }
        }
        sums
    }
}

/// Adds what `e` adds to quota counters (nothing when it does not count
/// toward quota).
fn add_counted<'a>(counters: &mut HashMap<(&'a str, &'a str, i64), i64>, e: &'a PreparedEvent) {
    let Some(start) = e.period_start else { return };
    for (meter, n) in &e.meters {
        let counter = counters.entry((e.row.user_id.as_str(), meter.as_str(), start)).or_default();
        *counter = counter.saturating_add(*n);
    }
}

/// What `events` add to quota counters, one entry per counter, in key
/// order; as [`Store::commit_usage`] adds them when every event is new.
/// (The counters alone: the journal's path needs no rollups.)
pub fn counter_sums(events: &[PreparedEvent]) -> Vec<(CounterKey, i64)> {
    let mut counters = HashMap::default();
    for e in events {
        add_counted(&mut counters, e);
    }
    counter_keys(sorted(&counters))
}

fn counter_keys(sums: Vec<((&str, &str, i64), i64)>) -> Vec<(CounterKey, i64)> {
    sums.into_iter()
        .map(|((user, meter, period_start), n)| {
            (CounterKey { user: user.to_owned(), meter: meter.to_owned(), period_start }, n)
        })
        .collect()
}

/// A sorted copy of a map's entries.
fn sorted<K: Ord + Copy, V: Copy>(map: &HashMap<K, V>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = map.iter().map(|(k, v)| (*k, *v)).collect();
    v.sort_unstable_by_key(|e| e.0);
    v
}

impl Store {
    /// Appends the events that are new (by id) and, in the same
    /// transaction, adds what those feed to counters, lifetime totals and
    /// rollups. A repeated id (in the store or earlier in `events`) is a
    /// duplicate and adds nothing.
    ///
    /// Counters that `watcher` watches are read back as committed; each
    /// alert threshold they cross (and exhaustion) fires once per user,
    /// meter and period: the alert is recorded (insert-if-absent on that
    /// key) and its event written to the outbox, in this transaction.
    pub async fn commit_usage(&self, events: &[PreparedEvent], watcher: Option<&dyn Watcher>) -> Result<Committed> {
        let mut seen = HashSet::with_capacity_and_hasher(events.len(), Default::default());
        let first: Vec<bool> = events.iter().map(|e| seen.insert(e.row.id.as_str())).collect();
        let fresh: Vec<&PreparedEvent> = events.iter().zip(&first).filter(|(_, f)| **f).map(|(e, _)| e).collect();
        let numbered = self.backend() == "postgres";
        let columns = EVENT_COLUMNS.join(", ");
        // The ids of `fresh` that were stored already.
        let mut stored: HashSet<&str> = HashSet::default();
        let counters;
        let mut alert_count = 0;
        on_pool!(pool: &self.usage, p => {
            // SQLite: the write lock from the start (waiting for it as long
            // as the busy timeout allows), so that the rowid read below and
            // the inserts see one state of the table.
            let mut tx = if numbered { p.begin().await? } else { p.begin_with("BEGIN IMMEDIATE").await? };
            if numbered {
                // Postgres: other instances may insert the same ids at the
                // same time, so the insert itself says which rows were new.
                let mut inserted: HashSet<String> = HashSet::with_capacity_and_hasher(fresh.len(), Default::default());
                for chunk in sized_chunks(&fresh) {
                    let sql = format!(
                        "INSERT INTO usage_events ({columns}) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                        placeholders(chunk.len(), EVENT_COLUMNS.len(), numbered)
                    );
                    let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
                    for e in chunk {
                        q = bind_event!(q, &e.row);
                    }
                    inserted.extend(q.fetch_all(&mut *tx).await?);
                }
                stored.extend(fresh.iter().map(|e| e.row.id.as_str()).filter(|id| !inserted.contains(*id)));
            } else {
                // SQLite: only this writer inserts usage events, under the
                // write lock taken at BEGIN. Rows returned by the
                // driver cost a message each, so the insert only counts:
                // when every row went in (the usual case), all were new.
                // Otherwise the ids that were there already are the ones
                // found at or below the largest rowid from before the
                // insert (new rows always get larger ones).
                let before: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(rowid), 0) FROM usage_events").fetch_one(&mut *tx).await?;
                let mut added = 0;
                for chunk in sized_chunks(&fresh) {
                    let sql = format!(
                        "INSERT INTO usage_events ({columns}) VALUES {} ON CONFLICT (id) DO NOTHING",
                        placeholders(chunk.len(), EVENT_COLUMNS.len(), numbered)
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for e in chunk {
                        q = bind_event!(q, &e.row);
                    }
                    added += q.execute(&mut *tx).await?.rows_affected();
                }
                if added as usize != fresh.len() {
                    for chunk in sized_chunks(&fresh) {
                        let sql = format!(
                            "SELECT id FROM usage_events WHERE rowid <= ? AND id IN {}",
                            placeholders(1, chunk.len(), false)
                        );
                        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(before);
                        for e in chunk {
                            q = q.bind(&e.row.id);
                        }
                        let found: HashSet<String> = q.fetch_all(&mut *tx).await?.into_iter().collect();
                        stored.extend(chunk.iter().map(|e| e.row.id.as_str()).filter(|id| found.contains(*id)));
                    }
                }
            }
            let new: Vec<&PreparedEvent> = fresh.iter().copied().filter(|e| !stored.contains(e.row.id.as_str())).collect();
            // An id the provider gives again is the newest maker's. A
            // response's output items are its maker's too.
            let owned = one_per_id(new.iter().filter_map(|e| Some((e, e.response_id.as_deref()?))).flat_map(|(e, id)| {
                let row = Owned {
                    id,
                    kind: Kept::Response,
                    user_id: &e.row.user_id,
                    provider: e.row.provider.as_deref().unwrap_or_default(),
                    key_source: &e.row.key_source,
                    event_id: &e.row.id,
                    created_at: e.row.ts,
                    item_of: None,
                };
                let items = e.items.iter().map(move |item| Owned { id: item, kind: Kept::Item, item_of: Some(id), ..row });
                std::iter::once(row).chain(items)
            }));
            for chunk in sized_chunks(&owned) {
                let mut q = sqlx::query(AssertSqlSafe(owned_upsert(chunk.len(), numbered, Recorded::Newest)));
                for row in chunk {
                    q = bind_owned!(q, row);
                }
                q.execute(&mut *tx).await?;
            }
            let sums = Sums::of(new.iter().copied());

            let sorted_counters = sorted(&sums.counters);
            let watches = match watcher {
                Some(w) if !sorted_counters.is_empty() => {
                    let refs: Vec<CounterRef> = sorted_counters.iter().map(|(k, _)| *k).collect();
                    w.watch(&refs).await
                }
                _ => Vec::new(),
            };
            // In key order (so that concurrent writers lock rows in one
            // order): runs of unwatched counters in multi-row upserts, each
            // watched one alone, read back as committed (its row lock makes
            // before = after - n exact across instances).
            let mut from = 0;
            for i in 0..=sorted_counters.len() {
                let watch = watches.get(i).and_then(Option::as_ref);
                if i < sorted_counters.len() && watch.is_none() {
                    continue;
                }
                for chunk in sized_chunks(&sorted_counters[from..i]) {
                    let sql = format!(
                        "INSERT INTO usage_counters (user_id, meter, period_start, used) VALUES {} \
                         ON CONFLICT (user_id, meter, period_start) DO UPDATE SET {}",
                        placeholders(chunk.len(), 4, numbered),
                        saturating_add!("usage_counters", "used"),
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for ((user, meter, start), n) in chunk {
                        q = q.bind(*user).bind(*meter).bind(*start).bind(*n);
                    }
                    q.execute(&mut *tx).await?;
                }
                from = i + 1;
                let (Some(watch), Some(((user, meter, start), n))) = (watch, sorted_counters.get(i)) else { continue };
                let after: i64 = sqlx::query_scalar(concat!(
                    "INSERT INTO usage_counters (user_id, meter, period_start, used) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, meter, period_start) DO UPDATE SET ",
                    saturating_add!("usage_counters", "used"),
                    " RETURNING used",
                ))
                .bind(*user)
                .bind(*meter)
                .bind(*start)
                .bind(*n)
                .fetch_one(&mut *tx)
                .await?;
                let crossing = Crossing { before: after.saturating_sub(*n), after, limit: watch.limit };
                for (kind, threshold, event) in alerts((user, meter, *start), watch, crossing) {
                    let fired = sqlx::query(
                        "INSERT INTO usage_alerts (user_id, meter, period_start, kind, threshold, event_id, fired_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    )
                    .bind(*user)
                    .bind(*meter)
                    .bind(*start)
                    .bind(kind)
                    .bind(i64::from(threshold))
                    .bind(&event.id)
                    .bind(event.at.millis())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if fired == 1 {
                        insert_event!(&mut *tx, &event).await?;
                        alert_count += 1;
                    }
                }
            }
            let lifetime = sorted(&sums.lifetime);
            for chunk in sized_chunks(&lifetime) {
                let sql = format!(
                    "INSERT INTO usage_lifetime (user_id, meter, used) VALUES {} \
                     ON CONFLICT (user_id, meter) DO UPDATE SET {}",
                    placeholders(chunk.len(), 3, numbered),
                    saturating_add!("usage_lifetime", "used"),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for ((user, meter), n) in chunk {
                    q = q.bind(*user).bind(*meter).bind(*n);
                }
                q.execute(&mut *tx).await?;
            }
            let rollups = sorted(&sums.rollups);
            for chunk in sized_chunks(&rollups) {
                let sql = format!(
                    "INSERT INTO usage_daily (user_id, day, model, feature, key_id, provider, key_source, events, \
                     input_tokens, output_tokens, cached_tokens, requests, cost_micros) VALUES {} \
                     ON CONFLICT (user_id, day, model, feature, key_id, provider, key_source) DO UPDATE SET {}",
                    placeholders(chunk.len(), 13, numbered),
                    concat!(
                        saturating_add!("usage_daily", "events"),
                        ", ",
                        saturating_add!("usage_daily", "input_tokens"),
                        ", ",
                        saturating_add!("usage_daily", "output_tokens"),
                        ", ",
                        saturating_add!("usage_daily", "cached_tokens"),
                        ", ",
                        saturating_add!("usage_daily", "requests"),
                        ", ",
                        saturating_add!("usage_daily", "cost_micros"),
                    ),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for ((user, day, model, feature, key, provider, source), sums) in chunk {
                    q = q.bind(*user).bind(*day).bind(*model).bind(*feature).bind(*key).bind(*provider).bind(*source);
                    for n in sums {
                        q = q.bind(*n);
                    }
                }
                q.execute(&mut *tx).await?;
            }
            let meters = sorted(&sums.meters);
            for chunk in sized_chunks(&meters) {
                let sql = format!(
                    "INSERT INTO usage_daily_meters (user_id, day, model, feature, key_id, provider, key_source, meter, \
                     used) VALUES {} ON CONFLICT (user_id, day, model, feature, key_id, provider, key_source, meter) \
                     DO UPDATE SET {}",
                    placeholders(chunk.len(), 9, numbered),
                    saturating_add!("usage_daily_meters", "used"),
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (((user, day, model, feature, key, provider, source), meter), n) in chunk {
                    q = q
                        .bind(*user)
                        .bind(*day)
                        .bind(*model)
                        .bind(*feature)
                        .bind(*key)
                        .bind(*provider)
                        .bind(*source)
                        .bind(*meter)
                        .bind(*n);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            counters = counter_keys(sorted_counters);
            Ok::<_, sqlx::Error>(())
        })?;
        let new = events.iter().zip(first).map(|(e, first)| first && !stored.contains(e.row.id.as_str())).collect();
        Ok(Committed { new, counters, alerts: alert_count })
    }

    /// Who made the response (or output item) a provider stored under
    /// `response_id`, when, and through which provider.
    pub async fn response_owner(&self, response_id: &str) -> Result<Option<ResponseOwner>> {
        Ok(self.response_owners(&[response_id]).await?.pop())
    }

    /// Who made each of `ids` that a provider stored, in one query per
    /// few hundred ids; the ids no one made are left out.
    pub async fn response_owners(&self, ids: &[&str]) -> Result<Vec<ResponseOwner>> {
        let numbered = self.backend() == "postgres";
        let mut owners = Vec::new();
        for chunk in sized_chunks(ids) {
            let sql = format!(
                "SELECT r.response_id, r.kind, r.user_id, r.provider, r.key_source, r.created_at, r.item_of, \
                 CASE WHEN r.kind = 'response' \
                 THEN COALESCE(e.input_tokens + e.output_tokens - e.reasoning_tokens, 0) ELSE 0 END AS context_tokens \
                 FROM gateway_responses r LEFT JOIN usage_events e ON e.id = r.event_id \
                 WHERE r.response_id IN {}",
                placeholders(1, chunk.len(), numbered)
            );
            let found: Vec<ResponseOwner> = on_pool!(self, p => {
                let mut q = sqlx::query_as(AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(p).await
            })?;
            owners.extend(found);
        }
        Ok(owners)
    }

    /// Records who made what `rows` name, outside a call's event (a
    /// conversation made, the items a user was shown in something of
    /// theirs); `recorded` says who keeps an id already recorded.
    pub async fn keep_owned(&self, rows: impl IntoIterator<Item = Owned<'_>>, recorded: Recorded) -> Result<()> {
        let numbered = self.backend() == "postgres";
        let rows = one_per_id(rows);
        for chunk in sized_chunks(&rows) {
            let sql = owned_upsert(chunk.len(), numbered, recorded);
            on_pool!(self, p => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for row in chunk {
                    q = bind_owned!(q, row);
                }
                q.execute(p).await.map(|_| ())
            })?;
        }
        Ok(())
    }

    /// Forgets that `user_id` made `response_id` and the items it holds (the
    /// provider deleted it): a response, a conversation or an item. Rows
    /// of other users stay, whatever ids they share.
    pub async fn forget_kept(&self, response_id: &str, user_id: &str) -> Result<()> {
        let q = "DELETE FROM gateway_responses WHERE (response_id = $1 OR item_of = $1) AND user_id = $2";
        on_pool!(self, p => sqlx::query(q).bind(response_id).bind(user_id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// A counter's committed value (0 if it has none yet).
    pub async fn counter(&self, key: &CounterKey) -> Result<i64> {
        let q = "SELECT used FROM usage_counters WHERE user_id = $1 AND meter = $2 AND period_start = $3";
        let used: Option<i64> = on_pool!(self, p => sqlx::query_scalar(q)
            .bind(&key.user)
            .bind(&key.meter)
            .bind(key.period_start)
            .fetch_optional(p)
            .await)?;
        Ok(used.unwrap_or(0))
    }

    /// Every meter of a user's counters for the period starting at `start`.
    pub async fn counters_of(&self, user: &str, period_start: i64) -> Result<Vec<(String, i64)>> {
        let q = "SELECT meter, used FROM usage_counters WHERE user_id = $1 AND period_start = $2 ORDER BY meter";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(user).bind(period_start).fetch_all(p).await)?)
    }

    /// Counter rows of every user for periods starting at or after `since`.
    pub async fn counters_since(&self, since: i64) -> Result<Vec<(String, String, i64, i64)>> {
        let q = "SELECT user_id, meter, period_start, used FROM usage_counters WHERE period_start >= $1";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(since).fetch_all(p).await)?)
    }

    pub async fn lifetime_of(&self, user: &str) -> Result<Vec<(String, i64)>> {
        let q = "SELECT meter, used FROM usage_lifetime WHERE user_id = $1 ORDER BY meter";
        Ok(on_pool!(self, p => sqlx::query_as(q).bind(user).fetch_all(p).await)?)
    }

    /// A user's daily rollups for days in `[from, to)` (ms).
    pub async fn daily_of(&self, user: &str, from: i64, to: i64) -> Result<Vec<DailyRow>> {
        let q = "SELECT day, model, feature, key_id, provider, key_source, events, input_tokens, output_tokens, \
                 cached_tokens, requests, cost_micros FROM usage_daily WHERE user_id = $1 AND day >= $2 AND day < $3 \
                 ORDER BY day";
        let from_day = from.div_euclid(DAY_MS) * DAY_MS;
        let mut rows: Vec<DailyRow> =
            on_pool!(self, p => sqlx::query_as(q).bind(user).bind(from_day).bind(to).fetch_all(p).await)?;
        let q = "SELECT day, model, feature, key_id, provider, key_source, meter, used FROM usage_daily_meters \
                 WHERE user_id = $1 AND day >= $2 AND day < $3";
        let meters: Vec<MeterRollup> =
            on_pool!(self, p => sqlx::query_as(q).bind(user).bind(from_day).bind(to).fetch_all(p).await)?;
        if !meters.is_empty() {
            // Every meter row has its usage_daily row: the same commit wrote both.
            let mut index: HashMap<(i64, &str, &str, &str, &str, &str), usize> = HashMap::default();
            for (i, r) in rows.iter().enumerate() {
                index.insert((r.day, &r.model, &r.feature, &r.key_id, &r.provider, &r.key_source), i);
            }
            let mut extra: Vec<Vec<(String, i64)>> = vec![Vec::new(); rows.len()];
            for (day, model, feature, key_id, provider, key_source, meter, used) in meters {
                if let Some(i) = index.get(&(day, &*model, &*feature, &*key_id, &*provider, &*key_source)) {
                    extra[*i].push((meter, used));
                }
            }
            for (row, extra) in rows.iter_mut().zip(extra) {
                row.extra = extra;
            }
        }
        Ok(rows)
    }

    /// A user's events with `from <= ts < to`, in time order, after the
    /// event `(after_ts, after_id)` if given; at most `limit`.
    pub async fn events_of(
        &self,
        user: &str,
        from: i64,
        to: i64,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let (after_ts, after_id) = after.unwrap_or((i64::MIN, ""));
        let sql = format!(
            "SELECT {} FROM usage_events WHERE user_id = $1 AND ts >= $2 AND ts < $3 \
             AND (ts > $4 OR (ts = $4 AND id > $5)) ORDER BY ts, id LIMIT $6",
            EVENT_COLUMNS.join(", ")
        );
        Ok(on_pool!(self, p => sqlx::query_as(AssertSqlSafe(sql))
            .bind(user)
            .bind(from)
            .bind(to)
            .bind(after_ts)
            .bind(after_id)
            .bind(limit)
            .fetch_all(p)
            .await)?)
    }

    /// Deletes raw events older than `before` (ms); rollups and counters stay.
    pub async fn delete_events_before(&self, before: i64) -> Result<u64> {
        // The makers of stored responses go with their calls' events; a
        // conversation, which the provider keeps until it is deleted, stays
        // with the items listed from it.
        let q = "DELETE FROM gateway_responses WHERE created_at < $1 AND kind <> 'conversation' \
                 AND NOT EXISTS (SELECT 1 FROM gateway_responses holder \
                 WHERE holder.response_id = gateway_responses.item_of AND holder.kind = 'conversation')";
        on_pool!(self, p => sqlx::query(q).bind(before).execute(p).await.map(|_| ()))?;
        let q = "DELETE FROM usage_events WHERE ts < $1";
        Ok(on_pool!(self, p => sqlx::query(q).bind(before).execute(p).await.map(|d| d.rows_affected()))?)
    }
}

impl Store {
    /// How many of a user's events have `from <= ts < to`.
    pub async fn count_events_of(&self, user: &str, from: i64, to: i64) -> Result<i64> {
        let q = "SELECT COUNT(*) FROM usage_events WHERE user_id = $1 AND ts >= $2 AND ts < $3";
        Ok(on_pool!(self, p => sqlx::query_scalar(q).bind(user).bind(from).bind(to).fetch_one(p).await)?)
    }
}
