//! WKD in the mail path: a [`KeyDirectory`] that asks the inner directory
//! (the store) first and, for external recipients without a usable
//! certificate or key, the recipient domain's Web Key Directory.
//!
//! A key found by WKD is recorded in the store like a harvested key (the
//! `pgp_keys` table, public material only) so that the OpenPGP method finds
//! it by fingerprint like any other key, the next mail finds it without a
//! lookup, and `siegel track` can name it. It is returned as the
//! recipient's `pgp` key, so the policy picks OpenPGP before domain keys
//! and GINA. A failed lookup is "no key": WKD is an extra chance to
//! encrypt, never a reason to delay or lose a mail.

use std::sync::Arc;

use siegel_policy::{KeyRef, Preference};
use siegel_store::{NewKey, SourceKind, Store, StoreError};
use siegel_types::Address;
use siegel_wkd::{Client, WkdKey};

use crate::policy::{BoxFuture, DirectoryError, KeyDirectory, RecipientKeys};

/// The prefix of `source_message_id` of keys recorded from WKD: the store
/// has no `wkd` source kind (yet), so they are stored as harvested with
/// `wkd:<url>` where a harvested key names its Message-ID.
pub const WKD_SOURCE_PREFIX: &str = "wkd:";

/// The inner directory plus WKD.
pub struct WkdDirectory {
    inner: Arc<dyn KeyDirectory>,
    client: Arc<Client>,
    /// Where found keys are recorded; `None` only looks up (`siegel policy
    /// explain` must not change the store).
    store: Option<Store>,
    internal_domains: Vec<String>,
}

impl std::fmt::Debug for WkdDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WkdDirectory")
            .field("client", &self.client)
            .field("records", &self.store.is_some())
            .field("internal_domains", &self.internal_domains)
            .finish_non_exhaustive()
    }
}

impl WkdDirectory {
    /// Wraps `inner`. Recipients in `internal_domains` are never looked up
    /// (their keys are ours); found keys are recorded in `store` if given.
    pub fn new(
        inner: Arc<dyn KeyDirectory>,
        client: Arc<Client>,
        store: Option<Store>,
        internal_domains: Vec<String>,
    ) -> Self {
        Self {
            inner,
            client,
            store,
            internal_domains,
        }
    }

    /// Whether WKD is asked for this recipient: external, no valid S/MIME
    /// certificate and no valid OpenPGP key (an expired stored key is
    /// exactly when a fresh one from WKD helps), and no portal choice of
    /// S/MIME or GINA.
    fn wants(&self, rcpt: &Address, keys: &RecipientKeys) -> bool {
        let internal = self.internal_domains.iter().any(|d| d == rcpt.domain());
        let valid = |k: &Option<KeyRef>| k.as_ref().is_some_and(|k| k.valid);
        let ruled_out = matches!(
            keys.preference,
            Some(Preference::Gina) | Some(Preference::Smime)
        );
        !internal && !valid(&keys.smime) && !valid(&keys.pgp) && !ruled_out
    }

    /// Records a found key and answers the reference the policy uses;
    /// `None` when it must not be used (we know it revoked or superseded)
    /// or cannot be recorded (the method could not load it then).
    async fn record(&self, rcpt: &Address, key: &WkdKey) -> Option<KeyRef> {
        let Some(store) = &self.store else {
            return Some(KeyRef::valid(key.fingerprint.clone()));
        };
        let repo = store.pgp_keys();
        match repo.by_fingerprint(&key.fingerprint).await {
            Ok(Some(known)) if known.revoked || known.superseded_by.is_some() => {
                tracing::info!(target: "siegel::wkd", %rcpt, fingerprint = %key.fingerprint, "WKD serves a key we know to be revoked or superseded; not used");
                return None;
            }
            Ok(Some(known)) => return Some(KeyRef::valid(known.fingerprint)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "siegel::wkd", %rcpt, error = %e, "cannot check the WKD key in the store; not used");
                return None;
            }
        }
        let new = NewKey {
            address: rcpt.clone(),
            fingerprint: key.fingerprint.clone(),
            issuer: key.fingerprint.clone(),
            serial: key.key_id.clone(),
            not_before: key.created,
            not_after: key.expires.unwrap_or(i64::MAX / 2).max(key.created),
            key_usage: "encrypt".to_owned(),
            source_kind: SourceKind::Harvested,
            source_message_id: Some(format!("{WKD_SOURCE_PREFIX}{}", key.url)),
            material: key.material.clone(),
            source_detail: Some("wkd".to_owned()),
            private_key: None,
        };
        match repo.insert(&new).await {
            Ok(r) => {
                tracing::info!(target: "siegel::wkd", %rcpt, fingerprint = %r.fingerprint, url = %key.url, "recorded key from WKD");
                Some(KeyRef::valid(r.fingerprint))
            }
            // A concurrent mail recorded it first.
            Err(StoreError::Duplicate { .. }) => Some(KeyRef::valid(key.fingerprint.clone())),
            Err(e) => {
                tracing::warn!(target: "siegel::wkd", %rcpt, error = %e, "cannot record the WKD key; not used");
                None
            }
        }
    }
}

impl KeyDirectory for WkdDirectory {
    fn keys_for<'a>(
        &'a self,
        rcpt: &'a Address,
        now: u64,
    ) -> BoxFuture<'a, Result<RecipientKeys, DirectoryError>> {
        Box::pin(async move {
            let mut all = self.keys_for_all(std::slice::from_ref(rcpt), now).await?;
            all.pop().ok_or_else(|| DirectoryError {
                recipient: rcpt.clone(),
                reason: "the directory answered for no recipient".to_owned(),
            })
        })
    }

    /// The inner directory's answer (its errors are errors: the store is
    /// needed), then WKD for the recipients that want it, all at once.
    fn keys_for_all<'a>(
        &'a self,
        rcpts: &'a [Address],
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<RecipientKeys>, DirectoryError>> {
        Box::pin(async move {
            let mut keys = self.inner.keys_for_all(rcpts, now).await?;
            let mut lookups = tokio::task::JoinSet::new();
            for (i, rcpt) in rcpts.iter().enumerate() {
                if keys.get(i).is_some_and(|k| self.wants(rcpt, k)) {
                    let client = Arc::clone(&self.client);
                    let rcpt = rcpt.clone();
                    lookups.spawn(async move { (i, client.find(&rcpt).await) });
                }
            }
            while let Some(done) = lookups.join_next().await {
                // A panicked lookup task is "no key" too.
                let Ok((i, Some(found))) = done else {
                    continue;
                };
                if let Some(kref) = self.record(&rcpts[i], &found).await
                    && let Some(slot) = keys.get_mut(i)
                {
                    slot.pgp = Some(kref);
                }
            }
            Ok(keys)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::StoreDirectory;
    use siegel_openpgp::{KeyAlgorithm, Pgp};
    use siegel_store::MasterKey;
    use siegel_wkd::testing::Server;
    use siegel_wkd::{CacheSettings, local_hash};

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn key_for(a: &Address) -> Vec<u8> {
        let cert = Pgp::new().generate_key(a, KeyAlgorithm::Cv25519).unwrap();
        sequoia_openpgp::serialize::SerializeInto::to_vec(&cert).unwrap()
    }

    fn advanced_path(a: &Address) -> String {
        format!(
            "/.well-known/openpgpkey/{}/hu/{}",
            a.domain(),
            local_hash(a.local())
        )
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(
            &format!("sqlite://{}", dir.path().join("t.db").display()),
            dir.path(),
            MasterKey::generate().unwrap(),
        )
        .await
        .unwrap()
    }

    fn directory(store: &Store, server: &Server, record: bool) -> WkdDirectory {
        WkdDirectory::new(
            Arc::new(StoreDirectory(store.clone())),
            Arc::new(Client::new(
                server.fetcher(64 * 1024),
                CacheSettings::default(),
            )),
            record.then(|| store.clone()),
            vec!["example.com".to_owned()],
        )
    }

    const NOW: u64 = 2_000_000_000;

    #[tokio::test]
    async fn a_key_found_by_wkd_is_recorded_and_returned_as_the_pgp_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let s = Server::start(&["openpgpkey.partner.example", "partner.example"]).await;
        let alice = addr("alice@partner.example");
        let bob = addr("bob@partner.example");
        let body = key_for(&alice);
        s.serve(
            "openpgpkey.partner.example",
            &advanced_path(&alice),
            200,
            body.clone(),
        );
        s.serve(
            "openpgpkey.partner.example",
            &advanced_path(&bob),
            200,
            key_for(&bob),
        );
        let d = directory(&store, &s, true);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let nobody = addr("nobody@partner.example");
        let keys = d
            .keys_for_all(&[alice.clone(), nobody.clone(), bob.clone()], now)
            .await
            .unwrap();
        let want = Pgp::new().import_keys(&body).unwrap()[0]
            .fingerprint
            .clone();
        assert_eq!(keys[0].pgp, Some(KeyRef::valid(want.clone())));
        assert_eq!(keys[1].pgp, None);
        assert!(keys[2].pgp.as_ref().is_some_and(|k| k.valid));
        // Recorded like a harvested key, public material only.
        let stored = store.pgp_keys().for_address(&alice).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].fingerprint, want);
        assert_eq!(stored[0].source_kind, SourceKind::Harvested);
        assert!(
            stored[0]
                .source_message_id
                .as_deref()
                .unwrap()
                .starts_with("wkd:https://openpgpkey.partner.example/")
        );
        assert!(!stored[0].has_private_key);
        // The store alone now knows it: no WKD needed for the next mail.
        let plain = StoreDirectory(store.clone())
            .keys_for(&alice, now)
            .await
            .unwrap();
        assert_eq!(plain.pgp, Some(KeyRef::valid(want)));
        let before = s.log().len();
        let again = d.keys_for(&alice, now).await.unwrap();
        assert!(again.pgp.is_some());
        assert_eq!(s.log().len(), before, "a known key is not looked up again");
    }

    #[tokio::test]
    async fn internal_recipients_and_portal_choices_are_not_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let s = Server::start(&["openpgpkey.example.com", "example.com"]).await;
        let colleague = addr("colleague@example.com");
        s.serve(
            "openpgpkey.example.com",
            &advanced_path(&colleague),
            200,
            key_for(&colleague),
        );
        let d = directory(&store, &s, true);
        let keys = d.keys_for(&colleague, NOW).await.unwrap();
        assert_eq!(keys.pgp, None);
        assert!(s.log().is_empty(), "{:?}", s.log());
        for preference in [Preference::Gina, Preference::Smime] {
            let k = RecipientKeys {
                preference: Some(preference),
                ..RecipientKeys::default()
            };
            assert!(!d.wants(&addr("x@partner.example"), &k));
        }
        let with_cert = RecipientKeys {
            smime: Some(KeyRef::valid("AB")),
            ..RecipientKeys::default()
        };
        assert!(!d.wants(&addr("x@partner.example"), &with_cert));
        let expired_pgp = RecipientKeys {
            pgp: Some(KeyRef::invalid("AB", "expired")),
            preference: Some(Preference::Pgp),
            ..RecipientKeys::default()
        };
        assert!(d.wants(&addr("x@partner.example"), &expired_pgp));
    }

    #[tokio::test]
    async fn a_failing_lookup_never_fails_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let s = Server::start(&["openpgpkey.broken.example"]).await;
        let a = addr("a@broken.example");
        s.serve(
            "openpgpkey.broken.example",
            &advanced_path(&a),
            500,
            Vec::new(),
        );
        let b = addr("b@broken.example");
        s.serve(
            "openpgpkey.broken.example",
            &advanced_path(&b),
            200,
            b"garbage".to_vec(),
        );
        let unknown = addr("c@nowhere.example");
        let d = directory(&store, &s, true);
        let keys = d.keys_for_all(&[a, b, unknown], NOW).await.unwrap();
        assert!(keys.iter().all(|k| k.pgp.is_none()));
    }

    #[tokio::test]
    async fn a_revoked_known_key_is_not_revived_and_explain_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let s = Server::start(&["openpgpkey.partner.example"]).await;
        let a = addr("dora@partner.example");
        let body = key_for(&a);
        s.serve(
            "openpgpkey.partner.example",
            &advanced_path(&a),
            200,
            body.clone(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Look-up only: a key, but nothing stored.
        let keys = directory(&store, &s, false)
            .keys_for(&a, now)
            .await
            .unwrap();
        assert!(keys.pgp.is_some());
        assert!(store.pgp_keys().for_address(&a).await.unwrap().is_empty());
        // Recorded, then revoked by the administrator: WKD must not bring it back.
        let d = directory(&store, &s, true);
        let fp = d.keys_for(&a, now).await.unwrap().pgp.unwrap().fingerprint;
        store.pgp_keys().revoke(&fp).await.unwrap();
        let fresh = directory(&store, &s, true);
        let keys = fresh.keys_for(&a, now).await.unwrap();
        assert!(keys.pgp.as_ref().is_some_and(|k| !k.valid), "{keys:?}");
    }
}
