//! The mail as the stages have left it so far.
//!
//! A mail starts as its spool file: the header section read into memory
//! (bounded by [`crate::MAX_HEADER_BLOCK`]), the body left on disk. Stages
//! that only edit header fields (the policy's subject keyword, spoofed
//! `X-Siegel-*` fields, stamps) replace the header section and the body
//! stays on disk; a copy is then written by streaming the new header and
//! the original body. Only a stage that must see or change the whole mail
//! (decrypting, verifying, signing, encrypting) loads it, and only up to
//! [`MAX_WHOLE`]: a larger mail is never held in memory.

use siegel_spool::Spool;
use siegel_types::QueueId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use crate::PipelineError;

/// Mails larger than this are not loaded whole (they pass the stages that
/// need the whole mail with a note, and a copy that must be encrypted is
/// held rather than sent unprotected).
pub const MAX_WHOLE: usize = 64 * 1024 * 1024;

/// The current content of one mail.
pub struct Content {
    header: Vec<u8>,
    body: Body,
    modified: bool,
}

enum Body {
    /// The rest of the spool file from `offset` (where its header section
    /// ended; the empty line is part of the body) to `len`.
    Spool {
        spool: Spool,
        id: QueueId,
        offset: u64,
        len: u64,
    },
    /// The rest of the mail in memory (starting with the empty line).
    Memory(Vec<u8>),
}

/// Why the whole mail could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Larger than [`MAX_WHOLE`].
    #[error("the mail is too large to be processed whole ({len} octets, at most {max})")]
    TooLarge { len: u64, max: usize },
    /// Reading the spool file failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl Content {
    /// The mail in spool entry `id`, whose stored header section is `header`
    /// (as [`crate::read_header_block`] returns it) and whose content file
    /// has `len` octets.
    pub fn from_spool(spool: Spool, id: QueueId, header: Vec<u8>, len: u64) -> Self {
        let offset = (header.len() as u64).min(len);
        Self {
            header,
            body: Body::Spool {
                spool,
                id,
                offset,
                len,
            },
            modified: false,
        }
    }

    /// A mail held in memory (tests, mails the gateway makes itself).
    pub fn from_bytes(whole: Vec<u8>) -> Self {
        let mut c = Self {
            header: Vec::new(),
            body: Body::Memory(Vec::new()),
            modified: false,
        };
        c.set_whole(whole);
        c.modified = false;
        c
    }

    /// The header section: the header fields with the CRLF that ends the
    /// last one, without the empty line.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Replaces the header section (the body is kept as it is).
    pub fn set_header(&mut self, header: Vec<u8>) {
        if header != self.header {
            self.header = header;
            self.modified = true;
        }
    }

    /// Adds header fields in front of the header section (each must end
    /// with CRLF). Stamps go here so that they are above any field of the
    /// same name that a client might read first.
    pub fn prepend_header(&mut self, fields: &[u8]) {
        if fields.is_empty() {
            return;
        }
        let mut h = Vec::with_capacity(fields.len() + self.header.len());
        h.extend_from_slice(fields);
        h.extend_from_slice(&self.header);
        self.header = h;
        self.modified = true;
    }

    /// Replaces the whole mail (a decrypted or signed version).
    pub fn replace(&mut self, whole: Vec<u8>) {
        self.set_whole(whole);
        self.modified = true;
    }

    fn set_whole(&mut self, mut whole: Vec<u8>) {
        let end = crate::header_end(&whole[..whole.len().min(crate::MAX_HEADER_BLOCK)]);
        let body = whole.split_off(end);
        self.header = whole;
        self.body = Body::Memory(body);
    }

    /// Whether any stage changed the mail.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The size of the mail in octets.
    pub fn len(&self) -> u64 {
        self.header.len() as u64
            + match &self.body {
                Body::Spool { offset, len, .. } => len - offset,
                Body::Memory(b) => b.len() as u64,
            }
    }

    /// Whether the mail is empty (no header and no body).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`Content::whole`] would fit in memory.
    pub fn fits_whole(&self) -> bool {
        usize::try_from(self.len()).is_ok_and(|l| l <= MAX_WHOLE)
    }

    /// The whole mail in memory, loading the body from the spool the first
    /// time. Refused above [`MAX_WHOLE`].
    pub async fn whole(&mut self) -> Result<Vec<u8>, ContentError> {
        let len = self.len();
        if !self.fits_whole() {
            return Err(ContentError::TooLarge {
                len,
                max: MAX_WHOLE,
            });
        }
        if let Body::Spool { .. } = &self.body {
            let mut body = Vec::new();
            self.body_reader()
                .await?
                .read_to_end(&mut body)
                .await
                .map_err(|source| PipelineError::Read {
                    id: self.spool_id().cloned().unwrap_or_else(QueueId::generate),
                    source,
                })?;
            self.body = Body::Memory(body);
        }
        let Body::Memory(body) = &self.body else {
            unreachable!("the body was just loaded")
        };
        let mut out = Vec::with_capacity(self.header.len() + body.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(body);
        Ok(out)
    }

    fn spool_id(&self) -> Option<&QueueId> {
        match &self.body {
            Body::Spool { id, .. } => Some(id),
            Body::Memory(_) => None,
        }
    }

    async fn body_reader(&self) -> Result<Box<dyn AsyncRead + Unpin + Send + Sync>, PipelineError> {
        match &self.body {
            Body::Spool {
                spool,
                id,
                offset,
                len,
            } => {
                let (mut file, file_len) = spool.open_content(id).await?;
                let start = (*offset).min(file_len);
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|source| PipelineError::Read {
                        id: id.clone(),
                        source,
                    })?;
                Ok(Box::new(file.take(len.min(&file_len) - start)))
            }
            Body::Memory(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
        }
    }

    /// The whole mail as a stream: the header section from memory, then
    /// the body (from the spool file unless a stage loaded it).
    pub async fn reader(
        &self,
    ) -> Result<impl AsyncRead + Unpin + Send + Sync + use<>, PipelineError> {
        let body = self.body_reader().await?;
        Ok(std::io::Cursor::new(self.header.clone()).chain(body))
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("header_len", &self.header.len())
            .field("len", &self.len())
            .field("in_memory", &matches!(self.body, Body::Memory(_)))
            .field("modified", &self.modified)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn header_edits_keep_the_body_and_whole_joins_them() {
        let mut c = Content::from_bytes(b"A: 1\r\nB: 2\r\n\r\nbody\r\n".to_vec());
        assert_eq!(c.header(), b"A: 1\r\nB: 2\r\n");
        assert!(!c.is_modified());
        c.prepend_header(b"X: 0\r\n");
        assert!(c.is_modified());
        assert_eq!(
            c.whole().await.unwrap(),
            b"X: 0\r\nA: 1\r\nB: 2\r\n\r\nbody\r\n"
        );
        let mut out = Vec::new();
        c.reader()
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"X: 0\r\nA: 1\r\nB: 2\r\n\r\nbody\r\n");
        assert_eq!(c.len(), out.len() as u64);
        c.replace(b"C: 3\r\n\r\nnew".to_vec());
        assert_eq!(c.header(), b"C: 3\r\n");
        assert_eq!(c.whole().await.unwrap(), b"C: 3\r\n\r\nnew");
    }

    #[tokio::test]
    async fn a_spool_mail_is_streamed_and_loaded_only_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let env = crate::tests::envelope(&["a@example.com"]);
        let mail = b"Subject: s\r\n\r\nbody\r\n";
        let id = spool.inject(env, mail).await.unwrap();
        let mut c = Content::from_spool(spool, id, b"Subject: s\r\n".to_vec(), mail.len() as u64);
        c.set_header(b"Subject: t\r\n".to_vec());
        let mut out = Vec::new();
        c.reader()
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"Subject: t\r\n\r\nbody\r\n");
        assert!(format!("{c:?}").contains("in_memory: false"));
        assert_eq!(c.whole().await.unwrap(), b"Subject: t\r\n\r\nbody\r\n");
        assert!(format!("{c:?}").contains("in_memory: true"));
    }
}
