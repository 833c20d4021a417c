//! The WKD client against a real HTTPS server on 127.0.0.1 (test CA as
//! extra root, names through a fixed resolver: never DNS, never the
//! internet).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use sequoia_openpgp::cert::prelude::*;
use sequoia_openpgp::serialize::SerializeInto;
use siegel_openpgp::{KeyAlgorithm, Pgp};
use siegel_types::Address;
use siegel_wkd::testing::Server;
use siegel_wkd::{CacheSettings, Client, Lookup, local_hash};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn key_for(address: &str) -> Vec<u8> {
    let cert = Pgp::new()
        .generate_key(&addr(address), KeyAlgorithm::Cv25519)
        .unwrap();
    cert.to_vec().unwrap()
}

fn advanced_path(a: &Address) -> String {
    format!(
        "/.well-known/openpgpkey/{}/hu/{}",
        a.domain(),
        local_hash(a.local())
    )
}

fn direct_path(a: &Address) -> String {
    format!("/.well-known/openpgpkey/hu/{}", local_hash(a.local()))
}

fn client(server: &Server, max_body: usize) -> Client {
    Client::new(server.fetcher(max_body), CacheSettings::default())
}

#[tokio::test]
async fn the_advanced_method_is_tried_first() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("Alice@example.org");
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&a),
        200,
        key_for("Alice@example.org"),
    );
    s.serve(
        "example.org",
        &direct_path(&a),
        200,
        key_for("Alice@example.org"),
    );
    let c = client(&s, 64 * 1024);
    let Lookup::Found(k) = c.lookup(&a).await else {
        panic!("no key");
    };
    assert!(
        k.url.starts_with("https://openpgpkey.example.org/"),
        "{}",
        k.url
    );
    assert!(k.url.ends_with("?l=Alice"), "{}", k.url);
    assert_eq!(s.hits("example.org", &direct_path(&a)), 0);
    // The request carried the l= parameter as given.
    assert!(s.log()[0].ends_with("?l=Alice"), "{:?}", s.log());
    // The stored form is public only and parses back to the same key.
    let again = Pgp::new().import_keys(&k.material).unwrap();
    assert_eq!(again[0].fingerprint, k.fingerprint);
    assert!(!again[0].cert.is_tsk());
    // Found keys are cached: no second request.
    assert!(c.find(&a).await.is_some());
    assert_eq!(s.hits("openpgpkey.example.org", &advanced_path(&a)), 1);
}

#[tokio::test]
async fn without_an_advanced_host_the_direct_method_is_used() {
    // openpgpkey.direct.example is not in the resolver: "does not resolve".
    let s = Server::start(&["direct.example"]).await;
    let a = addr("bob@direct.example");
    s.serve(
        "direct.example",
        &direct_path(&a),
        200,
        key_for("bob@direct.example"),
    );
    let k = client(&s, 64 * 1024).find(&a).await.unwrap();
    assert!(
        k.url
            .starts_with("https://direct.example/.well-known/openpgpkey/hu/")
    );
}

#[tokio::test]
async fn a_404_from_the_advanced_host_falls_back_to_direct() {
    let s = Server::start(&["openpgpkey.example.net", "example.net"]).await;
    let a = addr("carol@example.net");
    s.serve(
        "example.net",
        &direct_path(&a),
        200,
        key_for("carol@example.net"),
    );
    let k = client(&s, 64 * 1024).find(&a).await.unwrap();
    assert!(k.url.starts_with("https://example.net/"));
    assert_eq!(s.hits("openpgpkey.example.net", &advanced_path(&a)), 1);
}

#[tokio::test]
async fn not_found_is_cached_as_negative() {
    let s = Server::start(&["openpgpkey.example.com", "example.com"]).await;
    let a = addr("dave@example.com");
    let c = client(&s, 64 * 1024);
    assert!(matches!(c.lookup(&a).await, Lookup::NotFound(_)));
    assert_eq!(s.hits("openpgpkey.example.com", &advanced_path(&a)), 1);
    assert_eq!(s.hits("example.com", &direct_path(&a)), 1);
    // Second lookup: from the cache, the server sees nothing new.
    assert!(matches!(c.lookup(&a).await, Lookup::NotFound(_)));
    assert_eq!(s.log().len(), 2, "{:?}", s.log());
    // A zero negative lifetime caches nothing: the server is asked again.
    let uncached = Client::new(
        s.fetcher(64 * 1024),
        CacheSettings {
            negative_ttl: Duration::ZERO,
            ..CacheSettings::default()
        },
    );
    assert!(uncached.find(&a).await.is_none());
    assert!(uncached.find(&a).await.is_none());
    assert_eq!(s.log().len(), 6);
}

#[tokio::test]
async fn a_key_for_another_address_is_filtered_out() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("erin@example.org");
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&a),
        200,
        key_for("mallory@example.org"),
    );
    match client(&s, 64 * 1024).lookup(&a).await {
        Lookup::NotFound(why) => assert!(why.contains("does not name"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A served key is final: the direct method is not asked.
    assert_eq!(s.hits("example.org", &direct_path(&a)), 0);
}

#[tokio::test]
async fn of_several_keys_only_the_one_for_the_address_is_kept() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("frank@example.org");
    let mut body = key_for("someone@example.org");
    let right = key_for("FRANK@example.org");
    body.extend_from_slice(&right);
    s.serve("openpgpkey.example.org", &advanced_path(&a), 200, body);
    let k = client(&s, 64 * 1024).find(&a).await.unwrap();
    let want = Pgp::new().import_keys(&right).unwrap();
    assert_eq!(k.fingerprint, want[0].fingerprint);
}

#[tokio::test]
async fn an_expired_key_is_filtered_out() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("grace@example.org");
    let (cert, _) = CertBuilder::new()
        .set_creation_time(SystemTime::now() - Duration::from_secs(10 * 86_400))
        .set_validity_period(Duration::from_secs(86_400))
        .add_userid("<grace@example.org>")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&a),
        200,
        cert.to_vec().unwrap(),
    );
    match client(&s, 64 * 1024).lookup(&a).await {
        Lookup::NotFound(why) => assert!(why.contains("expired"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("heidi@example.org");
    let key = key_for("heidi@example.org");
    let mut big = key.clone();
    big.resize(8 * 1024, 0);
    s.serve("openpgpkey.example.org", &advanced_path(&a), 200, big);
    match client(&s, key.len() + 100).lookup(&a).await {
        Lookup::NotFound(why) => assert!(why.contains("larger than"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.hits("example.org", &direct_path(&a)), 0);
}

#[tokio::test]
async fn garbage_is_no_key_and_no_panic() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let c = client(&s, 64 * 1024);
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"<html>hello</html>".to_vec(),
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
            .to_vec(),
        vec![0x99, 0xff, 0xff, 0xff, 0xff, 0x04],
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let a = addr(&format!("g{i}@example.org"));
        s.serve("openpgpkey.example.org", &advanced_path(&a), 200, body);
        assert!(
            matches!(c.lookup(&a).await, Lookup::NotFound(_)),
            "body {i}"
        );
    }
}

/// A 5xx is a failure for now: remembered briefly, for the whole domain
/// (another address of it is not asked either), then asked again.
#[tokio::test]
async fn a_server_error_is_temporary_and_pauses_the_domain_briefly() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("ivan@example.org");
    let b = addr("lee@example.org");
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&a),
        503,
        Vec::new(),
    );
    s.serve(
        "example.org",
        &direct_path(&a),
        200,
        key_for("ivan@example.org"),
    );
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&b),
        200,
        key_for("lee@example.org"),
    );
    let c = Client::new(
        s.fetcher(64 * 1024),
        CacheSettings {
            temporary_ttl: Duration::from_millis(300),
            ..CacheSettings::default()
        },
    );
    // No fallback on a 5xx: the advanced host exists.
    assert!(matches!(c.lookup(&a).await, Lookup::Temporary(_)));
    assert!(matches!(c.lookup(&a).await, Lookup::Temporary(_)));
    assert!(matches!(c.lookup(&b).await, Lookup::Temporary(_)));
    assert_eq!(
        s.log().len(),
        1,
        "the later lookups came from the cache: {:?}",
        s.log()
    );
    // Once the brief lifetime is over, the server is asked again.
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&a),
        200,
        key_for("ivan@example.org"),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(c.find(&a).await.is_some());
    assert!(c.find(&b).await.is_some());
    assert_eq!(s.log().len(), 3);
}

#[tokio::test]
async fn concurrent_lookups_of_one_address_make_one_request() {
    let s = Server::start(&["openpgpkey.example.org", "example.org"]).await;
    let a = addr("judy@example.org");
    s.serve(
        "openpgpkey.example.org",
        &advanced_path(&a),
        200,
        key_for("judy@example.org"),
    );
    let c = std::sync::Arc::new(client(&s, 64 * 1024));
    let lookups: Vec<_> = (0..10)
        .map(|_| {
            let (c, a) = (std::sync::Arc::clone(&c), a.clone());
            tokio::spawn(async move { c.find(&a).await })
        })
        .collect();
    for l in lookups {
        assert!(l.await.unwrap().is_some());
    }
    assert_eq!(s.log().len(), 1, "{:?}", s.log());
}

#[tokio::test]
async fn a_domain_without_wkd_hosts_is_remembered_for_all_its_addresses() {
    // Both hosts resolve, neither has a certificate for its name: the
    // domain has no WKD, whichever address is asked.
    let s = Server::start(&["other.example"]).await;
    let c = Client::new(
        s.fetcher_also_resolving(64 * 1024, &["openpgpkey.nowkd.example", "nowkd.example"]),
        CacheSettings::default(),
    );
    assert!(matches!(
        c.lookup(&addr("a@nowkd.example")).await,
        Lookup::NotFound(_)
    ));
    assert_eq!(s.connections(), 2, "advanced, then direct");
    assert!(matches!(
        c.lookup(&addr("b@NoWKD.example")).await,
        Lookup::NotFound(_)
    ));
    assert_eq!(
        s.connections(),
        2,
        "the second address came from the domain's entry"
    );

    // A 404 says nothing of other addresses: each is asked for itself.
    let d = Server::start(&["openpgpkey.example.com", "example.com"]).await;
    let c = client(&d, 64 * 1024);
    assert!(c.find(&addr("a@example.com")).await.is_none());
    assert!(c.find(&addr("b@example.com")).await.is_none());
    assert_eq!(d.log().len(), 4, "{:?}", d.log());
}
