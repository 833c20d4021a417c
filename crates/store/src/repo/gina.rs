//! GINA accounts: the web-mail accounts external recipients use to read mail
//! they cannot decrypt themselves. Designed for 100 million rows: one unique
//! index on the address, lookups by that index only, and counters changed by
//! single `UPDATE … RETURNING` statements so that many nodes can count failed
//! logins without losing increments.

use siegel_types::Address;

use super::{check_text, stored_address, text_enum, unix_now};
use crate::error::unique;
use crate::{BeginWrite, Store, StoreError, dispatch};

/// How many previous password hashes are kept to refuse re-use.
pub const PASSWORD_HISTORY: usize = 4;

/// Rows per multi-row INSERT in [`Gina::insert_batch`]: 11 parameters per
/// row stays well under SQLite's and PostgreSQL's parameter limits.
const BATCH_ROWS: usize = 1000;

text_enum!(
    /// How the recipient wants to receive protected mail.
    PreferredMethod, "gina_accounts.preferred_method", {
        /// Through the GINA web portal.
        Gina = "gina",
        /// S/MIME to their own certificate.
        Smime = "smime",
        /// OpenPGP to their own key.
        Pgp = "pgp",
    }
);

/// An account to create. Hashes are argon2id PHC strings made by the caller;
/// the store refuses anything else so a plaintext password can never land in
/// the table by mistake.
#[derive(Clone, Debug)]
pub struct NewGinaAccount {
    /// The external recipient's address.
    pub address: Address,
    /// Their name, if known.
    pub name: Option<String>,
    /// `$argon2id$…` PHC string.
    pub password_hash: String,
    /// Security question for password reset.
    pub security_question: Option<String>,
    /// `$argon2id$…` hash of the answer.
    pub answer_hash: Option<String>,
    /// Preferred method.
    pub preferred_method: PreferredMethod,
    /// UI language (BCP 47 tag such as `de` or `en-GB`).
    pub language: String,
}

/// A stored account.
#[derive(Clone, Debug, PartialEq)]
pub struct GinaAccount {
    /// Row id.
    pub id: i64,
    /// Address (unique).
    pub address: Address,
    /// Name.
    pub name: Option<String>,
    /// Current password hash.
    pub password_hash: String,
    /// Up to [`PASSWORD_HISTORY`] previous hashes, newest first.
    pub previous_hashes: Vec<String>,
    /// Security question.
    pub security_question: Option<String>,
    /// Answer hash.
    pub answer_hash: Option<String>,
    /// Failed logins since the last successful one.
    pub failed_logins: i64,
    /// Locked until this Unix second, if locked.
    pub locked_until: Option<i64>,
    /// Preferred method.
    pub preferred_method: PreferredMethod,
    /// UI language.
    pub language: String,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Last successful login, Unix seconds.
    pub last_login: Option<i64>,
    /// The password is an initial one: the next login must register (own
    /// password, security question).
    pub must_register: bool,
}

/// The result of [`Gina::record_failed_login`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedLogin {
    /// The failed-login count after this failure.
    pub count: i64,
    /// When the account is locked until (set by this or an earlier failure).
    pub locked_until: Option<i64>,
}

type Row = (
    i64,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    String,
    String,
    i64,
    Option<i64>,
    bool,
);
const COLUMNS: &str = "id, address, name, password_hash, previous_hashes, security_question, \
     answer_hash, failed_logins, locked_until, preferred_method, language, created_at, last_login, \
     must_register";

fn from_row(r: Row) -> Result<GinaAccount, StoreError> {
    let previous_hashes: Vec<String> =
        serde_json::from_str(&r.4).map_err(|source| StoreError::Json {
            field: "gina_accounts.previous_hashes",
            source,
        })?;
    Ok(GinaAccount {
        id: r.0,
        address: stored_address("gina_accounts.address", r.1)?,
        name: r.2,
        password_hash: r.3,
        previous_hashes,
        security_question: r.5,
        answer_hash: r.6,
        failed_logins: r.7,
        locked_until: r.8,
        preferred_method: PreferredMethod::from_stored(r.9)?,
        language: r.10,
        created_at: r.11,
        last_login: r.12,
        must_register: r.13,
    })
}

fn check_hash(field: &'static str, hash: &str) -> Result<(), StoreError> {
    if !hash.starts_with("$argon2id$") || hash.len() > 512 || hash.chars().any(char::is_whitespace)
    {
        return Err(StoreError::invalid(field, "must be an argon2id PHC string"));
    }
    Ok(())
}

fn check_language(tag: &str) -> Result<(), StoreError> {
    let ok = !tag.is_empty()
        && tag.len() <= 35
        && tag
            .split('-')
            .all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "language",
            format!("`{tag}` is not a language tag"),
        ))
    }
}

fn validate(a: &NewGinaAccount) -> Result<(), StoreError> {
    if let Some(name) = &a.name {
        check_text("name", name, 256)?;
    }
    check_hash("password_hash", &a.password_hash)?;
    match (&a.security_question, &a.answer_hash) {
        (Some(q), Some(h)) => {
            check_text("security_question", q, 512)?;
            check_hash("answer_hash", h)?;
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::invalid(
                "security_question",
                "question and answer hash go together",
            ));
        }
    }
    check_language(&a.language)
}

/// The GINA accounts repository.
pub struct Gina<'a> {
    pub(crate) store: &'a Store,
}

impl Gina<'_> {
    /// Creates an account. An existing address is [`StoreError::Duplicate`].
    pub async fn insert(&self, a: &NewGinaAccount) -> Result<GinaAccount, StoreError> {
        validate(a)?;
        let sql = format!(
            "INSERT INTO gina_accounts (address, name, password_hash, security_question, \
             answer_hash, preferred_method, language, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        );
        let row: Row = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(a.address.as_str())
                .bind(a.name.as_deref())
                .bind(&a.password_hash)
                .bind(a.security_question.as_deref())
                .bind(a.answer_hash.as_deref())
                .bind(a.preferred_method.as_str())
                .bind(&a.language)
                .bind(unix_now())
                .fetch_one(p)
                .await
                .map_err(unique("GINA account"))?
        });
        from_row(row)
    }

    /// Creates many accounts in one transaction with multi-row INSERTs (bulk
    /// import, benchmark). All or nothing: one invalid or duplicate account
    /// and none is stored. Returns the number inserted.
    pub async fn insert_batch(&self, accounts: &[NewGinaAccount]) -> Result<u64, StoreError> {
        for a in accounts {
            validate(a)?;
        }
        let now = unix_now();
        let mut inserted = 0;
        dispatch!(self.store, p => {
            let mut tx = p.begin_write().await?;
            for chunk in accounts.chunks(BATCH_ROWS) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO gina_accounts (address, name, password_hash, security_question, \
                     answer_hash, preferred_method, language, created_at) ",
                );
                qb.push_values(chunk, |mut b, a| {
                    b.push_bind(a.address.as_str().to_owned())
                        .push_bind(a.name.clone())
                        .push_bind(a.password_hash.clone())
                        .push_bind(a.security_question.clone())
                        .push_bind(a.answer_hash.clone())
                        .push_bind(a.preferred_method.as_str())
                        .push_bind(a.language.clone())
                        .push_bind(now);
                });
                inserted += qb
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(unique("GINA account"))?
                    .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// The account for an address.
    pub async fn by_address(&self, address: &Address) -> Result<Option<GinaAccount>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM gina_accounts WHERE address = $1");
        let row: Option<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(address.as_str())
                .fetch_optional(p)
                .await?
        });
        row.map(from_row).transpose()
    }

    /// Counts a failed login and locks the account for `lock_for` seconds
    /// from `now` once the count reaches `lock_after`. One statement, so
    /// concurrent failures on any number of nodes each count exactly once
    /// (the right-hand sides see the row's old values on both engines).
    pub async fn record_failed_login(
        &self,
        address: &Address,
        lock_after: i64,
        lock_for: i64,
        now: i64,
    ) -> Result<FailedLogin, StoreError> {
        if lock_after < 1 || lock_for < 0 {
            return Err(StoreError::invalid(
                "lock policy",
                "lock_after must be ≥ 1 and lock_for ≥ 0",
            ));
        }
        let row: Option<(i64, Option<i64>)> = dispatch!(self.store, p => {
            sqlx::query_as(
                "UPDATE gina_accounts SET failed_logins = failed_logins + 1, \
                 locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END \
                 WHERE address = $1 RETURNING failed_logins, locked_until",
            )
            .bind(address.as_str())
            .bind(lock_after)
            .bind(now.saturating_add(lock_for))
            .fetch_optional(p)
            .await?
        });
        let (count, locked_until) = row.ok_or(StoreError::NotFound {
            what: "GINA account",
        })?;
        Ok(FailedLogin {
            count,
            locked_until,
        })
    }

    /// A successful login: resets the counter and the lock, records the time.
    pub async fn record_login(&self, address: &Address, now: i64) -> Result<(), StoreError> {
        let n = dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE gina_accounts SET failed_logins = 0, locked_until = NULL, last_login = $2 \
                 WHERE address = $1",
            )
            .bind(address.as_str())
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "GINA account",
            });
        }
        Ok(())
    }

    /// Replaces the password hash and pushes the old one onto the history
    /// (newest first, at most [`PASSWORD_HISTORY`]). Compare-and-set on the
    /// hash that was read: two concurrent changes cannot lose a history entry;
    /// the loser retries on the new state.
    pub async fn change_password(
        &self,
        address: &Address,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        check_hash("password_hash", new_hash)?;
        for _ in 0..8 {
            let Some(current) = self.by_address(address).await? else {
                return Err(StoreError::NotFound {
                    what: "GINA account",
                });
            };
            let mut history = current.previous_hashes.clone();
            history.insert(0, current.password_hash.clone());
            history.truncate(PASSWORD_HISTORY);
            let history = serde_json::Value::from(history).to_string();
            let n = dispatch!(self.store, p => {
                sqlx::query(
                    "UPDATE gina_accounts SET password_hash = $2, previous_hashes = $3 \
                     WHERE address = $1 AND password_hash = $4",
                )
                .bind(address.as_str())
                .bind(new_hash)
                .bind(history)
                .bind(&current.password_hash)
                .execute(p)
                .await?
                .rows_affected()
            });
            if n == 1 {
                return Ok(());
            }
        }
        Err(StoreError::invalid(
            "password_hash",
            "changed concurrently too often; try again",
        ))
    }

    /// Sets the preferred method: the recipient's own choice (in the
    /// portal), which from now on outranks the keys we know of them.
    pub async fn set_preferred_method(
        &self,
        address: &Address,
        method: PreferredMethod,
    ) -> Result<(), StoreError> {
        let n = dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE gina_accounts SET preferred_method = $2, method_chosen = TRUE WHERE address = $1",
            )
                .bind(address.as_str())
                .bind(method.as_str())
                .execute(p)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "GINA account",
            });
        }
        Ok(())
    }

    /// Creates an account with an initial password (the pipeline, at the
    /// first GINA mail to an address): it must register at its next login.
    /// `Ok(None)` when the address has an account already, so concurrent
    /// first mails create it once and only the winner sends the password.
    pub async fn insert_initial(
        &self,
        address: &Address,
        name: Option<&str>,
        password_hash: &str,
        language: &str,
    ) -> Result<Option<GinaAccount>, StoreError> {
        if let Some(name) = name {
            check_text("name", name, 256)?;
        }
        check_hash("password_hash", password_hash)?;
        check_language(language)?;
        let sql = format!(
            "INSERT INTO gina_accounts (address, name, password_hash, preferred_method, language, \
             created_at, must_register) VALUES ($1, $2, $3, 'gina', $4, $5, TRUE) \
             ON CONFLICT (address) DO NOTHING RETURNING {COLUMNS}"
        );
        let row: Option<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(address.as_str())
                .bind(name)
                .bind(password_hash)
                .bind(language)
                .bind(unix_now())
                .fetch_optional(p)
                .await?
        });
        row.map(from_row).transpose()
    }

    /// `siegel gina reset`: a new initial password; the old one goes into
    /// the history and the account must register again.
    pub async fn set_initial_password(
        &self,
        address: &Address,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        self.change_password(address, password_hash).await?;
        self.set_flag(address, "must_register = TRUE").await
    }

    /// Registration finished: own password (pushing the initial one into
    /// the history) and security question; `must_register` cleared.
    pub async fn register(
        &self,
        address: &Address,
        password_hash: &str,
        question: &str,
        answer_hash: &str,
    ) -> Result<(), StoreError> {
        self.set_security_question(address, question, answer_hash)
            .await?;
        self.change_password(address, password_hash).await?;
        self.set_flag(address, "must_register = FALSE").await
    }

    async fn set_flag(&self, address: &Address, set: &'static str) -> Result<(), StoreError> {
        let sql = format!("UPDATE gina_accounts SET {set} WHERE address = $1");
        let n = dispatch!(self.store, p => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(address.as_str())
                .execute(p)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "GINA account",
            });
        }
        Ok(())
    }

    /// Sets the security question and the hash of its answer.
    pub async fn set_security_question(
        &self,
        address: &Address,
        question: &str,
        answer_hash: &str,
    ) -> Result<(), StoreError> {
        check_text("security_question", question, 512)?;
        check_hash("answer_hash", answer_hash)?;
        let n = dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE gina_accounts SET security_question = $2, answer_hash = $3 WHERE address = $1",
            )
            .bind(address.as_str())
            .bind(question)
            .bind(answer_hash)
            .execute(p)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "GINA account",
            });
        }
        Ok(())
    }

    /// Sets the UI language.
    pub async fn set_language(&self, address: &Address, language: &str) -> Result<(), StoreError> {
        check_language(language)?;
        let n = dispatch!(self.store, p => {
            sqlx::query("UPDATE gina_accounts SET language = $2 WHERE address = $1")
                .bind(address.as_str())
                .bind(language)
                .execute(p)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "GINA account",
            });
        }
        Ok(())
    }

    /// Accounts in address order, `limit` from after `after` (paging for
    /// `siegel gina list`, which must work with millions).
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GinaAccount>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM gina_accounts WHERE address > $1 ORDER BY address LIMIT $2"
        );
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Number of accounts.
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM gina_accounts").fetch_one(p).await?
        }))
    }

    /// Deletes an account; false when there was none.
    pub async fn delete(&self, address: &Address) -> Result<bool, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM gina_accounts WHERE address = $1")
                .bind(address.as_str())
                .execute(p)
                .await?
                .rows_affected()
        }) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        assert!(check_language("de").is_ok());
        assert!(check_language("en-GB").is_ok());
        assert!(check_language("").is_err());
        assert!(check_language("en_GB").is_err());
        assert!(check_language("de--x").is_err());
    }

    #[test]
    fn only_argon2id_hashes() {
        assert!(check_hash("h", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").is_ok());
        assert!(check_hash("h", "hunter2").is_err());
        assert!(check_hash("h", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").is_err());
    }
}
