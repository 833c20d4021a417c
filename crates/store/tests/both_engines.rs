//! The store's test suite. Every test is one async function taking the
//! engine; `both!` runs it once on SQLite and once on PostgreSQL. Each run
//! gets its own data folder, and on PostgreSQL its own schema (selected with
//! `search_path` in the connection options), so all tests run in parallel.
//!
//! PostgreSQL: `SIEGEL_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test` (trust auth).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ring::rand::{SecureRandom, SystemRandom};
use siegel_store::*;
use siegel_types::{Address, QueueId};
use sqlx::Connection;

fn pg_base() -> String {
    std::env::var("SIEGEL_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

/// One test's private database.
struct TestDb {
    dir: PathBuf,
    url: String,
    schema: Option<String>,
    key: MasterKey,
    store: Option<Store>,
}

impl TestDb {
    /// A private, empty database (nothing connected yet).
    async fn empty(engine: Engine) -> TestDb {
        let name = random_hex(8);
        let dir = std::env::temp_dir().join(format!("siegel-store-test-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (url, schema) = match engine {
            Engine::Sqlite => (format!("sqlite://{}/siegel.db", dir.display()), None),
            Engine::Postgres => {
                let schema = format!("t_{name}");
                let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                let sep = if pg_base().contains('?') { '&' } else { '?' };
                (
                    format!("{}{sep}options=-c%20search_path%3D{schema}", pg_base()),
                    Some(schema),
                )
            }
        };
        TestDb {
            dir,
            url,
            schema,
            key: MasterKey::generate().unwrap(),
            store: None,
        }
    }

    /// A private database with a connected store.
    async fn new(engine: Engine) -> TestDb {
        let mut db = Self::empty(engine).await;
        db.store = Some(db.open().await.unwrap());
        db
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Another connection to the same database, as a second node would make.
    async fn open(&self) -> Result<Store, StoreError> {
        self.open_with(self.key.clone()).await
    }

    async fn open_with(&self, key: MasterKey) -> Result<Store, StoreError> {
        Store::open(&self.url, &self.dir, key).await
    }

    /// Runs raw SQL behind the store's back (to simulate crashes, tampering
    /// and hand edits).
    async fn raw(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.schema.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }

    async fn finish(self) {
        if let Some(s) = &self.store {
            s.close().await;
        }
        if let Some(schema) = &self.schema {
            let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .unwrap();
            admin.close().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(siegel_store::Engine::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(siegel_store::Engine::Postgres).await
            }
        }
    };
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

fn hash(n: u32) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n:08}")
}

fn gina_account(address: &str) -> NewGinaAccount {
    NewGinaAccount {
        address: addr(address),
        name: Some("Erika Mustermann".into()),
        password_hash: HASH.into(),
        security_question: Some("First pet?".into()),
        answer_hash: Some(HASH.into()),
        preferred_method: PreferredMethod::Gina,
        language: "de".into(),
    }
}

fn new_key(address: &str, fingerprint: &str, private: Option<&[u8]>) -> NewKey {
    NewKey {
        address: addr(address),
        fingerprint: fingerprint.into(),
        issuer: "CN=Siegel Test CA".into(),
        serial: "01AF".into(),
        not_before: 1_700_000_000,
        not_after: 1_800_000_000,
        key_usage: "digitalSignature,keyEncipherment".into(),
        source_kind: SourceKind::Issued,
        source_message_id: None,
        material: vec![0x30, 0x82, 1, 2, 3],
        source_detail: None,
        private_key: private.map(|p| SecretBytes::new(p.to_vec())),
    }
}

// ---------------------------------------------------------------- schema

async fn migrations_are_idempotent(engine: Engine) {
    let db = TestDb::new(engine).await;
    assert_eq!(db.store().schema_version().await.unwrap(), SCHEMA_VERSION);
    // A second and third start find everything applied and change nothing.
    for _ in 0..2 {
        let again = db.open().await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
        again.close().await;
    }
    let report = db.store().check().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    db.finish().await;
}
both!(migrations_are_idempotent);

async fn concurrent_first_start(engine: Engine) {
    let db = TestDb::empty(engine).await;
    // Four nodes start at once on an empty database with the same key.
    let (a, b, c, d) = tokio::join!(db.open(), db.open(), db.open(), db.open());
    for s in [a, b, c, d] {
        let s = s.unwrap();
        assert_eq!(s.schema_version().await.unwrap(), SCHEMA_VERSION);
        assert!(s.check().await.unwrap().is_ok());
        s.close().await;
    }
    db.finish().await;
}
both!(concurrent_first_start);

async fn bad_url_is_refused(_engine: Engine) {
    let dir = std::env::temp_dir();
    let key = MasterKey::generate().unwrap();
    let err = Store::open("mysql://u:secret@host/db", &dir, key)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadUrl { .. }), "{err}");
    assert!(
        !err.to_string().contains("secret"),
        "password leaked: {err}"
    );
}
both!(bad_url_is_refused);

// ------------------------------------------------------------ master key

async fn wrong_master_key_is_refused(engine: Engine) {
    let db = TestDb::new(engine).await;
    let other = MasterKey::generate().unwrap();
    let err = db.open_with(other).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err}");
    // The right key still works.
    db.open().await.unwrap().close().await;
    db.finish().await;
}
both!(wrong_master_key_is_refused);

async fn rotation_keeps_secrets_readable(engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = db.store();
    // More rows than one rotation batch, in all three secret tables.
    for i in 0..450u32 {
        let fp = format!("{i:040X}");
        s.certificates()
            .insert(&new_key(
                "a@example.com",
                &fp,
                Some(format!("cert-{i}").as_bytes()),
            ))
            .await
            .unwrap();
    }
    s.pgp_keys()
        .insert(&new_key("a@example.com", "AAAABBBBCCCCDDDD", Some(b"pgp")))
        .await
        .unwrap();
    s.certificates()
        .insert(&new_key("b@example.com", "EEEEEEEEEEEEEEEE", None))
        .await
        .unwrap();
    s.domain_keys()
        .insert(&NewDomainKey {
            domain: "example.com".into(),
            kind: DomainKeyKind::Smime,
            ownership: Ownership::Own,
            fingerprint: "1234123412341234".into(),
            material: vec![1],
            private_key: Some(SecretBytes::new(b"domain".to_vec())),
        })
        .await
        .unwrap();

    let old = db.key.clone();
    let new = MasterKey::generate().unwrap();
    let report = s.rotate_master_key(&new).await.unwrap();
    assert_eq!(report.re_encrypted, 452);
    assert_eq!(s.master_key_id(), new.id());

    // This node reads everything under the new key.
    let fp = format!("{:040X}", 449);
    assert_eq!(
        s.certificates()
            .private_key(&fp)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"cert-449"
    );
    assert!(s.check().await.unwrap().is_ok());

    // The old key is now refused; the new one opens the store and the secrets.
    assert!(matches!(
        db.open_with(old).await.unwrap_err(),
        StoreError::WrongMasterKey { .. }
    ));
    let other = db.open_with(new.clone()).await.unwrap();
    assert_eq!(
        other
            .pgp_keys()
            .private_key("AAAABBBBCCCCDDDD")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"pgp"
    );
    assert_eq!(
        other
            .domain_keys()
            .private_key("1234123412341234")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"domain"
    );
    assert_eq!(
        other
            .certificates()
            .private_key("EEEEEEEEEEEEEEEE")
            .await
            .unwrap(),
        None
    );
    // Rotating to the same key again is a no-op.
    assert_eq!(other.rotate_master_key(&new).await.unwrap().re_encrypted, 0);
    other.close().await;
    db.finish().await;
}
both!(rotation_keeps_secrets_readable);

async fn interrupted_rotation_target_is_refused(engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = db.store();
    s.certificates()
        .insert(&new_key("a@example.com", "ABABABABABABABAB", Some(b"k")))
        .await
        .unwrap();
    let new = MasterKey::generate().unwrap();
    s.rotate_master_key(&new).await.unwrap();
    // Simulate a crash before the final step: the new key is still pending.
    db.raw(&format!(
        "UPDATE master_key_check SET state = 'pending' WHERE key_id = '{}'",
        new.id()
    ))
    .await;
    let err = db.open_with(new.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::RotationIncomplete(_)), "{err}");
    db.finish().await;
}
both!(interrupted_rotation_target_is_refused);

async fn moved_ciphertext_is_refused(engine: Engine) {
    let db = TestDb::new(engine).await;
    let certs = db.store().certificates();
    certs
        .insert(&new_key(
            "a@example.com",
            "AAAAAAAAAAAAAAAA",
            Some(b"alice"),
        ))
        .await
        .unwrap();
    certs
        .insert(&new_key(
            "m@example.com",
            "BBBBBBBBBBBBBBBB",
            Some(b"mallory"),
        ))
        .await
        .unwrap();
    // Someone with write access to the database copies Alice's sealed key
    // into Mallory's row: it must not open there.
    db.raw(
        "UPDATE certificates SET private_key_enc = \
         (SELECT private_key_enc FROM certificates WHERE fingerprint = 'AAAAAAAAAAAAAAAA') \
         WHERE fingerprint = 'BBBBBBBBBBBBBBBB'",
    )
    .await;
    let err = certs.private_key("BBBBBBBBBBBBBBBB").await.unwrap_err();
    assert!(matches!(err, StoreError::Tampered(_)), "{err}");
    assert_eq!(
        certs
            .private_key("AAAAAAAAAAAAAAAA")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"alice"
    );
    db.finish().await;
}
both!(moved_ciphertext_is_refused);

async fn hand_edited_rows_are_errors_not_defaults(engine: Engine) {
    let db = TestDb::new(engine).await;
    let gina = db.store().gina();
    gina.insert(&gina_account("x@partner.example"))
        .await
        .unwrap();
    db.raw("UPDATE gina_accounts SET previous_hashes = 'not json'")
        .await;
    assert!(matches!(
        gina.by_address(&addr("x@partner.example")).await,
        Err(StoreError::Json { .. })
    ));
    let users = db.store().users();
    users
        .insert(&NewUser {
            address: addr("u@example.com"),
            display_name: None,
            attributes: Default::default(),
            licence_state: LicenceState::Licensed,
        })
        .await
        .unwrap();
    db.raw("UPDATE users SET address = 'no at sign'").await;
    assert!(matches!(
        users.list(None, 10).await,
        Err(StoreError::Corrupt { .. })
    ));
    db.raw("UPDATE users SET address = 'u@example.com', attributes = '[1]'")
        .await;
    assert!(matches!(
        users.get(&addr("u@example.com")).await,
        Err(StoreError::Corrupt { .. })
    ));
    db.finish().await;
}
both!(hand_edited_rows_are_errors_not_defaults);

async fn secrets_under_an_unknown_key_are_reported(engine: Engine) {
    let db = TestDb::new(engine).await;
    db.store()
        .certificates()
        .insert(&new_key("a@example.com", "CCCCCCCCCCCCCCCC", Some(b"k")))
        .await
        .unwrap();
    assert!(db.store().check().await.unwrap().is_ok());
    // Someone removes the key check by hand and starts with another key: the
    // node starts (the store looks new), but the old secrets are reported by
    // `db check` and are refused as unknown-key, never returned as garbage.
    db.raw("DELETE FROM master_key_check").await;
    let other = db.open_with(MasterKey::generate().unwrap()).await.unwrap();
    let report = other.check().await.unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems[0].contains("1 secrets in certificates"),
        "{report:?}"
    );
    assert!(matches!(
        other.certificates().private_key("CCCCCCCCCCCCCCCC").await,
        Err(StoreError::UnknownKeyId(_))
    ));
    other.close().await;
    db.finish().await;
}
both!(secrets_under_an_unknown_key_are_reported);

// ------------------------------------------- rotation while a node is running

/// The plaintext stored under certificate `i` in the rotation tests.
fn cert_secret(i: u32) -> Vec<u8> {
    format!("cert-secret-{i}").into_bytes()
}

fn cert_fp(i: u32) -> String {
    format!("{i:040X}")
}

/// Asserts that `s` opens certificates `0..n` with their own plaintexts.
async fn assert_certs_readable(s: &Store, range: std::ops::Range<u32>) {
    for i in range {
        let got = s.certificates().private_key(&cert_fp(i)).await.unwrap();
        assert_eq!(got.unwrap().expose(), cert_secret(i).as_slice(), "cert {i}");
    }
}

/// A node whose key is the key file in the data folder: `TestDb` opens with
/// an explicit key, so the test writes it where `siegel serve` would find it.
fn write_key_file(db: &TestDb) -> bool {
    // `rotate_key_file` refuses when the key comes from the environment.
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return false;
    }
    db.key.write_file(&db.dir.join(MASTER_KEY_FILE)).unwrap();
    true
}

async fn running_node_follows_a_key_file_rotation(engine: Engine) {
    let db = TestDb::new(engine).await;
    if !write_key_file(&db) {
        return db.finish().await;
    }
    // Node A, the running gateway; a clone stands for another of its tasks.
    let a = db.store();
    let a_task = a.clone();
    for i in 0..5 {
        a.certificates()
            .insert(&new_key(
                "a@example.com",
                &cert_fp(i),
                Some(&cert_secret(i)),
            ))
            .await
            .unwrap();
    }
    a.pgp_keys()
        .insert(&new_key("a@example.com", "AAAABBBBCCCCDDDD", Some(b"pgp")))
        .await
        .unwrap();
    a.domain_keys()
        .insert(&NewDomainKey {
            domain: "example.com".into(),
            kind: DomainKeyKind::Smime,
            ownership: Ownership::Own,
            fingerprint: "1234123412341234".into(),
            material: vec![1],
            private_key: Some(SecretBytes::new(b"domain".to_vec())),
        })
        .await
        .unwrap();
    let old_id = a.master_key_id();

    // Node B, the `siegel master-key rotate` process, on the same data dir.
    let b = db.open().await.unwrap();
    assert_eq!(b.rotate_key_file(&db.dir).await.unwrap().re_encrypted, 7);
    let new_id = b.master_key_id();
    assert_ne!(new_id, old_id);
    b.close().await;

    // A's first contact after the rotation is a write: it learns the new key
    // from the key file and seals under it, not under the retired one.
    a_task
        .certificates()
        .insert(&new_key(
            "a@example.com",
            &cert_fp(5),
            Some(&cert_secret(5)),
        ))
        .await
        .unwrap();
    assert_eq!(a.master_key_id(), new_id, "all clones share the keyring");
    // A reads everything B re-sealed, without reopening.
    assert_certs_readable(a, 0..6).await;
    assert_eq!(
        a.pgp_keys()
            .private_key("AAAABBBBCCCCDDDD")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"pgp"
    );
    assert_eq!(
        a.domain_keys()
            .private_key("1234123412341234")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"domain"
    );
    let report = a.check().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    // A node holding only the new key reads A's post-rotation secret: it
    // really is under the new key (the old key's row is gone, so that node
    // does not learn the old key from master.key.old).
    let new_only = db
        .open_with(MasterKey::read_file(&db.dir.join(MASTER_KEY_FILE)).unwrap())
        .await
        .unwrap();
    assert_certs_readable(&new_only, 0..6).await;
    new_only.close().await;
    db.finish().await;
}
both!(running_node_follows_a_key_file_rotation);

async fn running_node_learns_the_key_on_read(engine: Engine) {
    let db = TestDb::new(engine).await;
    if !write_key_file(&db) {
        return db.finish().await;
    }
    let a = db.store();
    a.certificates()
        .insert(&new_key(
            "a@example.com",
            &cert_fp(0),
            Some(&cert_secret(0)),
        ))
        .await
        .unwrap();
    let b = db.open().await.unwrap();
    b.rotate_key_file(&db.dir).await.unwrap();
    // First contact is a read of a secret under a key A does not hold yet.
    assert_certs_readable(a, 0..1).await;
    assert_eq!(a.master_key_id(), b.master_key_id());
    b.close().await;
    db.finish().await;
}
both!(running_node_learns_the_key_on_read);

async fn key_found_nowhere_is_a_clear_error(engine: Engine) {
    // A node keyed by environment: no key file in its data folder.
    let db = TestDb::new(engine).await;
    let a = db.store();
    a.certificates()
        .insert(&new_key(
            "a@example.com",
            &cert_fp(0),
            Some(&cert_secret(0)),
        ))
        .await
        .unwrap();
    let b = db.open().await.unwrap();
    let new = MasterKey::generate().unwrap();
    b.rotate_master_key(&new).await.unwrap();
    // A stray key file that the store does not name is not trusted.
    MasterKey::generate()
        .unwrap()
        .write_file(&db.dir.join(STAGED_KEY_FILE))
        .unwrap();
    let err = a.certificates().private_key(&cert_fp(0)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownKeyId(id) if *id == new.id().to_hex()),
        "{err}"
    );
    assert!(err.to_string().contains("restart"), "{err}");
    // Writing under the retired key is refused, not stored as garbage.
    let err = a
        .certificates()
        .insert(&new_key(
            "a@example.com",
            &cert_fp(1),
            Some(&cert_secret(1)),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownKeyId(_)), "{err}");
    assert_eq!(
        a.certificates().by_fingerprint(&cert_fp(1)).await.unwrap(),
        None,
        "the refused insert left no row"
    );
    // Once the operator puts the new key where the node looks, it recovers.
    std::fs::remove_file(db.dir.join(STAGED_KEY_FILE)).unwrap();
    new.write_file(&db.dir.join(STAGED_KEY_FILE)).unwrap();
    assert_certs_readable(a, 0..1).await;
    assert_eq!(a.master_key_id(), new.id());
    b.close().await;
    db.finish().await;
}
both!(key_found_nowhere_is_a_clear_error);

async fn rotation_with_a_concurrent_writer(engine: Engine) {
    let db = TestDb::new(engine).await;
    if !write_key_file(&db) {
        return db.finish().await;
    }
    let a = db.store().clone();
    // More than one rotation batch before the rotation starts.
    const BEFORE: u32 = 450;
    const MIN_DURING: u32 = 50;
    const ROTATIONS: usize = 3;
    for i in 0..BEFORE {
        a.certificates()
            .insert(&new_key(
                "a@example.com",
                &cert_fp(i),
                Some(&cert_secret(i)),
            ))
            .await
            .unwrap();
    }
    let b = db.open().await.unwrap();
    // The writer keeps going until the rotations are over, so its writes
    // fall before, between and after the rotations' passes and final steps.
    let rotating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (a, rotating) = (a.clone(), rotating.clone());
        tokio::spawn(async move {
            let mut i = BEFORE;
            while rotating.load(std::sync::atomic::Ordering::SeqCst) || i < BEFORE + MIN_DURING {
                a.certificates()
                    .insert(&new_key(
                        "w@example.com",
                        &cert_fp(i),
                        Some(&cert_secret(i)),
                    ))
                    .await
                    .unwrap();
                // Reads interleave with the re-sealing too.
                assert_certs_readable(&a, i - 1..i + 1).await;
                i += 1;
            }
            i
        })
    };
    let rotator = {
        let (b, dir, rotating) = (b.clone(), db.dir.clone(), rotating.clone());
        tokio::spawn(async move {
            for _ in 0..ROTATIONS {
                b.rotate_key_file(&dir).await.unwrap();
            }
            rotating.store(false, std::sync::atomic::Ordering::SeqCst);
        })
    };
    rotator.await.unwrap();
    let end = writer.await.unwrap();
    let new = MasterKey::read_file(&db.dir.join(MASTER_KEY_FILE)).unwrap();
    assert_eq!(b.master_key_id(), new.id());
    // Every secret readable by A, and none left under an old key.
    assert_certs_readable(&a, 0..end).await;
    assert_eq!(a.master_key_id(), new.id());
    let report = a.check().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let new_only = db.open_with(new).await.unwrap();
    assert_certs_readable(&new_only, 0..end).await;
    new_only.close().await;
    b.close().await;
    db.finish().await;
}
both!(rotation_with_a_concurrent_writer);

const ROTATE_CHILD_URL: &str = "SIEGEL_STORE_ROTATE_CHILD_URL";

/// Waits (up to 60 s) for a marker file another process creates.
async fn wait_for_file(path: &std::path::Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", path.display());
}

/// The child half of `env_keyed_node_follows_rotation_via_key_file`: a
/// running node keyed by `SIEGEL_MASTER_KEY`, told where a rotated key will
/// be (`SIEGEL_MASTER_KEY_FILE`). Returns at once unless that test started it.
#[tokio::test]
async fn child_env_keyed_node() {
    let Ok(url) = std::env::var(ROTATE_CHILD_URL) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("SIEGEL_STORE_CHILD_DIR").unwrap());
    let store = Store::connect(&url, &dir).await.unwrap();
    store
        .certificates()
        .insert(&new_key(
            "a@example.com",
            &cert_fp(0),
            Some(&cert_secret(0)),
        ))
        .await
        .unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    wait_for_file(&dir.join("rotated")).await;
    // Same process, no restart: reads the re-sealed secret, writes a new one.
    assert_certs_readable(&store, 0..1).await;
    store
        .certificates()
        .insert(&new_key(
            "a@example.com",
            &cert_fp(1),
            Some(&cert_secret(1)),
        ))
        .await
        .unwrap();
    assert!(store.check().await.unwrap().is_ok());
    store.close().await;
}

async fn env_keyed_node_follows_rotation_via_key_file(engine: Engine) {
    let db = TestDb::new(engine).await;
    let new = MasterKey::generate().unwrap();
    // The operator puts the new key where the nodes look, outside the data
    // folder, before rotating.
    let key_file = db.dir.join("elsewhere").join("next.key");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    new.write_file(&key_file).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_env_keyed_node", "--test-threads", "1"])
        .env(ROTATE_CHILD_URL, &db.url)
        .env("SIEGEL_STORE_CHILD_DIR", &db.dir)
        .env(MASTER_KEY_ENV, db.key.to_base64().as_str())
        .env(MASTER_KEY_FILE_ENV, &key_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&db.dir.join("ready")).await;
    db.store().rotate_master_key(&new).await.unwrap();
    std::fs::write(db.dir.join("rotated"), b"").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "child failed: {status}");
    // The child's post-rotation secret is under the new key.
    let new_only = db.open_with(new).await.unwrap();
    assert_certs_readable(&new_only, 0..2).await;
    new_only.close().await;
    db.finish().await;
}
both!(env_keyed_node_follows_rotation_via_key_file);

// ------------------------------------------------------- two real processes

const CHILD_URL: &str = "SIEGEL_STORE_CHILD_URL";
const CHILD_N: u32 = 150;

/// The child half of `two_processes_share_one_database`: a second `siegel`
/// node in its own process. Returns at once unless that test started it.
#[tokio::test]
async fn child_process_node() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("SIEGEL_STORE_CHILD_DIR").unwrap());
    // The master key comes from SIEGEL_MASTER_KEY, as in production.
    let store = Store::connect(&url, &dir).await.unwrap();
    let target = addr("target@partner.example");
    for i in 0..CHILD_N {
        store
            .gina()
            .record_failed_login(&target, 1_000_000, 60, 0)
            .await
            .unwrap();
        // Both processes create the same accounts; exactly one wins each.
        match store
            .gina()
            .insert(&gina_account(&format!("shared{}@partner.example", i % 50)))
            .await
        {
            Ok(_) | Err(StoreError::Duplicate { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    store.close().await;
}

async fn two_processes_share_one_database(engine: Engine) {
    let db = TestDb::new(engine).await;
    db.store()
        .gina()
        .insert(&gina_account("target@partner.example"))
        .await
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_node", "--test-threads", "1"])
                .env(CHILD_URL, &db.url)
                .env("SIEGEL_STORE_CHILD_DIR", &db.dir)
                .env(MASTER_KEY_ENV, db.key.to_base64().as_str())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let statuses = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|mut c| c.wait().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for status in statuses {
        assert!(status.success(), "child failed: {status}");
    }
    let gina = db.store().gina();
    let target = gina
        .by_address(&addr("target@partner.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(target.failed_logins, i64::from(2 * CHILD_N));
    assert_eq!(gina.count().await.unwrap(), 1 + 50);
    db.finish().await;
}
both!(two_processes_share_one_database);

// --------------------------------------------------------------- users

async fn users_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    let users = db.store().users();
    let mut attributes = serde_json::Map::new();
    attributes.insert("department".into(), "Legal".into());
    let created = users
        .insert(&NewUser {
            address: addr("Alice@EXAMPLE.com"),
            display_name: Some("Alice".into()),
            attributes: attributes.clone(),
            licence_state: LicenceState::Licensed,
        })
        .await
        .unwrap();
    assert_eq!(created.address.as_str(), "Alice@example.com");
    // Found through any spelling of the domain; normalised in one place.
    let got = users
        .get(&addr("Alice@Example.COM"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, created);
    assert_eq!(got.attributes, attributes);
    assert_eq!(got.last_seen, None);

    // Same mailbox, other spelling: duplicate.
    let dup = users
        .insert(&NewUser {
            address: addr("Alice@example.COM."),
            display_name: None,
            attributes: Default::default(),
            licence_state: LicenceState::Unlicensed,
        })
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Duplicate { .. }), "{dup}");

    users.touch(&got.address, 2000).await.unwrap();
    users.touch(&got.address, 1000).await.unwrap(); // never backwards
    users
        .set_licence_state(&got.address, LicenceState::Excluded)
        .await
        .unwrap();
    let got = users.get(&got.address).await.unwrap().unwrap();
    assert_eq!(got.last_seen, Some(2000));
    assert_eq!(got.licence_state, LicenceState::Excluded);
    assert_eq!(users.count(LicenceState::Excluded).await.unwrap(), 1);

    // IDN domain is stored as A-labels.
    let idn = users
        .insert(&NewUser {
            address: addr("bob@Bücher.example"),
            display_name: None,
            attributes: Default::default(),
            licence_state: LicenceState::Licensed,
        })
        .await
        .unwrap();
    assert_eq!(idn.address.as_str(), "bob@xn--bcher-kva.example");
    let all = users.list(None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    let page = users.list(Some(&all[0].address), 10).await.unwrap();
    assert_eq!(page.len(), 1);

    assert!(matches!(
        users.touch(&addr("nobody@example.com"), 1).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        users
            .insert(&NewUser {
                address: addr("c@example.com"),
                display_name: Some("bad\nname".into()),
                attributes: Default::default(),
                licence_state: LicenceState::Licensed,
            })
            .await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(users.delete(&idn.address).await.unwrap());
    assert!(!users.delete(&idn.address).await.unwrap());
    db.finish().await;
}
both!(users_round_trip);

/// The mail path asks every outbound mail's sender's licence state; the
/// answer is remembered for a few seconds per node. A change made through
/// the node is seen at once; one made by another node only after
/// `LICENCE_STATE_TTL`, which the stale answer below shows.
async fn licence_state_is_remembered_briefly_and_own_writes_show_at_once(engine: Engine) {
    let db = TestDb::new(engine).await;
    let users = db.store().users();
    let alice = addr("alice@example.com");
    assert_eq!(users.licence_state(&alice).await.unwrap(), None);
    users
        .insert(&NewUser {
            address: alice.clone(),
            display_name: None,
            attributes: Default::default(),
            licence_state: LicenceState::Licensed,
        })
        .await
        .unwrap();
    assert_eq!(
        users
            .licence_state(&addr("alice@EXAMPLE.com"))
            .await
            .unwrap(),
        Some(LicenceState::Licensed)
    );
    users
        .set_licence_state(&alice, LicenceState::Excluded)
        .await
        .unwrap();
    assert_eq!(
        users.licence_state(&alice).await.unwrap(),
        Some(LicenceState::Excluded)
    );

    let other = db.open().await.unwrap();
    other
        .users()
        .set_licence_state(&alice, LicenceState::Licensed)
        .await
        .unwrap();
    assert_eq!(
        other.users().licence_state(&alice).await.unwrap(),
        Some(LicenceState::Licensed)
    );
    assert_eq!(
        users.licence_state(&alice).await.unwrap(),
        Some(LicenceState::Excluded),
        "within {:?} this node answers from memory",
        siegel_store::LICENCE_STATE_TTL
    );
    assert_eq!(
        users.get(&alice).await.unwrap().unwrap().licence_state,
        LicenceState::Licensed
    );
    assert!(users.delete(&alice).await.unwrap());
    assert_eq!(users.licence_state(&alice).await.unwrap(), None);
    db.finish().await;
}
both!(licence_state_is_remembered_briefly_and_own_writes_show_at_once);

// ------------------------------------------------- certificates, pgp keys

async fn keys_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    for repo in [db.store().certificates(), db.store().pgp_keys()] {
        let stored = repo
            .insert(&new_key(
                "a@Example.com",
                "ab:cd:ef:01:23:45:67:89",
                Some(b"PRIVATE"),
            ))
            .await
            .unwrap();
        assert_eq!(stored.fingerprint, "ABCDEF0123456789");
        assert_eq!(stored.address.as_str(), "a@example.com");
        assert!(stored.has_private_key);
        assert!(!stored.revoked);
        let got = repo
            .by_fingerprint("abcdef0123456789")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, stored);
        assert_eq!(
            repo.private_key("ABCDEF0123456789")
                .await
                .unwrap()
                .unwrap()
                .expose(),
            b"PRIVATE"
        );
        // Same fingerprint, other spelling: duplicate.
        let dup = repo
            .insert(&new_key("b@example.com", "ABCDEF0123456789", None))
            .await
            .unwrap_err();
        assert!(matches!(dup, StoreError::Duplicate { .. }), "{dup}");

        // Harvested from a mail: public only, with its Message-ID.
        let mut harvested = new_key("a@example.com", "1111222233334444", None);
        harvested.source_kind = SourceKind::Harvested;
        harvested.not_after = 1_900_000_000;
        harvested.source_message_id = Some("<m1@example.org>".into());
        harvested.source_detail = Some("autocrypt".into());
        repo.insert(&harvested).await.unwrap();
        assert_eq!(repo.private_key("1111222233334444").await.unwrap(), None);
        let all = repo.all().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].source_detail, None);
        assert_eq!(all[1].source_detail.as_deref(), Some("autocrypt"));
        // Parked behind another key, then put back in use.
        repo.supersede("1111222233334444", "ABCDEF0123456789")
            .await
            .unwrap();
        repo.reinstate("1111222233334444", "confirmed")
            .await
            .unwrap();
        let back = repo
            .by_fingerprint("1111222233334444")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.superseded_by, None);
        assert_eq!(back.source_detail.as_deref(), Some("confirmed"));
        assert!(matches!(
            repo.reinstate("9999999999999999", "x").await.unwrap_err(),
            StoreError::NotFound { .. }
        ));
        // What the owner announced they can decrypt.
        assert_eq!(repo.capabilities("1111222233334444").await.unwrap(), None);
        repo.set_capabilities("1111222233334444", "aes256-gcm")
            .await
            .unwrap();
        assert_eq!(
            repo.capabilities("1111222233334444")
                .await
                .unwrap()
                .as_deref(),
            Some("aes256-gcm")
        );
        assert!(matches!(
            repo.set_capabilities("9999999999999999", "x")
                .await
                .unwrap_err(),
            StoreError::NotFound { .. }
        ));
        let list = repo.for_address(&addr("a@EXAMPLE.com")).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].fingerprint, "1111222233334444",
            "newest validity first"
        );
        assert_eq!(
            list[0].source_message_id.as_deref(),
            Some("<m1@example.org>")
        );

        repo.revoke("ABCDEF0123456789").await.unwrap();
        repo.supersede("ABCDEF0123456789", "1111222233334444")
            .await
            .unwrap();
        let got = repo
            .by_fingerprint("ABCDEF0123456789")
            .await
            .unwrap()
            .unwrap();
        assert!(got.revoked);
        assert_eq!(got.superseded_by.as_deref(), Some("1111222233334444"));
        assert!(matches!(
            repo.supersede("ABCDEF0123456789", "9999999999999999").await,
            Err(StoreError::NotFound { .. })
        ));

        // Invalid data is refused and not stored.
        let mut bad = new_key("a@example.com", "2222333344445555", None);
        bad.source_kind = SourceKind::Harvested;
        assert!(matches!(
            repo.insert(&bad).await,
            Err(StoreError::Invalid { .. })
        ));
        let mut bad = new_key("a@example.com", "2222333344445555", None);
        bad.not_before = bad.not_after + 1;
        assert!(matches!(
            repo.insert(&bad).await,
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            repo.insert(&new_key("a@example.com", "not-hex", None))
                .await,
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(repo.by_fingerprint("2222333344445555").await.unwrap(), None);
    }
    db.finish().await;
}
both!(keys_round_trip);

async fn domain_keys_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    let repo = db.store().domain_keys();
    let own = repo
        .insert(&NewDomainKey {
            domain: "Bücher.Example".into(),
            kind: DomainKeyKind::Pgp,
            ownership: Ownership::Own,
            fingerprint: "abcdabcdabcdabcd".into(),
            material: vec![1, 2, 3],
            private_key: Some(SecretBytes::new(b"own secret".to_vec())),
        })
        .await
        .unwrap();
    assert_eq!(own.domain, "xn--bcher-kva.example");
    let partner = NewDomainKey {
        domain: "partner.example".into(),
        kind: DomainKeyKind::Smime,
        ownership: Ownership::Partner,
        fingerprint: "0000111100001111".into(),
        material: vec![9],
        private_key: None,
    };
    repo.insert(&partner).await.unwrap();
    let list = repo.for_domain("bücher.example").await.unwrap();
    assert_eq!(list, vec![own]);
    assert_eq!(
        repo.private_key("ABCDABCDABCDABCD")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"own secret"
    );
    assert!(matches!(
        repo.insert(&partner).await,
        Err(StoreError::Duplicate { .. })
    ));
    let mut with_secret = partner.clone();
    with_secret.fingerprint = "2222111100001111".into();
    with_secret.private_key = Some(SecretBytes::new(vec![1]));
    assert!(matches!(
        repo.insert(&with_secret).await,
        Err(StoreError::Invalid { .. })
    ));
    let mut bad_domain = partner.clone();
    bad_domain.domain = "not a domain".into();
    assert!(matches!(
        repo.insert(&bad_domain).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(repo.delete("0000111100001111").await.unwrap());
    db.finish().await;
}
both!(domain_keys_round_trip);

// --------------------------------------------------------------- GINA

async fn gina_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    let gina = db.store().gina();
    let created = gina
        .insert(&gina_account("Ext@Partner.Example"))
        .await
        .unwrap();
    assert_eq!(created.address.as_str(), "Ext@partner.example");
    assert_eq!(created.failed_logins, 0);
    assert!(created.previous_hashes.is_empty());
    let got = gina
        .by_address(&addr("Ext@PARTNER.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, created);
    assert!(matches!(
        gina.insert(&gina_account("Ext@partner.example")).await,
        Err(StoreError::Duplicate { .. })
    ));

    // Password history keeps the last four, newest first.
    for n in 1..=6 {
        gina.change_password(&got.address, &hash(n)).await.unwrap();
    }
    let got = gina.by_address(&got.address).await.unwrap().unwrap();
    assert_eq!(got.password_hash, hash(6));
    assert_eq!(
        got.previous_hashes,
        vec![hash(5), hash(4), hash(3), hash(2)]
    );

    gina.set_preferred_method(&got.address, PreferredMethod::Smime)
        .await
        .unwrap();
    gina.record_failed_login(&got.address, 3, 600, 1000)
        .await
        .unwrap();
    gina.record_login(&got.address, 5000).await.unwrap();
    let got = gina.by_address(&got.address).await.unwrap().unwrap();
    assert_eq!(got.preferred_method, PreferredMethod::Smime);
    assert_eq!(
        (got.failed_logins, got.locked_until, got.last_login),
        (0, None, Some(5000))
    );

    // Refused, not stored: plaintext password, half a security question, bad language.
    let mut bad = gina_account("x@partner.example");
    bad.password_hash = "hunter2".into();
    assert!(matches!(
        gina.insert(&bad).await,
        Err(StoreError::Invalid { .. })
    ));
    let mut bad = gina_account("x@partner.example");
    bad.answer_hash = None;
    assert!(matches!(
        gina.insert(&bad).await,
        Err(StoreError::Invalid { .. })
    ));
    let mut bad = gina_account("x@partner.example");
    bad.language = "de_DE; DROP TABLE".into();
    assert!(matches!(
        gina.insert(&bad).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(
        gina.by_address(&addr("x@partner.example"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        gina.change_password(&got.address, "plain").await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        gina.record_failed_login(&addr("none@partner.example"), 3, 60, 0)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    db.finish().await;
}
both!(gina_round_trip);

async fn gina_batch_is_all_or_nothing(engine: Engine) {
    let db = TestDb::new(engine).await;
    let gina = db.store().gina();
    let batch: Vec<_> = (0..2500)
        .map(|i| gina_account(&format!("user{i}@batch.example")))
        .collect();
    assert_eq!(gina.insert_batch(&batch).await.unwrap(), 2500);
    assert_eq!(gina.count().await.unwrap(), 2500);
    let got = gina
        .by_address(&addr("user2499@batch.example"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.language, "de");
    // A batch whose last chunk collides leaves nothing behind.
    let mut second: Vec<_> = (2500..3600)
        .map(|i| gina_account(&format!("user{i}@batch.example")))
        .collect();
    second.push(gina_account("user0@batch.example"));
    assert!(matches!(
        gina.insert_batch(&second).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(gina.count().await.unwrap(), 2500);
    db.finish().await;
}
both!(gina_batch_is_all_or_nothing);

async fn concurrent_failed_logins_count_exactly(engine: Engine) {
    let db = TestDb::new(engine).await;
    let address = addr("target@partner.example");
    db.store()
        .gina()
        .insert(&gina_account(address.as_str()))
        .await
        .unwrap();
    // Two "nodes" (separate pools), 16 tasks, 25 failures each.
    let second = db.open().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = if t % 2 == 0 {
            db.store().clone()
        } else {
            second.clone()
        };
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let mut counts = Vec::new();
            for _ in 0..25 {
                let r = store
                    .gina()
                    .record_failed_login(&address, 100, 900, 10_000)
                    .await
                    .unwrap();
                counts.push(r);
            }
            counts
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    // Every increment returned a distinct count: none was lost or doubled.
    let mut counts: Vec<i64> = seen.iter().map(|r| r.count).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=400).collect::<Vec<_>>());
    // The lock was set exactly from the 100th failure on.
    for r in &seen {
        assert_eq!(r.locked_until.is_some(), r.count >= 100, "{r:?}");
    }
    let account = db
        .store()
        .gina()
        .by_address(&address)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.failed_logins, 400);
    assert_eq!(account.locked_until, Some(10_900));
    second.close().await;
    db.finish().await;
}
both!(concurrent_failed_logins_count_exactly);

// ----------------------------------------------- tracking, settings, licences

async fn tracking_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    let tracking = db.store().tracking();
    let queue_id = QueueId::generate();
    let event = TrackingEvent {
        message_id: Some("<abc@example.com>".into()),
        queue_id: queue_id.clone(),
        recipient: addr("r@Partner.example"),
        method: "smime-encrypt".into(),
        key_fingerprint: Some("ab:cd:ab:cd:ab:cd:ab:cd".into()),
        reason: "certificate found for recipient".into(),
        at: 1_750_000_000,
        node: "node-a".into(),
    };
    let first = tracking.record(&event).await.unwrap();
    let mut second_event = event.clone();
    second_event.node = "node-b".into();
    second_event.method = "gina".into();
    let second = tracking.record(&second_event).await.unwrap();
    assert!(second > first);
    let got = tracking.for_queue_id(&queue_id).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event.recipient.as_str(), "r@partner.example");
    assert_eq!(
        got[0].event.key_fingerprint.as_deref(),
        Some("ABCDABCDABCDABCD")
    );
    assert_eq!(got[1].event.node, "node-b");
    assert_eq!(
        tracking
            .for_message_id("<abc@example.com>")
            .await
            .unwrap()
            .len(),
        2
    );
    let mut bad = event.clone();
    bad.reason = String::new();
    assert!(matches!(
        tracking.record(&bad).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(tracking.purge_before(1_750_000_001).await.unwrap(), 2);
    db.finish().await;
}
both!(tracking_round_trip);

fn numbered_event(queue_id: &QueueId, n: usize) -> TrackingEvent {
    TrackingEvent {
        message_id: Some(format!("<m{n}@example.com>")),
        queue_id: queue_id.clone(),
        recipient: addr(&format!("r{n}@partner.example")),
        method: "tls_only".into(),
        key_fingerprint: None,
        reason: format!("decision {n}"),
        at: 1_750_000_000,
        node: "node-a".into(),
    }
}

/// Many events in one transaction: more than one multi-row INSERT, kept in
/// order, and all or nothing when one of them is invalid.
async fn tracking_record_many(engine: Engine) {
    let db = TestDb::new(engine).await;
    let tracking = db.store().tracking();
    let queue_id = QueueId::generate();
    let events: Vec<_> = (0..1_234).map(|n| numbered_event(&queue_id, n)).collect();
    assert_eq!(tracking.record_many(&events).await.unwrap(), 1_234);
    let got = tracking.for_queue_id(&queue_id).await.unwrap();
    assert_eq!(got.len(), 1_234);
    assert!(got.iter().enumerate().all(|(n, r)| r.event == events[n]));

    let other = QueueId::generate();
    let mut batch: Vec<_> = (0..10).map(|n| numbered_event(&other, n)).collect();
    batch[7].method = String::new();
    assert!(matches!(
        tracking.record_many(&batch).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(tracking.for_queue_id(&other).await.unwrap().is_empty());
    assert_eq!(tracking.record_many(&[]).await.unwrap(), 0);
    db.finish().await;
}
both!(tracking_record_many);

/// The group-committing writer: many concurrent callers, each told only
/// after its events are stored, and every event stored exactly once.
async fn tracking_writer_group_commit(engine: Engine) {
    let db = TestDb::new(engine).await;
    let writer = siegel_store::TrackingWriter::spawn(db.store().clone());
    let queue_id = QueueId::generate();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let writer = writer.clone();
        let queue_id = queue_id.clone();
        let store = db.store().clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let n = t * 100 + i;
                writer
                    .record_all(vec![numbered_event(&queue_id, n)])
                    .await
                    .unwrap();
                // Acknowledged means stored: visible to a reader at once.
                let mine = store
                    .tracking()
                    .for_message_id(&format!("<m{n}@example.com>"))
                    .await
                    .unwrap();
                assert_eq!(mine.len(), 1, "event {n} acknowledged but not stored");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    writer.submit(vec![numbered_event(&queue_id, 9_999)]);
    let mut bad = numbered_event(&queue_id, 10_000);
    bad.reason = String::new();
    assert!(
        writer.record_all(vec![bad]).await.is_err(),
        "an invalid event is reported to its caller"
    );
    let got = db.store().tracking().for_queue_id(&queue_id).await.unwrap();
    assert_eq!(
        got.len(),
        201,
        "200 acknowledged events and the submitted one"
    );
    db.finish().await;
}
both!(tracking_writer_group_commit);

async fn settings_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    let settings = db.store().settings();
    assert_eq!(settings.get("gina.lock_after").await.unwrap(), None);
    settings.set("gina.lock_after", &5).await.unwrap();
    settings.set("gina.lock_after", &7).await.unwrap();
    settings
        .set(
            "disclaimer.text",
            &serde_json::json!({"de": "Hallo", "en": "Hello"}),
        )
        .await
        .unwrap();
    assert_eq!(
        settings.get_as::<i64>("gina.lock_after").await.unwrap(),
        Some(7)
    );
    assert!(matches!(
        settings.get_as::<String>("gina.lock_after").await,
        Err(StoreError::Json { .. })
    ));
    let all = settings.all().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, "disclaimer.text");
    assert_eq!(all[0].1["en"], "Hello");
    assert!(matches!(
        settings.set("Bad Key", &1).await,
        Err(StoreError::Invalid { .. })
    ));
    assert!(settings.delete("gina.lock_after").await.unwrap());
    db.finish().await;
}
both!(settings_round_trip);

async fn licences_round_trip(engine: Engine) {
    let db = TestDb::new(engine).await;
    let licences = db.store().licences();
    let l = NewLicence {
        licence_id: "LIC-0001".into(),
        holder: "Example GmbH".into(),
        seats: 250,
        valid_from: 1000,
        valid_until: 2000,
        document: "-----BEGIN LICENCE-----\n…".into(),
    };
    let stored = licences.insert(&l).await.unwrap();
    assert_eq!(stored.licence, l);
    assert!(matches!(
        licences.insert(&l).await,
        Err(StoreError::Duplicate { .. })
    ));
    let mut inverted = l.clone();
    inverted.licence_id = "LIC-0002".into();
    inverted.valid_from = 3000;
    assert!(matches!(
        licences.insert(&inverted).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(licences.valid_at(1500).await.unwrap().len(), 1);
    assert_eq!(licences.valid_at(2500).await.unwrap().len(), 0);
    assert_eq!(licences.all().await.unwrap(), vec![stored]);
    assert!(licences.delete("LIC-0001").await.unwrap());
    db.finish().await;
}
both!(licences_round_trip);

// ---------------------------------------------------------- backup/restore

async fn backup_and_restore(engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = db.store();
    let target = db.dir.join("backup.db");
    if engine == Engine::Postgres {
        assert!(matches!(
            s.backup_to(&target).await,
            Err(StoreError::SqliteOnly(_))
        ));
        db.finish().await;
        return;
    }
    s.gina()
        .insert(&gina_account("before@example.com"))
        .await
        .unwrap();
    s.certificates()
        .insert(&new_key("a@example.com", "ABCDEF0123456789", Some(b"key")))
        .await
        .unwrap();
    // Online: a writer keeps going while the backup runs.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                s.gina()
                    .insert(&gina_account(&format!("during{i}@example.com")))
                    .await
                    .unwrap();
            }
        })
    };
    s.backup_to(&target).await.unwrap();
    writer.await.unwrap();
    assert!(
        s.backup_to(&target).await.is_err(),
        "never overwrites a backup"
    );
    s.gina()
        .insert(&gina_account("after@example.com"))
        .await
        .unwrap();
    let db_path = s.sqlite_path().unwrap().to_owned();
    s.close().await;

    restore_sqlite(&target, &db_path).await.unwrap();
    let restored = db.open().await.unwrap();
    let gina = restored.gina();
    assert!(
        gina.by_address(&addr("before@example.com"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        gina.by_address(&addr("after@example.com"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        restored
            .certificates()
            .private_key("ABCDEF0123456789")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"key"
    );
    assert!(restored.check().await.unwrap().is_ok());
    restored.close().await;

    // A file that is not a store is refused and the database left alone.
    let junk = db.dir.join("junk.db");
    std::fs::write(&junk, b"not a database at all, not even close......").unwrap();
    assert!(restore_sqlite(&junk, &db_path).await.is_err());
    let again = db.open().await.unwrap();
    assert!(
        again
            .gina()
            .by_address(&addr("before@example.com"))
            .await
            .unwrap()
            .is_some()
    );
    again.close().await;
    db.finish().await;
}
both!(backup_and_restore);

// --------------------------------------------------------- default location

#[tokio::test]
async fn rotate_key_file_swaps_the_key_files() {
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("siegel-store-rotate-{}", random_hex(8)));
    let s = Store::connect("", &dir).await.unwrap();
    s.certificates()
        .insert(&new_key("a@example.com", "DDDDDDDDDDDDDDDD", Some(b"k")))
        .await
        .unwrap();
    let old_id = s.master_key_id();
    assert_eq!(s.rotate_key_file(&dir).await.unwrap().re_encrypted, 1);
    s.close().await;
    let old = MasterKey::read_file(&dir.join("master.key.old")).unwrap();
    assert_eq!(old.id(), old_id);
    assert!(!dir.join("master.key.new").exists());
    // The next start reads the new key file and opens the re-sealed secret.
    let again = Store::connect("", &dir).await.unwrap();
    assert_ne!(again.master_key_id(), old_id);
    assert_eq!(
        again
            .certificates()
            .private_key("DDDDDDDDDDDDDDDD")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"k"
    );
    again.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn default_store_is_sqlite_in_data_dir_with_key_file() {
    let dir = std::env::temp_dir().join(format!("siegel-store-default-{}", random_hex(8)));
    // `connect` reads SIEGEL_MASTER_KEY; this test only runs when it is unset
    // so that it exercises the key file.
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return;
    }
    let s = Store::connect("", &dir).await.unwrap();
    assert_eq!(s.engine(), Engine::Sqlite);
    assert!(dir.join(DEFAULT_DB_FILE).exists());
    assert!(dir.join(MASTER_KEY_FILE).exists());
    s.close().await;
    // Second start: same key file, same store.
    let again = Store::connect("", &dir).await.unwrap();
    again.close().await;
    // Replacing the key file with another key is refused at start.
    std::fs::remove_file(dir.join(MASTER_KEY_FILE)).unwrap();
    MasterKey::generate()
        .unwrap()
        .write_file(&dir.join(MASTER_KEY_FILE))
        .unwrap();
    assert!(matches!(
        Store::connect("", &dir).await.unwrap_err(),
        StoreError::WrongMasterKey { .. }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- GINA: containers, sessions, tokens, throttling, audit, secrets ------

fn container_id(n: u8) -> String {
    format!("{n:02x}").repeat(16)
}

async fn gina_accounts_initial_and_registration(engine: Engine) {
    let db = TestDb::new(engine).await;
    let gina = db.store().gina();
    let a = addr("new@partner.example");
    let created = gina
        .insert_initial(&a, Some("New Person"), &hash(1), "de")
        .await
        .unwrap()
        .unwrap();
    assert!(created.must_register);
    assert!(created.security_question.is_none());
    // A second first mail does not create (or re-notify) it again.
    assert!(
        gina.insert_initial(&a, None, &hash(2), "en")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        gina.insert_initial(&a, None, "plain", "en").await.is_err(),
        "only argon2id hashes"
    );

    gina.register(&a, &hash(3), "First pet?", &hash(4))
        .await
        .unwrap();
    let reg = gina.by_address(&a).await.unwrap().unwrap();
    assert!(!reg.must_register);
    assert_eq!(reg.password_hash, hash(3));
    assert_eq!(
        reg.previous_hashes,
        vec![hash(1)],
        "the initial password is history"
    );
    assert_eq!(reg.security_question.as_deref(), Some("First pet?"));

    gina.set_initial_password(&a, &hash(5)).await.unwrap();
    let reset = gina.by_address(&a).await.unwrap().unwrap();
    assert!(reset.must_register);
    assert_eq!(reset.previous_hashes, vec![hash(3), hash(1)]);
    gina.set_language(&a, "en").await.unwrap();
    assert!(gina.set_language(&a, "e n").await.is_err());
    assert_eq!(gina.by_address(&a).await.unwrap().unwrap().language, "en");

    for i in 0..5 {
        gina.insert_initial(&addr(&format!("p{i}@list.example")), None, &hash(9), "de")
            .await
            .unwrap();
    }
    let page1 = gina.list(None, 3).await.unwrap();
    assert_eq!(page1.len(), 3);
    let page2 = gina
        .list(Some(page1[2].address.as_str()), 10)
        .await
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 6);
    assert!(
        page2
            .iter()
            .all(|x| x.address.as_str() > page1[2].address.as_str())
    );
    assert!(matches!(
        gina.register(&addr("nobody@x.example"), &hash(1), "q", &hash(2))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    db.finish().await;
}
both!(gina_accounts_initial_and_registration);

async fn gina_containers_keys_revocation_and_expiry(engine: Engine) {
    let db = TestDb::new(engine).await;
    let c = db.store().gina_containers();
    let alice = addr("alice@example.com");
    let bob = addr("bob@partner.example");
    let key = SecretBytes::new(vec![42u8; 32]);
    for (n, msg) in [
        (1u8, "<m1@example.com>"),
        (2, "m1@example.com"),
        (3, "<m2@example.com>"),
    ] {
        c.insert(&NewContainer {
            container_id: &container_id(n),
            message_id: Some(msg),
            sender: &alice,
            recipient: &bob,
            key: &key,
            created_at: 1000,
            expires_at: 2000,
            receipt_to: (n == 1).then_some(&alice),
        })
        .await
        .unwrap();
    }
    let rec = c.by_id(&container_id(1)).await.unwrap().unwrap();
    assert_eq!(
        rec.message_id.as_deref(),
        Some("m1@example.com"),
        "stored without <>"
    );
    assert_eq!(rec.receipt_to.as_ref(), Some(&alice));
    assert_eq!(rec.state(1500), ContainerState::Open);
    assert_eq!(rec.state(2000), ContainerState::Expired);
    assert_eq!(
        c.key(&container_id(1)).await.unwrap().unwrap().expose(),
        &[42u8; 32]
    );
    assert!(c.by_id(&container_id(9)).await.unwrap().is_none());
    assert!(c.by_id("../x").await.is_err(), "ids are checked");

    // The key is sealed under the master key, bound to its row.
    db.raw(&format!(
        "UPDATE gina_containers SET key_enc = (SELECT key_enc FROM gina_containers WHERE container_id = '{}') \
         WHERE container_id = '{}'",
        container_id(1),
        container_id(3)
    ))
    .await;
    assert!(matches!(
        c.key(&container_id(3)).await,
        Err(StoreError::Tampered(_))
    ));

    // First open is reported once.
    assert!(c.mark_opened(&container_id(1), 1100).await.unwrap());
    assert!(!c.mark_opened(&container_id(1), 1200).await.unwrap());
    assert_eq!(
        c.by_id(&container_id(1))
            .await
            .unwrap()
            .unwrap()
            .first_opened_at,
        Some(1100)
    );

    // Revocation by Message-ID (with or without <>) shreds both copies.
    assert_eq!(c.for_message("<m1@example.com>").await.unwrap().len(), 2);
    assert_eq!(c.revoke_message("<m1@example.com>", 1300).await.unwrap(), 2);
    assert_eq!(c.revoke_message("m1@example.com", 1301).await.unwrap(), 0);
    assert!(c.key(&container_id(1)).await.unwrap().is_none());
    assert_eq!(
        c.by_id(&container_id(2))
            .await
            .unwrap()
            .unwrap()
            .state(1400),
        ContainerState::Revoked
    );

    // Expiry shreds the rest.
    assert_eq!(c.shred_expired(1999).await.unwrap(), 0);
    assert_eq!(c.shred_expired(2000).await.unwrap(), 1);
    assert!(c.key(&container_id(3)).await.unwrap().is_none());
    assert_eq!(
        c.by_id(&container_id(3))
            .await
            .unwrap()
            .unwrap()
            .state(1500),
        ContainerState::Expired,
        "a shredded key cannot open even before the recorded expiry"
    );
    db.finish().await;
}
both!(gina_containers_keys_revocation_and_expiry);

async fn gina_container_keys_survive_rotation(engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = db.store();
    let alice = addr("alice@example.com");
    let bob = addr("bob@partner.example");
    for n in 0..5u8 {
        s.gina_containers()
            .insert(&NewContainer {
                container_id: &container_id(n),
                message_id: None,
                sender: &alice,
                recipient: &bob,
                key: &SecretBytes::new(vec![n; 32]),
                created_at: 1,
                expires_at: i64::MAX,
                receipt_to: None,
            })
            .await
            .unwrap();
    }
    let secret = s
        .gina_secrets()
        .get_or_create("form-key", &SecretBytes::new(vec![7; 32]))
        .await
        .unwrap();
    let report = s
        .rotate_master_key(&MasterKey::generate().unwrap())
        .await
        .unwrap();
    assert_eq!(
        report.re_encrypted, 6,
        "5 container keys and the portal secret"
    );
    for n in 0..5u8 {
        assert_eq!(
            s.gina_containers()
                .key(&container_id(n))
                .await
                .unwrap()
                .unwrap()
                .expose(),
            &[n; 32]
        );
    }
    assert_eq!(
        s.gina_secrets()
            .get_or_create("form-key", &SecretBytes::new(vec![9; 32]))
            .await
            .unwrap(),
        secret,
        "first writer wins, later callers read it"
    );
    assert!(s.check().await.unwrap().is_ok());
    db.finish().await;
}
both!(gina_container_keys_survive_rotation);

async fn gina_sessions_and_tokens(engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = db.store();
    let bob = addr("bob@partner.example");
    let rec = SessionRecord {
        token_hash: "h1".into(),
        address: bob.clone(),
        csrf: "c1".into(),
        created_at: 100,
        last_seen: 100,
        expires_at: 10_000,
        client: "127.0.0.1".into(),
    };
    s.gina_sessions().create(&rec).await.unwrap();
    s.gina_sessions()
        .create(&SessionRecord {
            token_hash: "h2".into(),
            ..rec.clone()
        })
        .await
        .unwrap();
    // A second node sees the session.
    let other = db.open().await.unwrap();
    assert_eq!(
        other.gina_sessions().find("h1").await.unwrap(),
        Some(rec.clone())
    );
    other.gina_sessions().touch("h1", 160).await.unwrap();
    assert_eq!(
        s.gina_sessions()
            .find("h1")
            .await
            .unwrap()
            .unwrap()
            .last_seen,
        160
    );
    assert_eq!(
        s.gina_sessions()
            .delete_for(&bob, Some("h1"))
            .await
            .unwrap(),
        1
    );
    assert!(s.gina_sessions().find("h2").await.unwrap().is_none());
    assert_eq!(s.gina_sessions().purge(200, 150).await.unwrap(), 0);
    assert_eq!(s.gina_sessions().purge(200, 161).await.unwrap(), 1, "idle");
    other.close().await;

    let t = s.gina_tokens();
    t.create("tok", "signup", &bob, 100, 200).await.unwrap();
    assert!(t.peek("tok", "signup", 150).await.unwrap().is_some());
    assert!(
        t.take("tok", "signup", 250).await.unwrap().is_none(),
        "expired"
    );
    assert_eq!(
        t.take("tok", "signup", 150).await.unwrap().unwrap().address,
        bob
    );
    assert!(
        t.take("tok", "signup", 151).await.unwrap().is_none(),
        "used once"
    );
    assert_eq!(t.count_since(&bob, 50).await.unwrap(), 1);
    assert_eq!(t.count_since(&bob, 101).await.unwrap(), 0);
    db.finish().await;
}
both!(gina_sessions_and_tokens);

async fn gina_throttle_counts_windows_and_locks(engine: Engine) {
    let db = TestDb::new(engine).await;
    let t = db.store().gina_throttle();
    // limit 3 in a window of 60 s, lock 300 s.
    assert_eq!(
        t.fail("account:x", 1000, 60, 3, 300)
            .await
            .unwrap()
            .failures,
        1
    );
    assert!(
        !t.fail("account:x", 1010, 60, 3, 300)
            .await
            .unwrap()
            .locked(1010)
    );
    let third = t.fail("account:x", 1020, 60, 3, 300).await.unwrap();
    assert_eq!(third.failures, 3);
    assert!(third.locked(1020) && third.locked(1319) && !third.locked(1320));
    // A new window starts over but keeps a lock that still runs.
    let later = t.fail("account:x", 1100, 60, 3, 300).await.unwrap();
    assert_eq!(later.failures, 1);
    assert!(
        later.locked(1100),
        "lock from the earlier window still holds"
    );
    let after = t.fail("account:x", 2000, 60, 3, 300).await.unwrap();
    assert_eq!(after.failures, 1);
    assert!(!after.locked(2000), "the lock is temporary");
    t.clear("account:x").await.unwrap();
    assert!(t.state("account:x").await.unwrap().is_none());

    // Concurrent failures from two nodes each count once.
    let other = db.open().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 {
            db.store().clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.gina_throttle()
                .fail("client:1.2.3.4", 5000, 3600, 1000, 60)
                .await
                .unwrap()
                .failures
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort();
    assert_eq!(counts, (1..=40).collect::<Vec<i64>>());
    other.close().await;
    db.finish().await;
}
both!(gina_throttle_counts_windows_and_locks);

async fn gina_audit_trail(engine: Engine) {
    let db = TestDb::new(engine).await;
    let a = db.store().gina_audit();
    let ev = |n: i64, what: &str, who: &str| AuditEvent {
        at: n,
        event: what.into(),
        address: Some(who.into()),
        container_id: None,
        client: Some("127.0.0.1".into()),
        detail: "-".into(),
        node: "n1".into(),
    };
    a.record_many(&[
        ev(1, "login_failed", "bob@x.example"),
        ev(2, "login", "bob@x.example"),
        ev(3, "open", "eve@x.example"),
    ])
    .await
    .unwrap();
    let bob = a.recent(Some("bob@x.example"), 10).await.unwrap();
    assert_eq!(
        bob.iter()
            .map(|r| r.event.event.as_str())
            .collect::<Vec<_>>(),
        ["login", "login_failed"]
    );
    assert_eq!(a.recent(None, 10).await.unwrap().len(), 3);
    db.finish().await;
}
both!(gina_audit_trail);

// ------------------------------------------------------ recipient lookup

async fn recipient_lookup_matches_the_single_lookups(engine: Engine) {
    let db = TestDb::new(engine).await;
    let s = db.store();
    // b: two certificates (the later-expiring one must come first), one
    // OpenPGP key, a portal preference; c@partner.example: nothing of its
    // own but its domain has both domain keys; d@else.example: nothing.
    let mut early = new_key("b@partner.example", "AAAA000000000001", None);
    early.not_after = 1_750_000_000;
    s.certificates().insert(&early).await.unwrap();
    s.certificates()
        .insert(&new_key("b@partner.example", "AAAA000000000002", None))
        .await
        .unwrap();
    s.certificates().revoke("AAAA000000000002").await.unwrap();
    s.pgp_keys()
        .insert(&new_key("b@partner.example", "BBBB000000000001", None))
        .await
        .unwrap();
    for (kind, fp) in [
        (DomainKeyKind::Smime, "DDDD000000000001"),
        (DomainKeyKind::Pgp, "DDDD000000000002"),
    ] {
        s.domain_keys()
            .insert(&NewDomainKey {
                domain: "partner.example".into(),
                kind,
                ownership: Ownership::Partner,
                fingerprint: fp.into(),
                material: vec![1],
                private_key: None,
            })
            .await
            .unwrap();
    }
    s.gina()
        .insert(&gina_account("b@partner.example"))
        .await
        .unwrap();
    s.gina()
        .set_preferred_method(&addr("b@partner.example"), PreferredMethod::Pgp)
        .await
        .unwrap();
    let rcpts = [
        addr("b@partner.example"),
        addr("c@partner.example"),
        addr("d@else.example"),
    ];
    let got = s.recipient_lookup(&rcpts).await.unwrap();
    assert_eq!(got.len(), 3);
    let b = &got[0];
    let singles = s.certificates().for_address(&rcpts[0]).await.unwrap();
    let fps: Vec<&str> = b
        .certificates
        .iter()
        .map(|k| k.fingerprint.as_str())
        .collect();
    let want: Vec<&str> = singles.iter().map(|k| k.fingerprint.as_str()).collect();
    assert_eq!(fps, want, "same keys in the same order as for_address");
    assert_eq!(fps, ["AAAA000000000002", "AAAA000000000001"]);
    assert!(b.certificates[0].revoked && !b.certificates[1].revoked);
    assert_eq!(b.certificates[1].not_after, 1_750_000_000);
    assert_eq!(b.pgp_keys.len(), 1);
    assert_eq!(b.preferred_method, Some(PreferredMethod::Pgp));
    assert_eq!(b.domain_smime.as_deref(), Some("DDDD000000000001"));
    assert_eq!(b.domain_pgp.as_deref(), Some("DDDD000000000002"));
    let c = &got[1];
    assert!(c.certificates.is_empty() && c.pgp_keys.is_empty());
    assert_eq!(c.preferred_method, None);
    // An account's initial `gina` is no choice; set in the portal, it is.
    s.gina()
        .insert(&gina_account("c@partner.example"))
        .await
        .unwrap();
    let got_c = s.recipient_lookup(&rcpts[1..2]).await.unwrap();
    assert_eq!(got_c[0].preferred_method, None);
    s.gina()
        .set_preferred_method(&addr("c@partner.example"), PreferredMethod::Gina)
        .await
        .unwrap();
    let got_c = s.recipient_lookup(&rcpts[1..2]).await.unwrap();
    assert_eq!(got_c[0].preferred_method, Some(PreferredMethod::Gina));
    assert_eq!(c.domain_pgp.as_deref(), Some("DDDD000000000002"));
    assert_eq!(got[2], RecipientLookup::default());
    // Many recipients (more than one statement's worth) keep their order.
    let many: Vec<Address> = (0..450)
        .map(|i| addr(&format!("r{i}@partner.example")))
        .chain([addr("b@partner.example")])
        .collect();
    let got = s.recipient_lookup(&many).await.unwrap();
    assert_eq!(got.len(), 451);
    assert_eq!(got[450].pgp_keys.len(), 1);
    assert!(got[449].pgp_keys.is_empty());
    assert_eq!(got[0].domain_smime.as_deref(), Some("DDDD000000000001"));
    db.finish().await;
}
both!(recipient_lookup_matches_the_single_lookups);
