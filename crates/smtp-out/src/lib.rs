//! Delivery: the scheduler that owns every retry, routing to the next hop,
//! an SMTP client that streams from the spool, the outbound TLS policy and
//! the delivery status notifications (DSNs) for what could not be delivered.
//!
//! `smtp-out` meets the rest of the mail path only at the spool: it takes
//! ids of ready mails from it, writes per-recipient state back to it, and
//! hands the DSNs it makes to it as new mail.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use siegel_spool::Spool;
use siegel_types::Counters;

pub mod client;
pub mod dns;
pub mod dsn;
mod scheduler;

pub use scheduler::{SetupError, validate};

/// Everything the delivery side needs to know, built from the config once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our EHLO name, also the Reporting-MTA of DSNs.
    pub hostname: String,
    /// Domains this gateway receives for (lower case, A-labels).
    pub internal_domains: Vec<String>,
    /// Where mail for internal domains goes.
    pub inbound_relay: Option<NextHop>,
    /// Smarthost for everything else; `None` = MX lookup.
    pub outbound_relay: Option<NextHop>,
    /// Per-domain override (exact domain), wins over both relays.
    pub routes: HashMap<String, NextHop>,
    /// Per recipient domain; the default is [`TlsPolicy::Opportunistic`].
    pub tls_policy: HashMap<String, TlsPolicy>,
    /// Extra trust anchors (PEM) for verifying next hops, besides
    /// webpki-roots and the system store.
    pub tls_ca_files: Vec<PathBuf>,
    /// Delay before attempt 2, 3, …; the last one repeats.
    pub retry: Vec<Duration>,
    /// After this, counted from reception, the remaining recipients bounce.
    pub max_lifetime: Duration,
    /// Concurrent deliveries (mails in flight).
    pub max_parallel: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// DNS servers for MX lookups (tests); empty = the system resolver.
    pub nameservers: Vec<SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            internal_domains: Vec::new(),
            inbound_relay: None,
            outbound_relay: None,
            routes: HashMap::new(),
            tls_policy: HashMap::new(),
            tls_ca_files: Vec::new(),
            retry: vec![
                Duration::from_secs(60),
                Duration::from_secs(5 * 60),
                Duration::from_secs(15 * 60),
                Duration::from_secs(60 * 60),
            ],
            max_lifetime: Duration::from_secs(5 * 24 * 3600),
            max_parallel: 50,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            nameservers: Vec::new(),
        }
    }
}

impl Settings {
    /// Whether `domain` is one we receive for.
    pub fn is_internal(&self, domain: &str) -> bool {
        self.internal_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The next hop for a recipient domain: an internal domain goes to the
    /// inbound relay, then a per-domain route, then the smarthost, else the
    /// domain's own MX on port 25.
    pub fn next_hop(&self, domain: &str) -> NextHop {
        let domain = domain.to_ascii_lowercase();
        if self.is_internal(&domain)
            && let Some(hop) = &self.inbound_relay
        {
            return hop.clone();
        }
        if let Some(hop) = self.routes.get(&domain) {
            return hop.clone();
        }
        if !self.is_internal(&domain)
            && let Some(hop) = &self.outbound_relay
        {
            return hop.clone();
        }
        NextHop {
            host: domain,
            port: 25,
            mx: true,
        }
    }

    /// The TLS policy for a recipient domain.
    pub fn tls_policy_for(&self, domain: &str) -> TlsPolicy {
        self.tls_policy
            .get(&domain.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    /// Delay before the attempt after attempt number `attempts` (1-based).
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let index = (attempts.max(1) - 1) as usize;
        self.retry
            .get(index)
            .or(self.retry.last())
            .copied()
            .unwrap_or(Duration::from_secs(300))
    }
}

/// Where one SMTP transaction goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `host` is a mail domain whose MX records are looked up.
    pub mx: bool,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mx {
            return write!(f, "MX of {}", self.host);
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A next hop that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a next hop of the form host:port or [IPv6]:port: {why}")]
pub struct NextHopError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for NextHop {
    type Err = NextHopError;

    /// `host:port`, `1.2.3.4:25`, `[::1]:2525`; a port is required because
    /// a relay on the wrong port is a silent misconfiguration.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NextHopError {
            input: s.to_owned(),
            why,
        };
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| err("missing `]:port`"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| err("not an IPv6 address in brackets"))?;
            (host, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| err("missing `:port`"))?;
            if host.contains(':') {
                return Err(err("IPv6 addresses must be written in brackets"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.parse::<std::net::IpAddr>().is_err()
            && siegel_types::Address::parse(&format!("x@{host}")).is_err()
        {
            return Err(err("not a valid host name"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| err("port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(err("port is not a number from 1 to 65535"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            mx: false,
        })
    }
}

/// Outbound TLS per recipient domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsPolicy {
    /// STARTTLS when offered, certificate not checked; plain text otherwise.
    #[default]
    Opportunistic,
    /// STARTTLS with a certificate valid for the next hop's name, or the
    /// mail waits (and finally bounces): never sent in clear.
    Required,
}

/// A TLS policy name that is neither `opportunistic` nor `required`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a TLS policy (opportunistic or required)")]
pub struct TlsPolicyError(pub String);

impl FromStr for TlsPolicy {
    type Err = TlsPolicyError;

    /// The config spelling, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "opportunistic" => Ok(Self::Opportunistic),
            "required" => Ok(Self::Required),
            _ => Err(TlsPolicyError(s.to_owned())),
        }
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Opportunistic => "opportunistic",
            Self::Required => "required",
        })
    }
}

/// One line for start-up output, e.g.
/// `internal mail → 127.0.0.1:2526; outbound → MX lookup`.
pub fn describe_routing(settings: &Settings) -> String {
    let inbound = match &settings.inbound_relay {
        Some(hop) => hop.to_string(),
        None => "MX lookup".to_owned(),
    };
    let outbound = match &settings.outbound_relay {
        Some(hop) => hop.to_string(),
        None => "MX lookup".to_owned(),
    };
    let mut line = format!("internal mail → {inbound}; outbound → {outbound}");
    if !settings.routes.is_empty() {
        let mut routes: Vec<_> = settings
            .routes
            .iter()
            .map(|(d, h)| format!("{d} → {h}"))
            .collect();
        routes.sort();
        line.push_str(&format!("; routes: {}", routes.join(", ")));
    }
    line
}

/// The delivery scheduler. Runs until the process ends; takes the spool's
/// ready and control channels (so exactly one scheduler may run). It returns
/// at once, logging why, only when the TLS trust anchors or the resolver
/// cannot be set up: call [`validate`] before start-up output to refuse to
/// start instead.
pub async fn run(settings: Arc<Settings>, spool: Spool, counters: Arc<Counters>) {
    scheduler::run(settings, spool, counters, None).await
}

/// [`run`], and every per-recipient result of a delivery attempt is also
/// sent on `events`, so message tracking can record it without smtp-out
/// knowing about the store or the pipeline. A closed channel is ignored.
pub async fn run_with_events(
    settings: Arc<Settings>,
    spool: Spool,
    counters: Arc<Counters>,
    events: Option<tokio::sync::mpsc::UnboundedSender<DeliveryEvent>>,
) {
    scheduler::run(settings, spool, counters, events).await
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEvent {
    pub queue_id: siegel_types::QueueId,
    pub message_id: Option<String>,
    pub recipient: siegel_types::Address,
    /// `"delivered"`, `"deferred"` or `"bounced"`, the words of the log.
    pub result: &'static str,
    /// The next hop's reply or the reason.
    pub detail: String,
}

impl DeliveryEvent {
    pub(crate) fn new(
        envelope: &siegel_types::Envelope,
        recipient: &siegel_types::Address,
        outcome: &scheduler::Outcome,
    ) -> Self {
        let (result, detail) = match outcome {
            scheduler::Outcome::Delivered { host, reply } => {
                ("delivered", format!("{host}: {reply}"))
            }
            scheduler::Outcome::Deferred { reason } => ("deferred", reason.clone()),
            scheduler::Outcome::Failed {
                reason,
                reply: Some(reply),
            } => ("bounced", format!("{reason}: {reply}")),
            scheduler::Outcome::Failed {
                reason,
                reply: None,
            } => ("bounced", reason.clone()),
        };
        Self {
            queue_id: envelope.id.clone(),
            message_id: envelope.message_id.clone(),
            recipient: recipient.clone(),
            result,
            detail,
        }
    }
}

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(s: &str) -> NextHop {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn next_hop_parsing() {
        assert_eq!(
            hop("127.0.0.1:2526"),
            NextHop {
                host: "127.0.0.1".into(),
                port: 2526,
                mx: false
            }
        );
        assert_eq!(
            hop("[::1]:2525"),
            NextHop {
                host: "::1".into(),
                port: 2525,
                mx: false
            }
        );
        assert_eq!(hop("Relay.Example.COM:25").host, "relay.example.com");
        for bad in [
            "relay.example.com",
            "::1:25",
            "[::1]",
            "[zz]:25",
            ":25",
            "host:0",
            "host:99999",
            "ho st:25",
            "host:x",
        ] {
            let e = bad
                .parse::<NextHop>()
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert_eq!(hop("[::1]:2525").to_string(), "[::1]:2525");
    }

    #[test]
    fn routing_decisions() {
        let mut s = Settings {
            internal_domains: vec!["example.com".into()],
            inbound_relay: Some(hop("10.0.0.1:25")),
            ..Settings::default()
        };
        // No smarthost: MX of the recipient domain.
        assert_eq!(
            s.next_hop("other.org"),
            NextHop {
                host: "other.org".into(),
                port: 25,
                mx: true
            }
        );
        assert_eq!(s.next_hop("Example.COM"), hop("10.0.0.1:25"));
        s.outbound_relay = Some(hop("smarthost:587"));
        assert_eq!(s.next_hop("other.org"), hop("smarthost:587"));
        // The smarthost is never used for internal mail.
        assert_eq!(s.next_hop("example.com"), hop("10.0.0.1:25"));
        s.routes
            .insert("partner.de".into(), hop("[2001:db8::1]:2525"));
        assert_eq!(s.next_hop("partner.de"), hop("[2001:db8::1]:2525"));
        assert_eq!(
            describe_routing(&s),
            "internal mail → 10.0.0.1:25; outbound → smarthost:587; routes: partner.de → [2001:db8::1]:2525"
        );
        s.inbound_relay = None;
        assert_eq!(
            s.next_hop("example.com"),
            NextHop {
                host: "example.com".into(),
                port: 25,
                mx: true
            }
        );
        assert_eq!(s.tls_policy_for("x.org"), TlsPolicy::Opportunistic);
        s.tls_policy.insert(
            "x.org".into(),
            "Required".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        assert!("sometimes".parse::<TlsPolicy>().is_err());
        assert_eq!(s.tls_policy_for("X.org"), TlsPolicy::Required);
    }

    #[test]
    fn retry_schedule_repeats_last() {
        let s = Settings {
            retry: vec![Duration::from_secs(1), Duration::from_secs(5)],
            ..Settings::default()
        };
        assert_eq!(s.retry_delay(1), Duration::from_secs(1));
        assert_eq!(s.retry_delay(2), Duration::from_secs(5));
        assert_eq!(s.retry_delay(9), Duration::from_secs(5));
    }
}
