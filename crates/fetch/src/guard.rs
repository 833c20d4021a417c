//! The SSRF guard: which addresses an outbound fetch may connect to.
//!
//! A URL in a certificate (CRL distribution point), a WKD lookup or a
//! webhook is chosen by someone outside. Without this guard, a correspondent
//! could make the gateway fetch `http://169.254.169.254/` (cloud metadata),
//! `http://127.0.0.1:8025/admin` or a host on the internal network simply by
//! sending a signed mail. The check runs on the *resolved* addresses, right
//! before connecting to exactly those, so a name that resolves to a private
//! address (DNS rebinding included) is refused as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not for outbound fetches (`None`: public unicast).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified (\"this network\")",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (169, 254, _) => "link-local",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // Addresses that embed an IPv4 address are judged by it: an IPv4-mapped
    // ::ffff:127.0.0.1 reaches the loopback interface on dual-stack hosts,
    // and NAT64 / 6to4 can route to an embedded private address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // NAT64 well-known prefix 64:ff9b::/96
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return forbidden_v4(embedded(hi, lo)),
        // 6to4 2002::/16 carries an IPv4 address in bits 16..48
        [0x2002, hi, lo, ..] => return forbidden_v4(embedded(hi, lo)),
        // IPv4-compatible (deprecated) ::a.b.c.d
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        [0x0064, 0xff9b, 1, ..] => "local-use NAT64",
        [0x0100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x3fff, b, ..] if b & 0xf000 == 0 => "documentation",
        [0x2001, b, ..] if b < 0x0200 => "IETF protocol assignments",
        [a, ..] if a & 0xfe00 == 0xfc00 => "unique-local",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local",
        [a, ..] if a & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        [a, ..] if a & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// The guard with its configured exceptions.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    /// A guard that refuses every non-public address except those in
    /// `allow` (an internal CRL server, a test server on loopback).
    pub fn new(allow: Vec<IpNet>) -> Guard {
        Guard { allow }
    }

    /// `Ok(())` when the fetch may connect to `ip`; else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match forbidden(ip) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for (addr, why) in [
            ("0.0.0.0", "unspecified (\"this network\")"),
            ("0.1.2.3", "unspecified (\"this network\")"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("169.254.169.254", "link-local"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved or broadcast"),
            ("255.255.255.255", "reserved or broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.1.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("::10.0.0.1", "IPv4-compatible"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("100::1", "discard-only"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001::1", "IETF protocol assignments"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local (deprecated)"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(forbidden(ip(addr)), Some(why), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2a00:1450:4001:80b::200e",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "3fff:1000::1",
        ] {
            assert_eq!(forbidden(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn the_allow_list_makes_exceptions_and_nothing_else() {
        let guard = Guard::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert_eq!(guard.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check(ip("127.0.0.2")), Err("loopback"));
        assert_eq!(guard.check(ip("::ffff:127.0.0.1")), Err("loopback"));
        assert_eq!(guard.check(ip("9.9.9.9")), Ok(()));
        assert_eq!(Guard::default().check(ip("127.0.0.1")), Err("loopback"));
    }
}
