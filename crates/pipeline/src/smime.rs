//! S/MIME in the mail path and the managed PKI behind it.
//!
//! [`Mpki`] is Siegel's CA together with the store: it issues and renews
//! user certificates, keeps the CRL, finds the signing identity of a sender
//! and the certificates of recipients. The mail path uses it in two places:
//!
//! * outbound, per copy: the registered methods ([`register`]) sign in the
//!   sender's name ([`Mpki::sign_outbound`]): [`SignedCopy`] for TLS-only
//!   and internal copies, [`SmimeMethod`] for S/MIME and domain S/MIME,
//!   which then encrypts the signed mail to the recipients' (or their
//!   domain's) certificates. Bcc privacy is untouched: a signature covers
//!   the content, never the envelope;
//! * inbound: the stages `decrypt`, `verify` and `harvest`
//!   ([`crate::stages`]) call [`Mpki::decrypt_inbound`],
//!   [`Mpki::verify_inbound`] and [`Mpki::harvest`].
//!
//! Where the CA lives: a `domain_keys` row of the reserved domain
//! [`CA_DOMAIN`] (kind S/MIME, ownership own), so its private key is sealed
//! under the master key exactly like every other private key, and backup,
//! restore and master-key rotation cover it without special cases.
//!
//! Memory bound: signing and encryption work on the whole content in memory,
//! so a mail costs a few times its size (at most `smtp.max_message_size`,
//! 50 MB by default) while it is transformed; [`MAX_SMIME_CONTENT`] caps it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use siegel_crypto::pki::{self, Ca, CaParams, KeyKind, PkiError, Revocation, UserParams};
use siegel_crypto::revocation::RevocationStatus;
use siegel_crypto::smime::{
    self, ContentCipher, DecryptError, SignatureCheck, Signer, SmimeError, TrustStore,
    VerifyOptions,
};
use siegel_policy::{BoxFuture, CopyInfo, Method, MethodError, MethodKind, Registry, Unavailable};
use siegel_store::{
    DomainKeyKind, KeyRecord, LicenceState, NewDomainKey, NewKey, Ownership, SecretBytes,
    SourceKind, Store, StoreError,
};
use siegel_types::Address;

/// The reserved domain whose `domain_keys` row holds Siegel's CA
/// (`.invalid` can never be a real mail domain, RFC 2606).
pub const CA_DOMAIN: &str = "siegel-ca.invalid";

/// Mails larger than this are not signed, encrypted or opened (they pass
/// with a note/stamp): transforming them needs the whole mail in memory.
pub const MAX_SMIME_CONTENT: usize = 64 * 1024 * 1024;

const SETTING_ADDRESSES: &str = "mpki.addresses";
/// Capability tokens stored with a harvested certificate.
const CAP_GCM: &str = "aes256-gcm";
const CAP_CBC: &str = "aes256-cbc";
const SETTING_CRL: &str = "mpki.crl";

/// Why an mPKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MpkiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Smime(#[from] SmimeError),
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// The stored CA or key does not parse: the store was changed outside Siegel.
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
}

/// The `[mpki]`/`[smime]` settings in the form the mPKI needs them.
#[derive(Clone)]
pub struct MpkiSettings {
    pub auto_enroll: bool,
    pub key: KeyKind,
    pub validity_days: u32,
    pub renew_before_days: u32,
    pub crl_url: String,
    pub cipher: ContentCipher,
    /// Configured trust anchors (public roots, admin-trusted CAs).
    pub trust: TrustStore,
    /// Our own domains (normalised): their senders sign, their recipients'
    /// mail is decrypted.
    pub internal_domains: Vec<String>,
    /// Organisation name in the CA certificate.
    pub organization: Option<String>,
    /// Which unknown internal senders become users on their first mail.
    pub onboarding: crate::onboarding::Onboarding,
}

impl Default for MpkiSettings {
    fn default() -> Self {
        Self {
            auto_enroll: true,
            key: KeyKind::Rsa3072,
            validity_days: 365,
            renew_before_days: 30,
            crl_url: "http://localhost/crl/ca.crl".to_owned(),
            cipher: ContentCipher::Aes256Cbc,
            trust: TrustStore::new(),
            internal_domains: Vec::new(),
            organization: None,
            onboarding: crate::onboarding::Onboarding::default(),
        }
    }
}

/// The S/MIME or domain-S/MIME method: signs in the sender's name (when
/// the sender is one of our licensed users), then encrypts to the current
/// certificates of the copy's recipients, or of their domains. The
/// certificates are read from the store for each copy, so one revoked a
/// moment ago is never used.
pub struct SmimeMethod {
    kind: MethodKind,
    mpki: Arc<Mpki>,
}

impl SmimeMethod {
    pub fn new(kind: MethodKind, mpki: Arc<Mpki>) -> Self {
        Self { kind, mpki }
    }

    async fn encrypt(&self, input: &[u8], copy: CopyInfo<'_>) -> Result<Vec<u8>, MethodError> {
        let kind = self.kind;
        let temporary = |e: MpkiError| MethodError::Temporary {
            kind,
            reason: e.to_string(),
        };
        let now = i64::try_from(copy.now).unwrap_or(i64::MAX);
        let mut certs: Vec<X509> = Vec::new();
        for r in copy.recipients {
            let cert = match kind {
                MethodKind::DomainSmime => self.mpki.domain_certificate(r.domain()).await,
                _ => self.mpki.recipient_certificate(r, now).await,
            }
            .map_err(temporary)?
            .ok_or_else(|| MethodError::NoKey {
                kind,
                recipient: r.clone(),
            })?;
            // Several recipients of one domain share the domain certificate.
            if !certs.iter().any(|c| c.as_ref() == cert.as_ref()) {
                certs.push(cert);
            }
        }
        let signed = self
            .mpki
            .sign_outbound(copy.envelope.mail_from.address(), input, now)
            .await
            .map_err(temporary)?;
        let input = signed.as_deref().unwrap_or(input);
        let cipher = self.cipher_for(&certs).await.map_err(temporary)?;
        smime::encrypt(input, &certs, cipher).map_err(|e| MethodError::Failed {
            kind,
            reason: e.to_string(),
        })
    }
}

impl SmimeMethod {
    /// The configured cipher, or AES-256-GCM when every certificate's
    /// owner announced (in the SMIMECapabilities of a verified signature)
    /// that their client reads it: authenticated encryption wherever it is
    /// known to work, CBC for everyone else.
    async fn cipher_for(&self, certs: &[X509]) -> Result<ContentCipher, MpkiError> {
        let configured = self.mpki.settings.cipher;
        if configured == ContentCipher::Aes256Gcm || self.kind != MethodKind::Smime {
            return Ok(configured);
        }
        for c in certs {
            let caps = self
                .mpki
                .store
                .certificates()
                .capabilities(&fingerprint(c)?)
                .await?;
            if !caps.is_some_and(|c| c.split(',').any(|t| t.trim() == CAP_GCM)) {
                return Ok(configured);
            }
        }
        Ok(ContentCipher::Aes256Gcm)
    }
}

impl Method for SmimeMethod {
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

/// A copy that leaves without encryption (TLS only; plain for internal
/// recipients), signed in the sender's name when the sender is one of our
/// licensed users, else unchanged.
///
/// With OpenPGP keys at hand, a TLS-only copy whose recipients all have an
/// OpenPGP key and no S/MIME certificate is signed PGP/MIME instead: their
/// clients read OpenPGP, and may show an S/MIME signature as an attachment.
pub struct SignedCopy {
    kind: MethodKind,
    mpki: Arc<Mpki>,
    pgp: Option<Arc<crate::pgp::PgpKeys>>,
}

impl SignedCopy {
    /// Only the unencrypted kinds: a signature never stands in for encryption.
    pub fn new(kind: MethodKind, mpki: Arc<Mpki>) -> Option<Self> {
        matches!(kind, MethodKind::TlsOnly | MethodKind::Plain).then_some(Self {
            kind,
            mpki,
            pgp: None,
        })
    }

    /// Signs PGP/MIME for recipients who have only an OpenPGP key.
    pub fn with_pgp(mut self, pgp: Option<Arc<crate::pgp::PgpKeys>>) -> Self {
        self.pgp = pgp;
        self
    }

    /// The PGP/MIME-signed copy, when the recipients call for one and the
    /// sender has a key. `Ok(None)`: sign S/MIME (or not at all).
    async fn pgp_signed(
        &self,
        input: &[u8],
        copy: &CopyInfo<'_>,
        now: i64,
    ) -> Result<Option<Vec<u8>>, String> {
        let Some(keys) = &self.pgp else {
            return Ok(None);
        };
        if self.kind != MethodKind::TlsOnly
            || is_smime(input)
            || crate::pgp::is_pgp_mime_signed(input)
        {
            return Ok(None);
        }
        if !keys
            .sign_for_openpgp_only(copy.recipients, now)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        let Some(signer) = keys
            .signer(copy.envelope.mail_from.address(), now)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        crate::pgp::PgpKeys::engine(now)
            .sign_with(input, &signer)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl Method for SignedCopy {
    fn kind(&self) -> MethodKind {
        self.kind
    }

    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }

    fn changes<'a>(&'a self, copy: CopyInfo<'a>) -> BoxFuture<'a, Result<bool, MethodError>> {
        let kind = self.kind;
        Box::pin(async move {
            self.mpki
                .signs_for(copy.envelope.mail_from.address())
                .await
                .map_err(|e| MethodError::Temporary {
                    kind,
                    reason: e.to_string(),
                })
        })
    }

    fn transform<'a>(
        &'a self,
        input: &'a [u8],
        copy: CopyInfo<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, MethodError>> {
        let kind = self.kind;
        Box::pin(async move {
            let now = i64::try_from(copy.now).unwrap_or(i64::MAX);
            match self.pgp_signed(input, &copy, now).await {
                Ok(Some(signed)) => return Ok(signed),
                Ok(None) => {}
                Err(reason) => return Err(MethodError::Temporary { kind, reason }),
            }
            match self
                .mpki
                .sign_outbound(copy.envelope.mail_from.address(), input, now)
                .await
            {
                Ok(Some(signed)) => Ok(signed),
                Ok(None) => Ok(input.to_vec()),
                Err(e) => Err(MethodError::Temporary {
                    kind,
                    reason: e.to_string(),
                }),
            }
        })
    }
}

/// Registers the S/MIME and domain-S/MIME methods, and the signing
/// TLS-only and plain copies, over `mpki`.
pub fn register(registry: &mut Registry, mpki: &Arc<Mpki>) {
    register_with(registry, mpki, None);
}

/// [`register`], with TLS-only copies to OpenPGP-only recipients signed
/// PGP/MIME with `pgp`'s keys.
pub fn register_with(
    registry: &mut Registry,
    mpki: &Arc<Mpki>,
    pgp: Option<&Arc<crate::pgp::PgpKeys>>,
) {
    for kind in [MethodKind::Smime, MethodKind::DomainSmime] {
        registry.register(Box::new(SmimeMethod::new(kind, Arc::clone(mpki))));
    }
    for kind in [MethodKind::TlsOnly, MethodKind::Plain] {
        if let Some(m) = SignedCopy::new(kind, Arc::clone(mpki)) {
            registry.register(Box::new(m.with_pgp(pgp.cloned())));
        }
    }
}

/// One certificate revoked by the administrator, for the CRL.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct CrlState {
    number: u64,
    revoked: Vec<(String, i64)>,
}

/// Siegel's CA over the store.
pub struct Mpki {
    store: Store,
    ca: Ca,
    settings: MpkiSettings,
    /// Correspondents' CRLs (fetched when a fetcher is set).
    crls: crate::crl::CrlSource,
    /// Our own CRL, parsed, with the CRL number it was made for.
    own_crl: std::sync::Mutex<Option<(u64, i64, Vec<u8>)>>,
}

impl std::fmt::Debug for Mpki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpki").finish_non_exhaustive()
    }
}

/// SHA-256 of the DER certificate, upper-case hex (the store's spelling).
pub fn fingerprint(cert: &X509) -> Result<String, MpkiError> {
    Ok(cert
        .digest(MessageDigest::sha256())?
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect())
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, MpkiError> {
    let d = Asn1Time::from_unix(0)?.diff(t)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn usable(k: &KeyRecord, now: i64) -> bool {
    !k.revoked && k.superseded_by.is_none() && k.not_before <= now && now <= k.not_after
}

/// Parses certificates in PEM (one or many), DER, or a PKCS#7 bundle.
pub fn parse_certificates(data: &[u8]) -> Result<Vec<X509>, MpkiError> {
    if data.windows(11).any(|w| w == b"-----BEGIN ") {
        if let Ok(certs) = X509::stack_from_pem(data)
            && !certs.is_empty()
        {
            return Ok(certs);
        }
        if let Ok(p7) = openssl::pkcs7::Pkcs7::from_pem(data) {
            return pkcs7_certs(&p7);
        }
    }
    if let Ok(c) = X509::from_der(data) {
        return Ok(vec![c]);
    }
    if let Ok(p7) = openssl::pkcs7::Pkcs7::from_der(data) {
        return pkcs7_certs(&p7);
    }
    Err(MpkiError::Invalid(
        "not a certificate (PEM, DER or PKCS#7)".to_owned(),
    ))
}

fn pkcs7_certs(p7: &openssl::pkcs7::Pkcs7) -> Result<Vec<X509>, MpkiError> {
    let certs: Vec<X509> = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|st| st.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(MpkiError::Invalid("PKCS#7 without certificates".to_owned()));
    }
    Ok(certs)
}

impl Mpki {
    /// Loads the CA from the store, creating it on first start.
    pub async fn load_or_create(store: Store, settings: MpkiSettings) -> Result<Mpki, MpkiError> {
        if let Some(ca) = load_ca(&store).await? {
            return Ok(Mpki::with(store, ca, settings));
        }
        let ca = Ca::create(&CaParams {
            common_name: "Siegel mPKI CA".to_owned(),
            organization: settings.organization.clone(),
            key: settings.key,
            // a day back: clocks of clients verifying our signatures drift
            not_before: unix(SystemTime::now()) - 86_400,
            validity_days: 3650,
        })?;
        store_ca(&store, &ca).await?;
        Ok(Mpki::with(store, ca, settings))
    }

    fn with(store: Store, ca: Ca, settings: MpkiSettings) -> Mpki {
        Mpki {
            store,
            ca,
            settings,
            crls: crate::crl::CrlSource::new(None),
            own_crl: std::sync::Mutex::new(None),
        }
    }

    /// Replaces the CA with an imported one (certificates issued by the old
    /// CA stay valid where they are trusted; new ones come from this CA).
    pub async fn import_ca(
        store: &Store,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<(), MpkiError> {
        let ca = Ca::from_pem(cert_pem, key_pem)?;
        for old in store.domain_keys().for_domain(CA_DOMAIN).await? {
            store.domain_keys().delete(&old.fingerprint).await?;
        }
        store_ca(store, &ca).await
    }

    /// Fetches correspondents' CRLs with `fetcher` (see [`crate::crl`]).
    pub fn with_crl_fetcher(mut self, fetcher: siegel_fetch::Fetcher) -> Self {
        self.crls = crate::crl::CrlSource::new(Some(fetcher));
        self
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    pub fn settings(&self) -> &MpkiSettings {
        &self.settings
    }

    pub fn is_internal(&self, a: &Address) -> bool {
        self.settings
            .internal_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(a.domain()))
    }

    /// Issues a certificate for `address` and stores it with its private key.
    pub async fn issue_user(
        &self,
        address: &Address,
        name: Option<&str>,
        now: i64,
    ) -> Result<KeyRecord, MpkiError> {
        let issued = self.ca.issue_user(&UserParams {
            address,
            name,
            key: self.settings.key,
            not_before: now - 300,
            validity_days: self.settings.validity_days,
            crl_url: &self.settings.crl_url,
        })?;
        let key = SecretBytes::new(issued.key.private_key_to_pkcs8()?);
        self.insert(
            &issued.certificate,
            address,
            SourceKind::Issued,
            None,
            Some(key),
        )
        .await
    }

    /// Stores a certificate for `address`.
    async fn insert(
        &self,
        cert: &X509,
        address: &Address,
        source: SourceKind,
        message_id: Option<String>,
        private_key: Option<SecretBytes>,
    ) -> Result<KeyRecord, MpkiError> {
        let usage = if cert.public_key()?.rsa().is_ok() {
            "digitalSignature,keyEncipherment"
        } else {
            "digitalSignature,keyAgreement"
        };
        let issuer = cert
            .issuer_name()
            .entries()
            .filter_map(|e| e.data().to_string().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let serial = cert.serial_number().to_bn()?.to_hex_str()?.to_string();
        let record = self
            .store
            .certificates()
            .insert(&NewKey {
                address: address.clone(),
                fingerprint: fingerprint(cert)?,
                issuer: if issuer.is_empty() {
                    "-".to_owned()
                } else {
                    issuer
                },
                serial,
                not_before: asn1_unix(cert.not_before())?,
                not_after: asn1_unix(cert.not_after())?,
                key_usage: usage.to_owned(),
                source_kind: source,
                source_message_id: message_id,
                material: cert.to_der()?,
                source_detail: None,
                private_key,
            })
            .await?;
        self.remember_address(address).await?;
        Ok(record)
    }

    /// The store cannot list every certificate, so the addresses that have
    /// one are kept in a setting for `siegel cert list`.
    async fn remember_address(&self, address: &Address) -> Result<(), MpkiError> {
        let mut all: Vec<String> = self
            .store
            .settings()
            .get_as(SETTING_ADDRESSES)
            .await?
            .unwrap_or_default();
        if !all.iter().any(|a| a == address.as_str()) {
            all.push(address.as_str().to_owned());
            all.sort();
            self.store.settings().set(SETTING_ADDRESSES, &all).await?;
        }
        Ok(())
    }

    /// Every stored certificate, by address.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, MpkiError> {
        let all: Vec<String> = self
            .store
            .settings()
            .get_as(SETTING_ADDRESSES)
            .await?
            .unwrap_or_default();
        let mut out = Vec::new();
        for a in all {
            if let Ok(a) = Address::parse(&a) {
                out.extend(self.store.certificates().for_address(&a).await?);
            }
        }
        Ok(out)
    }

    /// Imports correspondents' certificates (source "imported") for every
    /// address they name; returns the stored records.
    pub async fn import_certificates(&self, data: &[u8]) -> Result<Vec<KeyRecord>, MpkiError> {
        let mut out = Vec::new();
        for cert in parse_certificates(data)? {
            let addresses = pki::certificate_addresses(&cert);
            if addresses.is_empty() {
                // CA certificates in a bundle name no address: not for encryption.
                continue;
            }
            for a in addresses {
                out.push(
                    self.insert(&cert, &a, SourceKind::Imported, None, None)
                        .await?,
                );
            }
        }
        if out.is_empty() {
            return Err(MpkiError::Invalid(
                "no certificate with a mail address in the file".to_owned(),
            ));
        }
        Ok(out)
    }

    /// The newest certificate of `address` (usable first).
    pub async fn certificate_of(&self, address: &Address) -> Result<X509, MpkiError> {
        let now = unix(SystemTime::now());
        let records = self.store.certificates().for_address(address).await?;
        let r = records
            .iter()
            .find(|k| usable(k, now))
            .or(records.first())
            .ok_or_else(|| MpkiError::NotFound(format!("a certificate for {address}")))?;
        X509::from_der(&r.material).map_err(|_| MpkiError::Corrupt("certificate"))
    }

    /// The usable certificate and private key of `address`.
    async fn identity(
        &self,
        address: &Address,
        now: i64,
    ) -> Result<Option<(KeyRecord, X509, PKey<Private>)>, MpkiError> {
        for r in self.store.certificates().for_address(address).await? {
            if !r.has_private_key || !usable(&r, now) {
                continue;
            }
            if let Some((c, k)) = self.open(&r).await? {
                return Ok(Some((r, c, k)));
            }
        }
        Ok(None)
    }

    async fn open(&self, r: &KeyRecord) -> Result<Option<(X509, PKey<Private>)>, MpkiError> {
        let Some(secret) = self
            .store
            .certificates()
            .private_key(&r.fingerprint)
            .await?
        else {
            return Ok(None);
        };
        let key = PKey::private_key_from_pkcs8(secret.expose())
            .map_err(|_| MpkiError::Corrupt("private key"))?;
        let cert = X509::from_der(&r.material).map_err(|_| MpkiError::Corrupt("certificate"))?;
        Ok(Some((cert, key)))
    }

    /// Certificate and key of `address` for a PKCS#12 export.
    pub async fn p12(&self, address: &Address, password: &str) -> Result<Vec<u8>, MpkiError> {
        let now = unix(SystemTime::now());
        let (_, cert, key) = self
            .identity(address, now)
            .await?
            .ok_or_else(|| MpkiError::NotFound(format!("a certificate with key for {address}")))?;
        Ok(pki::export_p12(
            &cert,
            &key,
            &[self.ca.certificate().clone()],
            address.as_str(),
            password,
        )?)
    }

    /// The signing identity of an internal sender: their usable
    /// certificate, renewed when it expires within `renew_before_days`;
    /// issued first with `auto_enroll`. `None`: no certificate and no
    /// auto-enrolment, or an address a certificate cannot carry.
    pub async fn signer_for(
        &self,
        sender: &Address,
        now: i64,
    ) -> Result<Option<Signer>, MpkiError> {
        let renew_at = i64::from(self.settings.renew_before_days) * 86_400;
        let current = self.identity(sender, now).await?;
        let (cert, key) = match current {
            Some((r, c, k)) if r.not_after - now > renew_at => (c, k),
            Some((r, c, k)) => {
                if r.source_kind == SourceKind::Issued {
                    let new = self.issue_user(sender, None, now).await?;
                    self.store
                        .certificates()
                        .supersede(&r.fingerprint, &new.fingerprint)
                        .await?;
                    match self.open(&new).await? {
                        Some(ck) => ck,
                        None => (c, k),
                    }
                } else {
                    (c, k)
                }
            }
            None if self.settings.auto_enroll && !sender.needs_smtputf8() => {
                let new = self.issue_user(sender, None, now).await?;
                tracing::info!(target: "siegel::mpki", address = %sender, fingerprint = %new.fingerprint, "auto-enrolled: certificate issued");
                match self.open(&new).await? {
                    Some(ck) => ck,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        Ok(Some(Signer::new(
            cert,
            key,
            &[self.ca.certificate().clone()],
        )?))
    }

    /// Whether [`Mpki::sign_outbound`] signs mail of this sender: an
    /// internal sender who is a licensed user, or becomes one now by
    /// onboarding ([`crate::onboarding`]). An unknown address of an
    /// internal domain that `[users] onboard` does not name (a printer, a
    /// role account) and unlicensed/excluded users pass unprotected, as
    /// the licence states say; they get no certificate behind the
    /// administrator's back.
    pub async fn signs_for(&self, sender: Option<&Address>) -> Result<bool, MpkiError> {
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

    /// Signs an outbound mail of an internal sender who is a licensed user.
    /// `Ok(None)`: left as it is (external or unknown sender, no
    /// certificate and no auto-enrolment, already S/MIME, too large).
    pub async fn sign_outbound(
        &self,
        sender: Option<&Address>,
        message: &[u8],
        now: i64,
    ) -> Result<Option<Vec<u8>>, MpkiError> {
        if message.len() > MAX_SMIME_CONTENT || is_smime(message) {
            return Ok(None);
        }
        let Some(sender) = sender else {
            return Ok(None);
        };
        if !self.signs_for(Some(sender)).await? {
            return Ok(None);
        }
        let Some(signer) = self.signer_for(sender, now).await? else {
            return Ok(None);
        };
        Ok(Some(smime::sign(message, &signer)?))
    }

    /// The certificate a copy for `recipient` is encrypted to: the usable
    /// one that stays valid longest. `None`: none is usable now.
    pub async fn recipient_certificate(
        &self,
        recipient: &Address,
        now: i64,
    ) -> Result<Option<X509>, MpkiError> {
        let records = self.store.certificates().for_address(recipient).await?;
        Ok(records
            .iter()
            .find(|k| usable(k, now))
            .and_then(|k| X509::from_der(&k.material).ok()))
    }

    /// The S/MIME domain certificate of a partner (or our own) domain.
    pub async fn domain_certificate(&self, domain: &str) -> Result<Option<X509>, MpkiError> {
        let keys = self.store.domain_keys().for_domain(domain).await?;
        Ok(keys
            .iter()
            .find(|k| k.kind == DomainKeyKind::Smime)
            .and_then(|k| X509::from_der(&k.material).ok()))
    }

    /// Our own domain certificate for `domain`, created on first use.
    pub async fn own_domain_certificate(&self, domain: &str) -> Result<X509, MpkiError> {
        let keys = self.store.domain_keys().for_domain(domain).await?;
        if let Some(k) = keys
            .iter()
            .find(|k| k.kind == DomainKeyKind::Smime && k.ownership == Ownership::Own)
        {
            return X509::from_der(&k.material)
                .map_err(|_| MpkiError::Corrupt("domain certificate"));
        }
        let address = Address::parse(&format!("postmaster@{domain}"))
            .map_err(|e| MpkiError::Invalid(format!("domain {domain}: {e}")))?;
        let name = format!("{domain} domain encryption");
        let issued = self.ca.issue_user(&UserParams {
            address: &address,
            name: Some(&name),
            key: self.settings.key,
            not_before: unix(SystemTime::now()) - 300,
            validity_days: self.settings.validity_days,
            crl_url: &self.settings.crl_url,
        })?;
        self.store
            .domain_keys()
            .insert(&NewDomainKey {
                domain: domain.to_owned(),
                kind: DomainKeyKind::Smime,
                ownership: Ownership::Own,
                fingerprint: fingerprint(&issued.certificate)?,
                material: issued.certificate.to_der()?,
                private_key: Some(SecretBytes::new(issued.key.private_key_to_pkcs8()?)),
            })
            .await?;
        Ok(issued.certificate)
    }

    /// Stores a partner gateway's domain certificate.
    pub async fn import_domain_certificate(
        &self,
        domain: &str,
        data: &[u8],
    ) -> Result<String, MpkiError> {
        let cert = parse_certificates(data)?
            .into_iter()
            .next()
            .ok_or_else(|| MpkiError::Invalid("no certificate".to_owned()))?;
        let fp = fingerprint(&cert)?;
        self.store
            .domain_keys()
            .insert(&NewDomainKey {
                domain: domain.to_owned(),
                kind: DomainKeyKind::Smime,
                ownership: Ownership::Partner,
                fingerprint: fp.clone(),
                material: cert.to_der()?,
                private_key: None,
            })
            .await?;
        Ok(fp)
    }

    /// Revokes a certificate; one issued by our CA goes on the CRL.
    pub async fn revoke(&self, fp: &str, now: i64) -> Result<KeyRecord, MpkiError> {
        let record = self
            .store
            .certificates()
            .by_fingerprint(fp)
            .await?
            .ok_or_else(|| MpkiError::NotFound(format!("certificate {fp}")))?;
        self.store
            .certificates()
            .revoke(&record.fingerprint)
            .await?;
        let cert =
            X509::from_der(&record.material).map_err(|_| MpkiError::Corrupt("certificate"))?;
        let ca_key = self.ca.certificate().public_key()?;
        let ours = cert.verify(&ca_key).unwrap_or(false);
        if ours {
            let mut crl = self.crl_state().await?;
            let serial = cert.serial_number().to_bn()?.to_hex_str()?.to_string();
            if !crl.revoked.iter().any(|(s, _)| *s == serial) {
                crl.revoked.push((serial, now));
                crl.number += 1;
                self.store.settings().set(SETTING_CRL, &crl).await?;
            }
        }
        Ok(record)
    }

    async fn crl_state(&self) -> Result<CrlState, MpkiError> {
        Ok(self
            .store
            .settings()
            .get_as(SETTING_CRL)
            .await?
            .unwrap_or_default())
    }

    /// The current CRL, DER, valid for seven days from `now`.
    pub async fn crl_der(&self, now: i64) -> Result<Vec<u8>, MpkiError> {
        let state = self.crl_state().await?;
        let mut revoked = Vec::new();
        for (serial, at) in &state.revoked {
            let bn = openssl::bn::BigNum::from_hex_str(serial)
                .map_err(|_| MpkiError::Corrupt("CRL serial"))?;
            revoked.push(Revocation {
                serial: bn.to_vec(),
                revoked_at: *at,
            });
        }
        let crl = self.ca.issue_crl(&revoked, state.number.max(1), now, 7)?;
        Ok(crl.to_der()?)
    }

    /// Inbound S/MIME decryption, to an internal recipient's certificate
    /// or to our domain certificate. `Ok(Err(token))`: the mail could not
    /// be opened (`malformed`, `no-key`); `Err`: the store did not answer.
    pub async fn decrypt_inbound(
        &self,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Result<(Vec<u8>, &'static str), &'static str>, MpkiError> {
        self.decrypt(recipients, message).await
    }

    /// Verifies the S/MIME signature of an inbound mail as of `at`, against
    /// our CA, the configured trust anchors and the certificates stored for
    /// the `From` address, and checks the signer's chain against our own
    /// CRL and, when revocation is otherwise unknown, against the CRLs of
    /// the distribution points in the chain ([`crate::crl`]). `Err`: the
    /// store did not answer.
    pub async fn verify_inbound(
        &self,
        message: &[u8],
        at: SystemTime,
    ) -> Result<SignatureCheck, MpkiError> {
        let from = header_address(message, "from");
        let mut trust = self.settings.trust.clone();
        trust.add(self.ca.certificate().clone());
        if let Some(f) = &from {
            for r in self.store.certificates().for_address(f).await? {
                if r.revoked {
                    continue;
                }
                if let Ok(c) = X509::from_der(&r.material) {
                    trust.add(c);
                }
            }
        }
        let mut crls = vec![self.own_crl().await?];
        let check = smime::check_signature(
            message,
            &VerifyOptions {
                trust: &trust,
                at,
                crls: &crls,
            },
        );
        let points = match &check {
            SignatureCheck::Valid(v) => match &v.revocation {
                RevocationStatus::Unknown {
                    distribution_points,
                    ..
                } if !distribution_points.is_empty() => distribution_points.clone(),
                _ => return Ok(check),
            },
            _ => return Ok(check),
        };
        let (fetched, _) = self.crls.fetch(&points, SystemTime::now()).await;
        if fetched.is_empty() {
            return Ok(check);
        }
        crls.extend(fetched);
        Ok(smime::check_signature(
            message,
            &VerifyOptions {
                trust: &trust,
                at,
                crls: &crls,
            },
        ))
    }

    /// Our CA's current CRL, rebuilt only when a revocation changed it
    /// (on any node: the CRL number is in the store).
    async fn own_crl(&self) -> Result<openssl::x509::X509Crl, MpkiError> {
        let number = self.crl_state().await?.number;
        let now = unix(SystemTime::now());
        if let Ok(guard) = self.own_crl.lock()
            && let Some((n, made, der)) = guard.as_ref()
            && *n == number
            && now - made < 86_400
        {
            return Ok(openssl::x509::X509Crl::from_der(der)?);
        }
        let der = self.crl_der(now).await?;
        let crl = openssl::x509::X509Crl::from_der(&der)?;
        if let Ok(mut guard) = self.own_crl.lock() {
            *guard = Some((number, now, der));
        }
        Ok(crl)
    }

    async fn decrypt(
        &self,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Result<(Vec<u8>, &'static str), &'static str>, MpkiError> {
        for r in recipients.iter().filter(|r| self.is_internal(r)) {
            let records = self.store.certificates().for_address(r).await?;
            for rec in records.iter().filter(|k| k.has_private_key) {
                // A key that does not unseal or parse is one we cannot use
                // (logged by the store); another may still open the mail.
                if let Ok(Some((c, k))) = self.open(rec).await {
                    match smime::decrypt(message, &c, &k) {
                        Ok(plain) => return Ok(Ok((plain, "smime"))),
                        Err(DecryptError::Malformed(_)) => return Ok(Err("malformed")),
                        Err(_) => {}
                    }
                }
            }
        }
        let mut domains: Vec<&str> = recipients
            .iter()
            .filter(|r| self.is_internal(r))
            .map(|r| r.domain())
            .collect();
        domains.dedup();
        for d in domains {
            let keys = self.store.domain_keys().for_domain(d).await?;
            for k in keys
                .iter()
                .filter(|k| k.kind == DomainKeyKind::Smime && k.has_private_key)
            {
                let Some(secret) = self.store.domain_keys().private_key(&k.fingerprint).await?
                else {
                    continue;
                };
                let (Ok(c), Ok(key)) = (
                    X509::from_der(&k.material),
                    PKey::private_key_from_pkcs8(secret.expose()),
                ) else {
                    continue;
                };
                match smime::decrypt(message, &c, &key) {
                    Ok(plain) => return Ok(Ok((plain, "domain-smime"))),
                    Err(DecryptError::Malformed(_)) => return Ok(Err("malformed")),
                    Err(_) => {}
                }
            }
        }
        Ok(Err("no-key"))
    }

    /// Keeps the certificate of a valid signature for its address; a newer
    /// one supersedes the older harvested ones. `gcm`: the signature
    /// announced that the signer's client reads AES-256-GCM (recorded with
    /// the certificate, the latest announcement wins).
    pub async fn harvest(
        &self,
        address: &Address,
        cert: &X509,
        message_id: &str,
        gcm: bool,
    ) -> Result<(), MpkiError> {
        if self.is_internal(address) {
            return Ok(());
        }
        let fp = fingerprint(cert)?;
        let announced = if gcm { CAP_GCM } else { CAP_CBC };
        let existing = self.store.certificates().for_address(address).await?;
        if existing.iter().any(|k| k.fingerprint == fp) {
            // Read before write: most signed mail repeats what was announced,
            // and a write costs a store commit.
            let certs = self.store.certificates();
            if certs.capabilities(&fp).await?.as_deref() != Some(announced) {
                certs.set_capabilities(&fp, announced).await?;
            }
            return Ok(());
        }
        let new = self
            .insert(
                cert,
                address,
                SourceKind::Harvested,
                Some(message_id.to_owned()),
                None,
            )
            .await?;
        for old in existing.iter().filter(|k| {
            k.source_kind == SourceKind::Harvested
                && k.superseded_by.is_none()
                && k.not_after <= new.not_after
        }) {
            self.store
                .certificates()
                .supersede(&old.fingerprint, &new.fingerprint)
                .await?;
        }
        self.store
            .certificates()
            .set_capabilities(&fp, announced)
            .await?;
        tracing::info!(target: "siegel::mpki", %address, fingerprint = %fp, gcm, "harvested certificate");
        Ok(())
    }
}

async fn load_ca(store: &Store) -> Result<Option<Ca>, MpkiError> {
    let rows = store.domain_keys().for_domain(CA_DOMAIN).await?;
    let Some(row) = rows.iter().find(|k| k.has_private_key) else {
        return Ok(None);
    };
    let secret = store
        .domain_keys()
        .private_key(&row.fingerprint)
        .await?
        .ok_or(MpkiError::Corrupt("CA private key"))?;
    let cert = X509::from_der(&row.material).map_err(|_| MpkiError::Corrupt("CA certificate"))?;
    let key = PKey::private_key_from_pkcs8(secret.expose())
        .map_err(|_| MpkiError::Corrupt("CA private key"))?;
    Ok(Some(Ca::from_parts(cert, key)?))
}

async fn store_ca(store: &Store, ca: &Ca) -> Result<(), MpkiError> {
    store
        .domain_keys()
        .insert(&NewDomainKey {
            domain: CA_DOMAIN.to_owned(),
            kind: DomainKeyKind::Smime,
            ownership: Ownership::Own,
            fingerprint: fingerprint(ca.certificate())?,
            material: ca.certificate().to_der()?,
            private_key: Some(SecretBytes::new(ca.key().private_key_to_pkcs8()?)),
        })
        .await?;
    Ok(())
}

/// The header section of a message (up to the first empty line).
fn head(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| message.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(message.len());
    &message[..end]
}

/// The unfolded value of the first header field `name` (lower case).
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head(message));
    let mut current: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if current.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            current = Some(v.trim().to_owned());
        }
    }
    current
}

/// The address in a header field such as `From: Bob <bob@x>`.
pub fn header_address(message: &[u8], name: &str) -> Option<Address> {
    let v = header_value(message, name)?;
    let inner = match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.as_str(),
    };
    Address::parse(inner.trim()).ok()
}

fn content_type(message: &[u8]) -> String {
    header_value(message, "content-type")
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Already S/MIME (signed or encrypted by the client): left alone.
pub fn is_smime(message: &[u8]) -> bool {
    let ct = content_type(message);
    ct.starts_with("multipart/signed") || ct.contains("pkcs7-mime")
}

/// An opaque signature (`application/pkcs7-mime; smime-type=signed-data`).
pub fn is_opaque_signed(message: &[u8]) -> bool {
    let ct = content_type(message);
    ct.contains("pkcs7-mime") && ct.contains("signed-data")
}

/// The outer header fields except those describing the body, then the
/// signed entity (its own `Content-*` fields, empty line, body).
pub fn unwrap_opaque(message: &[u8], entity: &[u8]) -> Vec<u8> {
    let h = head(message);
    let mut out = Vec::with_capacity(h.len() + entity.len() + 32);
    let mut keep = false;
    for line in h.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keep = !(name.starts_with("content-") || name == "mime-version");
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    if !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    out.extend_from_slice(entity);
    out
}

/// S/MIME-encrypted (EnvelopedData/AuthEnvelopedData, or a `.p7m` file).
pub fn is_encrypted(message: &[u8]) -> bool {
    let ct = content_type(message);
    (ct.contains("pkcs7-mime") && !ct.contains("signed-data"))
        || (ct.starts_with("application/octet-stream") && ct.contains(".p7m"))
}

/// A clock for inbound verification; tests pin it.
pub fn system_time(unix_seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_seconds)
}
