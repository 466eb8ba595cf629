//! Where live counters and reservations are kept. One instance keeps them
//! in memory, rebuilt from the store on demand (the store is the truth for
//! committed usage); the enum leaves room for a shared store (Redis) that
//! several instances can use.

use std::sync::Mutex;

use tollgate_domain::quota::{Ask, Count, CounterKey, Counters, Refusal};

pub enum CounterStore {
    Memory(Mutex<Counters>),
}

impl CounterStore {
    pub fn memory() -> Self {
        CounterStore::Memory(Mutex::new(Counters::default()))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        match self {
            CounterStore::Memory(m) => f(&mut m.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// The keys among `keys` whose committed value is not known here yet.
    pub fn missing(&self, keys: &[CounterKey]) -> Vec<CounterKey> {
        self.with(|c| keys.iter().filter(|k| !c.is_loaded(k)).cloned().collect())
    }

    pub fn load(&self, key: CounterKey, used: i64) {
        self.with(|c| c.load(key, used))
    }

    pub fn count(&self, key: &CounterKey) -> Count {
        self.with(|c| c.count(key))
    }

    /// Holds `asks`. Expired holds are dropped every second by the engine;
    /// a refusal drops them at once and tries again, so a stale hold never
    /// causes a refusal, and a grant costs no scan of every hold.
    pub fn reserve(&self, id: &str, asks: &[Ask], now: i64, ttl_ms: i64) -> Result<(), Refusal> {
        self.with(|c| {
            c.reserve(id, asks, now, ttl_ms).or_else(|_| {
                c.expire(now);
                c.reserve(id, asks, now, ttl_ms)
            })
        })
    }

    pub fn holds(&self, id: &str) -> Option<Vec<(CounterKey, i64)>> {
        self.with(|c| c.holds(id))
    }

    pub fn release(&self, id: &str) -> bool {
        self.with(|c| c.release(id))
    }

    /// Applies one commit: each settled reservation ends and its usage is
    /// added, and other committed usage is added, in one step.
    pub fn apply(&self, settled: &[(String, Vec<(CounterKey, i64)>)], added: &[(CounterKey, i64)]) {
        self.with(|c| {
            for (id, actual) in settled {
                c.settle(id, actual);
            }
            for (key, n) in added {
                c.add_used(key, *n);
            }
        })
    }

    pub fn expire(&self, now: i64) -> usize {
        self.with(|c| c.expire(now))
    }
}
