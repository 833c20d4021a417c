//! An SMTP reply as data: what a peer answered, kept for DSNs and tracking.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One SMTP reply: code, optional enhanced status code (RFC 3463), text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
}

impl SmtpReply {
    pub fn new(
        code: u16,
        enhanced: impl Into<Option<&'static str>>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            code,
            enhanced: enhanced.into().map(str::to_owned),
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code, or one derived from the basic code class.
    pub fn status(&self) -> String {
        self.enhanced.clone().unwrap_or_else(|| match self.code {
            200..=299 => "2.0.0".into(),
            400..=499 => "4.0.0".into(),
            _ => "5.0.0".into(),
        })
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}
