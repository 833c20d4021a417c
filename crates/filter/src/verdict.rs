//! From the scanners' results to what the pipeline does with the mail.
//!
//! Pure: [`decide`] takes the results and the settings and returns a
//! [`FilterVerdict`], so every combination is tested without a daemon.
//!
//! When results disagree, the strongest action wins: reject (we know the
//! mail must not pass) over quarantine (an administrator decides) over
//! temporary failure (we do not know yet) over deliver. A virus found while
//! spamd is down is therefore rejected at once rather than retried.

use std::fmt;

use siegel_config::{SpamAction, VirusAction};
use siegel_types::SpamScore;

use crate::clamd::shorten;
use crate::error::ScanError;
use crate::quarantine::NOTE_PREFIX;
use crate::result::{SpamReport, SpamScan, VirusScan};

/// Header with clamd's result: `clean`, `infected; name=…`,
/// `unscanned; reason=…`.
pub const VIRUS_HEADER: &str = "X-Siegel-Virus";
/// Header with spamd's result: `yes|no; score=…; threshold=…`,
/// `unscanned; reason=…`.
pub const SPAM_HEADER: &str = "X-Siegel-Spam";
/// Header on a mail an administrator released from the quarantine.
pub const RELEASED_HEADER: &str = "X-Siegel-Quarantine";

/// What the pipeline does with the mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver it, with [`FilterVerdict::headers`] added.
    Deliver,
    /// Hold it in the quarantine (a held spool entry with this note, which
    /// starts with `quarantine: `; see [`crate::quarantine`]).
    Quarantine { note: String },
    /// Refuse it: at SMTP time a 550 with the reason, after acceptance a
    /// bounce (DSN) that carries it.
    Reject { reason: Reason },
    /// A scanner could not answer and `fail_open` is off: try again later;
    /// the mail waits.
    TempFail { reason: String },
}

/// A reason for people, in English and German (the DSN has both parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub en: String,
    pub de: String,
}

impl Reason {
    /// `English / Deutsch` on one line, the form the pipeline stores as a
    /// recipient's failure reason (like the policy's refusals).
    pub fn one_line(&self) -> String {
        format!("{} / {}", self.en, self.de)
    }
}

/// One header line to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: &'static str,
    /// ASCII, no line breaks.
    pub value: String,
}

/// The filter's answer for one mail: what to do, the headers to add, and
/// what each scanner said (for logs and the tracking trail).
#[derive(Debug)]
pub struct FilterVerdict {
    pub action: Action,
    /// Added whatever the action (a quarantined mail carries them when it
    /// is released).
    pub headers: Vec<Header>,
    /// `None`: clamd is not configured or not for this direction.
    pub virus: Option<Result<VirusScan, ScanError>>,
    /// `None`: spamd is not configured or not for this direction.
    pub spam: Option<Result<SpamScan, ScanError>>,
}

impl FilterVerdict {
    /// Nothing to scan for this mail: deliver, add nothing.
    pub fn unfiltered() -> Self {
        Self {
            action: Action::Deliver,
            headers: Vec::new(),
            virus: None,
            spam: None,
        }
    }

    /// The headers as lines ending in CRLF, for `EntryState::prepend`.
    pub fn header_lines(&self) -> String {
        self.headers
            .iter()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect()
    }

    /// The verdict for a mail an administrator released from the
    /// quarantine: delivered whatever the scanners say now (that was the
    /// administrator's decision), with their fresh headers and
    /// `X-Siegel-Quarantine: released`. A scanner that is down still makes
    /// it wait: releasing is not permission to deliver unscanned.
    pub fn after_release(mut self) -> Self {
        if matches!(self.action, Action::TempFail { .. }) {
            return self;
        }
        self.action = Action::Deliver;
        self.headers.push(Header {
            name: RELEASED_HEADER,
            value: "released".to_owned(),
        });
        self
    }

    /// One line for logs: `virus=clean spam=no(2.1/5.0) action=deliver`.
    pub fn summary(&self) -> String {
        let virus = match &self.virus {
            None => "off".to_owned(),
            Some(Ok(VirusScan::Clean)) => "clean".to_owned(),
            Some(Ok(VirusScan::Infected { signature })) => format!("infected({signature})"),
            Some(Ok(VirusScan::Skipped { why })) => format!("unscanned({why})"),
            Some(Err(e)) => format!("error({e})"),
        };
        let spam = match &self.spam {
            None => "off".to_owned(),
            Some(Ok(SpamScan::Ham(r))) => format!("no({}/{})", r.score, r.threshold),
            Some(Ok(SpamScan::Spam(r))) => format!("yes({}/{})", r.score, r.threshold),
            Some(Ok(SpamScan::Skipped { why })) => format!("unscanned({why})"),
            Some(Err(e)) => format!("error({e})"),
        };
        format!("virus={virus} spam={spam} action={}", self.action)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deliver => f.write_str("deliver"),
            Self::Quarantine { note } => write!(f, "quarantine ({note})"),
            Self::Reject { reason } => write!(f, "reject ({})", reason.en),
            Self::TempFail { reason } => write!(f, "tempfail ({reason})"),
        }
    }
}

/// The settings [`decide`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub virus_action: VirusAction,
    pub spam_action: SpamAction,
    pub spam_reject_score: Option<SpamScore>,
    pub fail_open: bool,
}

impl From<&siegel_config::Filter> for Rules {
    fn from(c: &siegel_config::Filter) -> Self {
        Self {
            virus_action: c.virus_action,
            spam_action: c.spam_action,
            spam_reject_score: c.spam_reject_score,
            fail_open: c.fail_open,
        }
    }
}

/// A signature name as a header token: clamd's names are ASCII words with
/// dots and dashes; anything else (a custom database can hold anything but
/// a colon) becomes `_`, so the header can never be broken or folded.
fn token(name: &str) -> String {
    name.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn virus_reason(signature: &str) -> Reason {
    let sig = shorten(signature);
    Reason {
        en: format!("The message contains a virus ({sig}) and was not delivered."),
        de: format!("Die Nachricht enthält einen Virus ({sig}) und wurde nicht zugestellt."),
    }
}

fn spam_reason(r: &SpamReport) -> Reason {
    Reason {
        en: format!(
            "The message was classified as spam (score {}, limit {}) and was not delivered.",
            r.score, r.threshold
        ),
        de: format!(
            "Die Nachricht wurde als Spam eingestuft (Bewertung {}, Grenzwert {}) und nicht zugestellt.",
            r.score, r.threshold
        ),
    }
}

/// The verdict for these results under these rules.
pub fn decide(
    rules: &Rules,
    virus: Option<Result<VirusScan, ScanError>>,
    spam: Option<Result<SpamScan, ScanError>>,
) -> FilterVerdict {
    let mut headers = Vec::new();
    let mut reject: Option<Reason> = None;
    let mut quarantine: Vec<String> = Vec::new();
    let mut wait: Vec<String> = Vec::new();
    let mut header = |name, value: String| headers.push(Header { name, value });

    match &virus {
        None => {}
        Some(Ok(VirusScan::Clean)) => header(VIRUS_HEADER, "clean".to_owned()),
        Some(Ok(VirusScan::Infected { signature })) => {
            header(VIRUS_HEADER, format!("infected; name={}", token(signature)));
            match rules.virus_action {
                VirusAction::Reject => reject = Some(virus_reason(signature)),
                VirusAction::Quarantine => quarantine.push(format!("virus {}", shorten(signature))),
            }
        }
        Some(Ok(VirusScan::Skipped { why })) => {
            header(VIRUS_HEADER, format!("unscanned; reason={}", why.token()));
            if !rules.fail_open {
                quarantine.push(format!("not virus-scanned: {why}"));
            }
        }
        Some(Err(e)) => {
            if rules.fail_open && e.is_scanner_failure() {
                header(VIRUS_HEADER, "unscanned; reason=scanner-error".to_owned());
            } else {
                wait.push(format!("virus scan failed: {e}"));
            }
        }
    }

    match &spam {
        None => {}
        Some(Ok(scan @ (SpamScan::Ham(r) | SpamScan::Spam(r)))) => {
            let is_spam = matches!(scan, SpamScan::Spam(_));
            header(
                SPAM_HEADER,
                format!(
                    "{}; score={}; threshold={}",
                    if is_spam { "yes" } else { "no" },
                    r.score,
                    r.threshold
                ),
            );
            if rules
                .spam_reject_score
                .is_some_and(|limit| r.score >= limit)
            {
                reject.get_or_insert_with(|| spam_reason(r));
            } else if is_spam {
                match rules.spam_action {
                    SpamAction::Tag => {}
                    SpamAction::Quarantine => quarantine.push(format!(
                        "spam, score {} (threshold {})",
                        r.score, r.threshold
                    )),
                    SpamAction::Reject => {
                        reject.get_or_insert_with(|| spam_reason(r));
                    }
                }
            }
        }
        // Large mail is delivered unscanned for spam whatever fail_open
        // says: spamc's rule, and the admin's chosen limit.
        Some(Ok(SpamScan::Skipped { why })) => {
            header(SPAM_HEADER, format!("unscanned; reason={}", why.token()));
        }
        Some(Err(e)) => {
            if rules.fail_open && e.is_scanner_failure() {
                header(SPAM_HEADER, "unscanned; reason=scanner-error".to_owned());
            } else {
                wait.push(format!("spam scan failed: {e}"));
            }
        }
    }

    let action = if let Some(reason) = reject {
        Action::Reject { reason }
    } else if !quarantine.is_empty() {
        Action::Quarantine {
            note: format!("{NOTE_PREFIX}{}", quarantine.join("; ")),
        }
    } else if !wait.is_empty() {
        Action::TempFail {
            reason: wait.join("; "),
        }
    } else {
        Action::Deliver
    };
    FilterVerdict {
        action,
        headers,
        virus,
        spam,
    }
}

#[cfg(test)]
mod tests;
