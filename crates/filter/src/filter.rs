//! The [`Filter`]: both scanners on one mail, read once.
//!
//! The mail is read a chunk at a time and each chunk goes to clamd and
//! spamd at once, so a mail is read from disk once and never held whole in
//! memory, and the two daemons scan in parallel. A scanner that stops
//! reading (clamd at its size limit, spamd after an error) drops out; the
//! others go on. When nobody reads any more, the rest of the mail is not
//! even read.

use std::io;

use siegel_types::Direction;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::clamd::{self, CHUNK, Clamd, ClamdSession};
use crate::conn::Timeouts;
use crate::error::{ScanError, Scanner};
use crate::result::{SpamScan, VirusScan};
use crate::spamd::{self, BadUser, Spamd, SpamdSession};
use crate::verdict::{FilterVerdict, Rules, decide};

/// Why the filter could not look at a mail at all: our side failed.
/// Scanner failures are not errors here; they are part of the verdict.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Reading the mail failed (the spool file).
    #[error("reading the mail to scan failed: {0}")]
    Read(#[source] io::Error),
    /// The mail ended before the length the caller gave.
    #[error("the mail ended after {got} of {expected} octets")]
    Short { expected: u64, got: u64 },
}

/// The configured scanners and what their results lead to. Cheap to share
/// (`Arc<Filter>`); every scan opens its own connections.
#[derive(Debug, Clone)]
pub struct Filter {
    clamd: Option<Clamd>,
    spamd: Option<Spamd>,
    virus_directions: Vec<Direction>,
    spam_directions: Vec<Direction>,
    rules: Rules,
}

/// A scanner's part in one scan.
enum Slot<S, R> {
    /// Not asked for this mail.
    Off,
    /// Receiving the mail.
    Running(S),
    /// Finished early (skipped, or failed).
    Done(Result<R, ScanError>),
}

impl Filter {
    /// The filter `[filter]` describes. A spamd user that is not a valid
    /// header value is refused (the config loader refuses it first).
    pub fn from_config(c: &siegel_config::Filter) -> Result<Filter, BadUser> {
        let timeouts = Timeouts {
            connect: c.connect_timeout,
            scan: c.scan_timeout,
        };
        let spamd = match &c.spamd {
            None => None,
            Some(address) => {
                let s = Spamd::new(address.clone(), timeouts, c.spam_max_scan_size);
                Some(match &c.spamd_user {
                    Some(user) => s.with_user(user)?,
                    None => s,
                })
            }
        };
        Ok(Filter {
            clamd: c
                .clamd
                .as_ref()
                .map(|a| Clamd::new(a.clone(), timeouts, c.virus_max_scan_size)),
            spamd,
            virus_directions: c.virus_directions.clone(),
            spam_directions: c.spam_directions.clone(),
            rules: Rules::from(c),
        })
    }

    /// A filter from ready-made clients (tests, benchmarks, other callers
    /// that do not read a config): each scanner runs for both directions.
    pub fn new(clamd: Option<Clamd>, spamd: Option<Spamd>, rules: Rules) -> Filter {
        let both = vec![Direction::Inbound, Direction::Outbound];
        Filter {
            clamd,
            spamd,
            virus_directions: both.clone(),
            spam_directions: both,
            rules,
        }
    }

    /// The same filter with clamd only (for the second virus scan of a mail
    /// the gateway decrypted: spam is judged on the mail as it came).
    pub fn virus_only(&self) -> Filter {
        Filter {
            clamd: self.clamd.clone(),
            spamd: None,
            virus_directions: self.virus_directions.clone(),
            spam_directions: Vec::new(),
            rules: self.rules.clone(),
        }
    }

    /// Whether any scanner runs for mail going this way; when not, the
    /// caller can skip opening the content.
    pub fn scans(&self, direction: Direction) -> bool {
        self.virus_for(direction).is_some() || self.spam_for(direction).is_some()
    }

    fn virus_for(&self, d: Direction) -> Option<&Clamd> {
        self.clamd
            .as_ref()
            .filter(|_| self.virus_directions.contains(&d))
    }

    fn spam_for(&self, d: Direction) -> Option<&Spamd> {
        self.spamd
            .as_ref()
            .filter(|_| self.spam_directions.contains(&d))
    }

    /// Scans one mail: `len` octets of `content` (only those are read, so a
    /// spool file positioned at the content with the envelope after it is
    /// fine). Scanner trouble is in the verdict (`TempFail`, or delivered
    /// unscanned with `fail_open`); `Err` only when the mail itself could
    /// not be read.
    pub async fn scan(
        &self,
        direction: Direction,
        content: impl AsyncRead + Unpin + Send,
        len: u64,
    ) -> Result<FilterVerdict, FilterError> {
        let clamd = self.virus_for(direction);
        let spamd = self.spam_for(direction);
        if clamd.is_none() && spamd.is_none() {
            return Ok(FilterVerdict::unfiltered());
        }
        let (mut virus, mut spam) = tokio::join!(start_clamd(clamd, len), start_spamd(spamd, len));

        let mut content = content.take(len);
        let mut buf = vec![0u8; CHUNK];
        let mut read = 0u64;
        while read < len && (wants_clamd(&virus) || wants_spamd(&spam)) {
            let n = content.read(&mut buf).await.map_err(FilterError::Read)?;
            if n == 0 {
                return Err(FilterError::Short {
                    expected: len,
                    got: read,
                });
            }
            read += n as u64;
            let chunk = &buf[..n];
            let (v, s) = tokio::join!(send_clamd(&mut virus, chunk), send_spamd(&mut spam, chunk));
            if let Err(e) = v {
                virus = Slot::Done(Err(e));
            }
            if let Err(e) = s {
                spam = Slot::Done(Err(e));
            }
        }

        let (virus, spam) = tokio::join!(
            finish(virus, ClamdSession::finish),
            finish(spam, SpamdSession::finish)
        );
        let verdict = decide(&self.rules, virus, spam);
        tracing::debug!(target: "siegel::filter", ?direction, len, summary = %verdict.summary(), "scanned");
        Ok(verdict)
    }

    /// Asks each configured scanner whether it is up: clamd's version
    /// string, spamd's `PONG`. For health checks and `siegel` diagnostics.
    pub async fn health(&self) -> Vec<(Scanner, Result<String, ScanError>)> {
        let mut out = Vec::new();
        if let Some(c) = &self.clamd {
            out.push((Scanner::Clamd, c.version().await));
        }
        if let Some(s) = &self.spamd {
            out.push((Scanner::Spamd, s.ping().await.map(|()| "PONG".to_owned())));
        }
        out
    }
}

async fn start_clamd(c: Option<&Clamd>, len: u64) -> Slot<ClamdSession, VirusScan> {
    let Some(c) = c else { return Slot::Off };
    match c.start(len).await {
        Ok(clamd::Started::Session(s)) => Slot::Running(s),
        Ok(clamd::Started::Skipped(why)) => Slot::Done(Ok(VirusScan::Skipped { why })),
        Err(e) => Slot::Done(Err(e)),
    }
}

async fn start_spamd(s: Option<&Spamd>, len: u64) -> Slot<SpamdSession, SpamScan> {
    let Some(s) = s else { return Slot::Off };
    match s.start(len).await {
        Ok(spamd::Started::Session(s)) => Slot::Running(s),
        Ok(spamd::Started::Skipped(why)) => Slot::Done(Ok(SpamScan::Skipped { why })),
        Err(e) => Slot::Done(Err(e)),
    }
}

fn wants_clamd(slot: &Slot<ClamdSession, VirusScan>) -> bool {
    matches!(slot, Slot::Running(s) if s.wants_more())
}

fn wants_spamd(slot: &Slot<SpamdSession, SpamScan>) -> bool {
    matches!(slot, Slot::Running(s) if s.wants_more())
}

async fn send_clamd(
    slot: &mut Slot<ClamdSession, VirusScan>,
    chunk: &[u8],
) -> Result<(), ScanError> {
    match slot {
        Slot::Running(s) => s.send(chunk).await,
        _ => Ok(()),
    }
}

async fn send_spamd(
    slot: &mut Slot<SpamdSession, SpamScan>,
    chunk: &[u8],
) -> Result<(), ScanError> {
    match slot {
        Slot::Running(s) => s.send(chunk).await,
        _ => Ok(()),
    }
}

async fn finish<S, R, F>(slot: Slot<S, R>, f: impl FnOnce(S) -> F) -> Option<Result<R, ScanError>>
where
    F: std::future::Future<Output = Result<R, ScanError>>,
{
    match slot {
        Slot::Off => None,
        Slot::Running(s) => Some(f(s).await),
        Slot::Done(r) => Some(r),
    }
}
