//! SMTP command parsing (RFC 5321 §4.1, RFC 1870 SIZE, RFC 6152 8BITMIME,
//! RFC 6531 SMTPUTF8, RFC 3461 DSN, RFC 4954 AUTH).
//!
//! Written by hand rather than with a general parser so that every syntax
//! error maps to one precise reply and addresses go through
//! [`Address::parse`], the one place where normalisation happens.

use siegel_types::{Address, DsnRet, NotifyOn, ReversePath, SmtpReply};

/// Parameters of `MAIL FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    pub path: ReversePath,
    /// `SIZE=n` (RFC 1870): the client's size estimate.
    pub size: Option<u64>,
    /// `BODY=8BITMIME`.
    pub body8bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=FULL|HDRS`.
    pub ret: Option<DsnRet>,
    /// `ENVID=`, still xtext-encoded as given (it is passed on unchanged).
    pub envid: Option<String>,
}

/// Parameters of `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    pub path: Address,
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<NotifyOn>,
    /// `ORCPT=` as given (`rfc822;addr`, xtext).
    pub orcpt: Option<String>,
}

/// One parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    MailFrom(MailFrom),
    RcptTo(RcptTo),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Expn(String),
    StartTls,
    /// `AUTH mechanism [initial-response]`; the mechanism is upper-cased.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Help,
    /// A verb we do not know (upper-cased, at most 16 characters kept).
    Unknown(String),
}

/// Why a command line is not acceptable; [`CommandError::reply`] gives the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// NUL, other control characters or invalid UTF-8 in the line.
    #[error("invalid characters in command")]
    InvalidCharacters,
    /// Arguments are malformed.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// An address that [`Address::parse`] refused.
    #[error("bad address: {0}")]
    Address(String),
    /// A MAIL/RCPT parameter we do not know or do not support.
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
    /// A non-ASCII address without the SMTPUTF8 parameter (RFC 6531 §3.5).
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsSmtputf8,
}

impl CommandError {
    /// The SMTP reply for this error.
    pub fn reply(&self) -> SmtpReply {
        match self {
            Self::InvalidCharacters => {
                SmtpReply::new(500, "5.5.2", "Invalid characters in command")
            }
            Self::Syntax(what) => SmtpReply::new(501, "5.5.4", format!("Syntax error: {what}")),
            Self::Address(_) => SmtpReply::new(501, "5.1.3", "Bad address syntax"),
            Self::UnknownParameter(p) => {
                SmtpReply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
            }
            Self::NeedsSmtputf8 => {
                SmtpReply::new(553, "5.6.7", "Non-ASCII addresses require SMTPUTF8")
            }
        }
    }
}

/// Parses one command line (without its line end).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::InvalidCharacters)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::InvalidCharacters);
    }
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, args) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax("no arguments allowed"))
        }
    };
    match upper.as_str() {
        "EHLO" | "HELO" => {
            if args.is_empty() {
                return Err(CommandError::Syntax(
                    "a domain name or address literal is required",
                ));
            }
            if args.contains([' ', '\t']) {
                return Err(CommandError::Syntax("one domain name expected"));
            }
            let name = args.to_owned();
            Ok(if upper == "EHLO" {
                Command::Ehlo(name)
            } else {
                Command::Helo(name)
            })
        }
        "MAIL" => parse_mail(strip_keyword(args, "FROM:")?).map(Command::MailFrom),
        "RCPT" => parse_rcpt(strip_keyword(args, "TO:")?).map(Command::RcptTo),
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        // NOOP and HELP may carry an argument, which is ignored (RFC 5321 §4.1.1.9/10).
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy(args.to_owned())),
        "EXPN" => Ok(Command::Expn(args.to_owned())),
        "AUTH" => {
            let mut parts = args.split([' ', '\t']).filter(|p| !p.is_empty());
            let mechanism = parts
                .next()
                .ok_or(CommandError::Syntax("mechanism required"))?;
            let initial = parts.next().map(str::to_owned);
            if parts.next().is_some() {
                return Err(CommandError::Syntax("too many arguments"));
            }
            Ok(Command::Auth {
                mechanism: mechanism.to_ascii_uppercase(),
                initial,
            })
        }
        _ => Ok(Command::Unknown(upper.chars().take(16).collect())),
    }
}

/// Strips `FROM:` / `TO:` case-insensitively; tolerates a space after the colon.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Result<&'a str, CommandError> {
    match args.get(..keyword.len()) {
        Some(head) if head.eq_ignore_ascii_case(keyword) => {
            Ok(args[keyword.len()..].trim_start_matches([' ', '\t']))
        }
        _ => Err(CommandError::Syntax(if keyword == "TO:" {
            "expected RCPT TO:<address>"
        } else {
            "expected MAIL FROM:<address>"
        })),
    }
}

/// Splits `<path> params` into the text inside the brackets and the rest.
/// Quoted local parts may contain `>`, so quotes are honoured.
fn split_path(args: &str) -> Result<(&str, &str), CommandError> {
    let rest = args
        .strip_prefix('<')
        .ok_or(CommandError::Syntax("address must be in angle brackets"))?;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let params = &rest[i + 1..];
                if !params.is_empty() && !params.starts_with([' ', '\t']) {
                    return Err(CommandError::Syntax("space expected after the address"));
                }
                return Ok((&rest[..i], params.trim_start_matches([' ', '\t'])));
            }
            _ => {}
        }
    }
    Err(CommandError::Syntax("missing closing angle bracket"))
}

/// Removes an obsolete source route (`@a,@b:user@d`, RFC 5321 §4.1.2), which
/// must be accepted and ignored.
fn strip_source_route(path: &str) -> &str {
    match path.find(':') {
        Some(i) if path.starts_with('@') => &path[i + 1..],
        _ => path,
    }
}

fn parse_address(path: &str) -> Result<Address, CommandError> {
    let address = Address::parse(strip_source_route(path))
        .map_err(|e| CommandError::Address(e.to_string()))?;
    // `Address::parse` splits at the last `@` and so takes `a@@b.de` with
    // local part `a@`; an unquoted `@` is not valid in a local part.
    let local = address.local();
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if !quoted && local.contains('@') {
        return Err(CommandError::Address(path.to_owned()));
    }
    Ok(address)
}

/// Splits the parameter list into `(KEY upper-cased, value)`.
fn params(text: &str) -> impl Iterator<Item = (String, Option<&str>)> {
    text.split([' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (p.to_ascii_uppercase(), None),
        })
}

/// RFC 3461 xtext: printable ASCII except `+` and `=`, or `+HH`.
fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |x: Option<&u8>| {
                    x.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                };
                if !(hex(b.get(i + 1)) && hex(b.get(i + 2))) {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

fn parse_mail(args: &str) -> Result<MailFrom, CommandError> {
    let (path, rest) = split_path(args)?;
    let path = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Address(parse_address(path)?)
    };
    let mut mail = MailFrom {
        path,
        size: None,
        body8bit: false,
        smtputf8: false,
        ret: None,
        envid: None,
    };
    let mut seen = Vec::new();
    for (key, value) in params(rest) {
        if seen.contains(&key) {
            return Err(CommandError::Syntax("duplicate parameter"));
        }
        seen.push(key.clone());
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                let n = v
                    .parse::<u64>()
                    .map_err(|_| CommandError::Syntax("SIZE must be a number"))?;
                mail.size = Some(n);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => mail.body8bit = true,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {}
            ("SMTPUTF8", None) => mail.smtputf8 = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => mail.ret = Some(DsnRet::Full),
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => mail.ret = Some(DsnRet::Headers),
            ("RET", _) => return Err(CommandError::Syntax("RET must be FULL or HDRS")),
            ("ENVID", Some(v)) if !v.is_empty() && v.len() <= 100 && is_xtext(v) => {
                mail.envid = Some(v.to_owned())
            }
            ("ENVID", _) => {
                return Err(CommandError::Syntax(
                    "ENVID must be xtext of at most 100 characters",
                ));
            }
            // RFC 4954 AUTH=: relays add it; the identity is not trusted, so ignored.
            ("AUTH", Some(_)) => {}
            _ => return Err(CommandError::UnknownParameter(key)),
        }
    }
    if !mail.smtputf8 && mail.path.address().is_some_and(Address::needs_smtputf8) {
        return Err(CommandError::NeedsSmtputf8);
    }
    Ok(mail)
}

fn parse_notify(value: &str) -> Result<NotifyOn, CommandError> {
    let mut notify = NotifyOn::default();
    for word in value.split(',') {
        match word.to_ascii_uppercase().as_str() {
            "NEVER" => notify.never = true,
            "SUCCESS" => notify.success = true,
            "FAILURE" => notify.failure = true,
            "DELAY" => notify.delay = true,
            _ => {
                return Err(CommandError::Syntax(
                    "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY",
                ));
            }
        }
    }
    if notify.never && (notify.success || notify.failure || notify.delay) {
        return Err(CommandError::Syntax("NOTIFY=NEVER cannot be combined"));
    }
    Ok(notify)
}

fn parse_rcpt(args: &str) -> Result<RcptTo, CommandError> {
    let (path, rest) = split_path(args)?;
    if path.is_empty() {
        return Err(CommandError::Syntax("empty recipient"));
    }
    let mut rcpt = RcptTo {
        path: parse_address(path)?,
        notify: None,
        orcpt: None,
    };
    let mut seen = Vec::new();
    for (key, value) in params(rest) {
        if seen.contains(&key) {
            return Err(CommandError::Syntax("duplicate parameter"));
        }
        seen.push(key.clone());
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => rcpt.notify = Some(parse_notify(v)?),
            ("ORCPT", Some(v)) => {
                let valid = v.split_once(';').is_some_and(|(kind, addr)| {
                    !kind.is_empty()
                        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !addr.is_empty()
                });
                if !valid || v.len() > 500 {
                    return Err(CommandError::Syntax("ORCPT must be addr-type;address"));
                }
                rcpt.orcpt = Some(v.to_owned());
            }
            _ => return Err(CommandError::UnknownParameter(key)),
        }
    }
    Ok(rcpt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, CommandError> {
        parse_command(s.as_bytes())
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn simple_verbs_are_case_insensitive() {
        assert_eq!(
            parse("ehlo Client.Example").unwrap(),
            Command::Ehlo("Client.Example".into())
        );
        assert_eq!(parse("HELO x").unwrap(), Command::Helo("x".into()));
        assert_eq!(parse("data").unwrap(), Command::Data);
        assert_eq!(parse("RSET").unwrap(), Command::Rset);
        assert_eq!(parse("NOOP hello").unwrap(), Command::Noop);
        assert_eq!(parse("QUIT").unwrap(), Command::Quit);
        assert_eq!(parse("StartTLS").unwrap(), Command::StartTls);
        assert_eq!(parse("VRFY bob").unwrap(), Command::Vrfy("bob".into()));
        assert_eq!(parse("EXPN list").unwrap(), Command::Expn("list".into()));
        assert_eq!(parse("HELP").unwrap(), Command::Help);
        assert_eq!(parse("BDAT 10").unwrap(), Command::Unknown("BDAT".into()));
        assert_eq!(parse("").unwrap(), Command::Unknown("".into()));
    }

    #[test]
    fn argument_errors() {
        assert_eq!(parse("EHLO").unwrap_err().reply().code, 501);
        assert_eq!(parse("DATA now").unwrap_err().reply().code, 501);
        assert_eq!(parse("QUIT x").unwrap_err().reply().code, 501);
        assert_eq!(parse("STARTTLS x").unwrap_err().reply().code, 501);
        assert_eq!(parse("AUTH").unwrap_err().reply().code, 501);
    }

    #[test]
    fn garbage_is_refused_with_552() {
        for bad in [
            &b"EHLO \x00x"[..],
            b"\xff\xfe\x00",
            b"MAIL FROM:<a@b.de>\x07",
        ] {
            let err = parse_command(bad).unwrap_err();
            assert_eq!(err, CommandError::InvalidCharacters);
            let reply = err.reply();
            assert_eq!(
                (reply.code, reply.enhanced.as_deref()),
                (500, Some("5.5.2"))
            );
        }
    }

    #[test]
    fn mail_from_with_all_parameters() {
        let cmd = parse("MAIL FROM:<Alice@Example.COM> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef AUTH=<>").unwrap();
        assert_eq!(
            cmd,
            Command::MailFrom(MailFrom {
                path: ReversePath::Address(addr("Alice@example.com")),
                size: Some(1000),
                body8bit: true,
                smtputf8: false,
                ret: Some(DsnRet::Headers),
                envid: Some("abc+2Bdef".into()),
            })
        );
    }

    #[test]
    fn mail_from_variants() {
        let Command::MailFrom(m) = parse("mail from: <>").unwrap() else {
            panic!()
        };
        assert_eq!(m.path, ReversePath::Null);
        let Command::MailFrom(m) = parse("MAIL FROM:<@relay.example:a@b.de>").unwrap() else {
            panic!()
        };
        assert_eq!(m.path, ReversePath::Address(addr("a@b.de")));
        let Command::MailFrom(m) = parse("MAIL FROM:<\"a>b\"@b.de>").unwrap() else {
            panic!()
        };
        assert_eq!(m.path.address().unwrap().local(), "\"a>b\"");
        let Command::MailFrom(m) = parse("MAIL FROM:<jörg@b.de> SMTPUTF8").unwrap() else {
            panic!()
        };
        assert!(m.smtputf8);
    }

    #[test]
    fn mail_from_errors() {
        let code = |s: &str| {
            let r = parse(s).unwrap_err().reply();
            (r.code, r.enhanced.unwrap())
        };
        assert_eq!(code("MAIL TO:<a@b.de>"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:a@b.de"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@b.de"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@b.de>SIZE=1"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@@>"), (501, "5.1.3".into()));
        assert_eq!(code("MAIL FROM:<a@b.de> SIZE=x"), (501, "5.5.4".into()));
        assert_eq!(
            code("MAIL FROM:<a@b.de> SIZE=1 SIZE=2"),
            (501, "5.5.4".into())
        );
        assert_eq!(code("MAIL FROM:<a@b.de> RET=ALL"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@b.de> ENVID=a=b"), (501, "5.5.4".into()));
        assert_eq!(code("MAIL FROM:<a@b.de> FOO=bar"), (555, "5.5.4".into()));
        assert_eq!(
            code("MAIL FROM:<a@b.de> BODY=BINARYMIME"),
            (555, "5.5.4".into())
        );
        assert_eq!(code("MAIL FROM:<jörg@b.de>"), (553, "5.6.7".into()));
    }

    #[test]
    fn rcpt_to_with_dsn_parameters() {
        let cmd =
            parse("RCPT TO:<Bob@EXAMPLE.org> NOTIFY=SUCCESS,failure ORCPT=rfc822;Bob@example.org")
                .unwrap();
        assert_eq!(
            cmd,
            Command::RcptTo(RcptTo {
                path: addr("Bob@example.org"),
                notify: Some(NotifyOn {
                    success: true,
                    failure: true,
                    ..Default::default()
                }),
                orcpt: Some("rfc822;Bob@example.org".into()),
            })
        );
    }

    #[test]
    fn rcpt_to_errors() {
        let code = |s: &str| parse(s).unwrap_err().reply().code;
        assert_eq!(code("RCPT TO:<>"), 501);
        assert_eq!(code("RCPT TO:<bob@@example.com>"), 501);
        assert_eq!(code("RCPT TO:<a@b@example.com>"), 501);
        assert_eq!(code("RCPT FROM:<a@b.de>"), 501);
        assert_eq!(code("RCPT TO:<a@b.de> NOTIFY=NEVER,DELAY"), 501);
        assert_eq!(code("RCPT TO:<a@b.de> NOTIFY=SOMETIMES"), 501);
        assert_eq!(code("RCPT TO:<a@b.de> ORCPT=nosemicolon"), 501);
        assert_eq!(code("RCPT TO:<a@b.de> SIZE=10"), 555);
    }

    #[test]
    fn auth_command() {
        assert_eq!(
            parse("auth plain AGEAYg==").unwrap(),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(
            parse("AUTH LOGIN").unwrap(),
            Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None
            }
        );
        assert_eq!(parse("AUTH PLAIN a b").unwrap_err().reply().code, 501);
    }

    #[test]
    fn xtext() {
        assert!(is_xtext("abc+2B"));
        assert!(!is_xtext("abc+2"));
        assert!(!is_xtext("abc+zz"));
        assert!(!is_xtext("a b"));
    }
}
