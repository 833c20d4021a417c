//! Interop with the real GnuPG, both directions, Curve25519 and RSA.
//! Skipped locally (with a message) when `gpg` is missing; fails in CI.
#![allow(clippy::unwrap_used, clippy::cloned_ref_to_slice_refs)] // helpers unwrap too; slices of clones read better

mod common;

use std::path::Path;
use std::process::Command;

use siegel_openpgp::{Encryption, KeyAlgorithm, Pgp, SignatureStatus, mime};
use siegel_types::Address;

fn gpg_available() -> bool {
    let ok = Command::new("gpg")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "gpg is required in CI");
        eprintln!("SKIP: gpg not installed");
    }
    ok
}

fn gpg(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, Vec<u8>) {
    use std::io::Write;
    let mut child = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--status-fd",
            "2",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gpg");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("gpg output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.stdout,
    )
}

fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
    }
    dir
}

const MAIL: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: interop\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from Siegel \xe2\x9c\x93\r\n";

fn we_encrypt_gpg_decrypts(algo: KeyAlgorithm) {
    if !gpg_available() {
        return;
    }
    // gpg checks against the real clock: keys are made "now".
    let pgp = Pgp::new();
    let a = pgp
        .generate_key(&Address::parse("a@example.org").unwrap(), algo)
        .unwrap();
    let b = pgp
        .generate_key(&Address::parse("b@example.org").unwrap(), algo)
        .unwrap();
    let dir = home();
    let (ok, err, _) = gpg(
        dir.path(),
        &["--import"],
        Some(pgp.export_public(&a).unwrap().as_bytes()),
    );
    assert!(ok, "{err}");
    let (ok, err, _) = gpg(
        dir.path(),
        &["--import"],
        Some(&pgp.secret_key_bytes(&b).unwrap()),
    );
    assert!(ok, "{err}");

    let out = pgp.encrypt_and_sign(MAIL, &a, &[&b]).unwrap();
    let top = mime::parse_entity(&out, 0..out.len());
    let parts = top.children(&out);
    let payload = parts[1].decoded_body(&out);
    let (ok, status, plain) = gpg(dir.path(), &["--decrypt"], Some(&payload));
    assert!(ok, "{status}");
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(
        status.contains(&format!("VALIDSIG {}", a.fingerprint().to_hex()))
            || status.contains("VALIDSIG"),
        "{status}"
    );
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.contains("Subject: interop"), "{plain}");
    assert!(plain.contains("Hello from Siegel ✓"));

    // Signed-only: cut the parts and let gpg verify the detached signature.
    let signed = pgp.sign(MAIL, &a).unwrap();
    let top = mime::parse_entity(&signed, 0..signed.len());
    let parts = top.children(&signed);
    let content = dir.path().join("content");
    let sig = dir.path().join("sig.asc");
    std::fs::write(&content, &signed[parts[0].range.clone()]).unwrap();
    std::fs::write(&sig, parts[1].decoded_body(&signed)).unwrap();
    let (ok, status, _) = gpg(
        dir.path(),
        &["--verify", sig.to_str().unwrap(), content.to_str().unwrap()],
        None,
    );
    assert!(ok && status.contains("GOODSIG"), "{status}");
}

#[test]
fn gpg_decrypts_and_verifies_our_curve25519_mail() {
    we_encrypt_gpg_decrypts(KeyAlgorithm::Cv25519);
}

#[test]
fn gpg_decrypts_and_verifies_our_rsa_mail() {
    we_encrypt_gpg_decrypts(KeyAlgorithm::Rsa3072);
}

#[test]
fn we_decrypt_and_verify_what_gpg_encrypts_and_signs() {
    gpg_to_us(KeyAlgorithm::Cv25519);
}

#[test]
fn we_decrypt_and_verify_what_gpg_encrypts_and_signs_to_an_rsa_key() {
    gpg_to_us(KeyAlgorithm::Rsa3072);
}

fn gpg_to_us(our_algo: KeyAlgorithm) {
    if !gpg_available() {
        return;
    }
    let pgp = Pgp::new();
    let ours = pgp
        .generate_key(&Address::parse("user@siegel.example").unwrap(), our_algo)
        .unwrap();
    let dir = home();
    let (ok, err, _) = gpg(
        dir.path(),
        &["--import"],
        Some(pgp.export_public(&ours).unwrap().as_bytes()),
    );
    assert!(ok, "{err}");
    for algo in ["ed25519", "rsa3072"] {
        let uid = format!("peer-{algo}@example.net");
        let (ok, err, _) = gpg(
            dir.path(),
            &["--quick-gen-key", &uid, algo, "sign", "1d"],
            None,
        );
        assert!(ok, "{err}");
        let (ok, err, peer_pub) = gpg(dir.path(), &["--export", &uid], None);
        assert!(ok, "{err}");
        let peer = pgp.import_keys(&peer_pub).unwrap().remove(0);

        let body = b"Content-Type: text/plain\r\n\r\nfrom gpg\r\n";
        let (ok, err, armoured) = gpg(
            dir.path(),
            &[
                "--trust-model",
                "always",
                "--armor",
                "--encrypt",
                "--sign",
                "-u",
                &uid,
                "-r",
                "user@siegel.example",
            ],
            Some(body),
        );
        assert!(ok, "{err}");
        let mut mail = b"From: peer@example.net\r\nTo: user@siegel.example\r\nSubject: ...\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        mail.extend_from_slice(&armoured);
        mail.extend_from_slice(b"\r\n--b--\r\n");
        let opened = pgp
            .open(&mail, &[ours.clone()], &[peer.cert.clone()])
            .unwrap();
        assert_eq!(opened.encryption, Encryption::PgpMime);
        assert!(
            matches!(&opened.signature, SignatureStatus::Valid { fingerprint, .. } if *fingerprint == peer.fingerprint),
            "{algo}: {:?}",
            opened.signature
        );
        assert!(String::from_utf8_lossy(&opened.message).contains("from gpg"));
    }
}
