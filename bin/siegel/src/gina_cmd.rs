//! GINA in the binary: the portal's settings and the GINA method's
//! environment from the configuration, the key importer for uploads in the
//! portal, and the commands `siegel gina list | revoke | reset | seal`
//! (`seal` runs the mail path's method by hand and prints the initial
//! password instead of mailing it).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use siegel_config::Config;
use siegel_gina::mail::{NoticeParams, Person};
use siegel_gina::{Hasher, Lang, PasswordPolicy, Themes};
use siegel_store::{NewKey, PreferredMethod, SourceKind, Store};
use siegel_types::{Address, Direction, Envelope, Origin, QueueId, Recipient, ReversePath};

use crate::cli::GinaAction;

fn now() -> i64 {
    siegel_store::unix_now()
}

/// The sender of the gateway's own GINA mails.
pub fn system_from(config: &Config) -> anyhow::Result<Address> {
    if let Some(a) = &config.gina.notification_from {
        return Ok(a.clone());
    }
    let domain = config
        .domains
        .internal
        .first()
        .cloned()
        .unwrap_or_else(|| config.smtp.hostname.clone());
    Address::parse(&format!("siegel@{domain}"))
        .map_err(|e| anyhow::anyhow!("gina.notification_from: siegel@{domain}: {e}"))
}

/// The password policy of `[gina]`.
pub fn password_policy(config: &Config) -> PasswordPolicy {
    let g = &config.gina;
    PasswordPolicy {
        min_length: g.password_min_length,
        require_upper: g.password_require_upper,
        require_digit: g.password_require_digit,
        forbid_personal: g.password_forbid_personal,
        history: g.password_history,
        forbid_common: g.password_forbid_common,
    }
}

/// The themes of `[gina] themes_dir` (or the embedded design).
pub fn themes(config: &Config) -> anyhow::Result<Themes> {
    Themes::load(config.gina.themes_dir.as_deref()).context("loading gina.themes_dir")
}

/// The GINA method's environment (`[gina]`, `[portal] public_url`).
pub fn method(
    config: &Config,
    store: &Store,
    spool: &siegel_spool::Spool,
    mpki: Option<Arc<siegel_pipeline::smime::Mpki>>,
    notify_sender: bool,
) -> anyhow::Result<Arc<siegel_pipeline::gina::Gina>> {
    let settings = siegel_pipeline::gina::GinaSettings {
        portal_url: config.portal.public_url.clone(),
        container_expiry: config.gina.container_expiry,
        carrier_shows_subject: config.gina.carrier_shows_subject,
        language: default_lang(config),
        hostname: config.smtp.hostname.clone(),
        system_from: system_from(config)?,
        internal_domains: config.domains.internal.clone(),
        notify_sender,
    };
    Ok(Arc::new(siegel_pipeline::gina::Gina::new(
        store.clone(),
        spool.clone(),
        Arc::new(themes(config)?),
        Arc::new(Hasher::new(2)?),
        settings,
        mpki,
    )))
}

fn default_lang(config: &Config) -> Lang {
    Lang::from_tag(&config.gina.default_language).unwrap_or(Lang::De)
}

/// The portal's settings.
pub fn portal_settings(config: &Config) -> anyhow::Result<siegel_portal::Settings> {
    let g = &config.gina;
    Ok(siegel_portal::Settings {
        public_url: config.portal.public_url.clone(),
        internal_domains: config.domains.internal.clone(),
        session_idle: config.portal.session_idle,
        session_max: config.portal.session_max,
        max_upload: config.portal.max_upload,
        policy: password_policy(config),
        lock_after: g.lock_after,
        lock_for: g.lock_for,
        client_limit: g.client_limit,
        client_window: g.client_window,
        signup: g.signup,
        signup_link_valid: g.signup_link_valid,
        hostname: config.smtp.hostname.clone(),
        node: config.smtp.hostname.clone(),
        system_from: system_from(config)?,
        default_lang: default_lang(config),
    })
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, String> {
    let d = openssl::asn1::Asn1Time::from_unix(0)
        .and_then(|z| z.diff(t))
        .map_err(|e| e.to_string())?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Checks uploads of the portal's settings page with the crypto crates: a
/// certificate or key is accepted only if it names the logged-in address,
/// and it is stored for that address only (never for other addresses it
/// may also name: a portal user must not plant keys for others).
pub struct Importer;

impl siegel_portal::KeyImporter for Importer {
    fn import(
        &self,
        method: PreferredMethod,
        address: &Address,
        data: &[u8],
    ) -> Result<NewKey, String> {
        match method {
            PreferredMethod::Smime => {
                let cert = openssl::x509::X509::from_pem(data)
                    .or_else(|_| openssl::x509::X509::from_der(data))
                    .map_err(|e| format!("not a certificate: {e}"))?;
                if !siegel_crypto::pki::certificate_addresses(&cert).contains(address) {
                    return Err("the certificate does not name this address".into());
                }
                let now = now();
                let (nb, na) = (asn1_unix(cert.not_before())?, asn1_unix(cert.not_after())?);
                if now < nb || now > na {
                    return Err("the certificate is not valid now".into());
                }
                let fp = cert
                    .digest(openssl::hash::MessageDigest::sha256())
                    .map_err(|e| e.to_string())?;
                let issuer = cert
                    .issuer_name()
                    .entries()
                    .filter_map(|e| e.data().to_string().ok())
                    .collect::<Vec<_>>()
                    .join(", ");
                let serial = cert
                    .serial_number()
                    .to_bn()
                    .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
                    .map_err(|e| e.to_string())?;
                let rsa = cert.public_key().map(|k| k.rsa().is_ok()).unwrap_or(false);
                Ok(NewKey {
                    address: address.clone(),
                    fingerprint: fp.iter().map(|b| format!("{b:02X}")).collect(),
                    issuer: if issuer.is_empty() {
                        "-".into()
                    } else {
                        issuer
                    },
                    serial,
                    not_before: nb,
                    not_after: na,
                    key_usage: if rsa {
                        "digitalSignature,keyEncipherment".into()
                    } else {
                        "digitalSignature,keyAgreement".into()
                    },
                    source_kind: SourceKind::Imported,
                    source_message_id: None,
                    material: cert.to_der().map_err(|e| e.to_string())?,
                    source_detail: None,
                    private_key: None,
                })
            }
            PreferredMethod::Pgp => {
                use sequoia_openpgp::serialize::SerializeInto;
                let pgp = siegel_openpgp::Pgp::new();
                let keys = pgp.import_keys(data).map_err(|e| e.to_string())?;
                let key = keys
                    .into_iter()
                    .find(|k| k.addresses.contains(address))
                    .ok_or("the key has no User ID with this address")?;
                key.validity
                    .as_ref()
                    .map_err(|e| format!("the key cannot encrypt: {e}"))?;
                if key.cert.is_tsk() {
                    return Err("the file holds a secret key: upload the public key only".into());
                }
                let created = key
                    .cert
                    .primary_key()
                    .key()
                    .creation_time()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                Ok(NewKey {
                    address: address.clone(),
                    fingerprint: key.fingerprint.clone(),
                    issuer: key.fingerprint.clone(),
                    serial: key.cert.keyid().to_hex(),
                    not_before: created,
                    not_after: i64::MAX / 2,
                    key_usage: "encrypt".into(),
                    source_kind: SourceKind::Imported,
                    source_message_id: None,
                    material: key.cert.to_vec().map_err(|e| e.to_string())?,
                    source_detail: None,
                    private_key: None,
                })
            }
            PreferredMethod::Gina => Err("nothing to import".into()),
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Hands a mail to the gateway: over SMTP to its own listener when it is
/// running (a running gateway learns of new spool entries only from its own
/// processes), else straight into the spool, where it is found at start.
async fn submit(config: &Config, from: &Address, to: &Address, mail: &[u8]) -> anyhow::Result<()> {
    let dir = config.server.data_dir.join("spool");
    let spool = siegel_spool::Spool::open(&dir)
        .with_context(|| format!("opening the spool {}", dir.display()))?;
    if !spool.is_served() {
        let env = Envelope {
            id: QueueId::generate(),
            mail_from: ReversePath::Address(from.clone()),
            recipients: vec![Recipient::new(to.clone())],
            direction: if config.domains.internal.iter().any(|d| d == to.domain()) {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            origin: Origin::Local {
                what: "gina-cli".into(),
            },
            received_at: 0,
            size: 0,
            body_8bit: false,
            smtputf8: false,
            env_id: None,
            ret: None,
            message_id: None,
        };
        spool.inject(env, mail).await?;
        return Ok(());
    }
    let addr = config.smtp.listen.first().context("smtp.listen is empty")?;
    smtp_send(*addr, &config.smtp.hostname, from, to, mail).await
}

/// A minimal SMTP client for the gateway's own listener on this host.
async fn smtp_send(
    addr: std::net::SocketAddr,
    helo: &str,
    from: &Address,
    to: &Address,
    mail: &[u8],
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let target = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(
        r: &mut (impl tokio::io::AsyncBufRead + Unpin),
        want: char,
    ) -> anyhow::Result<()> {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await?;
            anyhow::ensure!(line.starts_with(want), "gateway answered {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
    reply(&mut r, '2').await?;
    for (cmd, want) in [
        (format!("EHLO {helo}\r\n"), '2'),
        (format!("MAIL FROM:<{}>\r\n", from.as_str()), '2'),
        (format!("RCPT TO:<{}>\r\n", to.as_str()), '2'),
        ("DATA\r\n".to_owned(), '3'),
    ] {
        w.write_all(cmd.as_bytes()).await?;
        reply(&mut r, want).await?;
    }
    let mut body = Vec::with_capacity(mail.len() + 64);
    for line in mail.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            body.push(b'.');
        }
        body.extend_from_slice(line);
    }
    if !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    w.write_all(&body).await?;
    reply(&mut r, '2').await?;
    w.write_all(b"QUIT\r\n").await?;
    Ok(())
}

pub fn run(config: &Config, action: GinaAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = crate::db_cmd::open(config).await?;
        match action {
            GinaAction::List { limit } => {
                let mut after: Option<String> = None;
                let mut shown = 0u64;
                println!("address\tstate\tmethod\tlanguage\tcreated\tlast login");
                loop {
                    let page = store.gina().list(after.as_deref(), 1000).await?;
                    if page.is_empty() {
                        break;
                    }
                    for a in &page {
                        let locked = store
                            .gina_throttle()
                            .state(&format!("account:{}", a.address.as_str()))
                            .await?
                            .is_some_and(|t| t.locked(now()));
                        let state = if locked {
                            "locked"
                        } else if a.must_register {
                            "initial-password"
                        } else {
                            "active"
                        };
                        println!(
                            "{}\t{state}\t{}\t{}\t{}\t{}",
                            a.address,
                            a.preferred_method.as_str(),
                            a.language,
                            a.created_at,
                            a.last_login.map_or_else(|| "-".to_owned(), |t| t.to_string())
                        );
                        shown += 1;
                        if limit.is_some_and(|l| shown >= l) {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    after = page.last().map(|a| a.address.as_str().to_owned());
                }
                println!("{} accounts", store.gina().count().await?);
            }
            GinaAction::Revoke { message_id } => {
                let containers = store.gina_containers().for_message(&message_id).await?;
                anyhow::ensure!(!containers.is_empty(), "no GINA container for Message-ID {message_id}");
                let n = store.gina_containers().revoke_message(&message_id, now()).await?;
                for c in &containers {
                    println!("{} {} {}", c.container_id, c.recipient, if c.revoked_at.is_some() { "already revoked" } else { "revoked" });
                }
                println!("{n} containers revoked: their keys are deleted, no copy can be opened any more");
            }
            GinaAction::Reset { address, notify } => {
                let address = Address::parse(&address).map_err(|e| anyhow::anyhow!("{address}: {e}"))?;
                let sender = Address::parse(&notify).map_err(|e| anyhow::anyhow!("{notify}: {e}"))?;
                anyhow::ensure!(
                    config.domains.internal.iter().any(|d| d == sender.domain()),
                    "--notify {sender}: the initial password goes to an internal address only"
                );
                anyhow::ensure!(store.gina().by_address(&address).await?.is_some(), "no GINA account for {address}");
                let hasher = Hasher::new(1)?;
                let pw = siegel_gina::new_initial_password()?;
                store.gina().set_initial_password(&address, &hasher.hash(&pw).await?).await?;
                store.gina_sessions().delete_for(&address, None).await?;
                let themes = themes(config)?;
                let lang = default_lang(config);
                let from = system_from(config)?;
                let notice = siegel_gina::mail::initial_password_notice(
                    themes.for_domain(sender.domain()),
                    lang,
                    &NoticeParams {
                        from: &from,
                        to: Person {
                            address: &sender,
                            name: None,
                        },
                        recipient: &address,
                        password: &pw,
                        portal_url: &config.portal.public_url,
                        date: now(),
                        hostname: &config.smtp.hostname,
                    },
                )?;
                submit(config, &from, &sender, &notice).await?;
                store
                    .gina_audit()
                    .record_many(&[siegel_store::AuditEvent {
                        at: now(),
                        event: "reset".into(),
                        address: Some(address.as_str().to_owned()),
                        container_id: None,
                        client: Some("cli".into()),
                        detail: format!("new initial password sent to {sender}"),
                        node: config.smtp.hostname.clone(),
                    }])
                    .await?;
                println!("{address}: new initial password sent to {sender}; the next login must register again");
            }
            GinaAction::Seal { from, to, out, carrier } => {
                let from = Address::parse(&from).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
                let to = Address::parse(&to).map_err(|e| anyhow::anyhow!("{to}: {e}"))?;
                let mut mail = Vec::new();
                std::io::stdin().read_to_end(&mut mail)?;
                let headers = mail_parser::MessageParser::default().parse_headers(&mail);
                let message_id = headers.as_ref().and_then(|m| m.message_id().map(str::to_owned));
                let dir = config.server.data_dir.join("spool");
                let spool = siegel_spool::Spool::open(&dir)
                    .with_context(|| format!("opening the spool {}", dir.display()))?;
                // The method of the mail path, printing the initial password
                // instead of mailing it.
                let gina = method(config, &store, &spool, None, false)?;
                let envelope = Envelope {
                    id: QueueId::generate(),
                    mail_from: ReversePath::Address(from.clone()),
                    recipients: vec![Recipient::new(to.clone())],
                    direction: Direction::Outbound,
                    origin: Origin::Local {
                        what: "gina-cli".into(),
                    },
                    received_at: 0,
                    size: 0,
                    body_8bit: false,
                    smtputf8: false,
                    env_id: None,
                    ret: None,
                    message_id,
                };
                let sealed = gina.seal(&mail, &envelope, &to, now()).await?;
                std::fs::write(&out, &sealed.file).with_context(|| format!("writing {}", out.display()))?;
                if let Some(path) = carrier {
                    std::fs::write(&path, &sealed.carrier).with_context(|| format!("writing {}", path.display()))?;
                }
                let mut stdout = std::io::stdout();
                writeln!(stdout, "container {} for {to} written to {}", sealed.container_id, out.display())?;
                if let Some(pw) = &sealed.initial_password {
                    writeln!(stdout, "initial password: {}", pw.expose())?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Deletes expired container keys and ended sessions every ten minutes
/// (any node may do it: both are idempotent updates).
pub async fn sweeper(store: Store, idle: std::time::Duration) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        let now = now();
        match store.gina_containers().shred_expired(now).await {
            Ok(n) if n > 0 => {
                tracing::info!(target: "siegel::gina", shredded = n, "expired container keys deleted")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(target: "siegel::gina", error = %e, "expiry sweep failed"),
        }
        if let Err(e) = store
            .gina_sessions()
            .purge(now, now - idle.as_secs() as i64)
            .await
        {
            tracing::warn!(target: "siegel::gina", error = %e, "session purge failed");
        }
    }
}

/// The portal's TLS configuration: `[portal]` cert/key, else `[tls]`'s (or
/// the generated self-signed one), offering HTTP/1.1 by ALPN.
pub fn portal_tls(config: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = match (&config.portal.cert, &config.portal.key) {
        (Some(c), Some(k)) => (Some(c.as_path()), Some(k.as_path())),
        _ => (config.tls.cert.as_deref(), config.tls.key.as_deref()),
    };
    let loaded =
        crate::tls::load_or_generate(cert, key, &config.server.data_dir, &config.smtp.hostname)?;
    let mut tls = (*loaded.config).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
