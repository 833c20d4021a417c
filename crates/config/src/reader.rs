//! A small reader over the spanned TOML tree that collects problems instead
//! of stopping at the first one.
//!
//! serde's derive stops at the first wrong value and cannot say "unknown key"
//! without failing; an operator fixing a file wants the whole list at once,
//! each with a line number. So every setting is read by exactly one call on a
//! [`Section`] (key, default and parser in one place), a wrong value is
//! recorded as a [`Problem`] and replaced by the default so that reading goes
//! on, and whatever key nobody asked for becomes a warning when the section
//! is finished.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::Problem;

/// One TOML value with its position in the file.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects problems and warnings, and remembers where each key was so that
/// checks that span several keys can still point at a line.
pub(crate) struct Cx<'t> {
    text: &'t str,
    pub(crate) problems: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
    spans: HashMap<String, Range<usize>>,
    /// Every key path a setting asked for, present or not; lets a test check
    /// that `example.toml` documents each declared setting.
    pub(crate) asked: Vec<String>,
}

impl<'t> Cx<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Cx {
            text,
            problems: Vec::new(),
            warnings: Vec::new(),
            spans: HashMap::new(),
            asked: Vec::new(),
        }
    }

    /// 1-based line of a byte offset; spans come from the parser, but we stay
    /// defensive and clamp rather than index out of range.
    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        let prefix = self.text.get(..end).unwrap_or(self.text);
        prefix.bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn problem_at(&self, key: &str, span: Option<&Range<usize>>, message: String) -> Problem {
        Problem {
            key: key.to_owned(),
            message,
            line: span.map(|s| self.line_of(s)),
        }
    }

    /// Records an error at `key`, using the line where `key` was read (if it
    /// was in the file at all).
    pub(crate) fn error(&mut self, key: &str, message: impl Into<String>) {
        let p = self.problem_at(key, self.spans.get(key), message.into());
        self.problems.push(p);
    }

    /// Records a warning at `key`, like [`Cx::error`].
    pub(crate) fn warn(&mut self, key: &str, message: impl Into<String>) {
        let p = self.problem_at(key, self.spans.get(key), message.into());
        self.warnings.push(p);
    }

    /// Whether `key` was written in the file (rather than defaulted).
    pub(crate) fn present(&self, key: &str) -> bool {
        self.spans.contains_key(key)
    }

    /// Whether a problem was already recorded at `key` or below it; checks
    /// on a value that was left out because it was bad would only repeat
    /// the first complaint in a more confusing way.
    pub(crate) fn has_problem_under(&self, key: &str) -> bool {
        self.problems.iter().any(|p| {
            p.key
                .strip_prefix(key)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    fn remember(&mut self, key: &str, span: Range<usize>) {
        self.spans.insert(key.to_owned(), span);
    }
}

/// Joins a parent path and a key, quoting the key the way TOML would need it
/// (`routing.routes."partner.example"`), so the printed path can be searched
/// for in the file.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// What a TOML value is, in the words of the TOML spec, for "expected X,
/// found Y" messages.
fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reads a string value.
pub(crate) fn string(v: &DeValue<'_>) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, found {}", kind(v)))
}

/// Reads an integer value as `i128`, so that no TOML integer overflows here
/// and range checks can give a precise message.
pub(crate) fn integer(v: &DeValue<'_>) -> Result<i128, String> {
    let i = v
        .as_integer()
        .ok_or_else(|| format!("expected an integer, found {}", kind(v)))?;
    i128::from_str_radix(i.as_str(), i.radix()).map_err(|_| format!("integer out of range: {i}"))
}

/// Reads a positive count (a limit where zero would refuse everything).
pub(crate) fn count(v: &DeValue<'_>) -> Result<usize, String> {
    let i = integer(v)?;
    if i <= 0 {
        return Err(format!("must be greater than zero, found {i}"));
    }
    usize::try_from(i).map_err(|_| format!("too large: {i}"))
}

/// Applies a text parser to a string value.
pub(crate) fn text<T>(
    parse: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(&DeValue<'_>) -> Result<T, String> {
    move |v| parse(&string(v)?)
}

/// One TOML table being read, with the keys that were asked for so far.
pub(crate) struct Section<'a, 'i> {
    path: String,
    table: Option<&'a DeTable<'i>>,
    known: Vec<&'static str>,
}

impl<'a, 'i> Section<'a, 'i> {
    /// The document root.
    pub(crate) fn root(table: &'a DeTable<'i>) -> Self {
        Section {
            path: String::new(),
            table: Some(table),
            known: Vec::new(),
        }
    }

    fn lookup(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<(String, &'a Value<'i>)> {
        self.known.push(key);
        let path = join(&self.path, key);
        cx.asked.push(path.clone());
        let value = self.table?.get(key)?;
        cx.remember(&path, value.span());
        Some((path, value))
    }

    /// A sub-table. Missing is fine (all defaults); present but not a table
    /// is a problem, and the section then reads as empty.
    pub(crate) fn table(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Section<'a, 'i> {
        let path = join(&self.path, key);
        let table = match self.lookup(cx, key) {
            None => None,
            Some((_, v)) => match v.get_ref() {
                DeValue::Table(t) => Some(t),
                other => {
                    cx.error(&path, format!("expected a table, found {}", kind(other)));
                    None
                }
            },
        };
        Section {
            path,
            table,
            known: Vec::new(),
        }
    }

    /// A single setting; on a wrong value the problem is recorded and the
    /// default is used so that reading can go on.
    pub(crate) fn get<T>(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        default: T,
        parse: impl Fn(&DeValue<'_>) -> Result<T, String>,
    ) -> T {
        match self.lookup(cx, key) {
            None => default,
            Some((path, v)) => parse(v.get_ref()).unwrap_or_else(|m| {
                cx.error(&path, m);
                default
            }),
        }
    }

    /// An optional setting without a TOML spelling for "none": absent means
    /// the default.
    pub(crate) fn opt<T>(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        default: Option<T>,
        parse: impl Fn(&DeValue<'_>) -> Result<T, String>,
    ) -> Option<T> {
        match self.lookup(cx, key) {
            None => default,
            Some((path, v)) => match parse(v.get_ref()) {
                Ok(t) => Some(t),
                Err(m) => {
                    cx.error(&path, m);
                    default
                }
            },
        }
    }

    /// A list; each bad element is reported as `key[i]` and left out, so one
    /// typo does not hide the others.
    pub(crate) fn list<T>(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        default: Vec<T>,
        parse: impl Fn(&DeValue<'_>) -> Result<T, String>,
    ) -> Vec<T> {
        let Some((path, v)) = self.lookup(cx, key) else {
            return default;
        };
        let DeValue::Array(items) = v.get_ref() else {
            cx.error(
                &path,
                format!("expected an array, found {}", kind(v.get_ref())),
            );
            return default;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            cx.remember(&item_path, item.span());
            match parse(item.get_ref()) {
                Ok(t) => out.push(t),
                Err(m) => cx.error(&item_path, m),
            }
        }
        out
    }

    /// A table whose keys are data (domains), each mapped to a value.
    /// Keys are normalised by `parse_key`; two spellings of the same key are
    /// a problem because which one wins would be an accident.
    pub(crate) fn map<T>(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        parse_key: impl Fn(&str) -> Result<String, String>,
        parse: impl Fn(&DeValue<'_>) -> Result<T, String>,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let Some((path, v)) = self.lookup(cx, key) else {
            return out;
        };
        let DeValue::Table(table) = v.get_ref() else {
            cx.error(
                &path,
                format!("expected a table, found {}", kind(v.get_ref())),
            );
            return out;
        };
        for (k, item) in table.iter() {
            let item_path = join(&path, k.get_ref());
            cx.remember(&item_path, k.span());
            let name = match parse_key(k.get_ref()) {
                Ok(name) => name,
                Err(m) => {
                    cx.error(&item_path, m);
                    continue;
                }
            };
            match parse(item.get_ref()) {
                Ok(t) => {
                    if out.insert(name.clone(), t).is_some() {
                        cx.error(&item_path, format!("{name:?} is listed more than once"));
                    }
                }
                Err(m) => cx.error(&item_path, m),
            }
        }
        out
    }

    /// An array of tables (`[[smtp.submission.users]]`); each element is a
    /// section of its own, named `key[i]`.
    pub(crate) fn tables(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Vec<Section<'a, 'i>> {
        let Some((path, v)) = self.lookup(cx, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            cx.error(
                &path,
                format!("expected an array of tables, found {}", kind(v.get_ref())),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            cx.remember(&item_path, item.span());
            match item.get_ref() {
                DeValue::Table(t) => out.push(Section {
                    path: item_path,
                    table: Some(t),
                    known: Vec::new(),
                }),
                other => cx.error(
                    &item_path,
                    format!("expected a table, found {}", kind(other)),
                ),
            }
        }
        out
    }

    /// The path of this section (for messages about the section as a whole).
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Warns about every key that no setting asked for: most often a typo,
    /// which would otherwise silently leave the default in force.
    pub(crate) fn finish(self, cx: &mut Cx<'_>) {
        let Some(table) = self.table else { return };
        for (k, _) in table.iter() {
            if !self.known.contains(&k.get_ref().as_ref()) {
                let path = join(&self.path, k.get_ref());
                cx.remember(&path, k.span());
                let hint = self
                    .known
                    .iter()
                    .find(|known| close(known, k.get_ref()))
                    .map(|known| format!(" (did you mean `{}`?)", join(&self.path, known)))
                    .unwrap_or_default();
                cx.warn(&path, format!("unknown key, ignored{hint}"));
            }
        }
    }
}

/// "Close enough to be a typo": same length with one character different,
/// or one character inserted or left out.
fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    match long.len() - short.len() {
        0 => {
            short
                .iter()
                .zip(long.iter())
                .filter(|(x, y)| x != y)
                .count()
                == 1
        }
        1 => (0..long.len()).any(|skip| {
            long.iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, c)| c)
                .eq(short.iter())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_keys_that_need_it() {
        assert_eq!(join("", "smtp"), "smtp");
        assert_eq!(join("smtp", "listen"), "smtp.listen");
        assert_eq!(
            join("routing.routes", "partner.example"),
            "routing.routes.\"partner.example\""
        );
    }

    #[test]
    fn typo_detection() {
        assert!(close("listen", "lisen"));
        assert!(!close("listen", "listne"));
        assert!(close("hostname", "hostnane"));
        assert!(close("listen", "listens"));
        assert!(!close("listen", "hostname"));
    }

    #[test]
    fn line_numbers_are_one_based() {
        let cx = Cx::new("a = 1\nb = 2\n");
        assert_eq!(cx.line_of(&(0..1)), 1);
        assert_eq!(cx.line_of(&(6..7)), 2);
        assert_eq!(cx.line_of(&(999..1000)), 3);
    }
}
