//! Where live counters and reservations are kept, behind one trait.
//!
//! [`MemoryCounters`] serves a single instance: counters rebuilt from the
//! store on demand (the store is the truth for committed usage), holds in
//! memory. A shared implementation (Redis) for several instances plugs in
//! behind the same trait; its methods are async and fallible for that.

use std::sync::Mutex;

use futures_util::future::BoxFuture;
use tollgate_domain::quota::{Ask, Count, CounterKey, Counters, Refusal};

pub type CounterResult<T> = anyhow::Result<T>;

/// A hold asked for a counter whose committed value is not loaded (a
/// shared store may drop one between its load and the hold): load it and
/// ask again.
#[derive(Debug, thiserror::Error)]
#[error("a counter was not loaded in the shared counter store")]
pub struct NotLoaded;

/// Amounts per counter.
pub type Parts = Vec<(CounterKey, i64)>;

pub trait CounterStore: Send + Sync {
    /// The keys among `keys` whose committed value is not known here yet.
    fn missing<'a>(&'a self, keys: &'a [CounterKey]) -> BoxFuture<'a, CounterResult<Vec<CounterKey>>>;

    /// A mark taken just before a counter's committed value is read from
    /// the store, for [`CounterStore::load`].
    fn fence<'a>(&'a self, key: &'a CounterKey) -> BoxFuture<'a, CounterResult<u64>>;

    /// Sets a counter's committed value as read from the store, unless
    /// known. `false` when usage was added to the counter since `fence` was
    /// taken (by another instance: the value read may miss it), so that it
    /// must be read again.
    fn load(&self, key: CounterKey, used: i64, fence: u64) -> BoxFuture<'_, CounterResult<bool>>;

    fn count<'a>(&'a self, key: &'a CounterKey) -> BoxFuture<'a, CounterResult<Count>>;

    /// Holds every ask or none; `Ok(Err(_))` is a refusal.
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        asks: &'a [Ask],
        now: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, CounterResult<Result<(), Refusal>>>;

    /// What a live hold holds.
    fn holds<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CounterResult<Option<Parts>>>;

    /// Gives a hold back unused; whether it existed.
    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CounterResult<bool>>;

    /// Keeps a live hold for `ttl_ms` from `now` at least; whether it existed.
    fn prolong<'a>(&'a self, id: &'a str, now: i64, ttl_ms: i64) -> BoxFuture<'a, CounterResult<bool>>;

    /// Applies one commit: the usage it committed (its settled reservations'
    /// included) is added and their holds end; never the one without the
    /// other as seen by a reservation (in one step, or adding first).
    fn apply<'a>(&'a self, settled: &'a [String], added: &'a [(CounterKey, i64)]) -> BoxFuture<'a, CounterResult<()>>;

    /// Drops holds past their expiry; how many.
    fn expire(&self, now: i64) -> BoxFuture<'_, CounterResult<usize>>;
}

/// One instance's counters, in memory, under one lock.
#[derive(Default)]
pub struct MemoryCounters(Mutex<Counters>);

impl MemoryCounters {
    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut Counters) -> T) -> BoxFuture<'_, CounterResult<T>> {
        let out = f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
        Box::pin(std::future::ready(Ok(out)))
    }
}

impl CounterStore for MemoryCounters {
    fn missing<'a>(&'a self, keys: &'a [CounterKey]) -> BoxFuture<'a, CounterResult<Vec<CounterKey>>> {
        self.with(|c| keys.iter().filter(|k| !c.is_loaded(k)).cloned().collect())
    }

    /// One instance's single writer both loads and adds: nothing moves in
    /// between.
    fn fence<'a>(&'a self, _key: &'a CounterKey) -> BoxFuture<'a, CounterResult<u64>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn load(&self, key: CounterKey, used: i64, _fence: u64) -> BoxFuture<'_, CounterResult<bool>> {
        self.with(|c| {
            c.load(key, used);
            true
        })
    }

    fn count<'a>(&'a self, key: &'a CounterKey) -> BoxFuture<'a, CounterResult<Count>> {
        self.with(|c| c.count(key))
    }

    /// Expired holds are dropped every second by the engine; a refusal
    /// drops them at once and tries again, so a stale hold never causes a
    /// refusal and a grant costs no scan of every hold.
    fn reserve<'a>(
        &'a self,
        id: &'a str,
        asks: &'a [Ask],
        now: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, CounterResult<Result<(), Refusal>>> {
        self.with(|c| {
            c.reserve(id, asks, now, ttl_ms).or_else(|_| {
                c.expire(now);
                c.reserve(id, asks, now, ttl_ms)
            })
        })
    }

    fn holds<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CounterResult<Option<Parts>>> {
        self.with(|c| c.holds(id))
    }

    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CounterResult<bool>> {
        self.with(|c| c.release(id))
    }

    fn prolong<'a>(&'a self, id: &'a str, now: i64, ttl_ms: i64) -> BoxFuture<'a, CounterResult<bool>> {
        self.with(|c| c.prolong(id, now + ttl_ms))
    }

    fn apply<'a>(&'a self, settled: &'a [String], added: &'a [(CounterKey, i64)]) -> BoxFuture<'a, CounterResult<()>> {
        self.with(|c| {
            for id in settled {
                c.release(id);
            }
            for (key, n) in added {
                c.add_used(key, *n);
            }
        })
    }

    fn expire(&self, now: i64) -> BoxFuture<'_, CounterResult<usize>> {
        self.with(|c| c.expire(now))
    }
}
