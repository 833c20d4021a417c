//! WKD serving through real HTTP on loopback: a real listener and SQLite
//! store; requests written to a TCP socket with the Host header a WKD
//! client would send.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use siegel_gina::{Lang, PasswordPolicy, Themes};
use siegel_openpgp::{KeyAlgorithm, Pgp};
use siegel_portal::{Portal, Settings};
use siegel_spool::Spool;
use siegel_store::{LicenceState, MasterKey, NewKey, NewUser, SecretBytes, SourceKind, Store};
use siegel_types::Address;
use siegel_wkd::local_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

struct World {
    addr: SocketAddr,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("", dir.path(), MasterKey::generate().unwrap())
        .await
        .unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let settings = Settings {
        public_url: "https://portal.test".into(),
        internal_domains: vec!["example.com".into()],
        session_idle: Duration::from_secs(1800),
        session_max: Duration::from_secs(12 * 3600),
        max_upload: 1 << 20,
        policy: PasswordPolicy::default(),
        lock_after: 5,
        lock_for: Duration::from_secs(900),
        client_limit: 1000,
        client_window: Duration::from_secs(900),
        signup: false,
        signup_link_valid: Duration::from_secs(86_400),
        hostname: "siegel.test".into(),
        node: "test".into(),
        system_from: addr("siegel@example.com"),
        default_lang: Lang::En,
    };
    let portal = Portal::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        settings,
        store.clone(),
        spool,
        Themes::embedded().unwrap(),
        siegel_portal::system_clock(),
        None,
    )
    .await
    .unwrap();
    let a = portal.local_addr().unwrap();
    tokio::spawn(portal.run());
    World {
        addr: a,
        store,
        _dir: dir,
    }
}

/// An internal user with an issued key whose stored material is the whole
/// secret key (the served answer must still be public only). Returns the
/// fingerprint.
async fn user_with_key(store: &Store, address: &str, source: SourceKind) -> String {
    let a = addr(address);
    if source == SourceKind::Issued {
        store
            .users()
            .insert(&NewUser {
                address: a.clone(),
                display_name: None,
                attributes: Default::default(),
                licence_state: LicenceState::Licensed,
            })
            .await
            .unwrap();
    }
    let pgp = Pgp::new();
    let cert = pgp.generate_key(&a, KeyAlgorithm::Cv25519).unwrap();
    let secret = pgp.secret_key_bytes(&cert).unwrap();
    let fp = cert.fingerprint().to_hex();
    store
        .pgp_keys()
        .insert(&NewKey {
            address: a,
            fingerprint: fp.clone(),
            issuer: fp.clone(),
            serial: cert.keyid().to_hex(),
            not_before: 0,
            not_after: i64::MAX / 2,
            key_usage: "encrypt".into(),
            source_kind: source,
            source_message_id: (source == SourceKind::Harvested).then(|| "<m@x>".into()),
            material: secret.clone(),
            source_detail: None,
            private_key: Some(SecretBytes::new(secret)),
        })
        .await
        .unwrap();
    fp
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), raw[split + 4..].to_vec())
}

fn served_fingerprint(body: &[u8]) -> String {
    let keys = Pgp::new().import_keys(body).unwrap();
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].cert.is_tsk(), "secret key material served");
    keys[0].fingerprint.clone()
}

#[tokio::test]
async fn both_methods_serve_the_public_key_of_an_internal_user() {
    let w = world().await;
    let fp = user_with_key(&w.store, "Alice.Smith@example.com", SourceKind::Issued).await;
    let h = local_hash("Alice.Smith");
    for (host, path) in [
        // advanced, with l=
        (
            "openpgpkey.example.com",
            format!("/.well-known/openpgpkey/example.com/hu/{h}?l=Alice.Smith"),
        ),
        // advanced, no l=: found by hash among the domain's users
        (
            "openpgpkey.example.com",
            format!("/.well-known/openpgpkey/example.com/hu/{h}"),
        ),
        // direct, domain from Host (with port), l= in another case
        (
            "Example.COM:8443",
            format!("/.well-known/openpgpkey/hu/{h}?l=alice.smith"),
        ),
    ] {
        let (status, head, body) = get(w.addr, host, &path).await;
        assert_eq!(status, 200, "{host} {path}");
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert!(head.contains("access-control-allow-origin: *"), "{head}");
        assert_eq!(served_fingerprint(&body), fp, "{path}");
    }
    // The policy files of both methods.
    let (status, _, _) = get(
        w.addr,
        "openpgpkey.example.com",
        "/.well-known/openpgpkey/example.com/policy",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = get(w.addr, "example.com", "/.well-known/openpgpkey/policy").await;
    assert_eq!(status, 200);
    let (status, _, _) = get(
        w.addr,
        "openpgpkey.example.com",
        "/.well-known/openpgpkey/policy",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_users_foreign_domains_bad_hashes_and_lying_l_are_404() {
    let w = world().await;
    user_with_key(&w.store, "alice@example.com", SourceKind::Issued).await;
    // A correspondent's key harvested for an external domain is not ours to publish.
    user_with_key(&w.store, "bob@partner.example", SourceKind::Harvested).await;
    let alice = local_hash("alice");
    let bob = local_hash("bob");
    for (host, path) in [
        (
            "example.com",
            format!("/.well-known/openpgpkey/hu/{}", local_hash("carol")),
        ),
        (
            "example.com",
            format!("/.well-known/openpgpkey/hu/{}?l=carol", local_hash("carol")),
        ),
        (
            "partner.example",
            format!("/.well-known/openpgpkey/hu/{bob}?l=bob"),
        ),
        (
            "x",
            format!("/.well-known/openpgpkey/partner.example/hu/{bob}?l=bob"),
        ),
        (
            "partner.example",
            "/.well-known/openpgpkey/policy".to_owned(),
        ),
        (
            "x",
            "/.well-known/openpgpkey/partner.example/policy".to_owned(),
        ),
        ("example.com", "/.well-known/openpgpkey/hu/alice".to_owned()),
        (
            "example.com",
            "/.well-known/openpgpkey/hu/..%2F..%2Fetc%2Fpasswd".to_owned(),
        ),
        (
            "example.com",
            format!("/.well-known/openpgpkey/hu/{}", alice.to_uppercase()),
        ),
    ] {
        let (status, _, body) = get(w.addr, host, &path).await;
        assert_eq!(
            status,
            404,
            "{host} {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // An l= that does not hash to the path is ignored: the hash decides.
    let (status, _, _) = get(
        w.addr,
        "example.com",
        &format!("/.well-known/openpgpkey/hu/{alice}?l=mallory"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = get(
        w.addr,
        "example.com",
        &format!(
            "/.well-known/openpgpkey/hu/{}?l=alice",
            local_hash("mallory")
        ),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_revoked_key_is_not_served() {
    let w = world().await;
    let fp = user_with_key(&w.store, "dora@example.com", SourceKind::Issued).await;
    let path = format!("/.well-known/openpgpkey/hu/{}?l=dora", local_hash("dora"));
    assert_eq!(get(w.addr, "example.com", &path).await.0, 200);
    w.store.pgp_keys().revoke(&fp).await.unwrap();
    assert_eq!(get(w.addr, "example.com", &path).await.0, 404);
}
