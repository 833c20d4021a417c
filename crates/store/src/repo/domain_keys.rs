//! Domain certificates and keys: per domain, for domain-to-domain encryption
//! (own domains: Siegel holds the private key; partner domains: public only).

use siegel_types::normalise_domain;

use super::{normalise_fingerprint, text_enum, unix_now};
use crate::BeginWrite;
use crate::crypto::SecretBytes;
use crate::error::unique;
use crate::maintenance::{KeyCheckRow, seal_context};
use crate::{Store, StoreError, dispatch};

text_enum!(
    /// S/MIME certificate or OpenPGP key.
    DomainKeyKind, "domain_keys.kind", {
        /// X.509 / S/MIME.
        Smime = "smime",
        /// OpenPGP.
        Pgp = "pgp",
    }
);

text_enum!(
    /// Whose domain it is.
    Ownership, "domain_keys.ownership", {
        /// One of our internal domains.
        Own = "own",
        /// A partner's domain.
        Partner = "partner",
    }
);

/// A domain key to store.
#[derive(Clone, Debug)]
pub struct NewDomainKey {
    /// The domain; normalised (lower case, A-labels) before it is stored.
    pub domain: String,
    /// S/MIME or OpenPGP.
    pub kind: DomainKeyKind,
    /// Own or partner.
    pub ownership: Ownership,
    /// Fingerprint (any common hex spelling).
    pub fingerprint: String,
    /// Public material.
    pub material: Vec<u8>,
    /// Private key (own domains only); sealed before it is written.
    pub private_key: Option<SecretBytes>,
}

/// A stored domain key.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainKey {
    /// Row id.
    pub id: i64,
    /// Normalised domain.
    pub domain: String,
    /// S/MIME or OpenPGP.
    pub kind: DomainKeyKind,
    /// Own or partner.
    pub ownership: Ownership,
    /// Normalised fingerprint.
    pub fingerprint: String,
    /// Public material.
    pub material: Vec<u8>,
    /// Whether Siegel holds the private key.
    pub has_private_key: bool,
    /// When it was stored.
    pub created_at: i64,
}

type Row = (i64, String, String, String, String, Vec<u8>, bool, i64);
const COLUMNS: &str =
    "id, domain, kind, ownership, fingerprint, material, private_key_enc IS NOT NULL, created_at";
const TABLE: &str = "domain_keys";

fn from_row(r: Row) -> Result<DomainKey, StoreError> {
    Ok(DomainKey {
        id: r.0,
        domain: r.1,
        kind: DomainKeyKind::from_stored(r.2)?,
        ownership: Ownership::from_stored(r.3)?,
        fingerprint: r.4,
        material: r.5,
        has_private_key: r.6,
        created_at: r.7,
    })
}

fn domain(text: &str) -> Result<String, StoreError> {
    normalise_domain(text.trim())
        .ok_or_else(|| StoreError::invalid("domain", format!("`{text}` is not a domain name")))
}

/// The domain keys repository.
pub struct DomainKeys<'a> {
    pub(crate) store: &'a Store,
}

impl DomainKeys<'_> {
    /// Stores a domain key. A partner key with a private key is refused:
    /// we never hold a partner's secret.
    pub async fn insert(&self, key: &NewDomainKey) -> Result<DomainKey, StoreError> {
        let domain = domain(&key.domain)?;
        let fingerprint = normalise_fingerprint(&key.fingerprint)?;
        if key.material.is_empty() {
            return Err(StoreError::invalid("material", "must not be empty"));
        }
        if key.ownership == Ownership::Partner && key.private_key.is_some() {
            return Err(StoreError::invalid(
                "private_key",
                "partner domain keys carry no private key",
            ));
        }
        let context = seal_context(TABLE, &fingerprint);
        let sql = format!(
            "INSERT INTO domain_keys (domain, kind, ownership, fingerprint, material, \
             private_key_enc, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        // The seal and the insert share one write transaction that first
        // reads the key rows: a rotation can then neither finish between
        // them nor miss this secret (see `Store::sealing_keyring`).
        let row: Row = dispatch!(self.store, p => {
            let mut tx = p.begin_write().await?;
            let sealed = match &key.private_key {
                Some(secret) => {
                    let rows: Vec<KeyCheckRow> = sqlx::query_as(self.store.key_rows_sql())
                        .fetch_all(&mut *tx)
                        .await?;
                    Some(
                        self.store
                            .sealing_keyring(&rows)?
                            .seal(&context, secret.expose())?,
                    )
                }
                None => None,
            };
            let row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(&domain)
                .bind(key.kind.as_str())
                .bind(key.ownership.as_str())
                .bind(&fingerprint)
                .bind(&key.material)
                .bind(sealed)
                .bind(unix_now())
                .fetch_one(&mut *tx)
                .await
                .map_err(unique("domain key"))?;
            tx.commit().await?;
            row
        });
        from_row(row)
    }

    /// All keys of a domain (any spelling of it).
    pub async fn for_domain(&self, name: &str) -> Result<Vec<DomainKey>, StoreError> {
        let name = domain(name)?;
        let sql = format!("SELECT {COLUMNS} FROM domain_keys WHERE domain = $1 ORDER BY id");
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Opens the private key of an own domain key.
    pub async fn private_key(&self, fingerprint: &str) -> Result<Option<SecretBytes>, StoreError> {
        let fingerprint = normalise_fingerprint(fingerprint)?;
        let sealed: Option<Option<Vec<u8>>> = dispatch!(self.store, p => {
            sqlx::query_scalar("SELECT private_key_enc FROM domain_keys WHERE fingerprint = $1")
                .bind(&fingerprint)
                .fetch_optional(p)
                .await?
        });
        match sealed.flatten() {
            None => Ok(None),
            Some(sealed) => self
                .store
                .open_secret(TABLE, &seal_context(TABLE, &fingerprint), &sealed)
                .await
                .map(Some),
        }
    }

    /// Deletes a domain key; false when there was none.
    pub async fn delete(&self, fingerprint: &str) -> Result<bool, StoreError> {
        let fingerprint = normalise_fingerprint(fingerprint)?;
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM domain_keys WHERE fingerprint = $1")
                .bind(fingerprint)
                .execute(p)
                .await?
                .rows_affected()
        }) > 0)
    }
}
