//! Outbound S/MIME throughput on one core: sign + encrypt of 10 KB mails,
//! the way the gateway does it (keys parsed once, [`Signer`] reused).
//!
//! `bench/smime/run.sh` runs this beside `openssl speed` and a naive
//! `openssl cms` loop, pinned to one core, interleaved; see
//! bench/smime/README.md.
//!
//! Usage: smime_bench --dir DIR [--seconds N] [--key rsa3072|p256]
//!                    [--what both|sign|encrypt]
//!
//! DIR holds ca.pem, alice.pem, alice.key, bob.pem and mail.eml; they are
//! created on the first run, so later runs and the naive loop work on the
//! very same mail with the very same keys (and key generation is never
//! part of a measurement or a profile).

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openssl::pkey::PKey;
use openssl::x509::X509;
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

fn create(dir: &Path, kind: KeyKind) -> Result<(), Error> {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let ca = Ca::create(&CaParams {
        common_name: "Bench CA".into(),
        organization: None,
        key: kind,
        not_before: now - 3600,
        validity_days: 30,
    })?;
    let issue = |a: &str| -> Result<_, Error> {
        let address = Address::parse(a)?;
        Ok(ca.issue_user(&UserParams {
            address: &address,
            name: None,
            key: kind,
            not_before: now - 3600,
            validity_days: 30,
            crl_url: "http://example.com/ca.crl",
        })?)
    };
    let alice = issue("alice@example.com")?;
    let bob = issue("bob@example.org")?;
    std::fs::write(dir.join("ca.pem"), ca.certificate_pem()?)?;
    std::fs::write(dir.join("alice.pem"), alice.certificate.to_pem()?)?;
    std::fs::write(dir.join("alice.key"), alice.key.private_key_to_pem_pkcs8()?)?;
    std::fs::write(dir.join("bob.pem"), bob.certificate.to_pem()?)?;
    std::fs::write(dir.join("mail.eml"), mail_10k())?;
    Ok(())
}

fn main() -> Result<(), Error> {
    let mut seconds = 3.0f64;
    let mut dir: Option<String> = None;
    let mut kind = KeyKind::Rsa3072;
    let mut what = "both".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => seconds = value()?.parse()?,
            "--dir" => dir = Some(value()?),
            "--key" => {
                kind = match value()?.as_str() {
                    "rsa3072" => KeyKind::Rsa3072,
                    "p256" => KeyKind::EcP256,
                    other => return Err(format!("unknown key type {other}").into()),
                }
            }
            "--what" => what = value()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let dir = dir.ok_or("--dir DIR is required")?;
    let dir = Path::new(&dir);
    if !dir.join("mail.eml").exists() {
        create(dir, kind)?;
    }
    let read = |n: &str| std::fs::read(dir.join(n));
    let ca = X509::from_pem(&read("ca.pem")?)?;
    let signer = Signer::new(
        X509::from_pem(&read("alice.pem")?)?,
        PKey::private_key_from_pem(&read("alice.key")?)?,
        std::slice::from_ref(&ca),
    )?;
    let recipients = [X509::from_pem(&read("bob.pem")?)?];
    let mail = read("mail.eml")?;
    let signed = smime::sign(&mail, &signer)?;
    let one = |m: &[u8]| -> Result<usize, Error> {
        Ok(match what.as_str() {
            "both" => smime::sign_and_encrypt(m, &signer, &recipients, ContentCipher::Aes256Cbc)?,
            "sign" => smime::sign(m, &signer)?,
            "encrypt" => smime::encrypt(&signed, &recipients, ContentCipher::Aes256Cbc)?,
            other => return Err(format!("unknown --what {other}").into()),
        }
        .len())
    };

    // warm up (page in, CPU frequency, OpenSSL's lazily fetched algorithms)
    for _ in 0..5 {
        one(&mail)?;
    }
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let mut count = 0u64;
    let mut bytes = 0usize;
    // Run until this process has had `seconds` of CPU (and at most 4× that
    // in wall time): on a shared machine the wall clock also counts the
    // time other processes had the core.
    while cpu_seconds() - cpu_start < seconds && start.elapsed().as_secs_f64() < 4.0 * seconds {
        bytes += one(&mail)?;
        count += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    println!("what={what}");
    println!("mail_bytes={}", mail.len());
    println!("mails={count}");
    println!("seconds={elapsed:.3}");
    println!("cpu_seconds={cpu:.3}");
    println!(
        "avg_output_bytes={}",
        bytes / usize::try_from(count.max(1))?
    );
    println!("mails_per_sec={:.1}", count as f64 / elapsed);
    // per CPU-second, like `openssl speed` (which counts user CPU time)
    println!("mails_per_cpu_sec={:.1}", count as f64 / cpu);
    Ok(())
}

/// CPU time of this (single-threaded) process in seconds: the first field
/// of /proc/self/schedstat is the time it ran on a CPU, in nanoseconds.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}
