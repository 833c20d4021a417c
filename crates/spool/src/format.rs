//! The data file: one file per mail holding the content, then the envelope
//! as JSON, then a fixed-size footer.
//!
//! ```text
//! +----------------------+---------------------+--------------------------------------+
//! | content (N octets)   | envelope JSON (J)   | "SIEGELQ1" | N (u64 LE) | J (u64 LE)  |
//! +----------------------+---------------------+--------------------------------------+
//! ```
//!
//! Why a footer and not a header: the content streams in before the envelope
//! is final (its size is only known at the end), so the envelope is written
//! last and a reader finds it by seeking to the end. The footer's lengths must
//! add up to the file size exactly, so a truncated or appended-to file is
//! recognised as corrupt instead of being read with a wrong boundary.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use siegel_types::Envelope;

use crate::SpoolError;

/// Marks a complete data file, and the format version.
pub(crate) const MAGIC: &[u8; 8] = b"SIEGELQ1";
/// Size of the footer in octets.
pub(crate) const FOOTER_LEN: u64 = 24;
/// An envelope larger than this is treated as damage, not allocated: even
/// 10,000 recipients with DSN parameters stay far below it.
const MAX_ENVELOPE_JSON: u64 = 64 * 1024 * 1024;

/// The footer for a content of `content_len` octets and an envelope JSON of `json_len`.
pub(crate) fn footer(content_len: u64, json_len: u64) -> [u8; FOOTER_LEN as usize] {
    let mut out = [0u8; FOOTER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&content_len.to_le_bytes());
    out[16..24].copy_from_slice(&json_len.to_le_bytes());
    out
}

/// Reads and checks the footer and the envelope of an open data file.
/// Returns the envelope and the content length; the file position is
/// unspecified afterwards.
pub(crate) fn read_envelope(file: &mut File, path: &Path) -> Result<(Envelope, u64), SpoolError> {
    let io = |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let total = file.metadata().map_err(io)?.len();
    if total < FOOTER_LEN {
        return Err(corrupt(format!(
            "{total} octets is shorter than the footer"
        )));
    }
    let mut foot = [0u8; FOOTER_LEN as usize];
    file.seek(SeekFrom::Start(total - FOOTER_LEN)).map_err(io)?;
    file.read_exact(&mut foot).map_err(io)?;
    if &foot[..8] != MAGIC {
        return Err(corrupt(
            "footer magic missing (truncated or not a spool file)".into(),
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&foot[8..16]);
    let content_len = u64::from_le_bytes(n);
    n.copy_from_slice(&foot[16..24]);
    let json_len = u64::from_le_bytes(n);
    let expected = content_len
        .checked_add(json_len)
        .and_then(|s| s.checked_add(FOOTER_LEN));
    if expected != Some(total) {
        return Err(corrupt(format!(
            "footer says {content_len} + {json_len} + {FOOTER_LEN} octets, file has {total}"
        )));
    }
    if json_len > MAX_ENVELOPE_JSON {
        return Err(corrupt(format!(
            "envelope of {json_len} octets is implausibly large"
        )));
    }
    file.seek(SeekFrom::Start(content_len)).map_err(io)?;
    let mut json = Vec::new();
    file.take(json_len).read_to_end(&mut json).map_err(io)?;
    let envelope: Envelope =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("envelope JSON: {e}")))?;
    if envelope.size != content_len {
        return Err(corrupt(format!(
            "envelope size {} differs from stored content length {content_len}",
            envelope.size
        )));
    }
    Ok((envelope, content_len))
}
