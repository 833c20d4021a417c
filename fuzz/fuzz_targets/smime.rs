//! Feeds arbitrary bytes to every S/MIME entry point that reads mail from
//! outside: verify (detached and opaque), decrypt, and sign (outbound mail
//! is client input too). Invariants: nothing panics; random bytes never
//! verify as signed by our CA; whatever we sign verifies.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use siegel_crypto::pki::{Ca, CaParams, Issued, KeyKind, UserParams};
use siegel_crypto::smime::{self, Signer, TrustStore};
use siegel_types::Address;

struct Fixture {
    trust: TrustStore,
    user: Issued,
    signer: Signer,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        // EC keys: cheap enough to sign on every iteration.
        let ca = Ca::create(&CaParams {
            common_name: "Fuzz CA".into(),
            organization: None,
            key: KeyKind::EcP256,
            not_before: now - 3600,
            validity_days: 30,
        })
        .expect("CA");
        let address = Address::parse("fuzz@example.com").expect("address");
        let user = ca
            .issue_user(&UserParams {
                address: &address,
                name: None,
                key: KeyKind::EcP256,
                not_before: now - 3600,
                validity_days: 30,
                crl_url: "http://example.com/ca.crl",
            })
            .expect("user");
        let signer = Signer::new(
            user.certificate.clone(),
            user.key.clone(),
            &[ca.certificate().clone()],
        )
        .expect("signer");
        let mut trust = TrustStore::new();
        trust.add(ca.certificate().clone());
        Fixture {
            trust,
            user,
            signer,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let now = SystemTime::now();
    let v = smime::verify(data, &f.trust, now);
    assert!(!v.is_valid(), "random input verified against a fresh CA");
    let _ = smime::decrypt(data, &f.user.certificate, &f.user.key);
    if let Ok(signed) = smime::sign(data, &f.signer) {
        assert!(
            smime::verify(&signed, &f.trust, now).is_valid(),
            "our own signature did not verify"
        );
    }
});
