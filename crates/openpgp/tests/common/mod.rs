//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_openpgp::{Cert, Pgp};

/// 2026-06-01: after every sample was made, before any sample key expires.
pub fn pinned() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

pub fn pgp() -> Pgp {
    Pgp::new().at(pinned())
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
}

pub fn tb(rel: &str) -> Vec<u8> {
    read(&format!("thunderbird/mail/test/browser/openpgp/data/{rel}"))
}

pub fn dc(rel: &str) -> Vec<u8> {
    read(&format!("deltachat/test-data/{rel}"))
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = testdata().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn cert(pgp: &Pgp, data: &[u8]) -> Cert {
    let mut keys = pgp.import_keys(data).expect("key parses");
    assert_eq!(keys.len(), 1);
    keys.remove(0).cert
}

pub const ALICE_SEC: &str = "keys/alice@openpgp.example-0xf231550c4f47e38e-secret.asc";
pub const ALICE_PUB: &str = "keys/alice@openpgp.example-0xf231550c4f47e38e-pub.asc";
pub const BOB_SEC: &str = "keys/bob@openpgp.example-0xfbfcc82a015e7330-secret.asc";
pub const BOB_PUB: &str = "keys/bob@openpgp.example-0xfbfcc82a015e7330-pub.asc";
pub const ALICE_FPR: &str = "EB85BB5FA33A75E15E944E63F231550C4F47E38E";
pub const BOB_FPR: &str = "D1A66E1A23B182C9980F788CFBFCC82A015E7330";
