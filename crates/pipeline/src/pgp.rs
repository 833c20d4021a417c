//! OpenPGP in the mail path, over the store: the keys of our users and
//! domains, correspondents' keys, and the methods that use them.
//!
//! * outbound, per copy: [`PgpMethod`] (OpenPGP and domain OpenPGP)
//!   signs in the sender's name when the sender is one of our licensed
//!   users and encrypts as PGP/MIME with protected headers;
//!   [`crate::stages::Autocrypt`] adds the sender's `Autocrypt:` header;
//!   a TLS-only copy whose recipients all have only an OpenPGP key is
//!   signed PGP/MIME instead of S/MIME ([`PgpKeys::sign_for_openpgp_only`]);
//! * inbound: the decrypt, verify and harvest stages call
//!   [`PgpKeys::open_inbound`], [`PgpKeys::keyring_for`] and
//!   [`PgpKeys::harvest`].
//!
//! Keys of our users are generated on first use (as S/MIME certificates
//! are auto-enrolled) and stored with the secret key sealed under the
//! master key: Siegel holds them, the users' clients need none.
//!
//! Key changes: a correspondent's new key arrives in an `Autocrypt:`
//! header or as an attachment. The first key of an address is taken (trust
//! on first use, as Autocrypt does). A *different* key for an address we
//! already have a key for is only taken over when the mail carrying it is
//! validly signed by the key we know; otherwise it is stored as an
//! unconfirmed change (`source_detail` ends in `-unconfirmed`, marked as
//! superseded by the known key so the hierarchy never uses it), logged,
//! and shown by `siegel pgp list`, until an administrator imports it
//! (`siegel pgp import` of that key takes it into use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_openpgp::{
    Cert, Encryption, ImportedKey, KeyAlgorithm, KeySource, Opened, Pgp, PgpError, SigningKey,
};
use siegel_policy::{BoxFuture, CopyInfo, Method, MethodError, MethodKind, Registry, Unavailable};
use siegel_store::{
    DomainKeyKind, KeyRecord, LicenceState, NewDomainKey, NewKey, Ownership, SecretBytes,
    SourceKind, Store, StoreError,
};
use siegel_types::Address;

/// `not_after` of keys that never expire (9999-12-31).
const NEVER: i64 = 253_402_300_799;
/// Signing keys kept prepared, at most.
const SIGNER_CACHE: usize = 4096;

/// Why an OpenPGP key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgpKeysError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pgp(#[from] PgpError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
}

/// The `[openpgp]` settings in the form the mail path needs them.
#[derive(Debug, Clone)]
pub struct PgpSettings {
    /// Key type of keys generated for our users and domains.
    pub algorithm: KeyAlgorithm,
    /// Generate a key for a licensed user on their first outbound mail.
    pub auto_enroll: bool,
    /// Add `Autocrypt:` headers to our users' outbound mail.
    pub autocrypt: bool,
    /// Our own domains (normalised).
    pub internal_domains: Vec<String>,
    /// Which unknown internal senders become users on their first mail.
    pub onboarding: crate::onboarding::Onboarding,
}

impl Default for PgpSettings {
    fn default() -> Self {
        Self {
            algorithm: KeyAlgorithm::Cv25519,
            auto_enroll: true,
            autocrypt: true,
            internal_domains: Vec::new(),
            onboarding: crate::onboarding::Onboarding::default(),
        }
    }
}

/// How a harvested key was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Harvested {
    /// Already stored.
    Known,
    /// The first key of the address, or a change confirmed by a signature
    /// of the known key: in use from now on.
    Taken { fingerprint: String },
    /// A different key than the one we know, not confirmed: stored, not used.
    Unconfirmed { fingerprint: String, known: String },
    /// Not for us to keep (an internal address, an unusable key).
    Ignored { reason: String },
}

/// OpenPGP keys over the store.
pub struct PgpKeys {
    store: Store,
    settings: PgpSettings,
    signers: Mutex<HashMap<String, SigningKey>>,
}

impl std::fmt::Debug for PgpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgpKeys")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Unix seconds → the engine's clock.
fn at(now: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(now).unwrap_or(0))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn usable(k: &KeyRecord, now: i64) -> bool {
    !k.revoked && k.superseded_by.is_none() && k.not_before <= now && now <= k.not_after
}

/// The stamp/tracking token of a harvest source.
fn detail(source: &KeySource) -> &'static str {
    match source {
        KeySource::Autocrypt { .. } => "autocrypt",
        KeySource::Attachment { .. } => "attachment",
    }
}

impl PgpKeys {
    pub fn new(store: Store, settings: PgpSettings) -> Self {
        Self {
            store,
            settings,
            signers: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &PgpSettings {
        &self.settings
    }

    /// The engine, judging validity at `now` (Unix seconds).
    pub fn engine(now: i64) -> Pgp {
        Pgp::new().at(at(now))
    }

    pub fn is_internal(&self, a: &Address) -> bool {
        self.settings
            .internal_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(a.domain()))
    }

    /// Whether mail of `sender` is signed and carries our key: an internal
    /// sender who is a licensed user (as for S/MIME, see
    /// [`crate::smime::Mpki::signs_for`]).
    pub async fn signs_for(&self, sender: Option<&Address>) -> Result<bool, PgpKeysError> {
        let Some(sender) = sender.filter(|s| self.is_internal(s)) else {
            return Ok(false);
        };
        let state = self
            .settings
            .onboarding
            .licence_state(&self.store, sender, crate::now_unix())
            .await?;
        Ok(state == Some(LicenceState::Licensed))
    }

    /// Stores `cert` for `address` (secret parts only when `secret`).
    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        pgp: &Pgp,
        cert: &Cert,
        address: &Address,
        source: SourceKind,
        message_id: Option<String>,
        source_detail: Option<String>,
        secret: bool,
    ) -> Result<KeyRecord, PgpKeysError> {
        let (created, expires) = pgp.lifetime(cert);
        let fingerprint = cert.fingerprint().to_hex();
        let private_key = if secret {
            Some(SecretBytes::new(pgp.secret_key_bytes(cert)?))
        } else {
            None
        };
        let record = self
            .store
            .pgp_keys()
            .insert(&NewKey {
                address: address.clone(),
                serial: fingerprint[fingerprint.len().saturating_sub(16)..].to_owned(),
                issuer: fingerprint.clone(),
                fingerprint,
                not_before: unix(created),
                not_after: expires.map(unix).unwrap_or(NEVER).max(unix(created)),
                key_usage: "sign,encrypt".to_owned(),
                source_kind: source,
                source_message_id: message_id,
                material: pgp.public_bytes(cert)?,
                source_detail,
                private_key,
            })
            .await?;
        Ok(record)
    }

    /// Generates and stores a key for one of our users.
    pub async fn generate(&self, address: &Address, now: i64) -> Result<KeyRecord, PgpKeysError> {
        let pgp = Self::engine(now);
        let cert = pgp.generate_key(address, self.settings.algorithm)?;
        let record = self
            .insert(&pgp, &cert, address, SourceKind::Issued, None, None, true)
            .await?;
        tracing::info!(target: "siegel::pgp", %address, fingerprint = %record.fingerprint, "OpenPGP key generated");
        Ok(record)
    }

    /// Our user's usable key with its secret, generated first when the
    /// user is licensed and auto-enrolment is on. `None`: not one of our
    /// licensed users, or no key and no auto-enrolment.
    pub async fn own_key(&self, address: &Address, now: i64) -> Result<Option<Cert>, PgpKeysError> {
        let pgp = Self::engine(now);
        for r in self.store.pgp_keys().for_address(address).await? {
            if r.has_private_key
                && usable(&r, now)
                && let Some(c) = self.open_secret(&pgp, &r).await?
            {
                return Ok(Some(c));
            }
        }
        if !(self.settings.auto_enroll
            && !address.needs_smtputf8()
            && self.signs_for(Some(address)).await?)
        {
            return Ok(None);
        }
        let r = self.generate(address, now).await?;
        self.open_secret(&pgp, &r).await
    }

    async fn open_secret(&self, pgp: &Pgp, r: &KeyRecord) -> Result<Option<Cert>, PgpKeysError> {
        let Some(secret) = self.store.pgp_keys().private_key(&r.fingerprint).await? else {
            return Ok(None);
        };
        // A key that does not parse is one we cannot use; another may.
        Ok(pgp.load_secret_key(secret.expose()).ok())
    }

    /// The prepared signing key of a licensed sender of ours (cached).
    pub async fn signer(
        &self,
        sender: Option<&Address>,
        now: i64,
    ) -> Result<Option<SigningKey>, PgpKeysError> {
        let Some(sender) = sender else {
            return Ok(None);
        };
        if !self.signs_for(Some(sender)).await? {
            return Ok(None);
        }
        let Some(cert) = self.own_key(sender, now).await? else {
            return Ok(None);
        };
        let fp = cert.fingerprint().to_hex();
        if let Ok(cache) = self.signers.lock()
            && let Some(k) = cache.get(&fp)
        {
            return Ok(Some(k.clone()));
        }
        let key = Self::engine(now).signing_key(&cert)?;
        if let Ok(mut cache) = self.signers.lock() {
            if cache.len() >= SIGNER_CACHE {
                cache.clear();
            }
            cache.insert(fp, key.clone());
        }
        Ok(Some(key))
    }

    /// The value of the `Autocrypt:` header of a licensed sender of ours.
    pub async fn autocrypt_header(
        &self,
        sender: Option<&Address>,
        now: i64,
    ) -> Result<Option<String>, PgpKeysError> {
        let Some(sender) = sender else {
            return Ok(None);
        };
        if !self.settings.autocrypt || !self.signs_for(Some(sender)).await? {
            return Ok(None);
        }
        let Some(cert) = self.own_key(sender, now).await? else {
            return Ok(None);
        };
        Ok(Some(Self::engine(now).autocrypt_header(&cert, sender)?))
    }

    /// The usable public key of a correspondent that stays valid longest,
    /// checked by the engine at `now`.
    pub async fn recipient_cert(
        &self,
        rcpt: &Address,
        now: i64,
    ) -> Result<Option<Cert>, PgpKeysError> {
        let pgp = Self::engine(now);
        let mut records: Vec<KeyRecord> = self
            .store
            .pgp_keys()
            .for_address(rcpt)
            .await?
            .into_iter()
            .filter(|k| usable(k, now))
            .collect();
        records.sort_by_key(|k| std::cmp::Reverse(k.not_after));
        for r in records {
            if let Ok(c) = pgp.load_cert(&r.material)
                && pgp.check_encryption(&c).is_ok()
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The OpenPGP domain key of a partner (or our own) domain.
    pub async fn domain_cert(&self, domain: &str, now: i64) -> Result<Option<Cert>, PgpKeysError> {
        let pgp = Self::engine(now);
        let keys = self.store.domain_keys().for_domain(domain).await?;
        Ok(keys
            .iter()
            .filter(|k| k.kind == DomainKeyKind::Pgp)
            .filter_map(|k| pgp.load_cert(&k.material).ok())
            .find(|c| pgp.check_encryption(c).is_ok()))
    }

    /// Our own OpenPGP domain key for `domain`, created on first use.
    pub async fn own_domain_key(&self, domain: &str, now: i64) -> Result<Cert, PgpKeysError> {
        let pgp = Self::engine(now);
        let keys = self.store.domain_keys().for_domain(domain).await?;
        if let Some(k) = keys
            .iter()
            .find(|k| k.kind == DomainKeyKind::Pgp && k.ownership == Ownership::Own)
        {
            return Ok(pgp.load_cert(&k.material)?);
        }
        let address = Address::parse(&format!("postmaster@{domain}"))
            .map_err(|e| PgpKeysError::Invalid(format!("domain {domain}: {e}")))?;
        let cert = pgp.generate_key(&address, self.settings.algorithm)?;
        self.store
            .domain_keys()
            .insert(&NewDomainKey {
                domain: domain.to_owned(),
                kind: DomainKeyKind::Pgp,
                ownership: Ownership::Own,
                fingerprint: cert.fingerprint().to_hex(),
                material: pgp.public_bytes(&cert)?,
                private_key: Some(SecretBytes::new(pgp.secret_key_bytes(&cert)?)),
            })
            .await?;
        Ok(cert)
    }

    /// Stores a partner gateway's OpenPGP domain key; returns its fingerprint.
    pub async fn import_domain_key(
        &self,
        domain: &str,
        data: &[u8],
        now: i64,
    ) -> Result<String, PgpKeysError> {
        let pgp = Self::engine(now);
        let key = pgp
            .import_keys(data)?
            .into_iter()
            .next()
            .ok_or_else(|| PgpKeysError::Invalid("no OpenPGP key in the file".to_owned()))?;
        if let Err(problem) = &key.validity {
            return Err(PgpKeysError::Invalid(format!(
                "key {} cannot be used for encryption: {problem}",
                key.fingerprint
            )));
        }
        self.store
            .domain_keys()
            .insert(&NewDomainKey {
                domain: domain.to_owned(),
                kind: DomainKeyKind::Pgp,
                ownership: Ownership::Partner,
                fingerprint: key.fingerprint.clone(),
                material: pgp.public_bytes(&key.cert)?,
                private_key: None,
            })
            .await?;
        Ok(key.fingerprint)
    }

    /// Armoured public key of `address`: our user's (generated for a
    /// licensed user on first use) or the newest stored one.
    pub async fn export(&self, address: &Address, now: i64) -> Result<String, PgpKeysError> {
        let pgp = Self::engine(now);
        if self.is_internal(address)
            && let Some(c) = self.own_key(address, now).await?
        {
            return Ok(pgp.export_public(&c.strip_secret_key_material())?);
        }
        let records = self.store.pgp_keys().for_address(address).await?;
        let r = records
            .iter()
            .find(|k| usable(k, now))
            .or(records.first())
            .ok_or_else(|| PgpKeysError::NotFound(format!("an OpenPGP key for {address}")))?;
        Ok(pgp.export_public(&pgp.load_cert(&r.material)?)?)
    }

    /// Imports correspondents' keys (armoured or binary, several in one
    /// file), one row per key under its first address; returns the stored
    /// rows and, per skipped key, why.
    pub async fn import(
        &self,
        data: &[u8],
        now: i64,
    ) -> Result<(Vec<KeyRecord>, Vec<String>), PgpKeysError> {
        let pgp = Self::engine(now);
        let mut stored = Vec::new();
        let mut skipped = Vec::new();
        for key in pgp.import_keys(data)? {
            let Some(address) = key.addresses.first().cloned() else {
                skipped.push(format!(
                    "{}: no mail address in its user IDs",
                    key.fingerprint
                ));
                continue;
            };
            if let Err(problem) = &key.validity {
                skipped.push(format!("{} ({address}): {problem}", key.fingerprint));
                continue;
            }
            match self
                .insert(
                    &pgp,
                    &key.cert,
                    &address,
                    SourceKind::Imported,
                    None,
                    Some("admin".to_owned()),
                    false,
                )
                .await
            {
                Ok(r) => stored.push(r),
                Err(PgpKeysError::Store(StoreError::Duplicate { .. })) => {
                    match self.confirm_change(&key.fingerprint).await? {
                        Some(r) => stored.push(r),
                        None => {
                            skipped.push(format!("{} ({address}): already stored", key.fingerprint))
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok((stored, skipped))
    }

    /// An administrator imports a key that was parked as an unconfirmed
    /// change: it is taken into use and the key it was parked behind is
    /// superseded by it. `None`: the stored key was no parked change.
    async fn confirm_change(&self, fingerprint: &str) -> Result<Option<KeyRecord>, PgpKeysError> {
        let keys = self.store.pgp_keys();
        let Some(parked) = keys.by_fingerprint(fingerprint).await? else {
            return Ok(None);
        };
        let unconfirmed = parked
            .source_detail
            .as_deref()
            .is_some_and(|d| d.ends_with("-unconfirmed"));
        if !unconfirmed {
            return Ok(None);
        }
        keys.reinstate(&parked.fingerprint, "confirmed by admin")
            .await?;
        if let Some(known) = &parked.superseded_by
            && let Some(old) = keys.by_fingerprint(known).await?
            && old.superseded_by.is_none()
        {
            keys.supersede(&old.fingerprint, &parked.fingerprint)
                .await?;
        }
        tracing::info!(target: "siegel::pgp", address = %parked.address, fingerprint = %parked.fingerprint, "changed OpenPGP key confirmed by an administrator");
        Ok(keys.by_fingerprint(&parked.fingerprint).await?)
    }

    /// Every stored OpenPGP key, by address (ours, imported, harvested,
    /// found by WKD).
    pub async fn list(&self) -> Result<Vec<KeyRecord>, PgpKeysError> {
        Ok(self.store.pgp_keys().all().await?)
    }

    /// The public keys a signature of `from` is checked against: the
    /// usable stored ones (revoked or superseded keys never vouch).
    pub async fn keyring_for(
        &self,
        from: Option<&Address>,
        now: i64,
    ) -> Result<Vec<Cert>, PgpKeysError> {
        let Some(from) = from else {
            return Ok(Vec::new());
        };
        let pgp = Self::engine(now);
        Ok(self
            .store
            .pgp_keys()
            .for_address(from)
            .await?
            .iter()
            .filter(|k| !k.revoked && k.superseded_by.is_none())
            .filter_map(|k| pgp.load_cert(&k.material).ok())
            .collect())
    }

    /// The secret keys that may open a mail to `recipients`: our users'
    /// keys and our domain keys of their domains.
    async fn secrets_for(
        &self,
        pgp: &Pgp,
        recipients: &[Address],
    ) -> Result<Vec<(Cert, bool)>, PgpKeysError> {
        let mut out = Vec::new();
        let mut domains: Vec<&str> = Vec::new();
        for r in recipients.iter().filter(|r| self.is_internal(r)) {
            for rec in self.store.pgp_keys().for_address(r).await? {
                if rec.has_private_key
                    && !rec.revoked
                    && let Some(c) = self.open_secret(pgp, &rec).await?
                {
                    out.push((c, false));
                }
            }
            if !domains.iter().any(|d| d.eq_ignore_ascii_case(r.domain())) {
                domains.push(r.domain());
            }
        }
        for d in domains {
            for k in self.store.domain_keys().for_domain(d).await? {
                if k.kind != DomainKeyKind::Pgp || !k.has_private_key {
                    continue;
                }
                if let Some(secret) = self.store.domain_keys().private_key(&k.fingerprint).await?
                    && let Ok(c) = pgp.load_secret_key(secret.expose())
                {
                    out.push((c, true));
                }
            }
        }
        Ok(out)
    }

    /// Decrypts and verifies an inbound OpenPGP mail to `recipients`
    /// signed (maybe) by `from`, with the keys the mail itself offers for
    /// `from` as a last resort for the signature. `Ok(Err(token))`: the
    /// mail cannot be opened (`no-key`, `malformed`, `too-large`); `Err`:
    /// the store did not answer.
    pub async fn open_inbound(
        &self,
        recipients: &[Address],
        from: Option<&Address>,
        offered: &[Cert],
        message: &[u8],
        now: i64,
    ) -> Result<Result<(Opened, &'static str), &'static str>, PgpKeysError> {
        let pgp = Self::engine(now);
        let secrets = self.secrets_for(&pgp, recipients).await?;
        let mut keyring = self.keyring_for(from, now).await?;
        keyring.extend(offered.iter().cloned());
        let certs: Vec<Cert> = secrets.iter().map(|(c, _)| c.clone()).collect();
        match pgp.open(message, &certs, &keyring) {
            Ok(opened) => {
                let domain = opened.decrypted_with.as_ref().is_some_and(|fp| {
                    secrets
                        .iter()
                        .any(|(c, d)| *d && c.fingerprint().to_hex() == *fp)
                });
                Ok(Ok((opened, if domain { "domain-pgp" } else { "pgp" })))
            }
            Err(e) => Ok(Err(failure_token(&e))),
        }
    }

    /// Keeps a key a correspondent sent (Autocrypt header or attachment)
    /// for `address`; see the module documentation for key changes.
    /// `signed_by`: fingerprint of the key whose valid signature the mail
    /// carried.
    pub async fn harvest(
        &self,
        address: &Address,
        key: &ImportedKey,
        source: &KeySource,
        message_id: &str,
        signed_by: Option<&str>,
        now: i64,
    ) -> Result<Harvested, PgpKeysError> {
        if self.is_internal(address) {
            return Ok(Harvested::Ignored {
                reason: "internal address".to_owned(),
            });
        }
        if let Err(problem) = &key.validity {
            return Ok(Harvested::Ignored {
                reason: problem.to_string(),
            });
        }
        if !key.addresses.iter().any(|a| a == address) {
            return Ok(Harvested::Ignored {
                reason: "the key is not for the sender's address".to_owned(),
            });
        }
        let pgp = Self::engine(now);
        let existing = self.store.pgp_keys().for_address(address).await?;
        if existing.iter().any(|k| k.fingerprint == key.fingerprint) {
            return Ok(Harvested::Known);
        }
        let current: Vec<&KeyRecord> = existing.iter().filter(|k| usable(k, now)).collect();
        let confirmed = current.is_empty()
            || signed_by.is_some_and(|fp| current.iter().any(|k| k.fingerprint == fp));
        let token = detail(source);
        let detail = if confirmed {
            token.to_owned()
        } else {
            format!("{token}-unconfirmed")
        };
        let new = self
            .insert(
                &pgp,
                &key.cert,
                address,
                SourceKind::Harvested,
                Some(message_id.to_owned()),
                Some(detail),
                false,
            )
            .await?;
        if confirmed {
            for old in current
                .iter()
                .filter(|k| k.source_kind == SourceKind::Harvested)
            {
                self.store
                    .pgp_keys()
                    .supersede(&old.fingerprint, &new.fingerprint)
                    .await?;
            }
            tracing::info!(target: "siegel::pgp", %address, fingerprint = %new.fingerprint, source = token, "harvested OpenPGP key");
            Ok(Harvested::Taken {
                fingerprint: new.fingerprint,
            })
        } else {
            let known = current[0].fingerprint.clone();
            // Parked behind the known key: listed, never used by the policy.
            self.store
                .pgp_keys()
                .supersede(&new.fingerprint, &known)
                .await?;
            tracing::warn!(target: "siegel::pgp", %address, fingerprint = %new.fingerprint, %known, source = token, "changed OpenPGP key not confirmed by a signature of the known key: stored, not used");
            Ok(Harvested::Unconfirmed {
                fingerprint: new.fingerprint,
                known,
            })
        }
    }

    /// Whether a copy that leaves signed but unencrypted should be signed
    /// PGP/MIME: every recipient has a usable OpenPGP key and none an
    /// S/MIME certificate (their client reads OpenPGP, maybe not S/MIME).
    pub async fn sign_for_openpgp_only(
        &self,
        recipients: &[Address],
        now: i64,
    ) -> Result<bool, PgpKeysError> {
        if recipients.is_empty() {
            return Ok(false);
        }
        for r in recipients {
            let smime = self.store.certificates().for_address(r).await?;
            if smime.iter().any(|k| usable(k, now)) {
                return Ok(false);
            }
            let pgp = self.store.pgp_keys().for_address(r).await?;
            if !pgp.iter().any(|k| usable(k, now)) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The stamp token of an OpenPGP failure on inbound mail.
pub fn failure_token(e: &PgpError) -> &'static str {
    match e {
        PgpError::InputTooLarge { .. } | PgpError::PlaintextTooLarge { .. } => "too-large",
        PgpError::NoSecretKey => "no-key",
        _ => "malformed",
    }
}

/// The unfolded `Content-Type` of a header section, lower case.
fn content_type(header: &[u8]) -> String {
    crate::smime::header_value(header, "content-type")
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// PGP/MIME encrypted (`multipart/encrypted; protocol="application/pgp-encrypted"`).
pub fn is_pgp_mime_encrypted(header: &[u8]) -> bool {
    let ct = content_type(header);
    ct.starts_with("multipart/encrypted") && ct.contains("application/pgp-encrypted")
}

/// PGP/MIME signed (`multipart/signed; protocol="application/pgp-signature"`).
pub fn is_pgp_mime_signed(header: &[u8]) -> bool {
    let ct = content_type(header);
    ct.starts_with("multipart/signed") && ct.contains("application/pgp-signature")
}

/// Inline OpenPGP somewhere in the mail: an armoured message or a
/// clear-signed text.
pub fn has_inline_pgp(message: &[u8]) -> bool {
    const MARKS: [&[u8]; 2] = [
        b"-----BEGIN PGP MESSAGE-----",
        b"-----BEGIN PGP SIGNED MESSAGE-----",
    ];
    MARKS
        .iter()
        .any(|m| message.windows(m.len()).any(|w| w == *m))
}

/// Inline OpenPGP that is encrypted (not only clear-signed).
pub fn has_inline_encrypted(message: &[u8]) -> bool {
    let m = b"-----BEGIN PGP MESSAGE-----";
    message.windows(m.len()).any(|w| w == m)
}

/// Whether `opened` removed an encryption layer.
pub fn was_encrypted(opened: &Opened) -> bool {
    opened.encryption != Encryption::None
}

/// The OpenPGP or domain-OpenPGP method: signs in the sender's name (a
/// licensed user of ours) and encrypts PGP/MIME to the current keys of the
/// copy's recipients, or of their domains. Keys are read for each copy, so
/// one revoked a moment ago is never used.
pub struct PgpMethod {
    kind: MethodKind,
    keys: Arc<PgpKeys>,
}

impl PgpMethod {
    pub fn new(kind: MethodKind, keys: Arc<PgpKeys>) -> Self {
        Self { kind, keys }
    }

    async fn encrypt(&self, input: &[u8], copy: CopyInfo<'_>) -> Result<Vec<u8>, MethodError> {
        let kind = self.kind;
        let temporary = |e: PgpKeysError| MethodError::Temporary {
            kind,
            reason: e.to_string(),
        };
        let now = i64::try_from(copy.now).unwrap_or(i64::MAX);
        let mut certs: Vec<Cert> = Vec::new();
        for r in copy.recipients {
            let cert = match kind {
                MethodKind::DomainPgp => self.keys.domain_cert(r.domain(), now).await,
                _ => self.keys.recipient_cert(r, now).await,
            }
            .map_err(temporary)?
            .ok_or_else(|| MethodError::NoKey {
                kind,
                recipient: r.clone(),
            })?;
            // Several recipients of one domain share the domain key.
            if !certs.iter().any(|c| c.fingerprint() == cert.fingerprint()) {
                certs.push(cert);
            }
        }
        let signer = self
            .keys
            .signer(copy.envelope.mail_from.address(), now)
            .await
            .map_err(temporary)?;
        let refs: Vec<&Cert> = certs.iter().collect();
        PgpKeys::engine(now)
            .encrypt_with(input, signer.as_ref(), &refs)
            .map_err(|e| MethodError::Failed {
                kind,
                reason: e.to_string(),
            })
    }
}

impl Method for PgpMethod {
    fn kind(&self) -> MethodKind {
        self.kind
    }

    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }

    fn transform<'a>(
        &'a self,
        input: &'a [u8],
        copy: CopyInfo<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, MethodError>> {
        Box::pin(self.encrypt(input, copy))
    }
}

/// Registers the OpenPGP and domain-OpenPGP methods over `keys`.
pub fn register(registry: &mut Registry, keys: &Arc<PgpKeys>) {
    for kind in [MethodKind::Pgp, MethodKind::DomainPgp] {
        registry.register(Box::new(PgpMethod::new(kind, Arc::clone(keys))));
    }
}
