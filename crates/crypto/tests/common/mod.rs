//! Shared fixtures for the interop tests: a CA with users, the real tools.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use siegel_crypto::pki::{Ca, CaParams, Issued, KeyKind, UserParams};
use siegel_crypto::smime::{Signer, TrustStore};
use siegel_types::Address;

pub const CRL_URL: &str = "http://siegel.example.com/crl/ca.crl";

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A CA and two users (alice, bob) written to a temporary directory as PEM.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub alice: Issued,
    pub bob: Issued,
}

impl Pki {
    pub fn new(kind: KeyKind) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&CaParams {
            common_name: "Siegel Test CA".into(),
            organization: Some("Siegel Test".into()),
            key: kind,
            not_before: now() - 3600,
            validity_days: 3650,
        })
        .unwrap();
        let issue = |addr: &str, name: &str| {
            let address = Address::parse(addr).unwrap();
            ca.issue_user(&UserParams {
                address: &address,
                name: Some(name),
                key: kind,
                not_before: now() - 3600,
                validity_days: 365,
                crl_url: CRL_URL,
            })
            .unwrap()
        };
        let alice = issue("alice@example.com", "Alice Example");
        let bob = issue("bob@example.org", "Bob Example");
        let pki = Pki {
            dir,
            ca,
            alice,
            bob,
        };
        pki.write("ca.pem", &pki.ca.certificate_pem().unwrap());
        pki.write("alice.pem", &pki.alice.certificate.to_pem().unwrap());
        pki.write(
            "alice.key",
            &pki.alice.key.private_key_to_pem_pkcs8().unwrap(),
        );
        pki.write("bob.pem", &pki.bob.certificate.to_pem().unwrap());
        pki.write("bob.key", &pki.bob.key.private_key_to_pem_pkcs8().unwrap());
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    pub fn alice_signer(&self) -> Signer {
        Signer::new(
            self.alice.certificate.clone(),
            self.alice.key.clone(),
            &[self.ca.certificate().clone()],
        )
        .unwrap()
    }

    pub fn trust(&self) -> TrustStore {
        let mut t = TrustStore::new();
        t.add(self.ca.certificate().clone());
        t
    }
}

/// Runs a tool, feeding `stdin`; panics with a clear message if it is missing.
pub fn run(program: &str, args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    {
        let mut si = child.stdin.take().unwrap();
        // the tool may exit early; a broken pipe is its verdict, not ours
        let _ = si.write_all(stdin);
    }
    child.wait_with_output().unwrap()
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `true` when the tool exists; tests skip with a message otherwise.
pub fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        // In CI a missing peer is a set-up failure (scripts/test installs it),
        // never a silently green interop test.
        assert!(
            std::env::var_os("CI").is_none(),
            "`{program}` is required for the interop tests in CI"
        );
        eprintln!("SKIPPED: `{program}` is not installed");
    }
    found
}

/// A throw-away GnuPG home for gpgsm with our CA trusted and CRL checks off.
pub struct GpgHome {
    pub dir: tempfile::TempDir,
}

impl GpgHome {
    pub fn new(ca: &X509) -> GpgHome {
        let dir = tempfile::Builder::new()
            .prefix("gh")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        std::fs::write(
            dir.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\n",
        )
        .unwrap();
        let home = GpgHome { dir };
        let out = home.gpgsm(&["--import"], &ca.to_pem().unwrap());
        ok(&out, "gpgsm --import CA");
        let fpr = ca
            .digest(MessageDigest::sha1())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        std::fs::write(home.dir.path().join("trustlist.txt"), format!("{fpr} S\n")).unwrap();
        home
    }

    pub fn gpgsm(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = vec!["--batch", "--pinentry-mode", "loopback"];
        all.extend_from_slice(args);
        run("gpgsm", &all, stdin, &[("GNUPGHOME", self.dir.path())])
    }

    /// Imports a key as PKCS#12 made by our exporter; passphrase "test".
    ///
    /// gpgsm 2.2's PKCS#12 reader rejects about 1 in 60 valid files (the
    /// same key and password with another random salt imports fine, and
    /// `openssl pkcs12` reads every one of them): it then reports "error
    /// parsing or decrypting the PKCS#12 file". Only that failure is
    /// retried, with a fresh export; any other failure fails the test.
    pub fn import_key(&self, cert: &X509, key: &PKey<Private>, ca: &X509) {
        let path = self.dir.path().join("key.p12");
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            let p12 =
                siegel_crypto::pki::export_p12(cert, key, std::slice::from_ref(ca), "key", "test")
                    .unwrap();
            std::fs::write(&path, p12).unwrap();
            let out = self.gpgsm(
                &["--passphrase-fd", "0", "--import", path.to_str().unwrap()],
                b"test\n",
            );
            let salt_bug = String::from_utf8_lossy(&out.stderr)
                .contains("error parsing or decrypting the PKCS#12 file");
            if out.status.success() || !salt_bug || attempt == 5 {
                break out;
            }
        };
        ok(&out, "gpgsm --import p12");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("secret keys imported: 1"), "{stderr}");
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", self.dir.path())
            .status();
    }
}

/// A plain mail with an 8-bit UTF-8 body.
pub fn sample_mail() -> Vec<u8> {
    "From: Alice Example <alice@example.com>\r\n\
     To: Bob Example <bob@example.org>\r\n\
     Subject: Quarterly figures\r\n\
     Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n\
     MIME-Version: 1.0\r\n\
     Content-Type: text/plain; charset=utf-8\r\n\
     Content-Transfer-Encoding: 8bit\r\n\
     \r\n\
     Grüße aus Köln — the figures are attached.\r\n\
     Line with trailing space \r\n\
     From the team\r\n"
        .as_bytes()
        .to_vec()
}

/// The body part of a multipart/signed as signed bytes plus the DER
/// signature, cut the naive way a test can check independently.
pub fn split_signed(mail: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8_lossy(mail).into_owned();
    let b_start = text.find("boundary=\"").unwrap() + 10;
    let b_end = b_start + text[b_start..].find('"').unwrap();
    let delim = format!("--{}", &text[b_start..b_end]);
    let first = text.find(&format!("\r\n{delim}\r\n")).unwrap() + delim.len() + 4;
    let second = first + text[first..].find(&format!("\r\n{delim}\r\n")).unwrap();
    let content = text.as_bytes()[first..second].to_vec();
    let sig_part = &text[second + delim.len() + 4..];
    let sig_body_start = sig_part.find("\r\n\r\n").unwrap() + 4;
    let sig_end = sig_part.find(&format!("{delim}--")).unwrap();
    let b64: String = sig_part[sig_body_start..sig_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    (content, der)
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned() + "\r\n")
        .collect()
}
