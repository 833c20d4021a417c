//! Private clamd and spamd for the tests, started by the e2e harness's
//! `scanners.py` (one set-up for Rust tests, e2e tests and the benchmark):
//! a real clamd with a tiny database of test signatures, a real spamd with
//! the packaged rules, on loopback and a Unix socket. The daemon stops when
//! the [`Daemon`] is dropped — or when the test process dies, since the
//! helper watches its standard input.

// Test support: a failed set-up is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use siegel_config::ScannerAddress;

/// The EICAR test file; clamd in these tests knows it as [`EICAR_NAME`].
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
pub const EICAR_NAME: &str = "Siegel.Test.EICAR.UNOFFICIAL";
/// The custom test signature of the tests' clamd database.
pub const CUSTOM: &[u8] = b"SIEGEL-CUSTOM-TEST-SIGNATURE-5e1f0c27";
pub const CUSTOM_NAME: &str = "Siegel.Test.Custom.UNOFFICIAL";
/// SpamAssassin's test string: 1000 points.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

pub struct Daemon {
    child: Child,
    pub tcp: ScannerAddress,
    pub unix: ScannerAddress,
    pub start_seconds: f64,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn clamd() -> Daemon {
        Self::start("clamd", &[])
    }

    /// clamd with a small StreamMaxLength, e.g. "1M".
    pub fn clamd_with_stream_max(limit: &str) -> Daemon {
        Self::start("clamd", &["--stream-max", limit])
    }

    pub fn spamd() -> Daemon {
        Self::start("spamd", &[])
    }

    fn start(kind: &str, args: &[&str]) -> Daemon {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/harness/scanners.py");
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(kind)
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            !line.trim().is_empty(),
            "{kind} did not start (its log is above; are clamav-daemon and spamd installed? scripts/test installs them)"
        );
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
        let field = |k: &str| ready[k].as_str().unwrap().to_owned();
        Daemon {
            child,
            tcp: ScannerAddress::Tcp(field("tcp").trim_start_matches("tcp:").to_owned()),
            unix: ScannerAddress::Unix(PathBuf::from(field("unix").trim_start_matches("unix:"))),
            start_seconds: ready["start_seconds"].as_f64().unwrap_or(0.0),
            _dir: dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A plain, ordinary mail.
pub fn plain_mail() -> Vec<u8> {
    b"From: Alice Example <alice@example.com>\r\n\
To: Bob Example <bob@example.org>\r\n\
Subject: Meeting tomorrow\r\n\
Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n\
Message-ID: <20261201100000.4711@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hi Bob,\r\n\
\r\n\
shall we meet tomorrow at ten to go through the quarterly figures?\r\n\
I will bring the printouts.\r\n\
\r\n\
Alice\r\n"
        .to_vec()
}

/// A multipart mail with `attachment` base64-encoded as a file.
pub fn mail_with_attachment(attachment: &[u8], filename: &str) -> Vec<u8> {
    let mut b64 = String::new();
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(attachment);
    for line in encoded.as_bytes().chunks(76) {
        b64.push_str(std::str::from_utf8(line).unwrap());
        b64.push_str("\r\n");
    }
    format!(
        "From: Alice Example <alice@example.com>\r\n\
To: Bob Example <bob@example.org>\r\n\
Subject: The document\r\n\
Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n\
Message-ID: <20261201100001.4712@mail.example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\
\r\n\
--=_b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hi Bob, the document is attached.\r\n\
--=_b1\r\n\
Content-Type: application/octet-stream; name=\"{filename}\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"{filename}\"\r\n\
\r\n\
{b64}--=_b1--\r\n"
    )
    .into_bytes()
}

/// Real mails from the shared test data (clean by any scanner's measure).
pub fn real_mails() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/mail-parser/resources/eml");
    let mut out = Vec::new();
    for sub in ["rfc", "thirdparty"] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    assert!(
        out.len() >= 10,
        "shared test mails not found under {}",
        root.display()
    );
    out
}
