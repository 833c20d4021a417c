//! The portal through real HTTP on loopback: a real listener, a real
//! SQLite store and spool in a temporary folder, requests written to a TCP
//! socket. (HTTPS and the browser are covered by tests/e2e/test_gina.py.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use siegel_gina::accounts::Secret;
use siegel_gina::container::{SealParams, seal_bytes};
use siegel_gina::html::{FileInfo, file_bytes};
use siegel_gina::{Hasher, Lang, PasswordPolicy, Themes};
use siegel_portal::{Portal, Settings};
use siegel_spool::Spool;
use siegel_store::{MasterKey, NewContainer, SecretBytes, Store};
use siegel_types::{Address, Direction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOW: i64 = 1_767_225_600;
const INITIAL: &str = "Kp7x-9Qm2-hT4w";
const NEW_PW: &str = "Tr7$kq!vPz2m";

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The value of `<input ... name="csrf" value="...">`.
    fn csrf(&self) -> String {
        let t = self.text();
        let i = t.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
        t[i..i + t[i..].find('"').unwrap()].to_owned()
    }
}

#[derive(Clone, Default)]
struct Browser {
    cookies: HashMap<String, String>,
}

fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let b = "XyZsiegelBoundary42";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    for (k, name, data) in files {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\nContent-Type: application/pdf\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

impl Browser {
    async fn req(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<(String, Vec<u8>)>,
    ) -> Resp {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: portal.test\r\nConnection: close\r\nAccept-Language: en\r\n"
        );
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            head.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.0.is_empty() {
            head.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                body.0,
                body.1.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body.1).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let kv = v.split(';').next().unwrap();
                let (name, value) = kv.split_once('=').unwrap();
                if value.is_empty() || v.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn post(&mut self, addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.req(addr, "POST", path, &[], Some(multipart(fields, &[])))
            .await
    }
}

struct World {
    addr: SocketAddr,
    store: Store,
    spool: Spool,
    clock: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
    /// The container's base64 as the file's textarea holds it.
    container: String,
    container_bytes: Vec<u8>,
    message_id: String,
}

const MAIL: &str = "From: Alice Example <alice@example.com>\r\nTo: bob@partner.example\r\nSubject: Contract draft\r\nMessage-ID: <contract-1@example.com>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\nDisposition-Notification-To: alice@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Dear Bob,</p><p>the <b>draft</b> is attached.</p><script>alert(1)</script><img src=\"https://tracker.example/p.gif\">\r\n--outer\r\nContent-Type: application/pdf; name=\"draft.pdf\"\r\nContent-Disposition: attachment; filename=\"draft.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--outer--\r\n";

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("", dir.path(), MasterKey::generate().unwrap())
        .await
        .unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let clock = Arc::new(AtomicI64::new(NOW));
    let c2 = clock.clone();
    let settings = Settings {
        public_url: "https://portal.test".into(),
        internal_domains: vec!["example.com".into()],
        session_idle: Duration::from_secs(1800),
        session_max: Duration::from_secs(12 * 3600),
        max_upload: 20 << 20,
        policy: PasswordPolicy::default(),
        lock_after: 5,
        lock_for: Duration::from_secs(900),
        client_limit: 1000,
        client_window: Duration::from_secs(900),
        signup: true,
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
        spool.clone(),
        Themes::embedded().unwrap(),
        Arc::new(move || c2.load(Ordering::SeqCst)),
        None,
    )
    .await
    .unwrap();
    let addr_ = portal.local_addr().unwrap();
    tokio::spawn(portal.run());

    // What the pipeline does for a GINA recipient.
    let bob = addr("bob@partner.example");
    let alice = addr("alice@example.com");
    let hasher = Hasher::new(2).unwrap();
    let h = hasher.hash(&Secret::new(INITIAL)).await.unwrap();
    store
        .gina()
        .insert_initial(&bob, None, &h, "en")
        .await
        .unwrap()
        .unwrap();
    let (sealed, bytes) = seal_bytes(
        &SealParams {
            recipient: &bob,
            theme: "example.com",
            now: NOW,
            expires: NOW + 86_400,
        },
        MAIL.as_bytes(),
    )
    .unwrap();
    store
        .gina_containers()
        .insert(&NewContainer {
            container_id: sealed.header.id.as_str(),
            message_id: Some("<contract-1@example.com>"),
            sender: &alice,
            recipient: &bob,
            key: &SecretBytes::new(sealed.key.expose().to_vec()),
            created_at: NOW,
            expires_at: NOW + 86_400,
            receipt_to: Some(&alice),
        })
        .await
        .unwrap();
    let themes = Themes::embedded().unwrap();
    let file = file_bytes(
        themes.default_theme(),
        Lang::En,
        &FileInfo {
            sender: "Alice Example <alice@example.com>",
            recipient: bob.as_str(),
            expires: NOW + 86_400,
            portal_url: "https://portal.test",
        },
        &bytes,
    )
    .unwrap();
    let text = String::from_utf8(file).unwrap();
    let start = text.find("readonly>").unwrap() + 9;
    let end = text.find("</textarea>").unwrap();
    World {
        addr: addr_,
        store,
        spool,
        clock,
        _dir: dir,
        container: text[start..end].to_owned(),
        container_bytes: bytes,
        message_id: "contract-1@example.com".into(),
    }
}

/// Logs bob in through the container flow and registers; returns the read page.
async fn register_bob(w: &World, b: &mut Browser) -> Resp {
    let landing = b
        .post(w.addr, "/open", &[("container", &w.container)])
        .await;
    assert_eq!(landing.status, 200, "{}", landing.text());
    let csrf = landing.csrf();
    let reg = b
        .post(
            w.addr,
            "/read",
            &[
                ("csrf", &csrf),
                ("container", &w.container),
                ("action", "login"),
                ("email", "bob@partner.example"),
                ("password", INITIAL),
            ],
        )
        .await;
    assert_eq!(reg.status, 200);
    assert!(
        reg.text().contains("name=\"new_password\""),
        "registration form: {}",
        reg.text()
    );
    let csrf = reg.csrf();
    b.post(
        w.addr,
        "/register",
        &[
            ("csrf", &csrf),
            ("container", &w.container),
            ("new_password", NEW_PW),
            ("new_password_confirm", NEW_PW),
            ("security_question", "First pet?"),
            ("security_answer", "Rex"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_register_read_download_reply() {
    let w = world().await;
    let mut b = Browser::default();

    // Every response carries the security headers.
    let home = b.req(w.addr, "GET", "/", &[], None).await;
    assert_eq!(home.status, 200);
    for h in [
        "content-security-policy",
        "strict-transport-security",
        "x-content-type-options",
        "referrer-policy",
        "x-frame-options",
    ] {
        assert!(home.header(h).is_some(), "{h} missing");
    }
    assert!(
        home.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(home.text().contains("autocomplete=\"current-password\""));

    let read = register_bob(&w, &mut b).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let t = read.text();
    assert!(t.contains("Contract draft"), "{t}");
    assert!(t.contains("draft.pdf"));
    assert!(t.contains("sandbox=\"allow-popups allow-popups-to-escape-sandbox\""));
    assert!(!t.contains("<script"), "no script anywhere on the page");
    assert!(!t.contains("tracker.example"), "remote image removed");
    assert!(
        read.header("content-security-policy")
            .unwrap()
            .contains("img-src 'self' data:;")
    );
    let session = b
        .cookies
        .get("siegel_session")
        .cloned()
        .expect("session cookie");
    assert!(!session.is_empty());
    let acct = w
        .store
        .gina()
        .by_address(&addr("bob@partner.example"))
        .await
        .unwrap()
        .unwrap();
    assert!(!acct.must_register);

    // The read receipt went into the spool at the first open, inbound to alice.
    let entries = w.spool.list().unwrap();
    let receipt = entries
        .iter()
        .find(|e| {
            e.envelope
                .recipients
                .iter()
                .any(|r| r.address.as_str() == "alice@example.com")
        })
        .expect("read receipt queued");
    assert_eq!(receipt.envelope.direction, Direction::Inbound);
    assert!(
        receipt.envelope.mail_from.address().is_none(),
        "MDN has a null return path"
    );

    // Opening again sends no second receipt.
    let csrf = read.csrf();
    let again = b
        .post(
            w.addr,
            "/read",
            &[("csrf", &csrf), ("container", &w.container)],
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(w.spool.list().unwrap().len(), 1);

    // Remote images on request.
    let remote = b
        .post(
            w.addr,
            "/read",
            &[
                ("csrf", &csrf),
                ("container", &w.container),
                ("remote_images", "1"),
            ],
        )
        .await;
    assert!(remote.text().contains("tracker.example"));
    assert!(
        remote
            .header("content-security-policy")
            .unwrap()
            .contains("https:")
    );

    // Attachment download.
    let att = b
        .post(
            w.addr,
            "/attachment",
            &[("csrf", &csrf), ("container", &w.container), ("part", "0")],
        )
        .await;
    assert_eq!(att.status, 200);
    assert_eq!(att.body, b"%PDF-1.4\n");
    assert!(
        att.header("content-disposition")
            .unwrap()
            .starts_with("attachment;")
    );
    assert_eq!(att.header("content-type"), Some("application/octet-stream"));

    // Reply form is prefilled.
    let compose = b
        .post(
            w.addr,
            "/compose",
            &[
                ("csrf", &csrf),
                ("container", &w.container),
                ("mode", "reply"),
            ],
        )
        .await;
    let ct = compose.text();
    assert!(ct.contains("value=\"alice@example.com\""), "{ct}");
    assert!(ct.contains("Re: Contract draft"));

    // Sending to an external address is refused; to internal goes to the spool.
    let (ctype, body) = multipart(
        &[
            ("csrf", &csrf),
            ("to", "eve@evil.example"),
            ("subject", "x"),
            ("body", "y"),
        ],
        &[],
    );
    let refused = b
        .req(w.addr, "POST", "/send", &[], Some((ctype, body)))
        .await;
    assert!(
        refused.text().contains("eve@evil.example"),
        "{}",
        refused.text()
    );
    assert_eq!(w.spool.list().unwrap().len(), 1);
    let (ctype, body) = multipart(
        &[
            ("csrf", &csrf),
            ("to", "alice@example.com"),
            ("subject", "Re: Contract draft"),
            ("body", "Signed copy attached."),
            ("in_reply_to", "contract-1@example.com"),
        ],
        &[("attachments", "signed.pdf", b"%PDF-signed")],
    );
    let sent = b
        .req(w.addr, "POST", "/send", &[], Some((ctype, body)))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    assert!(
        sent.text().contains("Signed copy attached."),
        "the sent mail is shown"
    );
    let entries = w.spool.list().unwrap();
    let reply = entries
        .iter()
        .find(|e| {
            e.envelope.mail_from.address().map(Address::as_str) == Some("bob@partner.example")
        })
        .expect("reply queued");
    assert_eq!(reply.envelope.direction, Direction::Inbound);
    let (mut f, _) = w.spool.open_content(&reply.envelope.id).await.unwrap();
    let mut content = Vec::new();
    f.read_to_end(&mut content).await.unwrap();
    let content = String::from_utf8_lossy(&content);
    assert!(
        content.contains("In-Reply-To: <contract-1@example.com>"),
        "{content}"
    );
    assert!(content.contains("signed.pdf"));

    // The audit trail has the login, registration and open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<String> = w
        .store
        .gina_audit()
        .recent(Some("bob@partner.example"), 50)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event)
        .collect();
    for e in ["login", "register", "open", "download", "send"] {
        assert!(events.iter().any(|x| x == e), "{e} not audited: {events:?}");
    }

    // Logout ends the session everywhere it is checked.
    let logout = b.post(w.addr, "/logout", &[("csrf", &csrf)]).await;
    assert_eq!(logout.status, 303);
    let after = b
        .post(
            w.addr,
            "/read",
            &[("csrf", &csrf), ("container", &w.container)],
        )
        .await;
    assert!(
        after.text().contains("name=\"password\""),
        "login asked again"
    );
    let _ = w.message_id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_and_cross_site_posts_are_refused() {
    let w = world().await;
    let mut b = Browser::default();
    let read = register_bob(&w, &mut b).await;
    assert_eq!(read.status, 200);
    // No token.
    let r = b
        .post(w.addr, "/settings/language", &[("language", "de")])
        .await;
    assert_eq!(r.status, 403);
    // A pre-login token is not enough for a logged-in change.
    let landing = Browser::default()
        .post(w.addr, "/open", &[("container", &w.container)])
        .await;
    let pre = landing.csrf();
    let r = b
        .post(
            w.addr,
            "/settings/language",
            &[("csrf", &pre), ("language", "de")],
        )
        .await;
    assert_eq!(r.status, 403);
    // Right token, but posted from another site.
    let (ct, body) = multipart(&[("csrf", &read.csrf()), ("language", "de")], &[]);
    let r = b
        .req(
            w.addr,
            "POST",
            "/settings/language",
            &[
                ("Origin", "https://evil.example"),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            Some((ct, body)),
        )
        .await;
    assert_eq!(r.status, 403);
    let acct = w
        .store
        .gina()
        .by_address(&addr("bob@partner.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acct.language, "en", "nothing changed");
    // With everything right it works.
    let (ct, body) = multipart(&[("csrf", &read.csrf()), ("language", "de")], &[]);
    let r = b
        .req(
            w.addr,
            "POST",
            "/settings/language",
            &[
                ("Origin", "https://portal.test"),
                ("Sec-Fetch-Site", "same-origin"),
            ],
            Some((ct, body)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("Die Sprache wurde geändert"),
        "{}",
        r.text()
    );
    // /open is the one cross-site POST allowed (it changes nothing).
    let (ct, body) = multipart(&[("container", &w.container)], &[]);
    let r = Browser::default()
        .req(
            w.addr,
            "POST",
            "/open",
            &[("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
            Some((ct, body)),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_accounts_tampering_expiry_and_revocation() {
    let w = world().await;
    // Carol has her own account and cannot open bob's container.
    let hasher = Hasher::new(1).unwrap();
    let h = hasher.hash(&Secret::new(NEW_PW)).await.unwrap();
    let carol = addr("carol@partner.example");
    w.store
        .gina()
        .insert_initial(&carol, None, &h, "en")
        .await
        .unwrap();
    w.store.gina().register(&carol, &h, "q", &h).await.unwrap();
    let mut c = Browser::default();
    let landing = c
        .post(w.addr, "/open", &[("container", &w.container)])
        .await;
    let r = c
        .post(
            w.addr,
            "/read",
            &[
                ("csrf", &landing.csrf()),
                ("container", &w.container),
                ("action", "login"),
                ("email", "carol@partner.example"),
                ("password", NEW_PW),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("for someone else"));
    assert!(!r.text().contains("Contract draft"));
    assert!(
        w.store
            .gina_containers()
            .by_id(&{
                let p = siegel_gina::container::parse(&w.container_bytes).unwrap();
                p.header().id.to_string()
            })
            .await
            .unwrap()
            .unwrap()
            .first_opened_at
            .is_none(),
        "not counted as opened"
    );

    // A modified container gets a clear page.
    let mut bytes = w.container_bytes.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    use base64::Engine as _;
    let tampered = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let mut b = Browser::default();
    let read = register_bob(&w, &mut b).await;
    let csrf = read.csrf();
    let r = b
        .post(
            w.addr,
            "/read",
            &[("csrf", &csrf), ("container", &tampered)],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("changed after it was sent"),
        "{}",
        r.text()
    );
    let r = b
        .post(
            w.addr,
            "/read",
            &[("csrf", &csrf), ("container", "bm90IGEgY29udGFpbmVy")],
        )
        .await;
    assert_eq!(r.status, 422);
    let truncated = base64::engine::general_purpose::STANDARD
        .encode(&w.container_bytes[..w.container_bytes.len() - 5]);
    let r = b
        .post(
            w.addr,
            "/read",
            &[("csrf", &csrf), ("container", &truncated)],
        )
        .await;
    assert!(r.text().contains("incomplete"), "{}", r.text());

    // Expired (clock moved past expiry).
    w.clock.store(NOW + 86_400 + 1, Ordering::SeqCst);
    let r = Browser::default()
        .post(w.addr, "/open", &[("container", &w.container)])
        .await;
    assert_eq!(r.status, 410);
    assert!(r.text().contains("expired"));
    w.clock.store(NOW + 10, Ordering::SeqCst);

    // Revoked: the key is gone for good.
    assert_eq!(
        w.store
            .gina_containers()
            .revoke_message("<contract-1@example.com>", NOW + 5)
            .await
            .unwrap(),
        1
    );
    let r = b
        .post(
            w.addr,
            "/read",
            &[("csrf", &csrf), ("container", &w.container)],
        )
        .await;
    assert_eq!(r.status, 410);
    assert!(r.text().contains("withdrawn"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_out_spares_known_devices_and_hides_accounts() {
    let w = world().await;
    let mut bob = Browser::default();
    register_bob(&w, &mut bob).await;
    assert!(bob.cookies.contains_key("siegel_device"));
    let mut attacker = Browser::default();
    let page = attacker.req(w.addr, "GET", "/", &[], None).await;
    let csrf = page.csrf();
    for i in 0..5 {
        let r = attacker
            .post(
                w.addr,
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", "bob@partner.example"),
                    ("password", &format!("Wrong{i}Pass")),
                ],
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let locked = attacker
        .post(
            w.addr,
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "bob@partner.example"),
                ("password", NEW_PW),
            ],
        )
        .await;
    assert!(
        locked.text().contains("Too many failed attempts"),
        "{}",
        locked.text()
    );
    // An unknown address answers the same way (same counters, same words).
    for i in 0..5 {
        attacker
            .post(
                w.addr,
                "/login",
                &[
                    ("csrf", &csrf),
                    ("email", "nobody@partner.example"),
                    ("password", &format!("Wrong{i}Pass")),
                ],
            )
            .await;
    }
    let unknown = attacker
        .post(
            w.addr,
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "nobody@partner.example"),
                ("password", NEW_PW),
            ],
        )
        .await;
    assert!(unknown.text().contains("Too many failed attempts"));
    // Bob's own browser still gets in.
    bob.cookies.remove("siegel_session");
    let ok = bob
        .post(
            w.addr,
            "/login",
            &[
                ("csrf", &csrf),
                ("email", "bob@partner.example"),
                ("password", NEW_PW),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    // The lock is temporary.
    w.clock.store(NOW + 901, Ordering::SeqCst);
    let page = attacker.req(w.addr, "GET", "/", &[], None).await;
    let later = attacker
        .post(
            w.addr,
            "/login",
            &[
                ("csrf", &page.csrf()),
                ("email", "bob@partner.example"),
                ("password", NEW_PW),
            ],
        )
        .await;
    assert_eq!(later.status, 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<String> = w
        .store
        .gina_audit()
        .recent(Some("bob@partner.example"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event)
        .collect();
    assert!(events.iter().any(|e| e == "locked"));
    assert!(events.iter().any(|e| e == "login_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_time_out_and_reset_by_answer() {
    let w = world().await;
    let mut b = Browser::default();
    register_bob(&w, &mut b).await;
    let home = b.req(w.addr, "GET", "/settings", &[], None).await;
    assert_eq!(home.status, 200);
    // Idle for longer than 30 minutes: logged out.
    w.clock.store(NOW + 1801, Ordering::SeqCst);
    let r = b.req(w.addr, "GET", "/settings", &[], None).await;
    assert_eq!(r.status, 303);

    // Reset by security answer: wrong answer, then right one.
    let mut c = Browser::default();
    let page = c.req(w.addr, "GET", "/reset", &[], None).await;
    let q = c
        .post(
            w.addr,
            "/reset",
            &[("csrf", &page.csrf()), ("email", "bob@partner.example")],
        )
        .await;
    assert!(q.text().contains("First pet?"), "{}", q.text());
    let fake = c
        .post(
            w.addr,
            "/reset",
            &[("csrf", &page.csrf()), ("email", "nobody@partner.example")],
        )
        .await;
    assert!(
        fake.text().contains("name=\"security_answer\""),
        "unknown addresses get a question too"
    );
    let csrf = q.csrf();
    let wrong = c
        .post(
            w.addr,
            "/reset/answer",
            &[
                ("csrf", &csrf),
                ("email", "bob@partner.example"),
                ("security_answer", "Fido"),
                ("new_password", "Ok9-New-Pass"),
                ("new_password_confirm", "Ok9-New-Pass"),
            ],
        )
        .await;
    assert!(wrong.text().contains("answer is not right"));
    let weak = c
        .post(
            w.addr,
            "/reset/answer",
            &[
                ("csrf", &csrf),
                ("email", "bob@partner.example"),
                ("security_answer", " rex "),
                ("new_password", "password"),
                ("new_password_confirm", "password"),
            ],
        )
        .await;
    assert!(weak.text().contains("upper-case"), "{}", weak.text());
    let reused = c
        .post(
            w.addr,
            "/reset/answer",
            &[
                ("csrf", &csrf),
                ("email", "bob@partner.example"),
                ("security_answer", "REX"),
                ("new_password", NEW_PW),
                ("new_password_confirm", NEW_PW),
            ],
        )
        .await;
    assert!(
        reused.text().contains("used this password recently"),
        "{}",
        reused.text()
    );
    let done = c
        .post(
            w.addr,
            "/reset/answer",
            &[
                ("csrf", &csrf),
                ("email", "bob@partner.example"),
                ("security_answer", "rex"),
                ("new_password", "Ok9-New-Pass"),
                ("new_password_confirm", "Ok9-New-Pass"),
            ],
        )
        .await;
    assert_eq!(done.status, 200);
    assert!(
        done.text().contains("new password is set"),
        "{}",
        done.text()
    );
    assert!(c.cookies.contains_key("siegel_session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_in_advance_with_a_verification_link() {
    let w = world().await;
    let mut b = Browser::default();
    let page = b.req(w.addr, "GET", "/signup", &[], None).await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let sent = b
        .post(
            w.addr,
            "/signup",
            &[("csrf", &csrf), ("email", "dora@partner.example")],
        )
        .await;
    assert!(
        sent.text().contains("a confirmation link is on its way"),
        "{}",
        sent.text()
    );
    // For an address with an account the page says the same.
    let same = b
        .post(
            w.addr,
            "/signup",
            &[("csrf", &csrf), ("email", "bob@partner.example")],
        )
        .await;
    assert!(same.text().contains("a confirmation link is on its way"));

    // The verification mail went into the spool as outbound mail.
    let entries = w.spool.list().unwrap();
    assert_eq!(entries.len(), 2, "one mail per address");
    let mut link = None;
    let mut bob_mail = String::new();
    for e in &entries {
        assert_eq!(e.envelope.direction, Direction::Outbound);
        let (mut f, _) = w.spool.open_content(&e.envelope.id).await.unwrap();
        let mut raw = Vec::new();
        f.read_to_end(&mut raw).await.unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let text = parsed.body_text(0).unwrap().into_owned();
        if e.envelope.recipients[0].address.as_str() == "dora@partner.example" {
            let i = text.find("/signup/verify?token=").unwrap();
            let token: String = text[i + 21..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            link = Some(format!("/signup/verify?token={token}"));
        } else {
            bob_mail = text;
        }
    }
    assert!(bob_mail.contains("has an account already"), "{bob_mail}");
    assert!(
        !bob_mail.contains("token="),
        "no registration link for an existing account"
    );
    // A second request within ten minutes sends nothing more.
    b.post(
        w.addr,
        "/signup",
        &[("csrf", &csrf), ("email", "dora@partner.example")],
    )
    .await;
    assert_eq!(w.spool.list().unwrap().len(), 2);

    let link = link.expect("verification link");
    let form = b.req(w.addr, "GET", &link, &[], None).await;
    assert_eq!(form.status, 200);
    assert!(
        form.text().contains("dora@partner.example is confirmed"),
        "{}",
        form.text()
    );
    let token = link.rsplit('=').next().unwrap().to_owned();
    let csrf = form.csrf();
    let done = b
        .post(
            w.addr,
            "/register",
            &[
                ("csrf", &csrf),
                ("token", &token),
                ("new_password", NEW_PW),
                ("new_password_confirm", NEW_PW),
                ("security_question", "City?"),
                ("security_answer", "Bonn"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text());
    let dora = w
        .store
        .gina()
        .by_address(&addr("dora@partner.example"))
        .await
        .unwrap()
        .unwrap();
    assert!(!dora.must_register);
    assert_eq!(dora.security_question.as_deref(), Some("City?"));
    // The link works once.
    let again = Browser::default()
        .req(w.addr, "GET", &link, &[], None)
        .await;
    assert_eq!(again.status, 410);
    let home = b.req(w.addr, "GET", "/", &[], None).await;
    assert!(home.text().contains("Welcome"), "logged in after sign-up");
}
