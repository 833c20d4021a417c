//! The CRLs an inbound S/MIME signature is checked against: our own CA's
//! (always, so a user the administrator revoked is refused at once, on
//! every node) and those of correspondents' CAs, fetched from the
//! distribution points in their certificates and kept until their
//! `nextUpdate`.
//!
//! Fetching is bounded (a few distribution points per mail, the shared
//! [`siegel_fetch::Fetcher`] with its deadline, size cap and private-address
//! guard) and soft-fail: a CRL that cannot be fetched leaves the signature
//! valid with revocation unknown, see `docs/design/smime.md`. The cache is
//! a cache, not state: another node simply fetches again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use openssl::x509::X509Crl;
use siegel_crypto::revocation;
use siegel_fetch::Fetcher;

/// At most this many distribution points are fetched for one mail.
const MAX_FETCHES_PER_MAIL: usize = 3;

/// At most this many CRLs are kept (the oldest are dropped).
const MAX_CACHED: usize = 1000;

/// A CRL without `nextUpdate` is fetched again after this long.
const DEFAULT_LIFETIME: u64 = 24 * 3600;

/// A distribution point that failed is not asked again for this long.
const RETRY_AFTER_FAILURE: u64 = 15 * 60;

struct Cached {
    /// DER; `None`: the last fetch failed. (`X509Crl` cannot be cloned, and
    /// parsing a CRL again is cheap.)
    crl: Option<Vec<u8>>,
    /// Unix seconds until which the entry is used without fetching.
    until: u64,
}

/// Fetched CRLs by distribution point URL.
pub struct CrlSource {
    fetcher: Option<Fetcher>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for CrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlSource")
            .field("fetching", &self.fetcher.is_some())
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `nextUpdate` of a CRL as Unix seconds, if it has one.
fn next_update(crl: &X509Crl) -> Option<u64> {
    let t = crl.next_update()?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    u64::try_from(i64::from(d.days) * 86_400 + i64::from(d.secs)).ok()
}

impl CrlSource {
    /// A source that fetches with `fetcher`; `None`: never fetches (only
    /// our own CRL is checked).
    pub fn new(fetcher: Option<Fetcher>) -> Self {
        Self {
            fetcher,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The cached CRLs for these distribution points that are still fresh.
    pub fn cached(&self, points: &[String], now: SystemTime) -> Vec<X509Crl> {
        let now = unix(now);
        let Ok(cache) = self.cache.lock() else {
            return Vec::new();
        };
        points
            .iter()
            .filter_map(|p| cache.get(p))
            .filter(|c| c.until > now)
            .filter_map(|c| c.crl.as_deref())
            .filter_map(|der| X509Crl::from_der(der).ok())
            .collect()
    }

    /// Fetches the distribution points not fresh in the cache (at most a
    /// few) and returns every CRL now at hand for them. `false` in the
    /// second field: nothing new was learnt (no need to check again).
    pub async fn fetch(&self, points: &[String], now: SystemTime) -> (Vec<X509Crl>, bool) {
        let Some(fetcher) = &self.fetcher else {
            return (self.cached(points, now), false);
        };
        let t = unix(now);
        let wanted: Vec<String> = {
            let Ok(cache) = self.cache.lock() else {
                return (Vec::new(), false);
            };
            points
                .iter()
                .filter(|p| cache.get(*p).is_none_or(|c| c.until <= t))
                .take(MAX_FETCHES_PER_MAIL)
                .cloned()
                .collect()
        };
        let mut learnt = false;
        for url in wanted {
            let entry = match fetcher.get(&url).await {
                Ok(resp) if resp.status == 200 => match revocation::parse_crls(&resp.body) {
                    Ok(crls) if crls.first().is_some_and(|c| c.to_der().is_ok()) => {
                        let crl = &crls[0];
                        let until = next_update(crl)
                            .filter(|u| *u > t)
                            .unwrap_or(t + DEFAULT_LIFETIME);
                        learnt = true;
                        tracing::info!(target: "siegel::mpki", %url, "CRL fetched");
                        Cached {
                            crl: crl.to_der().ok(),
                            until,
                        }
                    }
                    _ => {
                        tracing::info!(target: "siegel::mpki", %url, "the distribution point did not answer a CRL");
                        Cached {
                            crl: None,
                            until: t + RETRY_AFTER_FAILURE,
                        }
                    }
                },
                Ok(resp) => {
                    tracing::info!(target: "siegel::mpki", %url, status = resp.status, "CRL fetch refused");
                    Cached {
                        crl: None,
                        until: t + RETRY_AFTER_FAILURE,
                    }
                }
                Err(error) => {
                    tracing::info!(target: "siegel::mpki", %url, %error, "cannot fetch the CRL");
                    Cached {
                        crl: None,
                        until: t + RETRY_AFTER_FAILURE,
                    }
                }
            };
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= MAX_CACHED {
                    // Drop what is stale, then anything, so the cache stays bounded.
                    cache.retain(|_, c| c.until > t);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(url, entry);
            }
        }
        (self.cached(points, now), learnt)
    }
}
