//! Parsers for the value shapes that TOML has no type for: sizes, durations,
//! `host:port` next hops, socket addresses, networks and domains.
//!
//! Each parser takes the raw text and returns either the typed value or a
//! message that says what is wrong *and what would be right*, because the
//! message ends up in front of an operator who is editing a file.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use siegel_types::normalise_domain;

/// Parses a byte size: a plain number of bytes or a number with a unit.
///
/// `K`, `M`, `G` and `KiB`, `MiB`, `GiB` are powers of 1024 (what people mean
/// by "a 50M limit" for mail); `KB`, `MB`, `GB` are powers of 1000 as in SI.
/// Case does not matter. Zero is refused: a zero limit would refuse every
/// mail, which is never what was meant.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    let bad =
        || format!("not a size: {text:?} (use e.g. 52428800, \"50M\", \"50MiB\" or \"10KB\")");
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| format!("size too large: {text:?}"))?;
    if bytes == 0 {
        return Err("must be greater than zero".to_owned());
    }
    Ok(bytes)
}

/// Parses a duration such as `"30s"`, `"5m"`, `"1h"`, `"2d"`, `"1w"` or a
/// combination like `"1h30m"`.
///
/// A unit is mandatory: a bare `300` could be seconds or milliseconds, and a
/// guess that is off by 1000 turns a timeout into a hang. Zero is refused
/// because every duration we have is a timeout, interval or lifetime.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("not a duration: {text:?} (use e.g. \"30s\", \"5m\", \"1h\", \"2d\" or \"1h30m\")")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, tail) = rest.split_at(split);
        if digits.is_empty() {
            return Err(bad());
        }
        let number: u64 = digits.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("duration too long: {text:?}"))?;
        rest = tail.trim_start();
    }
    if total == 0 {
        return Err("must be greater than zero".to_owned());
    }
    Ok(Duration::from_secs(total))
}

/// Parses a next hop `host:port`: a domain, an IPv4 address, or an IPv6
/// address in brackets (`[2001:db8::1]:25`). Returns it with the host
/// normalised (lower-case A-label) so that later comparisons are plain string
/// equality.
///
/// The port is required: silently assuming 25 would hide a typo such as
/// `mx.example.com.587`.
pub(crate) fn parse_host_port(text: &str) -> Result<String, String> {
    let shape = "use host:port, e.g. \"mx.example.com:25\" or \"[2001:db8::1]:25\"";
    let (host, port) = if let Some(after) = text.strip_prefix('[') {
        let (inner, tail) = after
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {text:?}: {shape}"))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("not an IPv6 address inside brackets: {inner:?}"))?;
        let port = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("missing port in {text:?}: {shape}"))?;
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("missing port in {text:?}: {shape}"))?;
        if host.contains(':') {
            return Err(format!("IPv6 addresses need brackets in {text:?}: {shape}"));
        }
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            ip.to_string()
        } else {
            normalise_domain(host).ok_or_else(|| format!("not a valid host name: {host:?}"))?
        };
        (host, port)
    };
    let port = parse_port(port).map_err(|m| format!("{m} in {text:?}"))?;
    Ok(format!("{host}:{port}"))
}

/// Parses a scanner daemon's address: `unix:/absolute/path`,
/// `tcp:host:port`, or a bare `host:port` (TCP, as spamc writes it).
pub(crate) fn parse_scanner(text: &str) -> Result<crate::ScannerAddress, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        let p = std::path::Path::new(path);
        if !p.is_absolute() {
            return Err(format!(
                "the socket path in {text:?} must be absolute (e.g. \"unix:/run/clamav/clamd.ctl\")"
            ));
        }
        return Ok(crate::ScannerAddress::Unix(p.to_owned()));
    }
    let hp = text.strip_prefix("tcp:").unwrap_or(text);
    parse_host_port(hp)
        .map(crate::ScannerAddress::Tcp)
        .map_err(|m| format!("{m} (a scanner is \"tcp:host:port\" or \"unix:/path\")"))
}

/// A TCP port for a peer: 1..=65535 (port 0 means "any" when binding and is
/// meaningless as a destination).
fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("not a port (1-65535): {text:?}")),
        Ok(port) => Ok(port),
    }
}

/// Parses an address to listen on (`"127.0.0.1:2525"`, `"[::1]:2525"`).
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("not a socket address: {text:?} (use e.g. \"127.0.0.1:2525\" or \"[::]:25\")")
    })
}

/// Parses a name server: a socket address, or a bare IP meaning port 53.
pub(crate) fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    text.parse().map_err(|_| {
        format!(
            "not a name server address: {text:?} (use e.g. \"192.0.2.53\" or \"[2001:db8::53]:53\")"
        )
    })
}

/// Parses a network in CIDR form; a bare IP address means that single host,
/// since "trust 10.0.0.5" is the natural way to write it.
pub(crate) fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse().map_err(|_| {
        format!("not a network: {text:?} (use CIDR form, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
    })
}

/// Normalises a mail domain the same way addresses are normalised, so that a
/// configured `Example.COM` matches mail for `example.com`.
pub(crate) fn parse_domain(text: &str) -> Result<String, String> {
    if text.starts_with('[') {
        return Err(format!("an address literal is not a mail domain: {text:?}"));
    }
    normalise_domain(text).ok_or_else(|| format!("not a valid domain: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("50M"), Ok(50 * 1024 * 1024));
        assert_eq!(parse_size("50MiB"), Ok(50 * 1024 * 1024));
        assert_eq!(parse_size("50mib"), Ok(50 * 1024 * 1024));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("10K"), Ok(10_240));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1_000"), Ok(1000));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "M", "5X", "-5M", "1.5M", "0", "0M", "99999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "",
            "5",
            "5x",
            "m",
            "0s",
            "-5m",
            "1.5h",
            "5 m",
            "99999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_port_shapes() {
        assert_eq!(
            parse_host_port("MX.Example.com:25").as_deref(),
            Ok("mx.example.com:25")
        );
        assert_eq!(
            parse_host_port("192.0.2.1:2525").as_deref(),
            Ok("192.0.2.1:2525")
        );
        assert_eq!(
            parse_host_port("[2001:DB8::1]:25").as_deref(),
            Ok("[2001:db8::1]:25")
        );
        assert_eq!(
            parse_host_port("bücher.example:25").as_deref(),
            Ok("xn--bcher-kva.example:25")
        );
    }

    #[test]
    fn bad_host_ports_say_why() {
        let cases = [
            ("mx.example.com", "missing port"),
            ("2001:db8::1:25", "brackets"),
            ("[2001:db8::1]", "missing port"),
            ("[2001:db8::1:25", "unclosed"),
            ("[192.0.2.1]:25", "IPv6"),
            ("mx.example.com:0", "not a port"),
            ("mx.example.com:65536", "not a port"),
            ("mx.example.com:smtp", "not a port"),
            ("bad_host!:25", "host name"),
            (":25", "host name"),
        ];
        for (input, why) in cases {
            match parse_host_port(input) {
                Ok(v) => panic!("{input:?} accepted as {v:?}"),
                Err(m) => assert!(m.contains(why), "{input:?}: {m}"),
            }
        }
    }

    #[test]
    fn listen_and_nameservers() {
        assert!(parse_listen("[::1]:2525").is_ok());
        assert!(parse_listen("localhost:25").is_err());
        assert_eq!(
            parse_nameserver("192.0.2.53"),
            Ok(SocketAddr::from(([192, 0, 2, 53], 53)))
        );
        assert_eq!(
            parse_nameserver("192.0.2.53:5353"),
            Ok(SocketAddr::from(([192, 0, 2, 53], 5353)))
        );
    }

    #[test]
    fn networks_accept_bare_addresses() {
        assert_eq!(parse_network("10.0.0.5").map(|n| n.prefix_len()), Ok(32));
        assert_eq!(parse_network("::1").map(|n| n.prefix_len()), Ok(128));
        assert_eq!(parse_network("10.0.0.0/8").map(|n| n.prefix_len()), Ok(8));
        assert!(parse_network("10.0.0.0/33").is_err());
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(parse_domain("Example.COM.").as_deref(), Ok("example.com"));
        assert!(parse_domain("-bad.example").is_err());
        assert!(parse_domain("[192.0.2.1]").is_err());
    }
}
