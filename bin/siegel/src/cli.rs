//! The command line. `--config` is global: it is accepted before or after
//! the subcommand, and `SIEGEL_CONFIG` stands in for it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "siegel", version, about = "Siegel — a secure e-mail gateway")]
pub struct Cli {
    /// Configuration file (TOML). Without one, Siegel runs on embedded defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "SIEGEL_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: SMTP listeners, pipeline, delivery, admin listener.
    Serve,
    /// Print or validate the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Inspect and steer the mail queue (the gateway may be running or not).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Mail the filter quarantined (virus, spam, unscannable): list,
    /// release, delete. Works whether the gateway runs or not.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// The store (SQLite in the data folder, or PostgreSQL).
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Write an online-consistent copy of the SQLite store.
    Backup {
        /// Where to write the copy (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace the SQLite store with a backup (the gateway must be stopped).
    Restore {
        /// The backup to restore.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// The master key that encrypts every private key and secret in the store.
    MasterKey {
        #[command(subcommand)]
        action: MasterKeyAction,
    },
    /// Read a password from standard input and print its argon2id hash, for
    /// `[[smtp.submission.users]] password_hash`.
    PasswordHash,
    /// Per recipient of a mail: method, key, why this method and not a
    /// higher one, delivery result.
    Track {
        /// The mail's Message-ID (with or without <>) or its queue id.
        #[arg(value_name = "MESSAGE-ID | QUEUE-ID")]
        id: String,
    },
    /// The policy: classification and the encryption decision.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Siegel's own CA (the mPKI), created at first start.
    Ca {
        #[command(subcommand)]
        action: CaAction,
    },
    /// Internal users and their certificates.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// S/MIME certificates: users', imported and harvested ones.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Domain certificates for domain-to-domain S/MIME.
    DomainCert {
        #[command(subcommand)]
        action: DomainCertAction,
    },
    /// OpenPGP keys: our users', imported and harvested ones.
    Pgp {
        #[command(subcommand)]
        action: PgpAction,
    },
    /// OpenPGP domain keys for domain-to-domain OpenPGP encryption.
    DomainKey {
        #[command(subcommand)]
        action: DomainKeyAction,
    },
    /// GINA: recipients' accounts and the containers sent to them.
    Gina {
        #[command(subcommand)]
        action: GinaAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum GinaAction {
    /// One line per GINA account (address, state, method, language).
    List {
        /// Stop after this many accounts.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Revoke every container of a mail: their keys are deleted, so no copy
    /// can be opened any more.
    Revoke {
        #[arg(value_name = "MESSAGE-ID")]
        message_id: String,
    },
    /// Issue a new initial password and mail it to an internal sender, who
    /// passes it on by phone; the recipient registers again at next login.
    Reset {
        address: String,
        /// The internal address that gets the new password.
        #[arg(long, value_name = "SENDER")]
        notify: String,
    },
    /// Seal a mail (standard input) for one recipient by hand: writes the
    /// container file, creates the account if needed and prints its initial
    /// password (what the GINA method does for each recipient).
    Seal {
        #[arg(long, value_name = "SENDER")]
        from: String,
        #[arg(long, value_name = "RECIPIENT")]
        to: String,
        /// Where to write the container file (HTML).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also write the carrier mail (RFC 5322) here.
        #[arg(long, value_name = "FILE")]
        carrier: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Print the CA certificate (PEM).
    Export,
    /// Replace the CA with an existing one (PEM certificate and key).
    Import {
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user and issue their certificate.
    Add {
        address: String,
        /// Display name (goes into the certificate).
        #[arg(long)]
        name: Option<String>,
    },
    /// One line per user: address, licence state, name (added here or
    /// onboarded on their first mail, see `[users]`).
    List,
    /// Write the user's certificate and private key as PKCS#12; the
    /// password is the first line of standard input or of --password-file.
    ExportP12 {
        address: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Print the newest certificate of an address (PEM).
    Export { address: String },
    /// Import correspondents' certificates (PEM, DER or PKCS#7).
    Import { file: PathBuf },
    /// One line per stored certificate.
    List,
    /// Revoke a certificate (ours go on the CRL).
    Revoke { fingerprint: String },
}

#[derive(Debug, Subcommand)]
pub enum PgpAction {
    /// Print the public key of an address (armoured); a licensed user of
    /// ours without a key gets one now.
    Export { address: String },
    /// Import correspondents' keys (armoured or binary, several in one file).
    Import { file: PathBuf },
    /// One line per stored key.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DomainKeyAction {
    /// Import a partner gateway's OpenPGP domain key.
    Import { domain: String, file: PathBuf },
    /// Print our OpenPGP domain key for an internal domain (created on demand).
    Export { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum DomainCertAction {
    /// Import a partner gateway's domain certificate.
    Import { domain: String, file: PathBuf },
    /// Print our domain certificate for an internal domain (created on demand).
    Export { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Print the decision that would be taken now for a mail, sending nothing.
    Explain {
        /// The sender.
        #[arg(long, value_name = "ADDRESS")]
        from: String,
        /// A recipient (repeat for several).
        #[arg(long, value_name = "ADDRESS", required = true)]
        to: Vec<String>,
        /// The Subject header.
        #[arg(long)]
        subject: Option<String>,
        /// A further header, e.g. "Sensitivity: Company-Confidential" (repeatable).
        #[arg(long, value_name = "NAME: VALUE")]
        header: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print a complete, commented configuration with the default values.
    Example,
    /// Validate the configuration file and print every problem found.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// One line per queued mail.
    List,
    /// Envelope and per-recipient state of one mail.
    Show { id: String },
    /// Deliver a deferred mail now.
    Retry { id: String },
    /// Remove a mail from the queue without delivering it (no bounce).
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// One line per quarantined mail, with the reason.
    List,
    /// Envelope, reason and per-recipient state of one quarantined mail.
    Show { id: String },
    /// Send the mail on: it runs through the pipeline again (decryption,
    /// signing, encryption still apply) and is delivered whatever the
    /// scanners say, marked `X-Siegel-Quarantine: released`.
    Release { id: String },
    /// Remove the mail without delivering it (no bounce).
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Verify the schema version and the integrity of the store.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum MasterKeyAction {
    /// Re-encrypt every secret under a new master key (the key file is
    /// replaced; with SIEGEL_MASTER_KEY, the new key comes from
    /// SIEGEL_NEW_MASTER_KEY).
    Rotate,
}
