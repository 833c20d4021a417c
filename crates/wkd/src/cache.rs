//! The lookup cache: found keys, "no key" answers and temporary failures,
//! each with its own lifetime, bounded in size.
//!
//! Without a negative cache every mail to a domain without WKD (most of
//! them) would cost two HTTPS requests and, for a dead host, the whole
//! fetch timeout. Temporary failures are remembered only briefly: long
//! enough that a burst of mails to a domain whose server hangs does not
//! wait for the timeout again and again, short enough that the key is
//! found once the server is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::WkdKey;

/// Lifetimes and size of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a found key is used without asking again (default 24 h).
    pub positive_ttl: Duration,
    /// How long "no key" (404, no such host, nothing usable) is believed
    /// (default 1 h).
    pub negative_ttl: Duration,
    /// How long a temporary failure (timeout, 5xx) suppresses new lookups
    /// (default 5 min).
    pub temporary_ttl: Duration,
    /// Most addresses remembered; the entry closest to expiry goes first.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            positive_ttl: Duration::from_secs(24 * 3600),
            negative_ttl: Duration::from_secs(3600),
            temporary_ttl: Duration::from_secs(300),
            max_entries: 10_000,
        }
    }
}

/// What is remembered about one address.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    Found(Arc<WkdKey>),
    NotFound(String),
    Temporary(String),
}

struct Entry {
    until: Instant,
    value: Cached,
}

pub(crate) struct Cache {
    settings: CacheSettings,
    entries: HashMap<String, Entry>,
}

impl Cache {
    pub(crate) fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            entries: HashMap::new(),
        }
    }

    pub(crate) fn get(&mut self, key: &str, now: Instant) -> Option<Cached> {
        match self.entries.get(key) {
            Some(e) if e.until > now => Some(e.value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&mut self, key: String, value: Cached, now: Instant) {
        let ttl = match &value {
            Cached::Found(_) => self.settings.positive_ttl,
            Cached::NotFound(_) => self.settings.negative_ttl,
            Cached::Temporary(_) => self.settings.temporary_ttl,
        };
        if ttl.is_zero() || self.settings.max_entries == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.settings.max_entries {
            self.entries.retain(|_, e| e.until > now);
            if self.entries.len() >= self.settings.max_entries {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.until)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            Entry {
                until: now + ttl,
                value,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize) -> CacheSettings {
        CacheSettings {
            positive_ttl: Duration::from_secs(100),
            negative_ttl: Duration::from_secs(10),
            temporary_ttl: Duration::from_secs(1),
            max_entries: max,
        }
    }

    #[test]
    fn entries_expire_by_kind() {
        let t0 = Instant::now();
        let mut c = Cache::new(settings(10));
        c.put("n".into(), Cached::NotFound("404".into()), t0);
        c.put("t".into(), Cached::Temporary("timeout".into()), t0);
        assert!(matches!(c.get("n", t0), Some(Cached::NotFound(_))));
        assert!(matches!(c.get("t", t0), Some(Cached::Temporary(_))));
        let t2 = t0 + Duration::from_secs(2);
        assert!(
            c.get("t", t2).is_none(),
            "temporary failures are short-lived"
        );
        assert!(c.get("n", t2).is_some());
        assert!(c.get("n", t0 + Duration::from_secs(11)).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::new(settings(3));
        for i in 0..10 {
            c.put(
                format!("a{i}"),
                Cached::NotFound("404".into()),
                t0 + Duration::from_millis(i),
            );
            assert!(c.len() <= 3);
        }
        // The newest survive; the one closest to expiry went first.
        assert!(c.get("a9", t0).is_some());
        assert!(c.get("a0", t0).is_none());
    }
}
