//! The WKD client: fetch, filter, cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use siegel_fetch::{FetchError, Fetcher};
use siegel_openpgp::Pgp;
use siegel_types::Address;

use crate::cache::{Cache, CacheSettings, Cached};

/// A key found by WKD, already filtered (names the address, usable for
/// encryption when it was found).
#[derive(Debug, Clone)]
pub struct WkdKey {
    /// The certificate, public parts only.
    pub cert: Cert,
    /// Upper-case hex fingerprint of the primary key.
    pub fingerprint: String,
    /// Upper-case hex key id of the primary key.
    pub key_id: String,
    /// Creation time of the primary key, Unix seconds.
    pub created: i64,
    /// Expiry of the primary key, Unix seconds; `None` = does not expire.
    pub expires: Option<i64>,
    /// The binary public certificate, as it is stored.
    pub material: Vec<u8>,
    /// The URL it was fetched from (advanced or direct method).
    pub url: String,
}

/// The answer of one lookup, with the reason when there is no key (for
/// the log; the mail path only asks [`Lookup::key`]).
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A usable key.
    Found(Arc<WkdKey>),
    /// The domain publishes no usable key for the address (404, no WKD
    /// host, nothing that names the address or can be encrypted to).
    NotFound(String),
    /// The lookup could not be made now (timeout, server error); treated as
    /// "no key" for this mail.
    Temporary(String),
}

impl Lookup {
    /// The key, if one was found.
    pub fn key(&self) -> Option<&Arc<WkdKey>> {
        match self {
            Lookup::Found(k) => Some(k),
            _ => None,
        }
    }
}

/// How a failed fetch of one URL is judged.
enum Failure {
    /// The host is not there (no such name, refuses connections, no TLS
    /// for this name; `host`) or answers 404: for the advanced URL, try
    /// the direct one.
    Absent { why: String, host: bool },
    /// The host is there but has nothing for us (other 4xx, refused by the
    /// SSRF guard, too large, bad redirects): no key, no fallback.
    Refused(String),
    /// Try again later (timeout, 5xx, broken HTTP).
    Temporary(String),
}

fn judge(e: &FetchError) -> Failure {
    let why = e.to_string();
    match e {
        // TLS failures count as "does not connect": a domain with wildcard
        // DNS resolves openpgpkey.<domain> to its web server, whose
        // certificate does not name that host.
        FetchError::UnknownHost(_)
        | FetchError::Resolve { .. }
        | FetchError::Connect { .. }
        | FetchError::Tls { .. } => Failure::Absent { why, host: true },
        FetchError::Status { status: 404, .. } => Failure::Absent { why, host: false },
        FetchError::Status { status, .. } if *status == 429 || *status >= 500 => {
            Failure::Temporary(why)
        }
        FetchError::Timeout(_) | FetchError::Http(_) => Failure::Temporary(why),
        _ => Failure::Refused(why),
    }
}

/// Looks up recipients' keys by WKD, with a cache. Share one per process
/// (`Arc`); lookups may run concurrently.
pub struct Client {
    fetcher: Fetcher,
    cache: Mutex<Cache>,
    /// Lookups under way, per address: a burst of mails to one new
    /// address makes one lookup, and the others wait for its answer.
    under_way: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client over `fetcher` (its size cap is the largest key accepted;
    /// its resolver and extra roots are used as they are).
    pub fn new(fetcher: Fetcher, cache: CacheSettings) -> Self {
        Self {
            fetcher,
            cache: Mutex::new(Cache::new(cache)),
            under_way: Mutex::default(),
        }
    }

    /// The usable key of `address`, or `None`; never an error.
    pub async fn find(&self, address: &Address) -> Option<Arc<WkdKey>> {
        self.lookup(address).await.key().cloned()
    }

    /// Looks `address` up: the cache first, then the advanced method, then
    /// (only when the advanced host is absent or answers 404) the direct
    /// method.
    ///
    /// What is learnt of a whole domain is remembered for the domain: when
    /// neither WKD host exists, or the lookup failed for now (a timeout, a
    /// server error), other addresses of that domain get the same answer
    /// without asking again until it expires. Concurrent lookups of one
    /// address make one request.
    pub async fn lookup(&self, address: &Address) -> Lookup {
        let cache_key = address.as_str().to_ascii_lowercase();
        let domain_key = format!("@{}", address.domain().to_ascii_lowercase());
        if let Some(answer) = self.cached(&cache_key, &domain_key) {
            return answer;
        }
        let turn = Arc::clone(
            self.under_way
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(cache_key.clone())
                .or_default(),
        );
        let answer = {
            let _turn = turn.lock().await;
            // The lookup ahead of us may have answered meanwhile.
            match self.cached(&cache_key, &domain_key) {
                Some(answer) => return answer,
                None => {
                    self.fetch_and_remember(address, cache_key.clone(), domain_key)
                        .await
                }
            }
        };
        self.under_way
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&cache_key);
        answer
    }

    /// The cached answer for the address, or else for its whole domain.
    fn cached(&self, cache_key: &str, domain_key: &str) -> Option<Lookup> {
        let now = Instant::now();
        let mut cache = self.lock();
        match cache.get(cache_key, now) {
            // A cached key may have expired or been revoked meanwhile.
            Some(Cached::Found(k)) if Pgp::new().check_encryption(&k.cert).is_ok() => {
                return Some(Lookup::Found(k));
            }
            Some(Cached::Found(_)) => return None,
            Some(Cached::NotFound(why)) => return Some(Lookup::NotFound(why)),
            Some(Cached::Temporary(why)) => return Some(Lookup::Temporary(why)),
            None => {}
        }
        match cache.get(domain_key, now) {
            Some(Cached::NotFound(why)) => Some(Lookup::NotFound(why)),
            Some(Cached::Temporary(why)) => Some(Lookup::Temporary(why)),
            Some(Cached::Found(_)) | None => None,
        }
    }

    async fn fetch_and_remember(
        &self,
        address: &Address,
        cache_key: String,
        domain_key: String,
    ) -> Lookup {
        let (answer, domain_wide) = self.fetch(address).await;
        let value = match &answer {
            Lookup::Found(k) => Cached::Found(Arc::clone(k)),
            Lookup::NotFound(why) => Cached::NotFound(why.clone()),
            Lookup::Temporary(why) => Cached::Temporary(why.clone()),
        };
        {
            let mut cache = self.lock();
            if domain_wide {
                cache.put(domain_key, value.clone(), Instant::now());
            }
            cache.put(cache_key, value, Instant::now());
        }
        match &answer {
            Lookup::Found(k) => {
                tracing::info!(target: "siegel::wkd", %address, fingerprint = %k.fingerprint, url = %k.url, "key found by WKD");
            }
            Lookup::NotFound(why) => {
                tracing::debug!(target: "siegel::wkd", %address, reason = %why, "no key by WKD");
            }
            Lookup::Temporary(why) => {
                tracing::warn!(target: "siegel::wkd", %address, reason = %why, "WKD lookup failed for now");
            }
        }
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a consistent map; go on.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer, and whether it holds for the whole domain (no WKD host
    /// at all, or a failure for now).
    async fn fetch(&self, address: &Address) -> (Lookup, bool) {
        let urls = crate::urls(address);
        let advanced = match self.fetcher.get(&urls.advanced).await {
            Ok(r) => return (filter(address, &r.body, urls.advanced), false),
            Err(e) => judge(&e),
        };
        let (advanced_why, no_advanced_host) = match advanced {
            Failure::Absent { why, host } => (why, host),
            Failure::Refused(why) => {
                return (Lookup::NotFound(format!("advanced method: {why}")), false);
            }
            Failure::Temporary(why) => {
                return (Lookup::Temporary(format!("advanced method: {why}")), true);
            }
        };
        match self.fetcher.get(&urls.direct).await {
            Ok(r) => (filter(address, &r.body, urls.direct), false),
            Err(e) => match judge(&e) {
                Failure::Absent { why, host } => (
                    Lookup::NotFound(format!(
                        "advanced method: {advanced_why}; direct method: {why}"
                    )),
                    host && no_advanced_host,
                ),
                Failure::Refused(why) => (
                    Lookup::NotFound(format!(
                        "advanced method: {advanced_why}; direct method: {why}"
                    )),
                    false,
                ),
                Failure::Temporary(why) => {
                    (Lookup::Temporary(format!("direct method: {why}")), true)
                }
            },
        }
    }
}

/// Keeps the certificates of `body` (a WKD response from `url`) that have a
/// User ID with exactly `address` (the local part compared without ASCII
/// case, as the hash is) and can be encrypted to now; of several, the
/// newest. Public for the fuzz target: `body` is whatever a server sent.
pub fn filter(address: &Address, body: &[u8], url: String) -> Lookup {
    let pgp = Pgp::new();
    let keys = match pgp.import_keys(body) {
        Ok(k) => k,
        Err(e) => return Lookup::NotFound(format!("{url}: no certificate: {e}")),
    };
    let mut best: Option<Cert> = None;
    let mut rejected = Vec::new();
    for k in keys {
        let names = k
            .addresses
            .iter()
            .any(|a| a.as_str().eq_ignore_ascii_case(address.as_str()));
        if !names {
            rejected.push(format!("{} does not name {address}", k.fingerprint));
            continue;
        }
        if let Err(why) = &k.validity {
            rejected.push(format!("{}: {why}", k.fingerprint));
            continue;
        }
        let newer = best.as_ref().is_none_or(|b| {
            k.cert.primary_key().key().creation_time() > b.primary_key().key().creation_time()
        });
        if newer {
            best = Some(k.cert);
        }
    }
    let Some(cert) = best else {
        return Lookup::NotFound(format!("{url}: no usable key ({})", rejected.join("; ")));
    };
    let cert = cert.strip_secret_key_material();
    let material = match cert.to_vec() {
        Ok(m) => m,
        Err(e) => return Lookup::NotFound(format!("{url}: {e}")),
    };
    let unix = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    };
    let policy = StandardPolicy::new();
    let expires = cert
        .with_policy(&policy, pgp.now())
        .ok()
        .and_then(|v| v.primary_key().key_expiration_time())
        .map(unix);
    Lookup::Found(Arc::new(WkdKey {
        fingerprint: cert.fingerprint().to_hex(),
        key_id: cert.keyid().to_hex(),
        created: unix(cert.primary_key().key().creation_time()),
        expires,
        material,
        url,
        cert,
    }))
}
