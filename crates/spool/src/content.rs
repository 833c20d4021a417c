//! Reading a mail's content back from the spool.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

/// Contents up to this size are read whole by [`crate::Spool::open_content`],
/// in the same blocking call that opens the file: most mails are a few
/// kilobytes, and every read through `tokio::fs::File` is a hop to a
/// blocking thread and back.
pub const READ_WHOLE_UP_TO: u64 = 256 * 1024;

/// A mail's content file (or, for a small one, its bytes), positioned at
/// the content's first octet. Read exactly the length `open_content`
/// returned: the envelope follows the content in the file.
#[derive(Debug)]
pub enum ContentReader {
    /// A small content, already read (the envelope trailer cut off).
    Memory(io::Cursor<Vec<u8>>),
    /// A large content, read from the file as it is consumed.
    File(tokio::fs::File),
}

impl AsyncRead for ContentReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ContentReader::Memory(c) => Pin::new(c).poll_read(cx, buf),
            ContentReader::File(f) => Pin::new(f).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for ContentReader {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            ContentReader::Memory(c) => Pin::new(c).start_seek(position),
            ContentReader::File(f) => Pin::new(f).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            ContentReader::Memory(c) => Pin::new(c).poll_complete(cx),
            ContentReader::File(f) => Pin::new(f).poll_complete(cx),
        }
    }
}
