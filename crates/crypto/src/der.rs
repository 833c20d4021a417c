//! The few DER structures the `openssl` crate has no API for.
//!
//! Writing: CRL distribution points, certificate policies and the CMS
//! SignedData of our signatures (the crate cannot add signed attributes such
//! as our own SMIMECapabilities). Hand-encoding them keeps us off OpenSSL's
//! deprecated string mini-language (`X509Extension::new_nid`), which can read
//! files and must never see caller-supplied text.
//!
//! Reading: the signed attributes of a verified signature and the extensions
//! of a CRL. The reader accepts BER's indefinite lengths because NSS
//! (Thunderbird) and Outlook send their SignedData that way; it is bounded
//! (nesting depth, no allocation per element) and returns `None` on anything
//! it does not understand instead of guessing.

/// One DER TLV with a definite length.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `CRLDistributionPoints` with one distribution point holding one URI
/// (RFC 5280 §4.2.1.13).
pub(crate) fn crl_distribution_points(uri: &str) -> Vec<u8> {
    // GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
    let general_name = tlv(0x86, uri.as_bytes());
    // fullName [0] IMPLICIT GeneralNames
    let full_name = tlv(0xa0, &general_name);
    // distributionPoint [0] DistributionPointName (a CHOICE, so explicit)
    let dp_name = tlv(0xa0, &full_name);
    let point = tlv(0x30, &dp_name);
    tlv(0x30, &point)
}

/// `certificatePolicies` with one policy OID and no qualifiers.
/// `oid` is the DER content of the OBJECT IDENTIFIER.
pub(crate) fn certificate_policies(oid: &[u8]) -> Vec<u8> {
    let info = tlv(0x30, &tlv(0x06, oid));
    tlv(0x30, &info)
}

/// OBJECT IDENTIFIER content bytes from a dotted string; `None` when it is
/// not a valid OID. Only called with our own constants.
pub(crate) fn oid(dotted: &str) -> Option<Vec<u8>> {
    let arcs: Vec<u64> = dotted
        .split('.')
        .map(|a| a.parse().ok())
        .collect::<Option<_>>()?;
    let (&first, &second) = (arcs.first()?, arcs.get(1)?);
    if first > 2 || (first < 2 && second >= 40) {
        return None;
    }
    let mut out = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        out.extend(tmp.iter().rev());
    };
    push(first.checked_mul(40)?.checked_add(second)?);
    for &a in &arcs[2..] {
        push(a);
    }
    Some(out)
}

/// Dotted text of OBJECT IDENTIFIER content bytes; `None` when malformed.
pub(crate) fn oid_text(content: &[u8]) -> Option<String> {
    if content.is_empty() || content.len() > 64 || content.last()? & 0x80 != 0 {
        return None;
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for &b in content {
        v = v.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(v);
            v = 0;
        }
    }
    let first = arcs.first().copied()?;
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in &arcs[1..] {
        text.push('.');
        text.push_str(&arc.to_string());
    }
    Some(text)
}

/// Nesting deeper than this is refused: CMS and CRLs nest about ten
/// levels, a hostile input could nest thousands.
const MAX_NESTING: usize = 64;

/// One element as read: its identifier octet, its content and the whole
/// encoding (identifier, length, content and, for an indefinite length,
/// the end-of-contents octets).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet (class, constructed bit, tag number). Tag
    /// numbers above 30 (multi-octet identifiers) are read past, and show
    /// here as their first octet.
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// The elements inside a constructed element.
    pub fn children(&self) -> Children<'a> {
        Children {
            rest: if self.tag & 0x20 != 0 {
                self.content
            } else {
                &[]
            },
            depth: 1,
        }
    }

    /// Children as a vector, or `None` when one of them is malformed.
    pub fn child_vec(&self) -> Option<Vec<Tlv<'a>>> {
        let mut out = Vec::new();
        let mut it = self.children();
        while !it.rest.is_empty() {
            out.push(it.next()?);
        }
        Some(out)
    }
}

/// Iterator over the elements of a constructed element's content; stops
/// (yields `None`) at the end or at the first malformed element.
pub(crate) struct Children<'a> {
    rest: &'a [u8],
    depth: usize,
}

impl<'a> Iterator for Children<'a> {
    type Item = Tlv<'a>;
    fn next(&mut self) -> Option<Tlv<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        match read_at(self.rest, self.depth) {
            Some((tlv, rest)) => {
                self.rest = rest;
                Some(tlv)
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

/// Reads one element from the start of `input`; returns it and the rest.
pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    read_at(input, 0)
}

fn read_at(input: &[u8], depth: usize) -> Option<(Tlv<'_>, &[u8])> {
    if depth > MAX_NESTING {
        return None;
    }
    let tag = *input.first()?;
    let mut pos = 1;
    if tag & 0x1f == 0x1f {
        // high tag number: base-128 octets, the last without the high bit
        loop {
            let b = *input.get(pos)?;
            pos += 1;
            if b & 0x80 == 0 {
                break;
            }
            if pos > 6 {
                return None;
            }
        }
    }
    let first = *input.get(pos)?;
    pos += 1;
    if first == 0x80 {
        // indefinite length (BER): constructed only, ends with 00 00
        if tag & 0x20 == 0 {
            return None;
        }
        let start = pos;
        loop {
            let rest = input.get(pos..)?;
            if rest.starts_with(&[0, 0]) {
                let content = &input[start..pos];
                let end = pos + 2;
                return Some((
                    Tlv {
                        tag,
                        content,
                        raw: &input[..end],
                    },
                    &input[end..],
                ));
            }
            let (child, _) = read_at(rest, depth + 1)?;
            pos += child.raw.len();
        }
    }
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > std::mem::size_of::<usize>() || n == 0x7f {
            return None;
        }
        let mut len = 0usize;
        for _ in 0..n {
            len = len.checked_mul(256)? | usize::from(*input.get(pos)?);
            pos += 1;
        }
        len
    };
    let end = pos.checked_add(len)?;
    let content = input.get(pos..end)?;
    Some((
        Tlv {
            tag,
            content,
            raw: &input[..end],
        },
        &input[end..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_use_the_long_form() {
        let content = vec![0u8; 300];
        let enc = tlv(0x04, &content);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(enc.len(), 304);
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
    }

    #[test]
    fn crl_distribution_point_matches_openssl_encoding() {
        // Same value that `openssl req -addext crlDistributionPoints=URI:http://a/c`
        // produces: 30 0e 30 0c a0 0a a0 08 86 06 "http://a/c"[..6]
        let der = crl_distribution_points("http:/");
        assert_eq!(
            der,
            vec![
                0x30, 0x0e, 0x30, 0x0c, 0xa0, 0x0a, 0xa0, 0x08, 0x86, 0x06, b'h', b't', b't', b'p',
                b':', b'/'
            ]
        );
    }

    #[test]
    fn reader_follows_definite_and_indefinite_lengths() {
        // SEQUENCE (indefinite) { INTEGER 5, SEQUENCE { NULL } } followed by 0x01
        let data = [
            0x30, 0x80, 0x02, 0x01, 0x05, 0x30, 0x02, 0x05, 0x00, 0, 0, 0x01,
        ];
        let (seq, rest) = read(&data).unwrap();
        assert_eq!(rest, &[0x01]);
        assert_eq!(seq.raw.len(), 11);
        let kids = seq.child_vec().unwrap();
        assert_eq!(kids.len(), 2);
        assert_eq!((kids[0].tag, kids[0].content), (0x02, &[5u8][..]));
        assert_eq!(kids[1].child_vec().unwrap()[0].tag, 0x05);
        // long-form length
        let long = tlv(0x04, &[7u8; 300]);
        let (os, rest) = read(&long).unwrap();
        assert!(rest.is_empty());
        assert_eq!(os.content.len(), 300);
    }

    #[test]
    fn reader_refuses_truncation_and_absurd_nesting() {
        assert!(read(&[]).is_none());
        assert!(read(&[0x30]).is_none());
        assert!(read(&[0x30, 0x05, 0x02]).is_none());
        assert!(read(&[0x30, 0x80, 0x02, 0x01, 0x05]).is_none()); // no end-of-contents
        assert!(read(&[0x04, 0x80, 0, 0]).is_none()); // indefinite primitive
        assert!(read(&[0x04, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1]).is_none());
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 10_000)
            .flatten()
            .collect();
        assert!(read(&deep).is_none());
        // a malformed child ends the iteration instead of yielding garbage
        let bad = [0x30, 0x04, 0x02, 0x01, 0x05, 0x02];
        let (seq, _) = read(&bad).unwrap();
        assert!(seq.child_vec().is_none());
    }

    #[test]
    fn oids_round_trip() {
        for text in [
            "1.2.840.113549.1.9.15",
            "2.16.840.1.101.3.4.1.46",
            "2.5.29.31",
            "2.999.3",
        ] {
            let bytes = oid(text).unwrap();
            assert_eq!(oid_text(&bytes).unwrap(), text);
        }
        assert_eq!(
            oid("1.2.840.113549").unwrap(),
            vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
        );
        assert!(oid("3.1").is_none());
        assert!(oid_text(&[0x2a, 0x86]).is_none());
    }
}
