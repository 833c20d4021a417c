//! Siegel's configuration: one TOML file, read into typed settings.
//!
//! Every setting is read by exactly one line in `read()` (key, default,
//! parser); its documentation and default are shown in `example.toml`, which
//! a test proves to parse back to [`Config::defaults`]. Loading never stops
//! at the first mistake: all problems (wrong types and failed checks alike)
//! are returned together, each with file, line and key, and unknown keys come
//! back as warnings. The result is a plain value that the binary passes to
//! whoever needs it; there is no global.

mod reader;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::de::{DeTable, DeValue};

use reader::{Cx, Section, count, integer, string, text};

/// The whole configuration. Built by [`Config::load`], [`Config::from_toml_str`]
/// or [`Config::defaults`]; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: Server,
    pub smtp: Smtp,
    pub domains: Domains,
    pub routing: Routing,
    pub tls: Tls,
    pub queue: Queue,
    pub admin: Admin,
    pub database: Database,
    pub dns: Dns,
    pub log: Log,
    pub policy: Policy,
    pub mpki: Mpki,
    pub smime: Smime,
    pub openpgp: OpenPgp,
    pub users: Users,
    pub filter: Filter,
    pub fetch: Fetch,
    pub portal: Portal,
    pub gina: Gina,
    pub wkd: Wkd,
}

/// `[wkd]`: Web Key Directory. Outbound, recipients without a certificate
/// or key are looked up at their domain's WKD (over `[fetch]`) before
/// domain keys and GINA; the portal serves our users' keys by WKD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wkd {
    /// Look recipients' keys up by WKD.
    pub enabled: bool,
    /// How long a found key is used before asking again.
    pub cache_ttl: Duration,
    /// How long "no key" (404, no WKD host, nothing usable) is believed.
    pub negative_ttl: Duration,
}

/// `[fetch]`: the gateway's own HTTP(S) requests (CRLs of correspondents'
/// CAs, WKD key lookups). They never reach private, loopback or link-local
/// addresses (a mail must not make the gateway probe the internal
/// network), except the networks listed in `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Networks exempt from the private-address guard.
    pub allow: Vec<IpNet>,
    /// Longest time one request may take, redirects and body included.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: u64,
}

/// `[portal]`: the HTTPS portal where GINA recipients read and reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// HTTPS listener; `None` = no portal on this node.
    pub listen: Option<SocketAddr>,
    /// The address recipients' browsers use (behind a load balancer: its
    /// URL). Container files post to `<public_url>/open`.
    pub public_url: String,
    /// Certificate chain and key (PEM); neither = those of `[tls]`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// A session ends this long after login, whatever happens.
    pub session_max: Duration,
    /// Largest request body (a posted container, a reply with attachments).
    pub max_upload: u64,
}

/// `[gina]`: containers, accounts, password rules, lock-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gina {
    /// How long a container can be opened; then its key is deleted.
    pub container_expiry: Duration,
    /// Theme folders (one per internal domain, `default/`); `None` = the
    /// embedded design.
    pub themes_dir: Option<PathBuf>,
    /// Language of mails to senders whose own is not known.
    pub default_language: String,
    /// Whether the carrier mail shows the original subject (else a generic
    /// "secure message from …"; the subject is part of what GINA protects).
    pub carrier_shows_subject: bool,
    /// Sender of the gateway's own GINA mails; `None` = `siegel@<first
    /// internal domain>`.
    pub notification_from: Option<siegel_types::Address>,
    pub password_min_length: usize,
    pub password_require_upper: bool,
    pub password_require_digit: bool,
    pub password_forbid_personal: bool,
    /// Refuse this many previous passwords (0 = off).
    pub password_history: usize,
    pub password_forbid_common: bool,
    /// Failed logins of one account (from browsers it has not logged in
    /// from before) before it is locked for `lock_for`.
    pub lock_after: u32,
    pub lock_for: Duration,
    /// Failed attempts from one client address within `client_window`
    /// before that address must wait for the rest of the window.
    pub client_limit: u32,
    pub client_window: Duration,
    /// Whether recipients may register in advance (with an e-mail link).
    pub signup: bool,
    /// How long a registration link is valid.
    pub signup_link_valid: Duration,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Where the spool, the generated TLS certificate and the database live.
    pub data_dir: PathBuf,
}

/// `[smtp]`: the public listener and the limits that protect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub listen: Vec<SocketAddr>,
    /// Our name in the greeting, EHLO and `Received:` headers.
    pub hostname: String,
    /// Clients in these networks may relay to external domains.
    pub trusted_networks: Vec<IpNet>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_connections: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub submission: Submission,
}

/// `[smtp.submission]`: the authenticated listener for mail users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub listen: Vec<SocketAddr>,
    pub users: Vec<SubmissionUser>,
}

/// `[[smtp.submission.users]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionUser {
    /// The AUTH login name, usually the user's address.
    pub name: String,
    /// Argon2 PHC string; never the password itself.
    pub password_hash: Secret,
}

/// A setting that must not show up in logs or `Debug` output. There is no
/// `Display`: getting at the text takes a visible call to [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret text, for the one place that needs it (e.g. verifying a
    /// password against the hash).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `[domains]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domains {
    /// Mail domains we accept inbound mail for, normalised (lower-case
    /// A-labels) so they compare equal to normalised addresses.
    pub internal: Vec<String>,
}

/// `[routing]`: where mail goes next. All hops are normalised `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub inbound_relay: Option<String>,
    pub outbound_relay: Option<String>,
    /// Per-domain next hop, keyed by normalised domain.
    pub routes: BTreeMap<String, String>,
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Both or neither; when neither, the binary generates a self-signed
    /// certificate into `data_dir/tls/`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Extra trust anchors for verifying next hops.
    pub ca_files: Vec<PathBuf>,
    /// Per-domain outbound policy, keyed by normalised domain; domains not
    /// listed are [`TlsPolicy::Opportunistic`].
    pub policy: BTreeMap<String, TlsPolicy>,
}

impl Tls {
    /// The outbound TLS policy for a (normalised) recipient domain.
    pub fn policy_for(&self, domain: &str) -> TlsPolicy {
        self.policy.get(domain).copied().unwrap_or_default()
    }
}

/// Outbound TLS policy for one destination domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// STARTTLS when offered, without certificate verification; clear text
    /// otherwise (RFC 3207 practice).
    #[default]
    Opportunistic,
    /// A verified certificate or no delivery: the mail waits and finally
    /// bounces, it never goes in clear.
    Required,
}

/// `[policy]`: which outbound mail is confidential and how each recipient
/// must receive it (PRODUCT.md, "Classification" and "The encryption
/// hierarchy"). The classification rules are the policy crate's own type,
/// so the pipeline and `siegel policy explain` use exactly what was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: siegel_policy::ClassificationRules,
    /// Encrypt whenever a valid key is known, even for mail that is not
    /// confidential.
    pub encrypt_when_key_known: bool,
    /// Recipient domains (normalised) where verified TLS counts as enough for
    /// confidential mail. Each must have `tls.policy` "required", so the
    /// claim "verified" is enforced by delivery and not just believed.
    pub verified_tls_enough: Vec<String>,
    /// Sender domains whose users may use GINA; `None` = every internal domain.
    pub gina_sender_domains: Option<Vec<String>>,
    /// What happens to a confidential mail for a recipient no method may carry.
    pub confidential_without_method: NoMethod,
}

impl Policy {
    /// Whether verified TLS is enough for confidential mail to `domain`
    /// (normalised).
    pub fn verified_tls_enough_for(&self, domain: &str) -> bool {
        self.verified_tls_enough.iter().any(|d| d == domain)
    }

    /// Whether GINA may be used for mail from `sender_domain` (normalised);
    /// `internal` is `domains.internal`, the default list.
    pub fn gina_enabled_for(&self, sender_domain: &str, internal: &[String]) -> bool {
        self.gina_sender_domains
            .as_deref()
            .unwrap_or(internal)
            .iter()
            .any(|d| d == sender_domain)
    }
}

/// What happens to a confidential mail that cannot be protected for a
/// recipient. Either way it never leaves in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoMethod {
    /// Bounce it for that recipient with a bilingual reason (DSN).
    #[default]
    Bounce,
    /// Keep it held in the queue for an administrator.
    Hold,
}

/// `[mpki]`: Siegel's own CA and the certificates it issues to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mpki {
    /// Issue a certificate to an internal sender on their first outbound
    /// mail, so every user signs without an administrator's step.
    pub auto_enroll: bool,
    /// Key type of new user certificates.
    pub key_type: KeyType,
    /// Validity of new user certificates, in days.
    pub validity_days: u32,
    /// Renew a user certificate this many days before it expires.
    pub renew_before_days: u32,
    /// CRL URL written into issued certificates; `None` = the admin
    /// listener's `/crl/ca.crl`.
    pub crl_url: Option<String>,
}

/// Key type for certificates Siegel issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// RSA 3072: what every client reads.
    #[default]
    Rsa3072,
    /// ECDSA/ECDH P-256: smaller and faster, not every client reads it.
    P256,
}

/// `[smime]`: inbound trust and outbound encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smime {
    /// PEM bundles of CAs whose signatures are trusted (besides our own CA
    /// and pinned harvested certificates).
    pub trust_bundles: Vec<PathBuf>,
    /// Content encryption of outbound S/MIME.
    pub cipher: SmimeCipher,
    /// Fetch the CRLs of correspondents' CAs (from their certificates'
    /// distribution points) to recognise revoked signers. Our own CA's CRL
    /// is always checked.
    pub fetch_crls: bool,
}

/// `[openpgp]`: our users' OpenPGP keys and the Autocrypt header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPgp {
    /// Key type of generated user and domain keys.
    pub key_type: PgpKeyType,
    /// Generate a key for a licensed user on their first outbound mail.
    pub auto_enroll: bool,
    /// Add an `Autocrypt:` header with the sender's key to our users'
    /// outbound mail.
    pub autocrypt: bool,
}

/// `[users]`: who becomes one of Siegel's users on their own first mail.
///
/// Stands in for the directory group that entitles a sender (PRODUCT.md):
/// an unknown sender of an internal domain whom `onboard` names, and
/// `exclude` does not, is made a user on their first outbound mail and
/// takes a licence seat (while the installed licences have one free); from
/// then on their mail is signed, and `[mpki]`/`[openpgp]` `auto_enroll`
/// issue their certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    /// Who is onboarded; empty = nobody (only users added by the CLI).
    pub onboard: Vec<siegel_types::AddressPattern>,
    /// Never onboarded (recorded as excluded): role accounts, no-reply.
    pub exclude: Vec<siegel_types::AddressPattern>,
}

/// Key type of generated OpenPGP keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgpKeyType {
    /// Ed25519 signing, Cv25519 encryption: small and fast.
    #[default]
    Cv25519,
    /// RSA 3072, for correspondents whose software lacks Curve25519.
    Rsa3072,
}

/// Content-encryption algorithm for outbound S/MIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmimeCipher {
    /// AES-256-CBC EnvelopedData: every client reads it.
    #[default]
    Cbc,
    /// AES-256-GCM AuthEnvelopedData: authenticated, newer clients only.
    Gcm,
}

/// `[filter]`: virus and spam scanning by clamd and spamd, over their own
/// protocols. Each scanner is off until its address is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// clamd (INSTREAM); `None` = no virus scanning.
    pub clamd: Option<ScannerAddress>,
    /// spamd (SPAMC/1.5); `None` = no spam scanning.
    pub spamd: Option<ScannerAddress>,
    /// The `User:` spamd is asked to scan as (its per-user settings, when
    /// spamd has any); `None` = spamd's default user.
    pub spamd_user: Option<String>,
    /// What happens to a mail with a virus.
    pub virus_action: VirusAction,
    /// What happens to a mail spamd calls spam.
    pub spam_action: SpamAction,
    /// Reject whatever scores at least this, whatever `spam_action` says:
    /// quarantining certain spam only fills the quarantine.
    pub spam_reject_score: Option<siegel_types::SpamScore>,
    /// Mail going these ways is virus-scanned.
    pub virus_directions: Vec<siegel_types::Direction>,
    /// Mail going these ways is spam-scanned.
    pub spam_directions: Vec<siegel_types::Direction>,
    /// Larger mail is not sent to clamd; it counts as unscanned.
    pub virus_max_scan_size: u64,
    /// Larger mail is not sent to spamd and is delivered marked unscanned
    /// (spamc's rule: big mail is rarely spam, scanning it is slow).
    pub spam_max_scan_size: u64,
    /// Longest wait for a scanner to accept the connection.
    pub connect_timeout: Duration,
    /// Longest time one scan may take, sending and answer included.
    pub scan_timeout: Duration,
    /// `false`: a mail that could not be scanned is never delivered (it
    /// waits while a scanner is down; too large for clamd, it is
    /// quarantined). `true`: it is delivered, marked unscanned.
    pub fail_open: bool,
    /// Scan before answering the SMTP client, so that a mail to refuse is
    /// refused with a 550 reply (no bounce to a forged sender) and a scanner
    /// that is down answers 451 (the sender retries).
    pub scan_at_smtp: bool,
}

/// Where a scanner daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannerAddress {
    /// `host:port`, normalised like next hops.
    Tcp(String),
    /// A Unix socket (absolute path).
    Unix(PathBuf),
}

impl fmt::Display for ScannerAddress {
    /// The form it is configured in: `tcp:host:port` or `unix:/path`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(hp) => write!(f, "tcp:{hp}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What happens to a mail in which clamd found a virus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VirusAction {
    /// Refuse it: a bounce with the reason (at SMTP time once smtp-in
    /// scans during DATA).
    #[default]
    Reject,
    /// Keep it held in the quarantine for an administrator.
    Quarantine,
}

/// What happens to a mail that spamd calls spam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpamAction {
    /// Deliver it with `X-Siegel-Spam: yes`, for the mail server's rules.
    #[default]
    Tag,
    /// Keep it held in the quarantine for an administrator.
    Quarantine,
    /// Refuse it with a bounce.
    Reject,
}

/// `[queue]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Waits between attempts; the last one repeats until `max_lifetime`.
    pub retry: Vec<Duration>,
    /// After this a deferred recipient bounces.
    pub max_lifetime: Duration,
    pub max_parallel_deliveries: usize,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// HTTP listener for `/metrics` and `/healthz`; `None` = disabled.
    pub listen: Option<SocketAddr>,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// `None` = an SQLite file in `data_dir`.
    pub url: Option<String>,
}

/// `[dns]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    /// Name servers to ask instead of the system's (tests, air-gapped
    /// sites); empty = the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// A tracing filter: a level (`info`) or directives (`info,siegel=debug`).
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A loaded configuration and the warnings the operator should see (unknown
/// keys, suspicious but legal combinations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path such as `smtp.listen[1]`; empty for TOML syntax errors.
    pub key: String,
    /// What is wrong, and when possible what would be right.
    pub message: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
}

impl Problem {
    /// `FILE:LINE: key `k`: message`, the form every problem and warning is
    /// printed in, so editors and grep can jump to it.
    fn render(&self, origin: &str) -> String {
        let mut s = origin.to_owned();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        if self.key.is_empty() {
            s.push_str(&format!(": {}", self.message));
        } else {
            s.push_str(&format!(": key `{}`: {}", self.key, self.message));
        }
        s
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read, and these are all the problems found in it.
    #[error("{}", render_all(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn render_all(origin: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.render(origin))
        .collect::<Vec<_>>()
        .join("\n")
}

const EXAMPLE: &str = include_str!("../example.toml");

impl Default for Config {
    fn default() -> Self {
        Config::defaults()
    }
}

impl Config {
    /// The embedded defaults: a gateway that listens on localhost only and
    /// trusts only localhost, so starting it without a config is safe.
    pub fn defaults() -> Config {
        Config {
            server: Server {
                data_dir: PathBuf::from("./siegel-data"),
            },
            smtp: Smtp {
                listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 2525))],
                hostname: machine_hostname(),
                trusted_networks: vec![
                    IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                    IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
                ],
                max_message_size: 50 * 1024 * 1024,
                max_recipients: 1000,
                max_line_length: 4096,
                max_connections: 500,
                command_timeout: Duration::from_secs(5 * 60),
                data_timeout: Duration::from_secs(10 * 60),
                submission: Submission {
                    listen: Vec::new(),
                    users: Vec::new(),
                },
            },
            domains: Domains {
                internal: Vec::new(),
            },
            routing: Routing {
                inbound_relay: None,
                outbound_relay: None,
                routes: BTreeMap::new(),
            },
            tls: Tls {
                cert: None,
                key: None,
                ca_files: Vec::new(),
                policy: BTreeMap::new(),
            },
            queue: Queue {
                retry: [60, 5 * 60, 15 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600]
                    .into_iter()
                    .map(Duration::from_secs)
                    .collect(),
                max_lifetime: Duration::from_secs(5 * 86_400),
                max_parallel_deliveries: 100,
            },
            admin: Admin {
                listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8025))),
            },
            database: Database { url: None },
            dns: Dns {
                nameservers: Vec::new(),
            },
            log: Log {
                level: "info".to_owned(),
                format: LogFormat::Text,
            },
            policy: Policy {
                rules: siegel_policy::ClassificationRules::default(),
                encrypt_when_key_known: true,
                verified_tls_enough: Vec::new(),
                gina_sender_domains: None,
                confidential_without_method: NoMethod::Bounce,
            },
            mpki: Mpki {
                auto_enroll: true,
                key_type: KeyType::Rsa3072,
                validity_days: 365,
                renew_before_days: 30,
                crl_url: None,
            },
            smime: Smime {
                trust_bundles: Vec::new(),
                cipher: SmimeCipher::Cbc,
                fetch_crls: true,
            },
            openpgp: OpenPgp {
                key_type: PgpKeyType::Cv25519,
                auto_enroll: true,
                autocrypt: true,
            },
            users: Users {
                onboard: Vec::new(),
                exclude: ["postmaster@*", "mailer-daemon@*", "noreply@*", "no-reply@*"]
                    .into_iter()
                    .filter_map(|p| siegel_types::AddressPattern::parse(p).ok())
                    .collect(),
            },
            filter: Filter {
                clamd: None,
                spamd: None,
                spamd_user: None,
                virus_action: VirusAction::Reject,
                spam_action: SpamAction::Tag,
                spam_reject_score: None,
                virus_directions: vec![
                    siegel_types::Direction::Inbound,
                    siegel_types::Direction::Outbound,
                ],
                spam_directions: vec![siegel_types::Direction::Inbound],
                virus_max_scan_size: 50 * 1024 * 1024,
                spam_max_scan_size: 500 * 1024,
                connect_timeout: Duration::from_secs(5),
                scan_timeout: Duration::from_secs(120),
                fail_open: false,
                scan_at_smtp: true,
            },
            fetch: Fetch {
                allow: Vec::new(),
                timeout: Duration::from_secs(10),
                max_body: 16 * 1024 * 1024,
            },
            portal: Portal {
                listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8443))),
                public_url: "https://localhost:8443".to_owned(),
                cert: None,
                key: None,
                session_idle: Duration::from_secs(30 * 60),
                session_max: Duration::from_secs(12 * 3600),
                max_upload: 100 * 1024 * 1024,
            },
            wkd: Wkd {
                enabled: true,
                cache_ttl: Duration::from_secs(24 * 3600),
                negative_ttl: Duration::from_secs(3600),
            },
            gina: Gina {
                container_expiry: Duration::from_secs(90 * 86_400),
                themes_dir: None,
                default_language: "de".to_owned(),
                carrier_shows_subject: false,
                notification_from: None,
                password_min_length: 8,
                password_require_upper: true,
                password_require_digit: true,
                password_forbid_personal: true,
                password_history: 4,
                password_forbid_common: true,
                lock_after: 5,
                lock_for: Duration::from_secs(15 * 60),
                client_limit: 30,
                client_window: Duration::from_secs(15 * 60),
                signup: true,
                signup_link_valid: Duration::from_secs(24 * 3600),
            },
        }
    }

    /// Reads and checks a config file. `Err` carries every problem found.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and checks config text; `origin` names it in messages (the
    /// file name, or e.g. `<example>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            origin: origin.to_owned(),
            problems,
        };
        let (config, cx) = parse_text(text).map_err(invalid)?;
        if !cx.problems.is_empty() {
            return Err(invalid(cx.problems));
        }
        let warnings = cx.warnings.iter().map(|w| w.render(origin)).collect();
        Ok(Loaded { config, warnings })
    }

    /// A complete, commented configuration whose values are the defaults;
    /// what `siegel config example` prints.
    pub fn example() -> &'static str {
        EXAMPLE
    }
}

/// Parses, reads and validates. `Err` holds TOML syntax errors only; all
/// other problems are in the returned context, in file order.
fn parse_text(text: &str) -> Result<(Config, Cx<'_>), Vec<Problem>> {
    let mut cx = Cx::new(text);
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        // A half-parsed tree yields confusing follow-up errors; report only
        // what the TOML parser said.
        return Err(errors
            .iter()
            .map(|e| Problem {
                key: String::new(),
                message: format!("TOML syntax: {}", e.message().trim_end()),
                line: e.span().map(|s| cx.line_of(&s)),
            })
            .collect());
    }
    let config = read(doc.get_ref(), &mut cx);
    validate(&config, &mut cx);
    // File order is the order an operator fixes things in.
    cx.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    cx.warnings.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Ok((config, cx))
}

/// Reads every setting. This is the one place where keys, defaults and
/// parsers are declared; `example.toml` documents the same keys and a test
/// keeps the two in step.
fn read(doc: &DeTable<'_>, cx: &mut Cx<'_>) -> Config {
    let d = Config::defaults();
    let mut root = Section::root(doc);

    let mut s = root.table(cx, "server");
    let server = Server {
        data_dir: s.get(cx, "data_dir", d.server.data_dir, path),
    };
    s.finish(cx);

    let mut s = root.table(cx, "smtp");
    let mut sub = s.table(cx, "submission");
    let users = sub
        .tables(cx, "users")
        .into_iter()
        .filter_map(|mut u| {
            let name = u.get(cx, "name", None, |v| non_empty(v).map(Some));
            let hash = u.get(cx, "password_hash", None, |v| password_hash(v).map(Some));
            let missing: Vec<&str> = [("name", name.is_none()), ("password_hash", hash.is_none())]
                .into_iter()
                .filter(|&(k, missing)| missing && !cx.present(&reader::join(u.path(), k)))
                .map(|(k, _)| k)
                .collect();
            if !missing.is_empty() {
                cx.error(u.path(), format!("missing {}", missing.join(" and ")));
            }
            let path = u.path().to_owned();
            u.finish(cx);
            match (name, hash) {
                (Some(name), Some(password_hash)) => Some((
                    path,
                    SubmissionUser {
                        name,
                        password_hash,
                    },
                )),
                _ => None,
            }
        })
        .collect::<Vec<_>>();
    let submission = Submission {
        listen: sub.list(
            cx,
            "listen",
            d.smtp.submission.listen,
            text(values::parse_listen),
        ),
        users: dedup_users(cx, users),
    };
    sub.finish(cx);
    let smtp = Smtp {
        listen: s.list(cx, "listen", d.smtp.listen, text(values::parse_listen)),
        hostname: s.get(cx, "hostname", d.smtp.hostname, text(values::parse_domain)),
        trusted_networks: s.list(
            cx,
            "trusted_networks",
            d.smtp.trusted_networks,
            text(values::parse_network),
        ),
        max_message_size: s.get(cx, "max_message_size", d.smtp.max_message_size, size),
        max_recipients: s.get(cx, "max_recipients", d.smtp.max_recipients, count),
        max_line_length: s.get(cx, "max_line_length", d.smtp.max_line_length, line_length),
        max_connections: s.get(cx, "max_connections", d.smtp.max_connections, count),
        command_timeout: s.get(cx, "command_timeout", d.smtp.command_timeout, duration),
        data_timeout: s.get(cx, "data_timeout", d.smtp.data_timeout, duration),
        submission,
    };
    s.finish(cx);

    let mut s = root.table(cx, "domains");
    let internal = s.list(
        cx,
        "internal",
        d.domains.internal,
        text(values::parse_domain),
    );
    let domains = Domains {
        internal: dedup(cx, "domains.internal", internal),
    };
    s.finish(cx);

    let mut s = root.table(cx, "routing");
    let routing = Routing {
        inbound_relay: s.opt(
            cx,
            "inbound_relay",
            d.routing.inbound_relay,
            text(values::parse_host_port),
        ),
        outbound_relay: s.opt(
            cx,
            "outbound_relay",
            d.routing.outbound_relay,
            text(values::parse_host_port),
        ),
        routes: s.map(
            cx,
            "routes",
            values::parse_domain,
            text(values::parse_host_port),
        ),
    };
    s.finish(cx);

    let mut s = root.table(cx, "tls");
    let tls = Tls {
        cert: s.opt(cx, "cert", d.tls.cert, path),
        key: s.opt(cx, "key", d.tls.key, path),
        ca_files: s.list(cx, "ca_files", d.tls.ca_files, path),
        policy: s.map(cx, "policy", values::parse_domain, tls_policy),
    };
    s.finish(cx);

    let mut s = root.table(cx, "queue");
    let queue = Queue {
        retry: s.list(cx, "retry", d.queue.retry, duration),
        max_lifetime: s.get(cx, "max_lifetime", d.queue.max_lifetime, duration),
        max_parallel_deliveries: s.get(
            cx,
            "max_parallel_deliveries",
            d.queue.max_parallel_deliveries,
            count,
        ),
    };
    s.finish(cx);

    let mut s = root.table(cx, "admin");
    let admin = Admin {
        listen: s.get(cx, "listen", d.admin.listen, admin_listen),
    };
    s.finish(cx);

    let mut s = root.table(cx, "database");
    let database = Database {
        url: s.opt(cx, "url", d.database.url, non_empty),
    };
    s.finish(cx);

    let mut s = root.table(cx, "dns");
    let dns = Dns {
        nameservers: s.list(
            cx,
            "nameservers",
            d.dns.nameservers,
            text(values::parse_nameserver),
        ),
    };
    s.finish(cx);

    let mut s = root.table(cx, "log");
    let log = Log {
        level: s.get(cx, "level", d.log.level, log_level),
        format: s.get(cx, "format", d.log.format, log_format),
    };
    s.finish(cx);

    let mut s = root.table(cx, "policy");
    let dr = d.policy.rules;
    let rules = siegel_policy::ClassificationRules {
        subject_keywords: s.list(cx, "subject_keywords", dr.subject_keywords, string),
        honour_sensitivity: s.get(cx, "honour_sensitivity", dr.honour_sensitivity, boolean),
        honour_siegel_header: s.get(cx, "honour_siegel_header", dr.honour_siegel_header, boolean),
        purview_labels: s.list(cx, "purview_labels", dr.purview_labels, string),
        confidential_domains: s.list(
            cx,
            "confidential_domains",
            dr.confidential_domains,
            text(values::parse_domain),
        ),
        confidential_recipients: s.list(
            cx,
            "confidential_recipients",
            dr.confidential_recipients,
            text(address),
        ),
    };
    let verified_tls_enough = s.list(
        cx,
        "verified_tls_enough",
        d.policy.verified_tls_enough,
        text(values::parse_domain),
    );
    let policy = Policy {
        rules,
        encrypt_when_key_known: s.get(
            cx,
            "encrypt_when_key_known",
            d.policy.encrypt_when_key_known,
            boolean,
        ),
        verified_tls_enough: dedup(cx, "policy.verified_tls_enough", verified_tls_enough),
        gina_sender_domains: s.opt(
            cx,
            "gina_sender_domains",
            d.policy.gina_sender_domains,
            domain_list,
        ),
        confidential_without_method: s.get(
            cx,
            "confidential_without_method",
            d.policy.confidential_without_method,
            no_method,
        ),
    };
    s.finish(cx);

    let mut s = root.table(cx, "mpki");
    let mpki = Mpki {
        auto_enroll: s.get(cx, "auto_enroll", d.mpki.auto_enroll, boolean),
        key_type: s.get(cx, "key_type", d.mpki.key_type, key_type),
        validity_days: s.get(cx, "validity_days", d.mpki.validity_days, days),
        renew_before_days: s.get(cx, "renew_before_days", d.mpki.renew_before_days, days),
        crl_url: s.opt(cx, "crl_url", d.mpki.crl_url, crl_url),
    };
    s.finish(cx);

    let mut s = root.table(cx, "smime");
    let smime = Smime {
        trust_bundles: s.list(cx, "trust_bundles", d.smime.trust_bundles, path),
        cipher: s.get(cx, "cipher", d.smime.cipher, smime_cipher),
        fetch_crls: s.get(cx, "fetch_crls", d.smime.fetch_crls, boolean),
    };
    s.finish(cx);

    let mut s = root.table(cx, "openpgp");
    let openpgp = OpenPgp {
        key_type: s.get(cx, "key_type", d.openpgp.key_type, pgp_key_type),
        auto_enroll: s.get(cx, "auto_enroll", d.openpgp.auto_enroll, boolean),
        autocrypt: s.get(cx, "autocrypt", d.openpgp.autocrypt, boolean),
    };
    s.finish(cx);

    let mut s = root.table(cx, "users");
    let pattern = text(siegel_types::AddressPattern::parse);
    let users = Users {
        onboard: s.list(cx, "onboard", d.users.onboard, &pattern),
        exclude: s.list(cx, "exclude", d.users.exclude, &pattern),
    };
    s.finish(cx);

    let mut s = root.table(cx, "filter");
    let df = d.filter;
    let virus_directions = s.list(cx, "virus_directions", df.virus_directions, direction);
    let spam_directions = s.list(cx, "spam_directions", df.spam_directions, direction);
    let filter = Filter {
        clamd: s.opt(cx, "clamd", df.clamd, text(values::parse_scanner)),
        spamd: s.opt(cx, "spamd", df.spamd, text(values::parse_scanner)),
        spamd_user: s.opt(cx, "spamd_user", df.spamd_user, spamd_user),
        virus_action: s.get(cx, "virus_action", df.virus_action, virus_action),
        spam_action: s.get(cx, "spam_action", df.spam_action, spam_action),
        spam_reject_score: s.opt(cx, "spam_reject_score", df.spam_reject_score, spam_score),
        virus_directions: dedup(cx, "filter.virus_directions", virus_directions),
        spam_directions: dedup(cx, "filter.spam_directions", spam_directions),
        virus_max_scan_size: s.get(cx, "virus_max_scan_size", df.virus_max_scan_size, size),
        spam_max_scan_size: s.get(cx, "spam_max_scan_size", df.spam_max_scan_size, size),
        connect_timeout: s.get(cx, "connect_timeout", df.connect_timeout, duration),
        scan_timeout: s.get(cx, "scan_timeout", df.scan_timeout, duration),
        fail_open: s.get(cx, "fail_open", df.fail_open, boolean),
        scan_at_smtp: s.get(cx, "scan_at_smtp", df.scan_at_smtp, boolean),
    };
    s.finish(cx);

    let mut s = root.table(cx, "fetch");
    let fetch = Fetch {
        allow: s.list(cx, "allow", d.fetch.allow, text(values::parse_network)),
        timeout: s.get(cx, "timeout", d.fetch.timeout, duration),
        max_body: s.get(cx, "max_body", d.fetch.max_body, size),
    };
    s.finish(cx);

    let mut s = root.table(cx, "portal");
    let portal = Portal {
        listen: s.get(cx, "listen", d.portal.listen, admin_listen),
        public_url: s.get(cx, "public_url", d.portal.public_url, public_url),
        cert: s.opt(cx, "cert", d.portal.cert, path),
        key: s.opt(cx, "key", d.portal.key, path),
        session_idle: s.get(cx, "session_idle", d.portal.session_idle, duration),
        session_max: s.get(cx, "session_max", d.portal.session_max, duration),
        max_upload: s.get(cx, "max_upload", d.portal.max_upload, size),
    };
    s.finish(cx);

    let mut s = root.table(cx, "gina");
    let g = d.gina;
    let gina = Gina {
        container_expiry: s.get(cx, "container_expiry", g.container_expiry, duration),
        themes_dir: s.opt(cx, "themes_dir", g.themes_dir, path),
        default_language: s.get(cx, "default_language", g.default_language, language),
        carrier_shows_subject: s.get(
            cx,
            "carrier_shows_subject",
            g.carrier_shows_subject,
            boolean,
        ),
        notification_from: s.opt(cx, "notification_from", g.notification_from, text(address)),
        password_min_length: s.get(cx, "password_min_length", g.password_min_length, count),
        password_require_upper: s.get(
            cx,
            "password_require_upper",
            g.password_require_upper,
            boolean,
        ),
        password_require_digit: s.get(
            cx,
            "password_require_digit",
            g.password_require_digit,
            boolean,
        ),
        password_forbid_personal: s.get(
            cx,
            "password_forbid_personal",
            g.password_forbid_personal,
            boolean,
        ),
        password_history: s.get(cx, "password_history", g.password_history, count_or_zero),
        password_forbid_common: s.get(
            cx,
            "password_forbid_common",
            g.password_forbid_common,
            boolean,
        ),
        lock_after: s.get(cx, "lock_after", g.lock_after, small_count),
        lock_for: s.get(cx, "lock_for", g.lock_for, duration),
        client_limit: s.get(cx, "client_limit", g.client_limit, small_count),
        client_window: s.get(cx, "client_window", g.client_window, duration),
        signup: s.get(cx, "signup", g.signup, boolean),
        signup_link_valid: s.get(cx, "signup_link_valid", g.signup_link_valid, duration),
    };
    s.finish(cx);

    let mut s = root.table(cx, "wkd");
    let wkd = Wkd {
        enabled: s.get(cx, "enabled", d.wkd.enabled, boolean),
        cache_ttl: s.get(cx, "cache_ttl", d.wkd.cache_ttl, duration),
        negative_ttl: s.get(cx, "negative_ttl", d.wkd.negative_ttl, duration),
    };
    s.finish(cx);

    root.finish(cx);
    Config {
        server,
        smtp,
        domains,
        routing,
        tls,
        queue,
        admin,
        database,
        dns,
        log,
        policy,
        mpki,
        smime,
        openpgp,
        users,
        filter,
        fetch,
        portal,
        gina,
        wkd,
    }
}

/// Checks that involve more than one value, or rules beyond the value's type.
fn validate(c: &Config, cx: &mut Cx<'_>) {
    if c.smtp.listen.is_empty() && !cx.has_problem_under("smtp.listen") {
        cx.error(
            "smtp.listen",
            "must list at least one address: without it no mail can arrive",
        );
    }

    // The same address twice cannot be bound twice; say so now rather than
    // failing half-started at bind time.
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    let listeners = c
        .smtp
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, format!("smtp.listen[{i}]")))
        .chain(
            c.smtp
                .submission
                .listen
                .iter()
                .enumerate()
                .map(|(i, a)| (*a, format!("smtp.submission.listen[{i}]"))),
        )
        .chain(c.admin.listen.map(|a| (a, "admin.listen".to_owned())))
        .chain(c.portal.listen.map(|a| (a, "portal.listen".to_owned())));
    for (addr, key) in listeners {
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
            let mut msg = format!("{addr} is already used by `{first}`");
            if !cx.present(&key) {
                msg.push_str(" (this is the default: set it to another address)");
            }
            cx.error(&key, msg);
        } else {
            seen.push((addr, key));
        }
    }

    match (&c.tls.cert, &c.tls.key) {
        (Some(_), None) => cx.error("tls.cert", "`tls.key` must be set too (both or neither)"),
        (None, Some(_)) => cx.error("tls.key", "`tls.cert` must be set too (both or neither)"),
        _ => {}
    }

    match (&c.portal.cert, &c.portal.key) {
        (Some(_), None) => cx.error(
            "portal.cert",
            "`portal.key` must be set too (both or neither)",
        ),
        (None, Some(_)) => cx.error(
            "portal.key",
            "`portal.cert` must be set too (both or neither)",
        ),
        _ => {}
    }
    if c.portal.session_idle > c.portal.session_max {
        cx.error(
            "portal.session_idle",
            "is longer than `portal.session_max`: the idle timeout could never apply",
        );
    }
    for (key, ttl) in [
        ("wkd.cache_ttl", c.wkd.cache_ttl),
        ("wkd.negative_ttl", c.wkd.negative_ttl),
    ] {
        if ttl > Duration::from_secs(30 * 86_400) && !cx.has_problem_under(key) {
            cx.error(
                key,
                "is longer than 30 days: a changed or revoked key would go unnoticed that long",
            );
        }
    }
    if c.wkd.negative_ttl > c.wkd.cache_ttl
        && !cx.has_problem_under("wkd.negative_ttl")
        && !cx.has_problem_under("wkd.cache_ttl")
    {
        cx.error(
            "wkd.negative_ttl",
            "is longer than `wkd.cache_ttl`: a newly published key would be found later than a changed one",
        );
    }
    if c.gina.password_min_length < 8 {
        cx.warn(
            "gina.password_min_length",
            "is below 8: shorter passwords are guessed quickly despite the lock-out",
        );
    }

    if c.queue.retry.is_empty() && !cx.has_problem_under("queue.retry") {
        cx.error(
            "queue.retry",
            "must list at least one wait: without it nothing is retried",
        );
    }
    if let Some(first) = c.queue.retry.first()
        && c.queue.max_lifetime < *first
    {
        cx.error(
            "queue.max_lifetime",
            format!(
                "is shorter than the first retry wait ({}s < {}s): deferred mail would bounce before it is retried",
                c.queue.max_lifetime.as_secs(),
                first.as_secs()
            ),
        );
    }

    // The policy crate knows what makes a rule useless or dangerous (an
    // empty keyword matches every subject); its keys are relative to [policy].
    for p in c.policy.rules.validate() {
        cx.error(&format!("policy.{}", p.key), p.message);
    }
    for (i, domain) in c.policy.verified_tls_enough.iter().enumerate() {
        if c.tls.policy_for(domain) != TlsPolicy::Required {
            cx.error(
                &format!("policy.verified_tls_enough[{i}]"),
                format!(
                    "{domain:?} needs `tls.policy.\"{domain}\" = \"required\"`: verified TLS can only count as \
                     enough for confidential mail when delivery refuses anything less"
                ),
            );
        }
    }
    if let Some(gina) = &c.policy.gina_sender_domains {
        for (i, domain) in gina.iter().enumerate() {
            if !c.domains.internal.contains(domain) {
                cx.warn(
                    &format!("policy.gina_sender_domains[{i}]"),
                    format!("{domain:?} is not in `domains.internal`: no mail is sent from it"),
                );
            }
        }
    }

    if !c.domains.internal.is_empty() && c.routing.inbound_relay.is_none() {
        cx.warn(
            "routing.inbound_relay",
            "not set although `domains.internal` is: mail for internal domains goes to their MX, which may be this gateway (a loop)",
        );
    }
    validate_filter(c, cx);

    if !c.smtp.submission.listen.is_empty() && c.smtp.submission.users.is_empty() {
        cx.warn(
            "smtp.submission.listen",
            "no `[[smtp.submission.users]]` are configured: nobody can authenticate",
        );
    }
}

/// The scanner settings only matter with a scanner; a setting for an absent
/// one is most likely a half-finished configuration, so say so.
fn validate_filter(c: &Config, cx: &mut Cx<'_>) {
    let f = &c.filter;
    let d = Config::defaults().filter;
    // Changed from the default (the example sets every key to its default,
    // which is no sign of a half-finished configuration).
    let changed = [
        (
            "clamd",
            f.clamd.is_some(),
            "virus_action",
            f.virus_action != d.virus_action,
        ),
        (
            "clamd",
            f.clamd.is_some(),
            "virus_directions",
            f.virus_directions != d.virus_directions,
        ),
        (
            "clamd",
            f.clamd.is_some(),
            "virus_max_scan_size",
            f.virus_max_scan_size != d.virus_max_scan_size,
        ),
        (
            "spamd",
            f.spamd.is_some(),
            "spamd_user",
            f.spamd_user.is_some(),
        ),
        (
            "spamd",
            f.spamd.is_some(),
            "spam_action",
            f.spam_action != d.spam_action,
        ),
        (
            "spamd",
            f.spamd.is_some(),
            "spam_reject_score",
            f.spam_reject_score.is_some(),
        ),
        (
            "spamd",
            f.spamd.is_some(),
            "spam_directions",
            f.spam_directions != d.spam_directions,
        ),
        (
            "spamd",
            f.spamd.is_some(),
            "spam_max_scan_size",
            f.spam_max_scan_size != d.spam_max_scan_size,
        ),
    ];
    for (scanner, configured, key, differs) in changed {
        if !configured && differs {
            cx.warn(
                &format!("filter.{key}"),
                format!("has no effect: `filter.{scanner}` is not set, so this scanner is off"),
            );
        }
    }
    if f.clamd.is_some()
        && f.virus_directions.is_empty()
        && !cx.has_problem_under("filter.virus_directions")
    {
        cx.warn(
            "filter.virus_directions",
            "is empty: `filter.clamd` is set but no mail is virus-scanned",
        );
    }
    if f.spamd.is_some()
        && f.spam_directions.is_empty()
        && !cx.has_problem_under("filter.spam_directions")
    {
        cx.warn(
            "filter.spam_directions",
            "is empty: `filter.spamd` is set but no mail is spam-scanned",
        );
    }
    if f.spam_action == SpamAction::Reject && f.spam_reject_score.is_some() {
        cx.warn(
            "filter.spam_reject_score",
            "has no effect: with `spam_action = \"reject\"` all spam is rejected already",
        );
    }
    if f.clamd.is_some() && !f.fail_open && f.virus_max_scan_size < c.smtp.max_message_size {
        cx.warn(
            "filter.virus_max_scan_size",
            format!(
                "is below `smtp.max_message_size` ({} < {} bytes): accepted mail above it cannot be virus-scanned \
                 and goes to the quarantine",
                f.virus_max_scan_size, c.smtp.max_message_size
            ),
        );
    }
    if f.scan_timeout < f.connect_timeout {
        cx.error(
            "filter.scan_timeout",
            format!(
                "is shorter than `filter.connect_timeout` ({}s < {}s): the connection alone may take longer",
                f.scan_timeout.as_secs(),
                f.connect_timeout.as_secs()
            ),
        );
    }
}

/// Removes duplicates (keeping the first) and reports them; a repeated
/// domain is harmless but usually a sign of a copy-paste mistake.
fn dedup<T: PartialEq + fmt::Debug>(cx: &mut Cx<'_>, key: &str, items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if out.contains(&item) {
            cx.warn(key, format!("{item:?} is listed more than once"));
        } else {
            out.push(item);
        }
    }
    out
}

/// Two users with the same login name would make AUTH depend on list order.
fn dedup_users(cx: &mut Cx<'_>, users: Vec<(String, SubmissionUser)>) -> Vec<SubmissionUser> {
    let mut out: Vec<SubmissionUser> = Vec::with_capacity(users.len());
    for (path, user) in users {
        if out.iter().any(|u| u.name == user.name) {
            cx.error(
                &format!("{path}.name"),
                format!("user {:?} is listed more than once", user.name),
            );
        } else {
            out.push(user);
        }
    }
    out
}

fn path(v: &DeValue<'_>) -> Result<PathBuf, String> {
    non_empty(v).map(PathBuf::from)
}

fn non_empty(v: &DeValue<'_>) -> Result<String, String> {
    let s = string(v)?;
    if s.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(s)
}

/// Sizes may be written as an integer of bytes or as a string with a unit.
fn size(v: &DeValue<'_>) -> Result<u64, String> {
    match v {
        DeValue::String(s) => values::parse_size(s),
        _ => {
            let n = reader::integer(v).map_err(|_| {
                "expected a size: an integer of bytes or a string such as \"50M\"".to_owned()
            })?;
            match u64::try_from(n) {
                Ok(0) | Err(_) => Err(format!("must be greater than zero, found {n}")),
                Ok(n) => Ok(n),
            }
        }
    }
}

/// RFC 5321 §4.5.3.1.6 requires at least 1000 octets per text line; a lower
/// limit would refuse standards-conformant mail.
fn line_length(v: &DeValue<'_>) -> Result<usize, String> {
    let n = count(v)?;
    if n < 1000 {
        return Err(format!(
            "must be at least 1000 (RFC 5321 §4.5.3.1.6), found {n}"
        ));
    }
    Ok(n)
}

fn duration(v: &DeValue<'_>) -> Result<Duration, String> {
    match v {
        DeValue::String(s) => values::parse_duration(s),
        _ => Err("expected a duration string such as \"30s\", \"5m\", \"1h\" or \"2d\"".to_owned()),
    }
}

/// The secret's value is never echoed in messages: a wrong value may well
/// be the plain-text password pasted into the wrong place.
fn password_hash(v: &DeValue<'_>) -> Result<Secret, String> {
    let s = v.as_str().ok_or("expected a string")?;
    if ["$argon2id$", "$argon2i$", "$argon2d$"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.split('$').count() >= 5
    {
        Ok(Secret::new(s))
    } else {
        Err("not an Argon2 PHC string (expected \"$argon2id$v=19$m=...,t=...,p=...$salt$hash\"); value not shown".to_owned())
    }
}

fn boolean(v: &DeValue<'_>) -> Result<bool, String> {
    match v {
        DeValue::Boolean(b) => Ok(*b),
        _ => Err("expected true or false".to_owned()),
    }
}

fn address(text: &str) -> Result<siegel_types::Address, String> {
    siegel_types::Address::parse(text).map_err(|e| format!("not a mail address: {text:?} ({e})"))
}

fn domain_list(v: &DeValue<'_>) -> Result<Vec<String>, String> {
    let DeValue::Array(items) = v else {
        return Err("expected an array of domains".to_owned());
    };
    items
        .iter()
        .map(|item| string(item.get_ref()).and_then(|s| values::parse_domain(&s)))
        .collect()
}

fn no_method(v: &DeValue<'_>) -> Result<NoMethod, String> {
    match string(v)?.as_str() {
        "bounce" => Ok(NoMethod::Bounce),
        "hold" => Ok(NoMethod::Hold),
        other => Err(format!("expected \"bounce\" or \"hold\", found {other:?}")),
    }
}

fn direction(v: &DeValue<'_>) -> Result<siegel_types::Direction, String> {
    match string(v)?.as_str() {
        "inbound" => Ok(siegel_types::Direction::Inbound),
        "outbound" => Ok(siegel_types::Direction::Outbound),
        other => Err(format!(
            "expected \"inbound\" or \"outbound\", found {other:?}"
        )),
    }
}

fn virus_action(v: &DeValue<'_>) -> Result<VirusAction, String> {
    match string(v)?.as_str() {
        "reject" => Ok(VirusAction::Reject),
        "quarantine" => Ok(VirusAction::Quarantine),
        other => Err(format!(
            "expected \"reject\" or \"quarantine\", found {other:?}"
        )),
    }
}

fn spam_action(v: &DeValue<'_>) -> Result<SpamAction, String> {
    match string(v)?.as_str() {
        "tag" => Ok(SpamAction::Tag),
        "quarantine" => Ok(SpamAction::Quarantine),
        "reject" => Ok(SpamAction::Reject),
        other => Err(format!(
            "expected \"tag\", \"quarantine\" or \"reject\", found {other:?}"
        )),
    }
}

/// A score as an integer, a float or a string; zero or less would reject
/// ordinary mail (most score around zero).
fn spam_score(v: &DeValue<'_>) -> Result<siegel_types::SpamScore, String> {
    let text = match v {
        DeValue::Integer(i) if i.radix() == 10 => i.as_str().to_owned(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::String(s) => s.to_string(),
        _ => return Err("expected a score such as 15 or 12.5".to_owned()),
    };
    let score: siegel_types::SpamScore = text.parse().map_err(|e| format!("{e}"))?;
    if score <= siegel_types::SpamScore::points(0) {
        return Err(format!(
            "must be greater than zero, found {score}: ordinary mail scores around zero and would be rejected"
        ));
    }
    Ok(score)
}

/// spamd reads the user name from a header line: no spaces, no controls.
fn spamd_user(v: &DeValue<'_>) -> Result<String, String> {
    let u = non_empty(v)?;
    if u.len() > 128 || !u.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{u:?} is not a user name spamd accepts (printable ASCII without spaces, at most 128 characters)"
        ));
    }
    Ok(u)
}

fn tls_policy(v: &DeValue<'_>) -> Result<TlsPolicy, String> {
    match string(v)?.as_str() {
        "opportunistic" => Ok(TlsPolicy::Opportunistic),
        "required" => Ok(TlsPolicy::Required),
        other => Err(format!(
            "expected \"opportunistic\" or \"required\", found {other:?}"
        )),
    }
}

fn key_type(v: &DeValue<'_>) -> Result<KeyType, String> {
    match string(v)?.as_str() {
        "rsa3072" => Ok(KeyType::Rsa3072),
        "p256" => Ok(KeyType::P256),
        other => Err(format!("`{other}` is not one of rsa3072, p256")),
    }
}

fn pgp_key_type(v: &DeValue<'_>) -> Result<PgpKeyType, String> {
    match string(v)?.as_str() {
        "cv25519" => Ok(PgpKeyType::Cv25519),
        "rsa3072" => Ok(PgpKeyType::Rsa3072),
        other => Err(format!("`{other}` is not one of cv25519, rsa3072")),
    }
}

fn smime_cipher(v: &DeValue<'_>) -> Result<SmimeCipher, String> {
    match string(v)?.as_str() {
        "cbc" => Ok(SmimeCipher::Cbc),
        "gcm" => Ok(SmimeCipher::Gcm),
        other => Err(format!("`{other}` is not one of cbc, gcm")),
    }
}

/// A number of days, 1 to 100 years: zero would issue certificates that
/// are never valid.
fn days(v: &DeValue<'_>) -> Result<u32, String> {
    let n = integer(v)?;
    if (1..=36_500).contains(&n) {
        u32::try_from(n).map_err(|e| e.to_string())
    } else {
        Err(format!("{n} is not between 1 and 36500 days"))
    }
}

/// The CRL URL goes into every certificate; clients fetch it over HTTP.
fn crl_url(v: &DeValue<'_>) -> Result<String, String> {
    let u = string(v)?;
    if (u.starts_with("http://") || u.starts_with("https://"))
        && u.is_ascii()
        && !u.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        Ok(u)
    } else {
        Err(format!("`{u}` is not an ASCII http(s) URL"))
    }
}

/// The portal's public URL: https (browsers only send the secure cookies
/// over it), no trailing slash, no path beyond a prefix.
fn public_url(v: &DeValue<'_>) -> Result<String, String> {
    let u = string(v)?;
    let u = u.trim_end_matches('/').to_owned();
    let rest = u.strip_prefix("https://").ok_or_else(|| {
        format!("`{u}` must start with https:// (the portal's cookies are Secure)")
    })?;
    if rest.is_empty()
        || !u.is_ascii()
        || u.bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return Err(format!("`{u}` is not a plain https URL"));
    }
    Ok(u)
}

fn language(v: &DeValue<'_>) -> Result<String, String> {
    match string(v)?.as_str() {
        l @ ("de" | "en") => Ok(l.to_owned()),
        other => Err(format!("`{other}` is not one of de, en")),
    }
}

fn count_or_zero(v: &DeValue<'_>) -> Result<usize, String> {
    let n = integer(v)?;
    usize::try_from(n).map_err(|_| format!("must be zero or more, found {n}"))
}

fn small_count(v: &DeValue<'_>) -> Result<u32, String> {
    let n = integer(v)?;
    match u32::try_from(n) {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("must be between 1 and 100000, found {n}")),
    }
}

/// `"off"` disables the admin listener; TOML has no null to say "none".
fn admin_listen(v: &DeValue<'_>) -> Result<Option<SocketAddr>, String> {
    let s = string(v)?;
    if s == "off" {
        return Ok(None);
    }
    values::parse_listen(&s)
        .map(Some)
        .map_err(|m| format!("{m}, or \"off\""))
}

/// Accepts a level (`info`) or tracing directives (`info,siegel=debug`);
/// every directive must end in a level name, which catches the common
/// `level = "infos"` before the binary half-starts with no logging.
fn log_level(v: &DeValue<'_>) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let s = non_empty(v)?;
    for directive in s.split(',') {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, l)| l)
            .trim();
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "unknown level {level:?} (use one of {}, optionally as target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(s)
}

fn log_format(v: &DeValue<'_>) -> Result<LogFormat, String> {
    match string(v)?.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("expected \"text\" or \"json\", found {other:?}")),
    }
}

/// The machine's host name as the kernel reports it (what `gethostname`
/// returns), without libc; `localhost` when it cannot be read or is not a
/// valid host name, so the default never fails.
fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|s| siegel_types::normalise_domain(s.trim()))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests;
