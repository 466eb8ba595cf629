//! The single writer: it commits whatever is queued in one transaction
//! (natural group commit: no timer, no wait when idle), then applies the
//! committed usage to the live counters and answers each caller. Loads of
//! counters go through it too, so that a load never races a commit. Usage
//! alerts are judged inside the commit (see [`super::alerts`]); when a
//! commit fired some, the outbox's sender is told.
//!
//! With a [`Journal`] (the embedded store), events whose ids are new by
//! construction (the gateway's) are made durable by an append to it
//! instead, applied and answered at once; an ingester task commits them to
//! the ledger behind, what arrives within a few milliseconds in one
//! transaction. Whatever must see them in the ledger (a load, a commit that
//! needs to know which events are new, the emptying of the journal, a read
//! through the API) first waits for it to catch up, which hurries it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tollgate_domain::quota::CounterKey;
use tollgate_store::{PreparedEvent, Store, counter_sums};

use super::Accounts;
use super::alerts::Limits;
use super::counters::CounterStore;
use super::journal::Journal;

type Counters = Arc<dyn CounterStore>;

pub enum Job {
    Commit {
        events: Vec<PreparedEvent>,
        /// The reservation these events settle, if any.
        settles: Option<String>,
        /// Every event's id is new (made for it, not the client's): the
        /// journal may take the events, and each is answered as new.
        fresh: bool,
        reply: oneshot::Sender<Result<Vec<bool>, String>>,
    },
    Load {
        keys: Vec<CounterKey>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Jobs taken into one transaction at most.
const MAX_JOBS: usize = 1024;

/// What the writer works with.
pub struct Writer {
    pub store: Arc<Store>,
    pub counters: Counters,
    pub accounts: Arc<Accounts>,
    pub outbox_signal: Arc<Notify>,
}

/// How far the journal's appends and their ingestion have got, in groups
/// appended; shared with readers that must see acknowledged usage in the
/// ledger.
#[derive(Clone)]
pub struct Progress {
    appended: Arc<AtomicU64>,
    ingested: watch::Receiver<u64>,
    /// Tells the ingester that someone waits: commit what is queued now.
    hurry: Arc<Notify>,
}

/// Readers wait this long at most for the ledger to take in what the
/// journal acknowledged (it takes milliseconds unless the database fails).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);

impl Progress {
    /// Returns once everything acknowledged before the call is in the
    /// ledger (or after [`CATCH_UP_LIMIT`], said in the log).
    pub async fn caught_up(&self) {
        if tokio::time::timeout(CATCH_UP_LIMIT, self.wait()).await.is_err() {
            tracing::warn!("the ledger is behind the usage journal; answering from what it has");
        }
    }

    async fn wait(&self) {
        let target = self.appended.load(Ordering::Acquire);
        if *self.ingested.borrow() >= target {
            return;
        }
        self.hurry.notify_one();
        // The ingester stops only when the writer does: until then it
        // gets there.
        let _ = self.ingested.clone().wait_for(|n| *n >= target).await;
    }
}

/// The journal with its ingester.
struct Journaled {
    journal: Journal,
    progress: Progress,
    to_ingest: mpsc::UnboundedSender<Vec<PreparedEvent>>,
    ingester: JoinHandle<()>,
}

impl Journaled {
    /// Waits until the ledger holds every appended event.
    async fn caught_up(&self) {
        self.progress.wait().await
    }
}

/// Commits what a previous run left in `journal` (before any other write),
/// empties it, and starts the writer with its ingester; the [`Progress`]
/// is for readers.
pub async fn start_journaled(
    writer: Writer,
    mut journal: Journal,
    left: Vec<PreparedEvent>,
    jobs: mpsc::Receiver<Job>,
) -> anyhow::Result<(JoinHandle<()>, Progress)> {
    if !left.is_empty() {
        let limits = Limits { accounts: &writer.accounts };
        for chunk in left.chunks(INGEST_MAX) {
            ingest(&writer.store, &limits, chunk).await;
        }
        tracing::info!(events = left.len(), path = %journal.path().display(), "committed the usage journal left by the last run");
        writer.outbox_signal.notify_one();
    }
    journal.clear().await?;
    Ok(spawn_journaled(writer, journal, jobs))
}

/// Starts the writer with `journal` (empty) and its ingester.
fn spawn_journaled(writer: Writer, journal: Journal, jobs: mpsc::Receiver<Job>) -> (JoinHandle<()>, Progress) {
    let (to_ingest, queue) = mpsc::unbounded_channel();
    let (ingested_tx, ingested) = watch::channel(0);
    let hurry = Arc::new(Notify::new());
    let ingester = tokio::spawn(run_ingester(
        writer.store.clone(),
        writer.accounts.clone(),
        writer.outbox_signal.clone(),
        (queue, hurry.clone()),
        ingested_tx,
    ));
    let progress = Progress { appended: Arc::new(AtomicU64::new(0)), ingested, hurry };
    let journaled = Journaled { journal, progress: progress.clone(), to_ingest, ingester };
    (tokio::spawn(run(writer, Some(journaled), jobs)), progress)
}

/// Starts the writer without a journal: every commit goes to the ledger.
pub fn start(writer: Writer, jobs: mpsc::Receiver<Job>) -> JoinHandle<()> {
    tokio::spawn(run(writer, None, jobs))
}

async fn run(writer: Writer, mut journaled: Option<Journaled>, mut jobs: mpsc::Receiver<Job>) {
    let Writer { store, counters, accounts, outbox_signal } = &writer;
    let limits = Limits { accounts };
    let mut batch = Vec::with_capacity(MAX_JOBS);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_JOBS {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut commits = Vec::new();
        let mut records = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Load { keys, reply } => {
                    if let Some(j) = journaled.as_ref() {
                        j.caught_up().await;
                    }
                    let _ = reply.send(load(store, counters, keys).await);
                }
                Job::Commit { events, settles, fresh: true, reply } if journaled.is_some() => {
                    records.push((events, settles, reply))
                }
                Job::Commit { events, settles, reply, .. } => commits.push((events, settles, reply)),
            }
        }
        if let Some(j) = journaled.as_mut() {
            if !records.is_empty() {
                commits.extend(record(j, counters, records).await);
            }
            if !commits.is_empty() {
                j.caught_up().await;
            }
        }
        if !commits.is_empty() && commit(store, counters, &limits, commits).await {
            outbox_signal.notify_one();
        }
    }
    if let Some(mut j) = journaled {
        drop(j.to_ingest);
        let _ = j.ingester.await;
        if let Err(e) = j.journal.clear().await {
            tracing::error!(error = %e, path = %j.journal.path().display(), "failed to empty the usage journal; it is committed again at the next start");
        }
    }
    tracing::debug!("metering writer stopped: every queued write is committed");
}

/// Appends the records' events to the journal in one line, applies them to
/// the live counters and answers their callers; gives the records back
/// when the journal fails, to be committed to the ledger instead.
async fn record(j: &mut Journaled, counters: &Counters, records: Vec<Pending>) -> Vec<Pending> {
    if let Err(e) = j.journal.append(records.iter().flat_map(|(events, _, _)| events)).await {
        tracing::error!(error = %e, path = %j.journal.path().display(), "failed to append to the usage journal; committing to the ledger instead");
        return records;
    }
    let mut all = Vec::with_capacity(records.iter().map(|(events, _, _)| events.len()).sum());
    let mut settled = Vec::new();
    let mut replies = Vec::with_capacity(records.len());
    for (events, settles, reply) in records {
        replies.push((events.len(), reply));
        settled.extend(settles);
        all.extend(events);
    }
    if let Err(e) = counters.apply(&settled, &counter_sums(&all)).await {
        tracing::error!(error = %e, "failed to apply journaled usage to the live counters");
    }
    metrics::counter!("tollgate_usage_events_committed_total").increment(all.len() as u64);
    j.progress.appended.fetch_add(1, Ordering::AcqRel);
    // The ingester runs until the writer drops this sender.
    let _ = j.to_ingest.send(all);
    for (n, reply) in replies {
        let _ = reply.send(Ok(vec![true; n]));
    }
    if j.journal.is_full() {
        j.caught_up().await;
        if let Err(e) = j.journal.clear().await {
            tracing::error!(error = %e, path = %j.journal.path().display(), "failed to empty the usage journal");
        }
    }
    Vec::new()
}

/// How long the ingester gathers groups before it commits them, unless
/// someone waits for them: a transaction's cost is mostly fixed (the pages
/// it writes), so larger ones cost less per event.
const GATHER: Duration = Duration::from_millis(20);

/// Events in one ingest transaction at most.
const INGEST_MAX: usize = 4096;

/// Commits journaled groups to the ledger, those that arrive within
/// [`GATHER`] of the first in one transaction, and says how many groups
/// are in.
async fn run_ingester(
    store: Arc<Store>,
    accounts: Arc<Accounts>,
    outbox_signal: Arc<Notify>,
    (mut queue, hurry): (mpsc::UnboundedReceiver<Vec<PreparedEvent>>, Arc<Notify>),
    ingested: watch::Sender<u64>,
) {
    let limits = Limits { accounts: &accounts };
    let mut done = 0;
    while let Some(first) = queue.recv().await {
        if first.len() < INGEST_MAX {
            // Ended early by a waiting reader, or by a permit left by one
            // the last transaction served: then one transaction is smaller.
            let _ = tokio::time::timeout(GATHER, hurry.notified()).await;
        }
        let mut events = first;
        let mut groups = 1;
        while events.len() < INGEST_MAX {
            match queue.try_recv() {
                Ok(more) => {
                    events.extend(more);
                    groups += 1;
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("tollgate_usage_ingest_batch_events").record(events.len() as f64);
        if ingest(&store, &limits, &events).await {
            outbox_signal.notify_one();
        }
        done += groups;
        ingested.send_replace(done);
    }
}

/// Commits journaled events to the ledger; says whether alerts were
/// written. When the group fails, each event is committed alone, each tried
/// again until the database takes it, for the journal has acknowledged it.
/// (The ledger names users without a foreign key: the usage of a user
/// deleted meanwhile is kept, as the rest of their usage is.)
async fn ingest(store: &Store, limits: &Limits<'_>, events: &[PreparedEvent]) -> bool {
    match store.commit_usage(events, Some(limits)).await {
        Ok(committed) => return committed.alerts > 0,
        Err(e) if events.len() == 1 => tracing::warn!(error = %e, "failed to commit journaled usage"),
        Err(e) => {
            tracing::warn!(error = %e, events = events.len(), "failed to commit journaled usage; committing its events one by one")
        }
    }
    let mut alerted = false;
    for event in events {
        let mut pause = Duration::from_millis(100);
        loop {
            match store.commit_usage(std::slice::from_ref(event), Some(limits)).await {
                Ok(committed) => {
                    alerted |= committed.alerts > 0;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, event = %event.row.id, "failed to commit journaled usage; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    alerted
}

/// How often a counter is read again when other instances keep adding to
/// it while it is read.
const LOAD_TRIES: usize = 20;

async fn load(store: &Store, counters: &Counters, keys: Vec<CounterKey>) -> Result<(), String> {
    'keys: for key in counters.missing(&keys).await.map_err(|e| e.to_string())? {
        for _ in 0..LOAD_TRIES {
            let fence = counters.fence(&key).await.map_err(|e| e.to_string())?;
            let used = store.counter(&key).await.map_err(|e| e.to_string())?;
            if counters.load(key.clone(), used, fence).await.map_err(|e| e.to_string())? {
                continue 'keys;
            }
        }
        return Err(format!("the counter of {} for {:?} kept changing while it was read", key.meter, key.user));
    }
    Ok(())
}

type Pending = (Vec<PreparedEvent>, Option<String>, oneshot::Sender<Result<Vec<bool>, String>>);

/// Commits, applies, answers; says whether alerts were written. When the
/// group's transaction fails, each caller's job is tried again in a
/// transaction of its own, so that one bad job fails only its own caller.
async fn commit(store: &Store, counters: &Counters, limits: &Limits<'_>, commits: Vec<Pending>) -> bool {
    if commits.len() == 1 {
        return commit_group(store, counters, limits, commits).await.1;
    }
    let (failed, alerted) = commit_group(store, counters, limits, commits).await;
    let mut alerted = alerted;
    if let Some(commits) = failed {
        metrics::counter!("tollgate_usage_group_commits_split_total").increment(1);
        for one in commits {
            alerted |= commit_group(store, counters, limits, vec![one]).await.1;
        }
    }
    alerted
}

/// One transaction for `commits`. On success every caller is answered; on
/// failure a lone caller gets the error, and a group is handed back
/// unanswered, to be tried one by one. Also says whether alerts were written.
async fn commit_group(
    store: &Store,
    counters: &Counters,
    limits: &Limits<'_>,
    commits: Vec<Pending>,
) -> (Option<Vec<Pending>>, bool) {
    let mut all = Vec::with_capacity(commits.iter().map(|(events, _, _)| events.len()).sum());
    let mut callers = Vec::with_capacity(commits.len());
    let mut settled = Vec::new();
    for (events, settles, reply) in commits {
        callers.push((all.len()..all.len() + events.len(), settles.clone(), reply));
        settled.extend(settles);
        all.extend(events);
    }
    match store.commit_usage(&all, Some(limits)).await {
        Ok(committed) => {
            // Holds of settled reservations end, and every new event's
            // usage (the settled ones' included) is added, in one step.
            if let Err(e) = counters.apply(&settled, &committed.counters).await {
                // Committed, but the live counters missed it: they catch up
                // when reloaded; say so loudly.
                tracing::error!(error = %e, "failed to apply committed usage to the live counters");
            }
            metrics::counter!("tollgate_usage_events_committed_total")
                .increment(committed.new.iter().filter(|f| **f).count() as u64);
            for (range, _, reply) in callers {
                let _ = reply.send(Ok(committed.new[range].to_vec()));
            }
            (None, committed.alerts > 0)
        }
        Err(e) if callers.len() > 1 => {
            tracing::warn!(error = %e, jobs = callers.len(), "a group commit failed; committing its jobs one by one");
            // Hand the events back to their callers' jobs, last first.
            let mut back = Vec::with_capacity(callers.len());
            for (range, settles, reply) in callers.into_iter().rev() {
                back.push((all.split_off(range.start), settles, reply));
            }
            back.reverse();
            (Some(back), false)
        }
        Err(e) => {
            tracing::error!(error = %e, events = all.len(), "failed to commit usage");
            for (_, _, reply) in callers {
                let _ = reply.send(Err(e.to_string()));
            }
            (None, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tollgate_domain::{Meter, PlanSlug, Timestamp, UserId};
    use tollgate_store::{EventRow, NewUser, StoreConfig};

    use super::*;
    use crate::metering::counters::MemoryCounters;

    /// A migrated SQLite store in `dir` with the user `u_1`, and a writer on it.
    async fn writer_on(dir: &std::path::Path) -> Writer {
        let config = StoreConfig::Sqlite { path: dir.join("tollgate.db"), fsync_each_commit: false };
        let store = Arc::new(Store::open(&config).await.unwrap());
        store.migrate().await.unwrap();
        store.seed_default_plans().await.unwrap();
        let u_1 = NewUser {
            id: UserId::parse("u_1").unwrap(),
            plan: PlanSlug::parse("free").unwrap(),
            email: None,
            stripe_customer_id: None,
            billing_anchor: None,
        };
        store.insert_user(u_1).await.unwrap();
        let ttl = Duration::from_secs(60);
        Writer {
            store: store.clone(),
            counters: Arc::new(MemoryCounters::default()),
            accounts: Arc::new(Accounts { store, cache: Mutex::new(HashMap::new()), ttl }),
            outbox_signal: Arc::new(Notify::new()),
        }
    }

    /// A call's event: 10 tokens of `user`'s.
    fn event(id: &str, user: &str) -> PreparedEvent {
        let row = EventRow {
            id: id.into(),
            ts: Timestamp::now().millis(),
            user_id: user.into(),
            input_tokens: 7,
            output_tokens: 3,
            key_source: "platform".into(),
            billable: true,
            ..EventRow::default()
        };
        PreparedEvent { row, meters: vec![(Meter::parse("tokens").unwrap(), 10)], ..Default::default() }
    }

    async fn ledger_ids(store: &Store) -> Vec<String> {
        let events = store.events_of("u_1", 0, i64::MAX, None, 10).await.unwrap();
        events.into_iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn a_queued_commit_stands_when_its_caller_goes_away_and_a_full_queue_gives_the_events_back() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(dir.path()).await;
        let (store, counters) = (writer.store.clone(), writer.counters.clone());
        let ttl = Duration::from_secs(60);
        let config = super::super::MeteringConfig { account_ttl: ttl, reservation_ttl: ttl };
        // A queue of one job, which nobody takes yet.
        let (metering, writer, jobs) = super::super::Metering::unstarted(store.clone(), counters, config, vec![], 1);
        let Ok(gone) = metering.try_record(vec![event("evt_a", "u_1")], None) else { panic!("room for one job") };
        let Err(back) = metering.try_record(vec![event("evt_b", "u_1")], None) else { panic!("the queue is full") };
        assert_eq!(back.iter().map(|e| e.row.id.as_str()).collect::<Vec<_>>(), ["evt_b"]);
        // The first caller goes away; its commit was queued, so it stands.
        drop(gone);
        let _task = start(writer, jobs);
        metering.record(back, None).await.unwrap();
        let Ok(answer) = metering.try_record(vec![event("evt_c", "u_1")], None) else { panic!("room again") };
        answer.await.unwrap();
        let mut ids = ledger_ids(&store).await;
        ids.sort();
        assert_eq!(ids, ["evt_a", "evt_b", "evt_c"]);
    }

    #[tokio::test]
    async fn usage_the_journal_cannot_take_is_committed_to_the_ledger_instead() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(dir.path()).await;
        let store = writer.store.clone();
        let (jobs, queue) = mpsc::channel(16);
        let (task, _) = spawn_journaled(writer, Journal::on_a_full_disk(), queue);
        for id in ["evt_a", "evt_b"] {
            let (reply, answer) = oneshot::channel();
            let events = vec![event(id, "u_1")];
            jobs.send(Job::Commit { events, settles: None, fresh: true, reply }).await.unwrap();
            assert_eq!(answer.await.unwrap(), Ok(vec![true]), "{id} is acknowledged");
            // Acknowledged, and already in the ledger: the journal took nothing.
            assert!(ledger_ids(&store).await.contains(&id.to_owned()), "{id} is in the ledger");
        }
        drop(jobs);
        task.await.unwrap();
        assert_eq!(ledger_ids(&store).await, ["evt_a", "evt_b"]);
    }

    #[tokio::test]
    async fn the_journal_applies_to_the_live_counters_what_the_ledger_adds_to_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(dir.path()).await;
        let mut events = vec![event("evt_a", "u_1"), event("evt_b", "u_1"), event("evt_c", "u_2")];
        events[0].meters.push((Meter::parse("requests").unwrap(), 1));
        events[1].period_start = Some(1_000);
        events[2].period_start = Some(2_000);
        // A user's own key, outside the quota: no counter.
        events.push(PreparedEvent { period_start: None, ..event("evt_d", "u_1") });
        events[0].period_start = Some(1_000);
        let committed = writer.store.commit_usage(&events, None).await.unwrap();
        assert_eq!(committed.new, [true; 4]);
        assert_eq!(counter_sums(&events), committed.counters);
        let sums: Vec<_> = committed.counters.iter().map(|(k, n)| (k.user.as_str(), k.meter.as_str(), *n)).collect();
        assert_eq!(sums, [("u_1", "requests", 1), ("u_1", "tokens", 20), ("u_2", "tokens", 10)]);
    }

    #[tokio::test]
    async fn journaled_usage_of_a_user_deleted_meanwhile_is_ingested_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_on(dir.path()).await;
        let limits = Limits { accounts: &writer.accounts };
        let group = [event("evt_a", "u_1"), event("evt_b", "u_deleted"), event("evt_c", "u_1")];
        // The alert check finds no account for `u_deleted`: that must not
        // fail the group, or the ingester would try it again forever.
        let ingested = tokio::time::timeout(Duration::from_secs(30), ingest(&writer.store, &limits, &group)).await;
        assert!(ingested.is_ok(), "the group was ingested");
        assert_eq!(ledger_ids(&writer.store).await, ["evt_a", "evt_c"]);
        let kept = writer.store.events_of("u_deleted", 0, i64::MAX, None, 10).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["evt_b"], "the ledger outlives users");
    }
}
