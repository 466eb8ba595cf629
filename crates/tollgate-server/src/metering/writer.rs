//! The single writer: it commits whatever is queued in one transaction
//! (natural group commit: no timer, no wait when idle), then applies the
//! committed usage to the live counters and answers each caller. Loads of
//! counters go through it too, so that a load never races a commit. Usage
//! alerts are judged inside the commit (see [`super::alerts`]); when a
//! commit fired some, the outbox's sender is told.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tollgate_domain::quota::CounterKey;
use tollgate_store::{PreparedEvent, Store};

use super::Accounts;
use super::alerts::Limits;
use super::counters::CounterStore;

type Counters = Arc<dyn CounterStore>;

pub enum Job {
    Commit {
        events: Vec<PreparedEvent>,
        /// The reservation these events settle, if any.
        settles: Option<String>,
        reply: oneshot::Sender<Result<Vec<bool>, String>>,
    },
    Load {
        keys: Vec<CounterKey>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Jobs taken into one transaction at most.
const MAX_JOBS: usize = 1024;

pub async fn run(
    store: Arc<Store>,
    counters: Counters,
    accounts: Arc<Accounts>,
    outbox_signal: Arc<Notify>,
    mut jobs: mpsc::Receiver<Job>,
) {
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
        for job in batch.drain(..) {
            match job {
                Job::Load { keys, reply } => {
                    let _ = reply.send(load(&store, &counters, keys).await);
                }
                Job::Commit { events, settles, reply } => commits.push((events, settles, reply)),
            }
        }
        if !commits.is_empty() {
            let limits = Limits { accounts: &accounts };
            if commit(&store, &counters, &limits, commits).await {
                outbox_signal.notify_one();
            }
        }
    }
    tracing::debug!("metering writer stopped: every queued write is committed");
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
