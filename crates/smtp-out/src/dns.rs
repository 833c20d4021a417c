//! Next hop resolution: MX records by preference, the RFC 5321 §5.1
//! fallback to A/AAAA, null MX (RFC 7505).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::NextHop;

/// Why a next hop has no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// RFC 7505: the domain declares it accepts no mail.
    #[error("domain {0} does not accept mail (null MX)")]
    NullMx(String),
    /// The domain does not exist (NXDOMAIN) or has neither MX nor address.
    #[error("domain {0} has no mail server")]
    NoSuchDomain(String),
    /// Temporary: timeouts, SERVFAIL, unreachable name servers.
    #[error("DNS lookup for {name} failed: {source}")]
    Lookup { name: String, source: ResolveError },
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(ResolveError),
}

impl DnsError {
    /// Permanent failures bounce; everything else is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::NullMx(_) | Self::NoSuchDomain(_))
    }

    /// The RFC 3463 status code for a DSN.
    pub fn status(&self) -> &'static str {
        match self {
            Self::NullMx(_) => "5.1.10",
            Self::NoSuchDomain(_) => "5.1.2",
            Self::Lookup { .. } | Self::Setup(_) => "4.4.3",
        }
    }
}

/// One host to try, with its addresses, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name to verify the certificate against (MX target or relay host).
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

/// The resolver, built once at start-up.
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// With `nameservers`, only those are asked (UDP and TCP); otherwise the
    /// system configuration (`/etc/resolv.conf`).
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, DnsError> {
        let resolver = if nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(DnsError::Setup)?
                .build()
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in nameservers {
                group.push(NameServerConfig::new(*addr, Protocol::Udp));
                group.push(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), group);
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build()
        };
        Ok(Self { resolver })
    }

    /// The targets of a next hop, best first. A fixed relay is one target;
    /// a domain's MX records come sorted by preference, each with its
    /// addresses; without MX the domain's own addresses are used.
    pub async fn resolve(&self, hop: &NextHop) -> Result<Vec<Target>, DnsError> {
        if let Some(ip) = ip_literal(&hop.host) {
            return Ok(vec![Target {
                name: hop.host.clone(),
                addrs: vec![SocketAddr::new(ip, hop.port)],
            }]);
        }
        if !hop.mx {
            let addrs = self.addresses(&hop.host, hop.port).await?;
            return Ok(vec![Target {
                name: hop.host.clone(),
                addrs,
            }]);
        }
        let domain = hop.host.trim_end_matches('.');
        let fqdn = format!("{domain}.");
        let mut mxs: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .iter()
                .map(|mx| {
                    (
                        mx.preference(),
                        mx.exchange()
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    )
                })
                .collect(),
            Err(e) if e.is_nx_domain() => return Err(DnsError::NoSuchDomain(domain.to_owned())),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(source) => {
                return Err(DnsError::Lookup {
                    name: domain.to_owned(),
                    source,
                });
            }
        };
        if mxs.len() == 1 && mxs[0].1.is_empty() {
            return Err(DnsError::NullMx(domain.to_owned()));
        }
        if mxs.is_empty() {
            let addrs = match self.addresses(domain, hop.port).await {
                Err(DnsError::Lookup { source, .. }) if source.is_no_records_found() => {
                    return Err(DnsError::NoSuchDomain(domain.to_owned()));
                }
                other => other?,
            };
            return Ok(vec![Target {
                name: domain.to_owned(),
                addrs,
            }]);
        }
        mxs.retain(|(_, name)| !name.is_empty());
        mxs.sort_by_key(|(pref, _)| *pref);
        let mut targets = Vec::new();
        let mut last_error = None;
        for (_, name) in mxs {
            match self.addresses(&name, hop.port).await {
                Ok(addrs) => targets.push(Target { name, addrs }),
                Err(e) => last_error = Some(e),
            }
        }
        match (targets.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(targets),
        }
    }

    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => Ok(lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
            Err(e) if e.is_nx_domain() => Err(DnsError::NoSuchDomain(name.to_owned())),
            Err(source) => Err(DnsError::Lookup {
                name: name.to_owned(),
                source,
            }),
        }
    }
}

/// An IP address as a host, bare or as a domain literal (`[1.2.3.4]`,
/// `[IPv6:…]`): no lookup needed.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bare = bare.strip_prefix("IPv6:").unwrap_or(bare);
    bare.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_lookup() {
        assert_eq!(ip_literal("127.0.0.1"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(ip_literal("[IPv6:::1]"), "::1".parse().ok());
        assert_eq!(ip_literal("[10.0.0.1]"), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(ip_literal("mx.example.com"), None);
    }

    /// A one-zone DNS server on UDP 127.0.0.1:0, answering from a table.
    async fn fake_dns() -> SocketAddr {
        use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
        use hickory_resolver::proto::rr::rdata::{A, MX};
        use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries().first().cloned() else {
                    continue;
                };
                let name = q.name().to_ascii().to_ascii_lowercase();
                let n = |s: &str| Name::from_ascii(s).unwrap_or_else(|e| panic!("{e}"));
                let rr = |rdata: RData| Record::from_rdata(q.name().clone(), 60, rdata);
                let mut answers = Vec::new();
                let mut code = ResponseCode::NoError;
                match (name.as_str(), q.query_type()) {
                    ("mx.test.", RecordType::MX) => {
                        answers.push(rr(RData::MX(MX::new(20, n("b.mx.test.")))));
                        answers.push(rr(RData::MX(MX::new(10, n("a.mx.test.")))));
                    }
                    ("a.mx.test.", RecordType::A) => {
                        answers.push(rr(RData::A(A::new(127, 0, 0, 1))))
                    }
                    ("b.mx.test.", RecordType::A) => {
                        answers.push(rr(RData::A(A::new(127, 0, 0, 2))))
                    }
                    ("nullmx.test.", RecordType::MX) => {
                        answers.push(rr(RData::MX(MX::new(0, Name::root()))))
                    }
                    ("amx.test.", RecordType::A) => {
                        answers.push(rr(RData::A(A::new(127, 0, 0, 3))))
                    }
                    ("nx.test.", _) => code = ResponseCode::NXDomain,
                    _ => {}
                }
                let mut resp = Message::new();
                resp.set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .set_response_code(code);
                resp.add_queries(query.queries().to_vec());
                resp.add_answers(answers);
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn mx_lookup_order_fallback_null_mx_and_nxdomain() {
        let dns = Dns::new(&[fake_dns().await]).unwrap_or_else(|e| panic!("{e}"));
        let hop = |h: &str| NextHop {
            host: h.into(),
            port: 2525,
            mx: true,
        };
        let targets = dns
            .resolve(&hop("mx.test"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a.mx.test", "b.mx.test"], "sorted by preference");
        assert_eq!(
            targets[0].addrs,
            vec![SocketAddr::from(([127, 0, 0, 1], 2525))]
        );
        // No MX: the domain's own address.
        let targets = dns
            .resolve(&hop("amx.test"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            targets,
            vec![Target {
                name: "amx.test".into(),
                addrs: vec![SocketAddr::from(([127, 0, 0, 3], 2525))]
            }]
        );
        let null = dns
            .resolve(&hop("nullmx.test"))
            .await
            .err()
            .unwrap_or_else(|| panic!("null MX resolved"));
        assert!(
            matches!(null, DnsError::NullMx(_)) && null.is_permanent() && null.status() == "5.1.10",
            "{null}"
        );
        let nx = dns
            .resolve(&hop("nx.test"))
            .await
            .err()
            .unwrap_or_else(|| panic!("NXDOMAIN resolved"));
        assert!(nx.is_permanent(), "{nx}");
        // A fixed relay by name is looked up as A/AAAA, not MX.
        let relay = NextHop {
            host: "a.mx.test".into(),
            port: 25,
            mx: false,
        };
        let targets = dns.resolve(&relay).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            targets[0].addrs,
            vec![SocketAddr::from(([127, 0, 0, 1], 25))]
        );
    }

    #[tokio::test]
    async fn relay_by_ip_resolves_without_dns() {
        let dns = Dns::new(&["127.0.0.1:9".parse().unwrap_or_else(|_| panic!())])
            .unwrap_or_else(|e| panic!("{e}"));
        let hop = NextHop {
            host: "127.0.0.1".into(),
            port: 2526,
            mx: false,
        };
        let targets = dns.resolve(&hop).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            targets[0].addrs,
            vec!["127.0.0.1:2526".parse().unwrap_or_else(|_| panic!())]
        );
    }
}
