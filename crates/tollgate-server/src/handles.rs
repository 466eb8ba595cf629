//! Metric handles kept by their label values.
//!
//! A metric whose labels are not all static is registered again on every
//! call: the recorder copies the call's labels into a new key (allocations,
//! hashing, the registry's lock) to find the same handle as last time. The
//! label values of the per-request metrics are few (route patterns,
//! statuses, providers), so their handles are kept here after the first
//! registration.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Label combinations kept at most; past that each is registered as it
/// would have been without the cache.
const MAX: usize = 4096;

/// Handles `H` (a `metrics::Counter`, a histogram, or several) by label
/// values `K`.
pub struct Handles<K, H>(Mutex<Option<HashMap<K, H>>>);

impl<K: Eq + Hash, H: Clone> Handles<K, H> {
    pub const fn new() -> Self {
        Handles(Mutex::new(None))
    }

    /// The handles of `key`, registered by `register` the first time.
    pub fn get<Q>(&self, key: &Q, register: impl FnOnce() -> H) -> H
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ToOwned<Owned = K> + ?Sized,
    {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let kept = kept.get_or_insert_with(HashMap::new);
        if let Some(handles) = kept.get(key) {
            return handles.clone();
        }
        let handles = register();
        if kept.len() < MAX {
            kept.insert(key.to_owned(), handles.clone());
        }
        handles
    }
}

impl<K: Eq + Hash, H: Clone> Default for Handles<K, H> {
    fn default() -> Self {
        Handles::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_label_value_is_registered_once() {
        let handles: Handles<String, usize> = Handles::new();
        let mut registered = 0;
        let mut get = |provider: &str| {
            handles.get(provider, || {
                registered += 1;
                registered
            })
        };
        assert_eq!(get("openai"), 1);
        assert_eq!(get("openai"), 1);
        assert_eq!(get("anthropic"), 2);
        assert_eq!(get("openai"), 1);
    }
}
