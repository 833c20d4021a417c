//! The GINA container: the whole original mail, encrypted under a fresh
//! random 256-bit content key.
//!
//! Wire format (version 1), all of it base64-embedded in the HTML file:
//!
//! ```text
//! "SGNA" ‖ version (1) ‖ header length (u16 BE) ‖ header (JSON) ‖
//! nonce prefix (7) ‖ segment₀ ‖ … ‖ segmentₙ
//! ```
//!
//! Segments follow the STREAM construction (Hoang, Reyhanitabar, Rogaway,
//! Vizár 2015): the plaintext is cut into 64 KiB pieces, each sealed with
//! AES-256-GCM under the content key with the nonce `prefix ‖ counter (u32
//! BE) ‖ last flag (1 byte)`, so a piece cannot be moved, repeated, dropped
//! or the stream cut at a segment boundary without detection, and neither
//! the sealer nor the opener ever holds more than one segment. Every segment
//! carries SHA-256 of the raw header bytes as associated data, which
//! authenticates the header (container id, recipient, times, length) as a
//! whole: change the recipient and nothing opens. The header states the
//! plaintext length, so a cut anywhere is [`OpenError::Truncated`], not a
//! vague authentication failure; and a key check value (HMAC of the id under
//! the key) tells a wrong key ([`OpenError::WrongKey`]) from tampering
//! before 50 MB are decrypted.

use std::fmt;
use std::io::{Read, Write};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use siegel_types::Address;
use zeroize::Zeroizing;

/// Plaintext bytes per segment.
pub const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
const MAGIC: &[u8; 4] = b"SGNA";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
const PREFIX: usize = 7;
/// Headers are small (an id, an address, three numbers); anything larger is
/// not ours and is refused before it is parsed.
const MAX_HEADER: usize = 4096;

/// A container's identity: 128 random bits, shown as 32 lower-case hex
/// digits. It names the key in the store and appears in the portal's logs;
/// it says nothing about the mail.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    /// A fresh random id.
    pub fn generate() -> Result<Self, SealError> {
        let mut b = [0u8; 16];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| SealError::Random)?;
        Ok(Self(hex(&b)))
    }

    /// Parses the hex form; anything else is refused.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(text.to_owned()))
    }

    /// The hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContainerId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("`{s}` is not a container id"))
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> String {
        id.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContainerId({})", self.0)
    }
}

/// The 256-bit content key of one container. Zeroed on drop; `Debug` does
/// not show it. The gateway stores it sealed under the master key; deleting
/// that row makes every copy of the container unreadable.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentKey(Zeroizing<[u8; 32]>);

impl ContentKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, SealError> {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(k.as_mut())
            .map_err(|_| SealError::Random)?;
        Ok(Self(k))
    }

    /// A key from its 32 bytes (read back from the store).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// The raw bytes, to seal them into the store. Named so every use
    /// stands out in review.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is always accepted by AES-256-GCM.
        #[allow(clippy::expect_used)]
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("32-byte key"))
    }

    /// HMAC-SHA256(key, label ‖ id), first 16 bytes, as hex: lets the opener
    /// recognise a wrong key without revealing anything about the key.
    fn check_value(&self, id: &ContainerId) -> String {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_ref());
        let mut ctx = ring::hmac::Context::with_key(&k);
        ctx.update(b"siegel gina key check v1\0");
        ctx.update(id.as_str().as_bytes());
        hex(&ctx.sign().as_ref()[..16])
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey(<redacted>)")
    }
}

/// What the container says about itself, in clear (authenticated, not
/// secret): anyone holding the file can read it, and the carrier mail shows
/// the same recipient anyway. The subject and everything else of the mail is
/// inside the encrypted part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Container id (names the key in the store).
    pub id: ContainerId,
    /// The only address whose account may open it.
    pub recipient: String,
    /// The internal domain whose theme the portal shows for it.
    pub theme: String,
    /// When it was sealed, Unix seconds.
    pub created: i64,
    /// When it stops opening, Unix seconds.
    pub expires: i64,
    /// Plaintext length in bytes.
    pub length: u64,
    /// Key check value (see [`ContentKey`]).
    pub kcv: String,
}

/// A sealed container's identity and key: what the gateway stores (key
/// sealed under the master key) while the bytes go to the recipient.
#[derive(Debug, Clone)]
pub struct SealedContainer {
    /// The header written into the container.
    pub header: Header,
    /// The content key.
    pub key: ContentKey,
}

/// Sealing failed. None of these is caused by the mail's content.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The system random generator failed; nothing was written.
    #[error("the system random generator failed")]
    Random,
    /// The plaintext was not as long as announced (the source changed while
    /// it was read).
    #[error("plaintext is {got} bytes, {announced} were announced")]
    LengthMismatch {
        /// Length given to the sealer.
        announced: u64,
        /// Bytes actually read.
        got: u64,
    },
    /// Reading the plaintext or writing the container failed.
    #[error("i/o while sealing: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a container did not open. Each case gets its own page in the portal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not a GINA container at all (wrong magic, not base64, cut before the
    /// header ended, header not JSON).
    #[error("not a GINA container: {0}")]
    Malformed(String),
    /// A container of a format version this program does not know.
    #[error("container format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The container is addressed to someone else.
    #[error("container is addressed to {addressed}, not to {asked}")]
    WrongRecipient {
        /// The recipient in the container's header.
        addressed: String,
        /// Who tried to open it.
        asked: String,
    },
    /// The key given does not belong to this container.
    #[error("the key does not belong to this container")]
    WrongKey,
    /// Some byte of header or content was changed: authentication failed.
    #[error("the container was modified (authentication failed in segment {segment})")]
    Tampered {
        /// The segment where authentication failed (0-based).
        segment: u64,
    },
    /// The container ends early: it was cut (e.g. by a size limit).
    #[error("the container is truncated: {got} of {expected} plaintext bytes present")]
    Truncated {
        /// Plaintext bytes the header announces.
        expected: u64,
        /// Plaintext bytes that could be present in what arrived.
        got: u64,
    },
    /// Bytes follow the last segment.
    #[error("data after the end of the container")]
    TrailingData,
    /// Writing the plaintext failed.
    #[error("i/o while opening: {0}")]
    Io(String),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sealed size of `length` plaintext bytes, without the fixed header part.
fn sealed_body_len(length: u64) -> u64 {
    let segments = length.div_ceil(SEGMENT as u64).max(1);
    PREFIX as u64 + length + segments * TAG as u64
}

fn nonce(prefix: &[u8; PREFIX], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 4].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn header_digest(raw: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, raw);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What the sealer needs to know about a container besides the mail.
#[derive(Debug, Clone)]
pub struct SealParams<'a> {
    /// The one recipient who may open it.
    pub recipient: &'a Address,
    /// The sender's internal domain (selects the theme).
    pub theme: &'a str,
    /// Now, Unix seconds (injectable for tests).
    pub now: i64,
    /// Expiry, Unix seconds.
    pub expires: i64,
}

/// Seals `length` bytes read from `plaintext` into `out`, one segment at a
/// time. Returns the id, header and key to store.
pub fn seal(
    params: &SealParams<'_>,
    mut plaintext: impl Read,
    length: u64,
    mut out: impl Write,
) -> Result<SealedContainer, SealError> {
    let id = ContainerId::generate()?;
    let key = ContentKey::generate()?;
    let header = Header {
        kcv: key.check_value(&id),
        id,
        recipient: params.recipient.as_str().to_owned(),
        theme: params.theme.to_owned(),
        created: params.now,
        expires: params.expires,
        length,
    };
    // Serialising a struct of strings and integers cannot fail.
    let raw = serde_json::to_vec(&header).map_err(|e| SealError::Io(std::io::Error::other(e)))?;
    let mut prefix = [0u8; PREFIX];
    SystemRandom::new()
        .fill(&mut prefix)
        .map_err(|_| SealError::Random)?;
    out.write_all(MAGIC)?;
    out.write_all(&[VERSION])?;
    out.write_all(&(raw.len() as u16).to_be_bytes())?;
    out.write_all(&raw)?;
    out.write_all(&prefix)?;
    let aad = header_digest(&raw);
    let aead = key.aead();
    let mut buf = Zeroizing::new(Vec::with_capacity(SEGMENT + TAG));
    let mut done = 0u64;
    let mut counter = 0u32;
    loop {
        let want = (length - done).min(SEGMENT as u64) as usize;
        buf.clear();
        buf.resize(want, 0);
        plaintext.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                SealError::LengthMismatch {
                    announced: length,
                    got: done,
                }
            } else {
                SealError::Io(e)
            }
        })?;
        done += want as u64;
        let last = done == length;
        aead.seal_in_place_append_tag(nonce(&prefix, counter, last), Aad::from(aad), &mut *buf)
            .map_err(|_| SealError::Io(std::io::Error::other("AES-GCM refused to seal")))?;
        out.write_all(&buf)?;
        if last {
            break;
        }
        counter = counter
            .checked_add(1)
            .ok_or_else(|| SealError::Io(std::io::Error::other("container too large")))?;
    }
    let mut probe = [0u8; 1];
    if plaintext.read(&mut probe)? != 0 {
        return Err(SealError::LengthMismatch {
            announced: length,
            got: length + 1,
        });
    }
    out.flush()?;
    Ok(SealedContainer { header, key })
}

/// Seals a mail held in memory; returns the container bytes too.
pub fn seal_bytes(
    params: &SealParams<'_>,
    plaintext: &[u8],
) -> Result<(SealedContainer, Vec<u8>), SealError> {
    let mut out = Vec::with_capacity(plaintext.len() + plaintext.len() / 1000 + 256);
    let sealed = seal(params, plaintext, plaintext.len() as u64, &mut out)?;
    Ok((sealed, out))
}

/// A container whose header has been read and checked for form, ready to
/// be opened with its key. The portal reads the header first to find the key
/// (by id) and to check the recipient, then opens.
#[derive(Debug)]
pub struct Parsed<'a> {
    header: Header,
    raw_header: &'a [u8],
    body: &'a [u8],
}

/// Reads the header of a container held in memory. Nothing is decrypted.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, OpenError> {
    let malformed = |m: &str| OpenError::Malformed(m.to_owned());
    if bytes.len() < 7 || &bytes[..4] != MAGIC {
        return Err(malformed("no GINA container signature"));
    }
    if bytes[4] != VERSION {
        return Err(OpenError::UnsupportedVersion(bytes[4]));
    }
    let hlen = u16::from_be_bytes([bytes[5], bytes[6]]) as usize;
    if hlen > MAX_HEADER {
        return Err(malformed("header too long"));
    }
    let raw_header = bytes
        .get(7..7 + hlen)
        .ok_or_else(|| malformed("cut inside the header"))?;
    let header: Header = serde_json::from_slice(raw_header)
        .map_err(|e| OpenError::Malformed(format!("header: {e}")))?;
    Ok(Parsed {
        header,
        raw_header,
        body: &bytes[7 + hlen..],
    })
}

impl Parsed<'_> {
    /// The (not yet authenticated) header: trust it for finding the key,
    /// nothing else, until [`Parsed::open`] succeeded.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Checks recipient and key, then decrypts into `out` segment by
    /// segment. On an error `out` may hold a prefix of the plaintext that is
    /// *not* authenticated as a whole; callers writing to memory discard it.
    pub fn open_to(
        &self,
        key: &ContentKey,
        recipient: &Address,
        mut out: impl Write,
    ) -> Result<(), OpenError> {
        if self.header.recipient != recipient.as_str() {
            return Err(OpenError::WrongRecipient {
                addressed: self.header.recipient.clone(),
                asked: recipient.as_str().to_owned(),
            });
        }
        let kcv = key.check_value(&self.header.id);
        if !ring_eq(kcv.as_bytes(), self.header.kcv.as_bytes()) {
            return Err(OpenError::WrongKey);
        }
        let length = self.header.length;
        let expected = sealed_body_len(length);
        let present = self.body.len() as u64;
        if present < expected {
            // Plaintext bytes that fit in what arrived, for the message.
            let got = present
                .saturating_sub(PREFIX as u64)
                .saturating_sub(present.div_ceil((SEGMENT + TAG) as u64) * TAG as u64);
            return Err(OpenError::Truncated {
                expected: length,
                got: got.min(length),
            });
        }
        if present > expected {
            return Err(OpenError::TrailingData);
        }
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&self.body[..PREFIX]);
        let aad = header_digest(self.raw_header);
        let aead = key.aead();
        let mut rest = &self.body[PREFIX..];
        let mut counter = 0u32;
        let mut buf = Zeroizing::new(Vec::with_capacity(SEGMENT + TAG));
        loop {
            let take = rest.len().min(SEGMENT + TAG);
            let last = take == rest.len();
            buf.clear();
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let plain = aead
                .open_in_place(nonce(&prefix, counter, last), Aad::from(aad), &mut buf)
                .map_err(|_| OpenError::Tampered {
                    segment: u64::from(counter),
                })?;
            out.write_all(plain)
                .map_err(|e| OpenError::Io(e.to_string()))?;
            if last {
                return Ok(());
            }
            counter = counter.checked_add(1).ok_or(OpenError::TrailingData)?;
        }
    }

    /// Opens into memory. The result is returned only when every segment
    /// authenticated.
    pub fn open(&self, key: &ContentKey, recipient: &Address) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::with_capacity(self.header.length.min(256 << 20) as usize);
        self.open_to(key, recipient, &mut out)?;
        Ok(out)
    }
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    // Branch-free over the bytes: the check value must not leak by timing.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn params(r: &Address) -> SealParams<'_> {
        SealParams {
            recipient: r,
            theme: "example.com",
            now: 1_700_000_000,
            expires: 1_700_000_000 + 86_400,
        }
    }

    #[test]
    fn round_trip_at_every_interesting_length() {
        let r = addr("bob@partner.example");
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let (sealed, bytes) = seal_bytes(&params(&r), &plain).unwrap();
            assert_eq!(
                bytes.len() as u64,
                7 + serde_json::to_vec(&sealed.header).unwrap().len() as u64
                    + sealed_body_len(len as u64)
            );
            let parsed = parse(&bytes).unwrap();
            assert_eq!(parsed.header(), &sealed.header);
            assert_eq!(parsed.open(&sealed.key, &r).unwrap(), plain, "length {len}");
        }
    }

    #[test]
    fn fresh_key_and_id_per_container() {
        let r = addr("bob@partner.example");
        let (a, ab) = seal_bytes(&params(&r), b"same").unwrap();
        let (b, bb) = seal_bytes(&params(&r), b"same").unwrap();
        assert_ne!(a.header.id, b.header.id);
        assert_ne!(a.key, b.key);
        assert_ne!(ab, bb);
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let r = addr("bob@partner.example");
        let plain = vec![b'x'; 2 * SEGMENT + 100];
        let (sealed, bytes) = seal_bytes(&params(&r), &plain).unwrap();

        // Wrong recipient.
        let eve = addr("eve@partner.example");
        assert!(matches!(
            parse(&bytes).unwrap().open(&sealed.key, &eve),
            Err(OpenError::WrongRecipient { .. })
        ));
        // Wrong key.
        let other = ContentKey::generate().unwrap();
        assert_eq!(
            parse(&bytes).unwrap().open(&other, &r),
            Err(OpenError::WrongKey)
        );
        // A flipped bit in every region after the header.
        let body_start = bytes.len() - sealed_body_len(plain.len() as u64) as usize;
        for pos in [
            body_start + 2,
            body_start + 10,
            body_start + SEGMENT + 40,
            bytes.len() - 1,
        ] {
            let mut t = bytes.clone();
            t[pos] ^= 0x01;
            assert!(
                matches!(
                    parse(&t).unwrap().open(&sealed.key, &r),
                    Err(OpenError::Tampered { .. })
                ),
                "flip at {pos}"
            );
        }
        // Truncated: inside a segment and exactly at a segment boundary.
        for cut in [
            bytes.len() - 1,
            body_start + PREFIX + SEGMENT + TAG,
            body_start + 3,
        ] {
            assert!(
                matches!(
                    parse(&bytes[..cut]).unwrap().open(&sealed.key, &r),
                    Err(OpenError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        // Trailing data.
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            parse(&longer).unwrap().open(&sealed.key, &r),
            Err(OpenError::TrailingData)
        );
        // Not a container; unknown version.
        assert!(matches!(parse(b"<html>"), Err(OpenError::Malformed(_))));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(parse(&v2).unwrap_err(), OpenError::UnsupportedVersion(2));
    }

    #[test]
    fn header_is_authenticated() {
        let r = addr("bob@partner.example");
        let eve = addr("eve@partner.example");
        let (sealed, bytes) = seal_bytes(&params(&r), b"hello").unwrap();
        // Re-address the container to eve (same length) and keep the key:
        // the header digest no longer matches.
        let raw = serde_json::to_vec(&sealed.header).unwrap();
        let mut h = sealed.header.clone();
        h.recipient = eve.as_str().to_owned();
        let new_raw = serde_json::to_vec(&h).unwrap();
        assert_eq!(raw.len(), new_raw.len());
        let mut t = bytes.clone();
        t[7..7 + raw.len()].copy_from_slice(&new_raw);
        assert_eq!(
            parse(&t).unwrap().open(&sealed.key, &eve),
            Err(OpenError::Tampered { segment: 0 })
        );
        // Extending the expiry is detected the same way.
        let mut h = sealed.header.clone();
        h.expires += 9;
        let new_raw = serde_json::to_vec(&h).unwrap();
        let mut t = bytes[..5].to_vec();
        t.extend_from_slice(&(new_raw.len() as u16).to_be_bytes());
        t.extend_from_slice(&new_raw);
        t.extend_from_slice(&bytes[7 + raw.len()..]);
        assert_eq!(
            parse(&t).unwrap().open(&sealed.key, &r),
            Err(OpenError::Tampered { segment: 0 })
        );
    }

    #[test]
    fn announced_length_must_match() {
        let r = addr("bob@partner.example");
        let mut out = Vec::new();
        assert!(matches!(
            seal(&params(&r), &b"abc"[..], 4, &mut out),
            Err(SealError::LengthMismatch { .. })
        ));
        assert!(matches!(
            seal(&params(&r), &b"abcde"[..], 4, &mut out),
            Err(SealError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn ids_parse_only_in_their_own_form() {
        let id = ContainerId::generate().unwrap();
        assert_eq!(ContainerId::parse(id.as_str()), Some(id));
        assert_eq!(ContainerId::parse("../../etc/passwd"), None);
        assert_eq!(ContainerId::parse(&"A".repeat(32)), None);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let r = addr("bob@partner.example");
            let key = ContentKey::from_bytes(&[7u8; 32]).unwrap();
            if let Ok(p) = parse(&data) {
                let _ = p.open(&key, &r);
            }
            let mut with_magic = b"SGNA\x01".to_vec();
            with_magic.extend_from_slice(&data);
            if let Ok(p) = parse(&with_magic) {
                let _ = p.open(&key, &r);
            }
        }
    }
}
