//! A spam score as exact data.
//!
//! SpamAssassin prints scores with one decimal (`5.3 / 5.0`), rspamd with
//! two; an admin writes thresholds like `15` or `7.5`. Kept as an integer
//! number of thousandths, the score compares exactly (no `5.0 >= 5.0` that
//! floating point gets wrong after a parse), and settings that hold one can
//! stay `Eq`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A spam score in thousandths of a point (`5.3` is `SpamScore(5300)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpamScore(i64);

/// Why a text is not a score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a spam score: {0:?} (expected a decimal number such as 5, -0.5 or 7.25)")]
pub struct SpamScoreError(String);

/// Largest magnitude accepted, in points: far beyond any real score (GTUBE
/// is 1000), small enough that thousandths never overflow.
const MAX_POINTS: i64 = 1_000_000_000;

impl SpamScore {
    /// A score of whole points.
    pub const fn points(points: i32) -> Self {
        Self(points as i64 * 1000)
    }

    /// The score in thousandths of a point.
    pub const fn thousandths(self) -> i64 {
        self.0
    }

    /// From thousandths of a point.
    pub const fn from_thousandths(t: i64) -> Self {
        Self(t)
    }
}

impl FromStr for SpamScore {
    type Err = SpamScoreError;

    /// Parses `[+-]digits[.digits]`; digits beyond the third decimal are
    /// rounded half away from zero. Nothing else (no exponent, no `inf`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SpamScoreError(text.to_owned());
        let t = text.trim();
        let (negative, digits) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Leading zeros are harmless, but an absurdly long number is not a
        // score; refuse before parsing so nothing can overflow.
        let int = int.trim_start_matches('0');
        if int.len() > 10 {
            return Err(bad());
        }
        let whole: i64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        if whole > MAX_POINTS {
            return Err(bad());
        }
        let mut milli: i64 = 0;
        for (i, b) in frac.bytes().take(3).enumerate() {
            milli += i64::from(b - b'0') * [100, 10, 1][i];
        }
        if frac.as_bytes().get(3).is_some_and(|&b| b >= b'5') {
            milli += 1;
        }
        let value = whole * 1000 + milli;
        Ok(Self(if negative { -value } else { value }))
    }
}

impl fmt::Display for SpamScore {
    /// At least one decimal, no trailing zeros beyond it: `5.0`, `-0.5`,
    /// `7.25`, `1000.0` — what SpamAssassin prints for its own scores.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, milli) = (abs / 1000, abs % 1000);
        let mut frac = format!("{milli:03}");
        while frac.len() > 1 && frac.ends_with('0') {
            frac.pop();
        }
        write!(f, "{sign}{whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> SpamScore {
        t.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_what_scanners_print() {
        assert_eq!(s("5.0"), SpamScore::points(5));
        assert_eq!(s("1000.0"), SpamScore::points(1000));
        assert_eq!(s("-0.0"), SpamScore::points(0));
        assert_eq!(s("-1.9").thousandths(), -1900);
        assert_eq!(s("7.25").thousandths(), 7250);
        assert_eq!(s("15").thousandths(), 15_000);
        assert_eq!(s(".5").thousandths(), 500);
        assert_eq!(s("+2.").thousandths(), 2000);
        assert_eq!(s("0.0005").thousandths(), 1);
        assert_eq!(s("-0.0005").thousandths(), -1);
        assert_eq!(s("0.0004").thousandths(), 0);
    }

    #[test]
    fn refuses_what_is_not_a_score() {
        for bad in [
            "",
            "-",
            ".",
            "1e3",
            "inf",
            "NaN",
            "5,0",
            "5 .0",
            "--1",
            "0x10",
            "99999999999",
            "1.2.3",
        ] {
            assert!(bad.parse::<SpamScore>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn displays_like_spamassassin() {
        for (text, shown) in [
            ("5", "5.0"),
            ("-0.5", "-0.5"),
            ("7.25", "7.25"),
            ("1000.0", "1000.0"),
            ("0.001", "0.001"),
            ("-12.300", "-12.3"),
        ] {
            assert_eq!(s(text).to_string(), shown);
            assert_eq!(s(shown), s(text), "display must parse back");
        }
    }

    #[test]
    fn compares_exactly() {
        assert!(s("5.0") >= s("5"));
        assert!(s("4.9") < s("5.0"));
        assert!(s("-0.1") < s("0"));
    }
}
