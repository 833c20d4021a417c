//! The policy's side of the pipeline: the settings, the facts about each
//! recipient that must come from the store (async, so they are loaded
//! *before* the synchronous stages run), and where decisions are recorded.
//!
//! The decision itself is `siegel-policy`'s pure code; this module only
//! gathers its inputs and stores its outputs, so that `siegel policy
//! explain` ([`explain`]) and the mail path take the very same decision.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use siegel_policy::{
    Classification, ClassificationRules, Decision, KeyRef, MethodKind, Outcome, Preference,
    RecipientFacts, Registry, Split, classify, decide_all, split,
};
use siegel_store::{KeySummary, PreferredMethod, Store, TrackingEvent};
use siegel_types::{Address, Envelope, QueueId};

/// A boxed future, so that [`KeyDirectory`] and [`TrackingSink`] can be
/// used as trait objects (the pipeline holds them behind `Arc<dyn …>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The `[policy]` knobs, in the form the pipeline needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    pub rules: ClassificationRules,
    pub encrypt_when_key_known: bool,
    /// Recipient domains where verified TLS counts as enough for
    /// confidential mail. The configuration requires `tls.policy =
    /// "required"` for each, which is what makes delivery enforce it.
    pub verified_tls_enough: Vec<String>,
    /// Sender domains whose users may use GINA (already resolved: the
    /// config's default "every internal domain" is expanded by the caller).
    pub gina_sender_domains: Vec<String>,
    /// Hold instead of bounce a confidential mail no method may carry.
    pub hold_when_no_method: bool,
    /// Our own domains (normalised). Their recipients of an outbound mail
    /// (a mail to colleagues and partners at once) get it unchanged from
    /// the internal mail server: the hierarchy is for mail that leaves.
    pub internal_domains: Vec<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            rules: ClassificationRules::default(),
            encrypt_when_key_known: true,
            verified_tls_enough: Vec::new(),
            gina_sender_domains: Vec::new(),
            hold_when_no_method: false,
            internal_domains: Vec::new(),
        }
    }
}

/// What the key store knows about one recipient (everything
/// [`RecipientFacts`] needs besides classification and knobs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientKeys {
    pub preference: Option<Preference>,
    pub smime: Option<KeyRef>,
    pub pgp: Option<KeyRef>,
    pub domain_smime: Option<KeyRef>,
    pub domain_pgp: Option<KeyRef>,
}

/// Why the key directory could not answer.
#[derive(Debug, thiserror::Error)]
#[error("key directory lookup for {recipient} failed: {reason}")]
pub struct DirectoryError {
    pub recipient: Address,
    pub reason: String,
}

/// Where the certificates, keys and portal preferences of recipients are
/// looked up. A trait so that the pipeline's tests and other deployments
/// can supply them without a database.
pub trait KeyDirectory: Send + Sync {
    /// The keys known for `rcpt` at Unix time `now` (validity is judged
    /// against it).
    fn keys_for<'a>(
        &'a self,
        rcpt: &'a Address,
        now: u64,
    ) -> BoxFuture<'a, Result<RecipientKeys, DirectoryError>>;

    /// The keys of every recipient of one mail, in order. The default asks
    /// [`KeyDirectory::keys_for`] one by one; a directory that can answer
    /// for all at once (one database round trip) overrides it.
    fn keys_for_all<'a>(
        &'a self,
        rcpts: &'a [Address],
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<RecipientKeys>, DirectoryError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(rcpts.len());
            for r in rcpts {
                out.push(self.keys_for(r, now).await?);
            }
            Ok(out)
        })
    }
}

/// Where decisions and their reasons are recorded (message tracking).
pub trait TrackingSink: Send + Sync {
    /// Stores every event of one mail; returns once they are stored.
    fn record_all<'a>(&'a self, events: Vec<TrackingEvent>) -> BoxFuture<'a, Result<(), String>>;
}

/// The key directory and tracking over Siegel's store.
#[derive(Clone, Debug)]
pub struct StoreDirectory(pub Store);

impl KeyDirectory for StoreDirectory {
    fn keys_for<'a>(
        &'a self,
        rcpt: &'a Address,
        now: u64,
    ) -> BoxFuture<'a, Result<RecipientKeys, DirectoryError>> {
        Box::pin(async move {
            let mut all = self.keys_for_all(std::slice::from_ref(rcpt), now).await?;
            all.pop().ok_or_else(|| DirectoryError {
                recipient: rcpt.clone(),
                reason: "the store answered for no recipient".to_owned(),
            })
        })
    }

    /// One statement for all recipients of the mail
    /// ([`Store::recipient_lookup`]).
    fn keys_for_all<'a>(
        &'a self,
        rcpts: &'a [Address],
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<RecipientKeys>, DirectoryError>> {
        Box::pin(async move {
            let Some(first) = rcpts.first() else {
                return Ok(Vec::new());
            };
            let found = self
                .0
                .recipient_lookup(rcpts)
                .await
                .map_err(|e| DirectoryError {
                    recipient: first.clone(),
                    reason: e.to_string(),
                })?;
            Ok(found
                .into_iter()
                .map(|f| RecipientKeys {
                    // Only a method the recipient chose counts (the store
                    // leaves out the `gina` every account starts with).
                    preference: f.preferred_method.map(|m| match m {
                        PreferredMethod::Gina => Preference::Gina,
                        PreferredMethod::Smime => Preference::Smime,
                        PreferredMethod::Pgp => Preference::Pgp,
                    }),
                    smime: best_key(&f.certificates, now),
                    pgp: best_key(&f.pgp_keys, now),
                    domain_smime: f.domain_smime.map(KeyRef::valid),
                    domain_pgp: f.domain_pgp.map(KeyRef::valid),
                })
                .collect())
        })
    }
}

impl TrackingSink for StoreDirectory {
    fn record_all<'a>(&'a self, events: Vec<TrackingEvent>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0
                .tracking()
                .record_many(&events)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// The gateway's tracker: decisions of concurrent mails share one commit.
impl TrackingSink for siegel_store::TrackingWriter {
    fn record_all<'a>(&'a self, events: Vec<TrackingEvent>) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(siegel_store::TrackingWriter::record_all(self, events))
    }
}

/// The key to use among those stored for one address: the valid one that
/// stays valid longest; when none is valid, the newest one with the reason,
/// so the explanation can say "the certificate X expired" instead of "none".
fn best_key(records: &[KeySummary], now: u64) -> Option<KeyRef> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let why_invalid = |k: &KeySummary| -> Option<String> {
        if k.revoked {
            Some("revoked".to_owned())
        } else if let Some(by) = &k.superseded_by {
            Some(format!("superseded by {by}"))
        } else if k.not_after < now {
            Some("expired".to_owned())
        } else if k.not_before > now {
            Some("not yet valid".to_owned())
        } else {
            None
        }
    };
    // The store answers the longest-valid first.
    if let Some(k) = records.iter().find(|k| why_invalid(k).is_none()) {
        return Some(KeyRef::valid(k.fingerprint.clone()));
    }
    records.first().map(|k| {
        KeyRef::invalid(
            k.fingerprint.clone(),
            why_invalid(k).unwrap_or_else(|| "not usable".to_owned()),
        )
    })
}

/// Loads the keys of every recipient, in envelope order. One failing lookup
/// fails all: deciding with missing facts could downgrade protection.
pub async fn load_keys(
    directory: &dyn KeyDirectory,
    recipients: &[Address],
    now: u64,
) -> Result<Vec<RecipientKeys>, DirectoryError> {
    directory.keys_for_all(recipients, now).await
}

/// Combines classification, keys and knobs into the facts of each recipient.
/// `keys` may be shorter than `recipients` (no directory): the missing
/// recipients have no keys.
pub fn facts_for(
    settings: &PolicySettings,
    sender: Option<&Address>,
    recipients: &[Address],
    classification: &Classification,
    keys: &[RecipientKeys],
) -> Vec<RecipientFacts> {
    let gina_enabled =
        sender.is_some_and(|s| settings.gina_sender_domains.iter().any(|d| d == s.domain()));
    recipients
        .iter()
        .enumerate()
        .map(|(i, rcpt)| {
            let k = keys.get(i).cloned().unwrap_or_default();
            RecipientFacts {
                address: rcpt.clone(),
                preference: k.preference,
                smime: k.smime,
                pgp: k.pgp,
                domain_smime: k.domain_smime,
                domain_pgp: k.domain_pgp,
                confidential: classification.is_confidential_for(rcpt),
                verified_tls_enough: settings
                    .verified_tls_enough
                    .iter()
                    .any(|d| d == rcpt.domain()),
                gina_enabled,
                encrypt_when_key_known: settings.encrypt_when_key_known,
            }
        })
        .collect()
}

/// Decides and splits; with `hold_when_no_method` refused recipients are
/// held instead (the reason stays, the mail stays in the queue).
pub fn decide_and_split(
    settings: &PolicySettings,
    registry: &Registry,
    facts: &[RecipientFacts],
) -> (Vec<Decision>, Split) {
    let is_internal = |f: &RecipientFacts| {
        settings
            .internal_domains
            .iter()
            .any(|d| d == f.address.domain())
    };
    let external: Vec<RecipientFacts> = facts.iter().filter(|f| !is_internal(f)).cloned().collect();
    // decide_all answers one decision per fact, in order.
    let mut decided = decide_all(&external, registry).into_iter();
    let decisions: Vec<Decision> = facts
        .iter()
        .map(|f| {
            if is_internal(f) {
                internal_decision(f)
            } else {
                decided.next().unwrap_or_else(|| Decision {
                    recipient: f.address.clone(),
                    confidential: f.confidential,
                    outcome: Outcome::Hold {
                        reason: "no decision was made for this recipient".to_owned(),
                    },
                    why: "no decision was made for this recipient".to_owned(),
                    skipped: Vec::new(),
                    requires_verified_tls: false,
                })
            }
        })
        .collect();
    let mut s = split(&decisions);
    if settings.hold_when_no_method {
        let refused = std::mem::take(&mut s.refused);
        s.held.extend(refused);
    }
    (decisions, s)
}

/// An internal recipient of an outbound mail: delivered unchanged to the
/// internal mail server (the mail does not leave the organisation).
fn internal_decision(f: &RecipientFacts) -> Decision {
    Decision {
        recipient: f.address.clone(),
        confidential: f.confidential,
        outcome: Outcome::Method {
            kind: MethodKind::Plain,
            fingerprint: None,
        },
        why: format!(
            "{} is an internal domain: the mail goes unchanged to the internal mail server",
            f.address.domain()
        ),
        skipped: Vec::new(),
        requires_verified_tls: false,
    }
}

/// The answer of [`explain`].
#[derive(Debug, Clone)]
pub struct Explanation {
    pub classification: Classification,
    pub decisions: Vec<Decision>,
    pub split: Split,
}

/// The decision that the pipeline would take now for a mail from `sender`
/// to `recipients` with this header section, without sending anything. It
/// runs the same functions as the pipeline's stages.
pub async fn explain(
    settings: &PolicySettings,
    registry: &Registry,
    directory: Option<&dyn KeyDirectory>,
    sender: Option<&Address>,
    recipients: &[Address],
    header_block: &[u8],
    now: u64,
) -> Result<Explanation, DirectoryError> {
    let keys = match directory {
        Some(d) => load_keys(d, recipients, now).await?,
        None => Vec::new(),
    };
    let classification = classify(header_block, recipients, &settings.rules);
    let facts = facts_for(settings, sender, recipients, &classification, &keys);
    let (decisions, split) = decide_and_split(settings, registry, &facts);
    Ok(Explanation {
        classification,
        decisions,
        split,
    })
}

/// A stable token for the tracking table's `method` column.
pub fn method_token(d: &Decision) -> &'static str {
    match &d.outcome {
        Outcome::Method { kind, .. } => kind_token(*kind),
        Outcome::Refuse { .. } => "refused",
        Outcome::Hold { .. } => "held",
    }
}

/// The token of a method kind (snake case, as in serde).
pub fn kind_token(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Smime => "smime",
        MethodKind::Pgp => "pgp",
        MethodKind::DomainSmime => "domain_smime",
        MethodKind::DomainPgp => "domain_pgp",
        MethodKind::Gina => "gina",
        MethodKind::TlsOnly => "tls_only",
        MethodKind::Plain => "plain",
    }
}

/// Separates the parts of a stored reason. The store refuses control
/// characters (no newlines), so the parts are joined on one line.
pub const REASON_SEP: &str = " | ";

/// The most the store keeps of a reason.
const MAX_REASON: usize = 4096;

/// The reason stored with a decision: the sentence why, then one part per
/// method above it that was not taken (`not S/MIME: …`), joined with
/// [`REASON_SEP`]; `siegel track` prints the parts as "why not a higher one".
pub fn reason_text(d: &Decision) -> String {
    let mut s = d.why.clone();
    if d.requires_verified_tls {
        s.push_str(" (delivery requires verified TLS)");
    }
    for (kind, why) in &d.skipped {
        s.push_str(&format!("{REASON_SEP}not {kind}: {why}"));
    }
    one_line(&s, MAX_REASON)
}

/// Control characters become spaces and the text is cut (at a character
/// boundary) to `max` bytes, so any text can be stored as a reason.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The bilingual reason a refused recipient's DSN carries, on one line
/// (the DSN repeats it in its German and its English part).
pub fn refusal_text(d: &Decision) -> Option<String> {
    match &d.outcome {
        Outcome::Refuse {
            reason_en,
            reason_de,
        } => Some(format!("{reason_en} / {reason_de}")),
        _ => None,
    }
}

/// One tracking event for a decision about one recipient of `envelope`.
pub fn decision_event(envelope: &Envelope, d: &Decision, now: u64, node: &str) -> TrackingEvent {
    TrackingEvent {
        message_id: envelope.message_id.clone(),
        queue_id: envelope.id.clone(),
        recipient: d.recipient.clone(),
        method: method_token(d).to_owned(),
        key_fingerprint: d.fingerprint().map(str::to_owned),
        reason: reason_text(d),
        at: i64::try_from(now).unwrap_or(i64::MAX),
        node: node.to_owned(),
    }
}

/// The event that links a recipient's decision (under the original queue
/// id) to the copy that carries the mail to it: `method` is `queued`,
/// `reason` names the copy's queue id, so `siegel track` can follow it.
pub fn queued_event(
    envelope: &Envelope,
    recipient: &Address,
    copy: &QueueId,
    now: u64,
    node: &str,
) -> TrackingEvent {
    TrackingEvent {
        message_id: envelope.message_id.clone(),
        queue_id: envelope.id.clone(),
        recipient: recipient.clone(),
        method: QUEUED.to_owned(),
        key_fingerprint: None,
        reason: format!("{QUEUED_AS}{copy}"),
        at: i64::try_from(now).unwrap_or(i64::MAX),
        node: node.to_owned(),
    }
}

/// `method` of the event linking an original to one of its copies.
pub const QUEUED: &str = "queued";
/// Prefix of that event's reason, followed by the copy's queue id.
pub const QUEUED_AS: &str = "queued as ";

/// The environment the policy stages and the processing need.
pub struct PolicyEnv {
    pub settings: PolicySettings,
    pub registry: Registry,
    /// `None`: no key store (every recipient has no keys).
    pub directory: Option<Arc<dyn KeyDirectory>>,
    /// `None`: decisions are logged only.
    pub tracker: Option<Arc<dyn TrackingSink>>,
    /// `None`: no S/MIME (no signing, no decryption, no verification).
    /// Its methods must be registered in `registry` over its cache
    /// ([`crate::smime::register`]).
    pub smime: Option<Arc<crate::smime::Mpki>>,
    /// `None`: no OpenPGP (no Autocrypt header, no decryption or
    /// verification). Its methods must be registered in `registry`
    /// ([`crate::pgp::register`]).
    pub pgp: Option<Arc<crate::pgp::PgpKeys>>,
    /// `None`: no virus or spam scanning.
    pub filter: Option<Arc<siegel_filter::Filter>>,
}

impl Default for PolicyEnv {
    /// The default knobs, the foundation's methods (TLS only, plain), no
    /// store.
    fn default() -> Self {
        Self {
            settings: PolicySettings::default(),
            registry: Registry::foundation(),
            directory: None,
            tracker: None,
            smime: None,
            pgp: None,
            filter: None,
        }
    }
}

impl std::fmt::Debug for PolicyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEnv")
            .field("settings", &self.settings)
            .field("registry", &self.registry)
            .field("directory", &self.directory.is_some())
            .field("tracker", &self.tracker.is_some())
            .field("smime", &self.smime.is_some())
            .field("pgp", &self.pgp.is_some())
            .field("filter", &self.filter.is_some())
            .finish()
    }
}
