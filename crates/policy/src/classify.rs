//! Classification: is this outbound mail confidential, for whom, and why?
//!
//! Confidentiality decides whether a mail without a key may leave over plain
//! TLS or must go through GINA (or not at all), so every source the product
//! promises (PRODUCT.md, "Classification") is read here, and each hit is
//! kept as a [`Reason`] so that tracking can say *why* a mail was treated
//! as confidential. The function is total: any byte string is a header block
//! it can classify without panicking.

use std::fmt;

use serde::{Deserialize, Serialize};
use siegel_types::{Address, normalise_domain};

use crate::headers;
use crate::rfc2047;

/// Our own steering header, set by the Outlook/Thunderbird add-ins.
pub const SIEGEL_CLASSIFICATION: &str = "X-Siegel-Classification";
/// Outlook's "Sensitivity" header (RFC 2156).
pub const SENSITIVITY: &str = "Sensitivity";
/// Microsoft Purview (MIP) sensitivity labels.
pub const MSIP_LABELS: &str = "msip_labels";

/// The `[policy]` classification knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassificationRules {
    /// Subject keywords that mark a mail confidential; matched
    /// case-insensitively and removed from the subject before sending.
    pub subject_keywords: Vec<String>,
    /// Treat `Sensitivity: Company-Confidential` as confidential.
    pub honour_sensitivity: bool,
    /// Treat `X-Siegel-Classification: confidential` as confidential.
    pub honour_siegel_header: bool,
    /// Purview label GUIDs that the admin mapped to confidential.
    pub purview_labels: Vec<String>,
    /// All mail to recipients in these domains is confidential (exact
    /// domain, compared after IDN normalisation; subdomains are not included
    /// so that a rule never reaches further than the admin wrote).
    pub confidential_domains: Vec<String>,
    /// All mail to these recipients is confidential.
    pub confidential_recipients: Vec<Address>,
}

impl Default for ClassificationRules {
    fn default() -> Self {
        Self {
            subject_keywords: ["[secure]", "[confidential]", "[vertraulich]"]
                .map(String::from)
                .to_vec(),
            honour_sensitivity: true,
            honour_siegel_header: true,
            purview_labels: Vec::new(),
            confidential_domains: Vec::new(),
            confidential_recipients: Vec::new(),
        }
    }
}

/// One thing wrong with [`ClassificationRules`], with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy.{key}: {message}")]
pub struct RuleProblem {
    /// The key below `[policy]`, with an index for list entries
    /// (`subject_keywords[1]`).
    pub key: String,
    pub message: String,
}

impl ClassificationRules {
    /// Checks the rules and returns every problem (empty when all is well),
    /// so that the admin sees all mistakes at once.
    pub fn validate(&self) -> Vec<RuleProblem> {
        let mut problems = Vec::new();
        let mut problem =
            |key: String, message: String| problems.push(RuleProblem { key, message });
        for (i, k) in self.subject_keywords.iter().enumerate() {
            let key = format!("subject_keywords[{i}]");
            if k.trim().is_empty() {
                problem(
                    key,
                    "a keyword must not be empty: it would match every subject".into(),
                );
            } else if k.trim() != k {
                problem(
                    key,
                    format!("keyword `{k}` has leading or trailing whitespace"),
                );
            } else if k.chars().any(char::is_control) {
                problem(key, "a keyword must not contain control characters".into());
            }
        }
        for (i, l) in self.purview_labels.iter().enumerate() {
            if !is_guid(strip_braces(l)) {
                problem(
                    format!("purview_labels[{i}]"),
                    format!(
                        "`{l}` is not a label id (a GUID like 1b2c3d4e-0000-1111-2222-333344445555)"
                    ),
                );
            }
        }
        for (i, d) in self.confidential_domains.iter().enumerate() {
            if normalise_domain(d.trim()).is_none() {
                problem(
                    format!("confidential_domains[{i}]"),
                    format!("`{d}` is not a valid domain name"),
                );
            }
        }
        problems
    }
}

/// Why a mail (or a recipient of it) is confidential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Reason {
    /// The subject contained this configured keyword.
    SubjectKeyword { keyword: String },
    /// `Sensitivity: Company-Confidential`.
    Sensitivity,
    /// `X-Siegel-Classification: confidential`.
    SiegelHeader,
    /// An enabled Purview label that is mapped to confidential.
    PurviewLabel { id: String, name: Option<String> },
    /// The recipient's domain is listed in `confidential_domains`.
    RecipientDomain { recipient: Address, domain: String },
    /// The recipient is listed in `confidential_recipients`.
    Recipient { recipient: Address },
}

impl Reason {
    /// The recipient this reason is limited to, if any.
    pub fn recipient(&self) -> Option<&Address> {
        match self {
            Self::RecipientDomain { recipient, .. } | Self::Recipient { recipient } => {
                Some(recipient)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SubjectKeyword { keyword } => write!(f, "subject keyword {keyword}"),
            Self::Sensitivity => write!(f, "{SENSITIVITY}: Company-Confidential"),
            Self::SiegelHeader => write!(f, "{SIEGEL_CLASSIFICATION}: confidential"),
            Self::PurviewLabel {
                id,
                name: Some(name),
            } => write!(f, "Purview label {name} ({id})"),
            Self::PurviewLabel { id, name: None } => write!(f, "Purview label {id}"),
            Self::RecipientDomain { recipient, domain } => {
                write!(f, "all mail to {domain} is confidential ({recipient})")
            }
            Self::Recipient { recipient } => write!(f, "all mail to {recipient} is confidential"),
        }
    }
}

/// The result of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Classification {
    /// True when the *whole mail* is confidential (a header or subject
    /// source). A domain or recipient rule makes it confidential only for
    /// some recipients: ask [`Classification::is_confidential_for`].
    pub confidential: bool,
    /// Every source that matched, message-wide and per recipient.
    pub reasons: Vec<Reason>,
    /// The Subject header value to send instead (keywords removed, RFC 2047
    /// encoded when not plain ASCII, possibly folded with CRLF SP); `None`
    /// when the subject stays as it is.
    pub new_subject: Option<String>,
    /// Header names to remove before the mail leaves: only Siegel's own
    /// steering headers. `Sensitivity` and `msip_labels` belong to the
    /// sender's client and stay.
    pub strip_headers: Vec<String>,
    /// The subject keywords to remove; kept so that [`Classification::apply`]
    /// can clean every `Subject` field, duplicates included.
    #[serde(default)]
    keywords: Vec<String>,
}

impl Classification {
    /// Whether the mail is confidential for this recipient: message-wide, or
    /// by a domain or recipient rule that names it.
    pub fn is_confidential_for(&self, rcpt: &Address) -> bool {
        self.confidential
            || self
                .reasons
                .iter()
                .any(|r| r.recipient().is_some_and(|a| same_mailbox(a, rcpt)))
    }

    /// The reasons that apply to this recipient (message-wide ones and its own).
    pub fn reasons_for<'a>(&'a self, rcpt: &'a Address) -> impl Iterator<Item = &'a Reason> + 'a {
        self.reasons
            .iter()
            .filter(move |r| r.recipient().is_none_or(|a| same_mailbox(a, rcpt)))
    }

    /// Rewrites a header block (or a whole message) as it must leave:
    /// steering headers removed, keywords removed from every `Subject`.
    /// All other bytes, including the body, are copied unchanged.
    pub fn apply(&self, message: &[u8]) -> Vec<u8> {
        let fields = headers::parse(message);
        let mut out = Vec::with_capacity(message.len());
        let mut copied = 0;
        for field in &fields {
            let strip = self
                .strip_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&field.name));
            let new_subject = if field.name.eq_ignore_ascii_case("Subject") {
                clean_subject(&field.value, &self.keywords).map(|(s, _)| s)
            } else {
                None
            };
            if !strip && new_subject.is_none() {
                continue;
            }
            out.extend_from_slice(&message[copied..field.span.start]);
            copied = field.span.end;
            if let Some(subject) = new_subject {
                let line_end: &[u8] = if message[field.span.clone()].ends_with(b"\r\n") {
                    b"\r\n"
                } else {
                    b"\n"
                };
                out.extend_from_slice(field.name.as_bytes());
                out.extend_from_slice(b": ");
                let subject = if line_end == b"\n" {
                    subject.replace("\r\n", "\n")
                } else {
                    subject
                };
                out.extend_from_slice(subject.as_bytes());
                out.extend_from_slice(line_end);
            }
        }
        out.extend_from_slice(&message[copied..]);
        out
    }
}

/// Classifies an outbound mail from its header block (a whole message is
/// fine; the body is not read) and its envelope recipients.
pub fn classify(
    header_block: &[u8],
    recipients: &[Address],
    rules: &ClassificationRules,
) -> Classification {
    let fields = headers::parse(header_block);
    let keywords: Vec<String> = rules
        .subject_keywords
        .iter()
        .filter(|k| !k.trim().is_empty())
        .cloned()
        .collect();
    let mut c = Classification {
        keywords,
        ..Classification::default()
    };

    for field in &fields {
        let name = field.name.as_str();
        if name.eq_ignore_ascii_case("Subject") {
            if let Some((new_subject, found)) = clean_subject(&field.value, &c.keywords) {
                for keyword in found {
                    push_unique(&mut c.reasons, Reason::SubjectKeyword { keyword });
                }
                c.new_subject.get_or_insert(new_subject);
            }
        } else if name.eq_ignore_ascii_case(SENSITIVITY) {
            if rules.honour_sensitivity && field.value.eq_ignore_ascii_case("Company-Confidential")
            {
                push_unique(&mut c.reasons, Reason::Sensitivity);
            }
        } else if name.eq_ignore_ascii_case(SIEGEL_CLASSIFICATION) {
            // Stripped whatever it says: it steers Siegel and must not leak.
            if !c.strip_headers.iter().any(|h| h == SIEGEL_CLASSIFICATION) {
                c.strip_headers.push(SIEGEL_CLASSIFICATION.to_owned());
            }
            if rules.honour_siegel_header && field.value.eq_ignore_ascii_case("confidential") {
                push_unique(&mut c.reasons, Reason::SiegelHeader);
            }
        } else if name.eq_ignore_ascii_case(MSIP_LABELS) {
            for (id, name) in enabled_labels(&field.value) {
                if rules
                    .purview_labels
                    .iter()
                    .any(|l| strip_braces(l).eq_ignore_ascii_case(&id))
                {
                    push_unique(&mut c.reasons, Reason::PurviewLabel { id, name });
                }
            }
        }
    }
    c.confidential = !c.reasons.is_empty();

    let domains: Vec<String> = rules
        .confidential_domains
        .iter()
        .filter_map(|d| normalise_domain(d.trim()))
        .collect();
    for rcpt in recipients {
        if let Some(domain) = domains.iter().find(|d| d.as_str() == rcpt.domain()) {
            push_unique(
                &mut c.reasons,
                Reason::RecipientDomain {
                    recipient: rcpt.clone(),
                    domain: domain.clone(),
                },
            );
        }
        if rules
            .confidential_recipients
            .iter()
            .any(|a| same_mailbox(a, rcpt))
        {
            push_unique(
                &mut c.reasons,
                Reason::Recipient {
                    recipient: rcpt.clone(),
                },
            );
        }
    }
    c
}

fn push_unique(reasons: &mut Vec<Reason>, r: Reason) {
    if !reasons.contains(&r) {
        reasons.push(r);
    }
}

/// Mailbox equality for rules: the local part case-insensitively (ASCII).
/// RFC 5321 lets the receiver distinguish case, but practically nobody
/// does, and a rule that says "confidential" must not be dodged by typing
/// `Bob@` instead of `bob@`.
fn same_mailbox(a: &Address, b: &Address) -> bool {
    a.domain() == b.domain() && a.local().eq_ignore_ascii_case(b.local())
}

/// Removes every keyword from a raw Subject value. Returns the new header
/// value and the keywords found, or `None` when there was none.
fn clean_subject(raw: &str, keywords: &[String]) -> Option<(String, Vec<String>)> {
    if keywords.is_empty() {
        return None;
    }
    let mut text = rfc2047::decode(raw);
    let mut found = Vec::new();
    // Removing one keyword can join the halves of another ("[sec[secure]ure]");
    // a few passes settle that, and the bound keeps hostile input linear.
    for _ in 0..4 {
        let mut changed = false;
        for keyword in keywords {
            if let Some(rest) = remove_ci(&text, keyword) {
                if !found.contains(keyword) {
                    found.push(keyword.clone());
                }
                text = rest;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    if found.is_empty() {
        return None;
    }
    Some((rfc2047::encode(text.trim()), found))
}

/// Removes every occurrence of `needle` from `hay`, ignoring case (full
/// Unicode lower-casing, char by char), in one pass. A removal also eats the
/// whitespace after it when there is whitespace (or nothing) before it, so
/// "Re: [secure] Offer" becomes "Re: Offer". `None` when nothing matched.
fn remove_ci(hay: &str, needle: &str) -> Option<String> {
    let needle: Vec<char> = needle.chars().flat_map(char::to_lowercase).collect();
    if needle.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(hay.len());
    let mut pos = 0;
    let mut removed = false;
    while pos < hay.len() {
        if let Some(len) = match_len_ci(&hay[pos..], &needle) {
            pos += len;
            removed = true;
            if out.is_empty() || out.ends_with(char::is_whitespace) {
                let rest = &hay[pos..];
                pos += rest.len() - rest.trim_start().len();
            }
            continue;
        }
        let Some(c) = hay[pos..].chars().next() else {
            break;
        };
        out.push(c);
        pos += c.len_utf8();
    }
    removed.then_some(out)
}

/// The byte length of the prefix of `hay` that equals the lower-cased
/// `needle`, if `hay` starts with it.
fn match_len_ci(hay: &str, needle: &[char]) -> Option<usize> {
    let mut want = needle.iter();
    for (i, c) in hay.char_indices() {
        for lc in c.to_lowercase() {
            if want.next() != Some(&lc) {
                return None;
            }
        }
        if want.len() == 0 {
            return Some(i + c.len_utf8());
        }
    }
    None
}

/// Reads an `msip_labels` value, e.g.
/// `MSIP_Label_<GUID>_Enabled=true; MSIP_Label_<GUID>_Name=Confidential; …`,
/// and returns the enabled labels as (lower-case GUID, name). A label counts
/// only with `_Enabled=true`: a label that was removed stays in the header
/// with `_Enabled=false`.
fn enabled_labels(value: &str) -> Vec<(String, Option<String>)> {
    let mut labels: Vec<(String, bool, Option<String>)> = Vec::new();
    for part in value.split(';') {
        let Some((key, val)) = part.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let Some(rest) = strip_prefix_ci(key, "MSIP_Label_") else {
            continue;
        };
        let Some((id, attr)) = rest.rsplit_once('_') else {
            continue;
        };
        if !is_guid(id) {
            continue;
        }
        let id = id.to_ascii_lowercase();
        let idx = match labels.iter().position(|(l, _, _)| *l == id) {
            Some(i) => i,
            None => {
                labels.push((id, false, None));
                labels.len() - 1
            }
        };
        let val = val.trim();
        if attr.eq_ignore_ascii_case("Enabled") {
            labels[idx].1 = val.eq_ignore_ascii_case("true");
        } else if attr.eq_ignore_ascii_case("Name") && !val.is_empty() {
            labels[idx].2 = Some(val.to_owned());
        }
    }
    labels
        .into_iter()
        .filter(|(_, enabled, _)| *enabled)
        .map(|(id, _, name)| (id, name))
        .collect()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn strip_braces(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(s)
}

/// 8-4-4-4-12 hex digits.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests;
