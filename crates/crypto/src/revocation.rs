//! Revocation checking with CRLs (RFC 5280 §6.3), as of a given time.
//!
//! **Soft fail.** A certificate counts as revoked only when an authentic
//! CRL from its issuer lists it with a revocation date at or before the
//! verification time. When no such CRL is at hand — none was fetched, the
//! distribution point was unreachable, the CRL is stale (its `nextUpdate`
//! passed) or its signature does not verify with the issuer's key — the
//! status is [`RevocationStatus::Unknown`], and the signature stays valid.
//! A gateway verifies every inbound mail of an organisation; if an
//! unreachable CRL server made each signature of that CA "invalid", a
//! network hiccup would stamp thousands of good mails as forged, and users
//! learn to ignore the stamp. Unknown is reported (with the distribution
//! points that would settle it), so the caller can fetch and check again or
//! say so in its stamp. OCSP is not implemented.
//!
//! Why not OpenSSL's `X509_V_FLAG_CRL_CHECK`: the `openssl` crate can add
//! CRLs to a store only from files, and OpenSSL's CRL check is hard fail
//! (a missing CRL is a verification error indistinguishable in kind from a
//! revocation). The decisions here are few and tested; OpenSSL still
//! parses the CRLs, verifies their signatures and looks up the serials.

use std::time::SystemTime;

use openssl::asn1::Asn1Time;
use openssl::x509::{CrlStatus, X509, X509Crl, X509CrlRef, X509Ref, X509VerifyResult};

use crate::der;

/// Why CRL data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    /// Neither a DER CRL nor PEM `X509 CRL` blocks that parse.
    #[error("not a CRL (DER or PEM): {0}")]
    Parse(String),
}

/// Parses CRL data as a distribution point serves it: one DER CRL, or one
/// or more PEM `-----BEGIN X509 CRL-----` blocks.
pub fn parse_crls(data: &[u8]) -> Result<Vec<X509Crl>, CrlError> {
    const BEGIN: &[u8] = b"-----BEGIN X509 CRL-----";
    const END: &[u8] = b"-----END X509 CRL-----";
    if let Some(first) = find(data, BEGIN) {
        let mut out = Vec::new();
        let mut rest = &data[first..];
        while let Some(start) = find(rest, BEGIN) {
            let block = &rest[start..];
            let Some(end) = find(block, END) else {
                return Err(CrlError::Parse("PEM block without end line".to_owned()));
            };
            let pem = &block[..end + END.len()];
            out.push(X509Crl::from_pem(pem).map_err(|e| CrlError::Parse(e.to_string()))?);
            rest = &block[end + END.len()..];
        }
        return Ok(out);
    }
    X509Crl::from_der(data)
        .map(|c| vec![c])
        .map_err(|e| CrlError::Parse(e.to_string()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The http(s) URLs of a certificate's CRL distribution points (RFC 5280
/// §4.2.1.13), in the order the certificate lists them. LDAP and other
/// schemes are left out: the gateway fetches over HTTP only.
pub fn distribution_points(certificate: &X509Ref) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(points) = certificate.crl_distribution_points() else {
        return out;
    };
    for point in &points {
        let Some(names) = point.distpoint().and_then(|d| d.fullname()) else {
            continue;
        };
        for name in names {
            if let Some(uri) = name.uri() {
                let lower = uri.to_ascii_lowercase();
                if (lower.starts_with("http://") || lower.starts_with("https://"))
                    && !out.iter().any(|u| u == uri)
                {
                    out.push(uri.to_owned());
                }
            }
        }
    }
    out
}

/// What the CRLs at hand say about a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Every certificate below the trust anchor is covered by a current,
    /// authentic CRL of its issuer that does not list it.
    NotRevoked,
    /// For at least one certificate no usable CRL was at hand; treated as
    /// not revoked (soft fail, see the module documentation).
    Unknown {
        /// Which certificate and why, for logs.
        reason: String,
        /// The distribution points of the certificates whose status is
        /// unknown: fetch these and check again.
        distribution_points: Vec<String>,
    },
}

/// A revoked certificate in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's serial number (upper-case hex).
    pub serial: String,
    /// Subject of the revoked certificate (one line, for the log).
    pub subject: String,
    /// The CRL's revocation date, Unix seconds.
    pub revoked_at: i64,
}

/// Checks `chain` (leaf first, as verified up to a trust anchor) against
/// `crls` as of `at`. `issuers` are further certificates that may have
/// issued a chain element whose issuer is not in the chain (the anchor of a
/// partial chain, such as a pinned correspondent certificate).
pub fn check_chain(
    chain: &[X509],
    issuers: &[X509],
    crls: &[X509Crl],
    at: SystemTime,
) -> Result<RevocationStatus, Revoked> {
    let at = Asn1Time::from_unix(crate::smime::unix_seconds(at)).ok();
    let mut unknown: Vec<String> = Vec::new();
    let mut points: Vec<String> = Vec::new();
    for (i, cert) in chain.iter().enumerate() {
        if self_signed(cert) {
            // A root is trusted as itself; nobody above it could revoke it.
            continue;
        }
        let issuer = chain
            .get(i + 1)
            .filter(|c| c.issued(cert) == X509VerifyResult::OK)
            .or_else(|| issuers.iter().find(|c| is_issuer(c, cert)));
        let status = match (issuer, &at) {
            (Some(issuer), Some(at)) => status_of(cert, issuer, crls, at),
            (None, _) => Status::Unknown("its issuer certificate is not available"),
            (_, None) => Status::Unknown("the verification time is out of range"),
        };
        match status {
            Status::Good => {}
            Status::Revoked(revoked_at) => {
                return Err(Revoked {
                    serial: serial_hex(cert),
                    subject: subject_line(cert),
                    revoked_at,
                });
            }
            Status::Unknown(why) => {
                unknown.push(format!("{}: {why}", subject_line(cert)));
                for p in distribution_points(cert) {
                    if !points.contains(&p) {
                        points.push(p);
                    }
                }
            }
        }
    }
    if unknown.is_empty() {
        Ok(RevocationStatus::NotRevoked)
    } else {
        Ok(RevocationStatus::Unknown {
            reason: unknown.join("; "),
            distribution_points: points,
        })
    }
}

enum Status {
    Good,
    Revoked(i64),
    Unknown(&'static str),
}

fn status_of(cert: &X509, issuer: &X509, crls: &[X509Crl], at: &Asn1Time) -> Status {
    let Ok(issuer_key) = issuer.public_key() else {
        return Status::Unknown("its issuer's key is unusable");
    };
    let mut from_issuer = 0;
    let mut covered = false;
    for crl in crls {
        let same_issuer = crl
            .issuer_name()
            .try_cmp(cert.issuer_name())
            .is_ok_and(|o| o.is_eq());
        if !same_issuer || !crl.verify(&issuer_key).unwrap_or(false) {
            continue;
        }
        from_issuer += 1;
        match crl.get_by_cert(cert) {
            CrlStatus::Revoked(entry) => {
                // Revoked after the verification time: not yet revoked then.
                if entry.revocation_date() <= at {
                    return Status::Revoked(unix_of(entry.revocation_date()));
                }
            }
            CrlStatus::RemoveFromCrl(_) | CrlStatus::NotRevoked => {}
        }
        let current = crl.next_update().is_none_or(|next| next >= at);
        if current && complete_for(crl, cert) {
            covered = true;
        }
    }
    match (covered, from_issuer) {
        (true, _) => Status::Good,
        (false, 0) => Status::Unknown("no CRL of its issuer"),
        (false, _) => Status::Unknown("no current complete CRL of its issuer"),
    }
}

/// Whether "not listed" in `crl` means "not revoked" for `cert`: a full
/// CRL, or a partitioned one (issuingDistributionPoint) whose scope covers
/// the certificate. Delta CRLs, indirect CRLs, CRLs limited to some reasons
/// and CRLs with critical extensions we do not know are not complete.
fn complete_for(crl: &X509CrlRef, cert: &X509) -> bool {
    let Ok(der_bytes) = crl.to_der() else {
        return false;
    };
    let Some(extensions) = crl_extensions(&der_bytes) else {
        return false;
    };
    for ext in extensions {
        match ext.oid.as_str() {
            // cRLNumber, authorityKeyIdentifier, issuerAltName,
            // authorityInfoAccess, expiredCertsOnCRL: informational
            "2.5.29.20" | "2.5.29.35" | "2.5.29.18" | "1.3.6.1.5.5.7.1.1" | "2.5.29.60" => {}
            // issuingDistributionPoint
            "2.5.29.28" if !idp_covers(ext.value, cert) => return false,
            "2.5.29.28" => {}
            // deltaCRLIndicator and anything else critical
            _ if ext.critical || ext.oid == "2.5.29.27" => return false,
            _ => {}
        }
    }
    true
}

/// The extension OIDs of a DER CRL, for the fuzz target.
pub(crate) fn crl_extension_oids(crl: &[u8]) -> Option<Vec<String>> {
    Some(crl_extensions(crl)?.into_iter().map(|e| e.oid).collect())
}

struct Extension<'a> {
    oid: String,
    critical: bool,
    value: &'a [u8],
}

/// The `crlExtensions` of a DER CertificateList; an empty list when it has
/// none, `None` when the structure does not parse.
fn crl_extensions(crl: &[u8]) -> Option<Vec<Extension<'_>>> {
    let (list, _) = der::read(crl)?;
    let tbs = list.children().next()?;
    let mut out = Vec::new();
    let Some(wrapper) = tbs.children().find(|t| t.tag == 0xa0) else {
        return Some(out);
    };
    let seq = wrapper.children().next()?;
    for ext in seq.children() {
        let parts = ext.child_vec()?;
        let oid = der::oid_text(parts.first().filter(|t| t.tag == 0x06)?.content)?;
        let critical = parts
            .get(1)
            .is_some_and(|t| t.tag == 0x01 && t.content.first().is_some_and(|b| *b != 0));
        let value = parts.last().filter(|t| t.tag == 0x04)?.content;
        out.push(Extension {
            oid,
            critical,
            value,
        });
    }
    Some(out)
}

/// IssuingDistributionPoint (RFC 5280 §5.2.5): does this CRL's scope
/// include `cert`?
fn idp_covers(value: &[u8], cert: &X509) -> bool {
    let Some((idp, _)) = der::read(value) else {
        return false;
    };
    if idp.tag != 0x30 {
        return false;
    }
    let is_ca = cert_is_ca(cert);
    let own_points = distribution_points(cert);
    for field in idp.children() {
        let flag = || field.content.first().is_some_and(|b| *b != 0);
        match field.tag {
            // distributionPoint [0] → fullName [0] GeneralNames; must name
            // one of the certificate's own distribution points
            0xa0 => {
                let Some(full) = field.children().find(|t| t.tag == 0xa0) else {
                    return false; // nameRelativeToCRLIssuer: not supported
                };
                let names: Vec<String> = full
                    .children()
                    .filter(|n| n.tag == 0x86)
                    .map(|n| String::from_utf8_lossy(n.content).into_owned())
                    .collect();
                if !names.iter().any(|n| own_points.contains(n)) {
                    return false;
                }
            }
            0x81 if flag() && is_ca => return false, // onlyContainsUserCerts
            0x82 if flag() && !is_ca => return false, // onlyContainsCACerts
            0x83 => return false,                    // onlySomeReasons
            0x84 if flag() => return false,          // indirectCRL
            0x85 if flag() => return false,          // onlyContainsAttributeCerts
            _ => {}
        }
    }
    true
}

fn cert_is_ca(cert: &X509) -> bool {
    cert.key_usage()
        .is_some_and(|ku| ku.contains(openssl::x509::X509KeyUsage::KEY_CERT_SIGN))
}

fn self_signed(cert: &X509) -> bool {
    cert.issued(cert) == X509VerifyResult::OK
        && cert
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false)
}

fn is_issuer(candidate: &X509, cert: &X509) -> bool {
    candidate.issued(cert) == X509VerifyResult::OK
        && candidate
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false)
}

fn unix_of(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(t))
        .map(|d| i64::from(d.days) * 86_400 + i64::from(d.secs))
        .unwrap_or(0)
}

fn serial_hex(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn subject_line(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            e.data().to_string().ok().map(|v| format!("{key}={v}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
