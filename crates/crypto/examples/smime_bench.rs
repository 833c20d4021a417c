//! Outbound S/MIME throughput on one core: sign + encrypt of 10 KB mails
//! with RSA-3072 keys, the way the gateway does it (keys parsed once, reused).
//!
//! `bench/smime/run.sh` runs this beside `openssl speed rsa3072` and a naive
//! `openssl cms` loop; see bench/smime/README.md.
//!
//! Usage: smime_bench [--seconds N] [--out DIR]
//! With --out, writes ca.pem, alice.pem, alice.key, bob.pem and mail.eml so
//! the naive loop signs and encrypts the very same mail with the same keys.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use siegel_crypto::pki::{Ca, CaParams, KeyKind, UserParams};
use siegel_crypto::smime::{self, ContentCipher, Signer};
use siegel_types::Address;

type Error = Box<dyn std::error::Error>;

fn mail_10k() -> Vec<u8> {
    let mut mail = String::from(
        "From: Alice Example <alice@example.com>\r\n\
         To: Bob Example <bob@example.org>\r\n\
         Subject: Benchmark mail\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n",
    );
    let line = "Quarterly figures for the Köln office, rounded to the nearest euro.\r\n";
    while mail.len() < 10 * 1024 {
        mail.push_str(line);
    }
    mail.into_bytes()
}

fn main() -> Result<(), Error> {
    let mut seconds = 3.0f64;
    let mut out_dir: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds needs a value")?.parse()?,
            "--out" => out_dir = Some(args.next().ok_or("--out needs a directory")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let ca = Ca::create(&CaParams {
        common_name: "Bench CA".into(),
        organization: None,
        key: KeyKind::Rsa3072,
        not_before: now - 3600,
        validity_days: 30,
    })?;
    let issue = |a: &str| -> Result<_, Error> {
        let address = Address::parse(a)?;
        Ok(ca.issue_user(&UserParams {
            address: &address,
            name: None,
            key: KeyKind::Rsa3072,
            not_before: now - 3600,
            validity_days: 30,
            crl_url: "http://example.com/ca.crl",
        })?)
    };
    let alice = issue("alice@example.com")?;
    let bob = issue("bob@example.org")?;
    let mail = mail_10k();
    if let Some(dir) = &out_dir {
        let dir = std::path::Path::new(dir);
        std::fs::write(dir.join("ca.pem"), ca.certificate_pem()?)?;
        std::fs::write(dir.join("alice.pem"), alice.certificate.to_pem()?)?;
        std::fs::write(dir.join("alice.key"), alice.key.private_key_to_pem_pkcs8()?)?;
        std::fs::write(dir.join("bob.pem"), bob.certificate.to_pem()?)?;
        std::fs::write(dir.join("mail.eml"), &mail)?;
    }
    let signer = Signer::new(
        alice.certificate.clone(),
        alice.key.clone(),
        std::slice::from_ref(ca.certificate()),
    )?;
    let recipients = [bob.certificate.clone()];

    // warm up (page in, CPU frequency)
    for _ in 0..5 {
        smime::sign_and_encrypt(&mail, &signer, &recipients, ContentCipher::Aes256Cbc)?;
    }
    let start = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        let out = smime::sign_and_encrypt(&mail, &signer, &recipients, ContentCipher::Aes256Cbc)?;
        bytes += out.len();
        count += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("mail_bytes={}", mail.len());
    println!("mails={count}");
    println!("seconds={elapsed:.3}");
    println!(
        "avg_output_bytes={}",
        bytes / usize::try_from(count.max(1))?
    );
    println!("mails_per_sec={:.1}", count as f64 / elapsed);
    Ok(())
}
