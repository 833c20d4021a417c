//! What the policy must know about the recipients of one mail, in one
//! query.
//!
//! The pipeline asks this for every outbound mail: the certificates and
//! OpenPGP keys of each recipient, the domain keys of their domains, and
//! the method a recipient chose in the portal. Asked table by table and
//! recipient by recipient that is 4 × R statements per mail, and on SQLite
//! every statement is a round trip to the connection's worker thread; so
//! the four lookups for all recipients are one `UNION ALL` statement. Only
//! the columns the decision needs are read (no key material).

use siegel_types::Address;

use super::PreferredMethod;
use crate::{Store, StoreError, dispatch};

/// The validity facts of one certificate or key, without its material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySummary {
    pub fingerprint: String,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked: bool,
    pub superseded_by: Option<String>,
}

/// The facts about one recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecipientLookup {
    /// S/MIME certificates, the one valid longest first.
    pub certificates: Vec<KeySummary>,
    /// OpenPGP keys, the one valid longest first.
    pub pgp_keys: Vec<KeySummary>,
    /// Fingerprint of the S/MIME domain certificate of the recipient's domain.
    pub domain_smime: Option<String>,
    /// Fingerprint of the OpenPGP domain key of the recipient's domain.
    pub domain_pgp: Option<String>,
    /// The method the recipient chose in the portal (GINA account).
    pub preferred_method: Option<PreferredMethod>,
}

/// More recipients than this are asked in several statements (bind
/// parameter limits; a mail has at most `smtp.max_recipients`).
const CHUNK: usize = 200;

type Row = (
    String,
    String,
    Option<String>,
    i64,
    i64,
    bool,
    Option<String>,
    Option<String>,
);

/// A [`Row`] with the row id it is ordered by.
type OrderedRow = (
    String,
    String,
    Option<String>,
    i64,
    i64,
    bool,
    Option<String>,
    Option<String>,
    i64,
);

impl Store {
    /// The facts about every recipient, in the order given.
    pub async fn recipient_lookup(
        &self,
        recipients: &[Address],
    ) -> Result<Vec<RecipientLookup>, StoreError> {
        let mut out = vec![RecipientLookup::default(); recipients.len()];
        for (chunk_no, chunk) in recipients.chunks(CHUNK).enumerate() {
            let rows = self.lookup_rows(chunk).await?;
            let base = chunk_no * CHUNK;
            for (src, key, fingerprint, not_before, not_after, revoked, superseded_by, pref) in rows
            {
                for (i, r) in chunk.iter().enumerate() {
                    let slot = &mut out[base + i];
                    let by_address = r.as_str() == key;
                    let by_domain = r.domain() == key;
                    match src.as_str() {
                        "c" | "p" if by_address => {
                            let summary = KeySummary {
                                fingerprint: fingerprint.clone().unwrap_or_default(),
                                not_before,
                                not_after,
                                revoked,
                                superseded_by: superseded_by.clone(),
                            };
                            if src == "c" {
                                slot.certificates.push(summary);
                            } else {
                                slot.pgp_keys.push(summary);
                            }
                        }
                        "ds" if by_domain && slot.domain_smime.is_none() => {
                            slot.domain_smime = fingerprint.clone();
                        }
                        "dp" if by_domain && slot.domain_pgp.is_none() => {
                            slot.domain_pgp = fingerprint.clone();
                        }
                        // NULL: an account whose method was never chosen.
                        "g" if by_address => {
                            slot.preferred_method =
                                pref.clone().map(PreferredMethod::from_stored).transpose()?;
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    async fn lookup_rows(&self, recipients: &[Address]) -> Result<Vec<Row>, StoreError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let addresses: Vec<&str> = recipients.iter().map(Address::as_str).collect();
        let mut domains: Vec<&str> = recipients.iter().map(Address::domain).collect();
        domains.sort_unstable();
        domains.dedup();
        let list = |from: usize, n: usize| -> String {
            (from..from + n)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let a = list(1, addresses.len());
        let d = list(addresses.len() + 1, domains.len());
        // Placeholder columns are cast so that both engines agree on the
        // types of the union. ORDER BY gives each address its keys in the
        // order `Keys::for_address` uses (valid longest first).
        let sql = format!(
            "SELECT 'c' AS src, address AS k, fingerprint, not_before, not_after, revoked, superseded_by, \
                    CAST(NULL AS TEXT) AS pref, id \
               FROM certificates WHERE address IN ({a}) \
             UNION ALL \
             SELECT 'p', address, fingerprint, not_before, not_after, revoked, superseded_by, CAST(NULL AS TEXT), id \
               FROM pgp_keys WHERE address IN ({a}) \
             UNION ALL \
             SELECT CASE WHEN kind = 'smime' THEN 'ds' ELSE 'dp' END, domain, fingerprint, 0, 0, FALSE, \
                    CAST(NULL AS TEXT), CAST(NULL AS TEXT), id \
               FROM domain_keys WHERE domain IN ({d}) \
             UNION ALL \
             SELECT 'g', address, CAST(NULL AS TEXT), 0, 0, FALSE, CAST(NULL AS TEXT), \
                    CASE WHEN method_chosen OR preferred_method <> 'gina' THEN preferred_method END, id \
               FROM gina_accounts WHERE address IN ({a}) \
             ORDER BY 1, 2, 5 DESC, 9 DESC"
        );
        let rows: Vec<OrderedRow> = dispatch!(self, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for x in &addresses {
                q = q.bind(*x);
            }
            for x in &domains {
                q = q.bind(*x);
            }
            q.fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|(s, k, f, nb, na, r, sb, pr, _id)| (s, k, f, nb, na, r, sb, pr))
            .collect())
    }
}
