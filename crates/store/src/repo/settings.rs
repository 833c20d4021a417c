//! Settings changed at run time (by the admin UI), shared by all nodes:
//! a key and a JSON value. Settings from the config file stay there.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::unix_now;
use crate::{Store, StoreError, dispatch};

/// Keys are dotted lower-case names (`gina.lock_after`), so they can be
/// listed and documented; anything else is refused.
fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !key.starts_with('.')
        && !key.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "setting key",
            format!("`{key}` is not a dotted lower-case name"),
        ))
    }
}

/// The settings repository.
pub struct Settings<'a> {
    pub(crate) store: &'a Store,
}

impl Settings<'_> {
    /// The value of a setting.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, StoreError> {
        check_key(key)?;
        let text: Option<String> = dispatch!(self.store, p => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(p)
                .await?
        });
        text.map(|t| {
            serde_json::from_str(&t).map_err(|source| StoreError::Json {
                field: "settings.value",
                source,
            })
        })
        .transpose()
    }

    /// The value of a setting as a type; a stored value of another shape is
    /// an error naming the setting, not a silent default.
    pub async fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|source| StoreError::Json {
                    field: "settings.value",
                    source,
                }),
        }
    }

    /// Sets a setting (insert or replace).
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        check_key(key)?;
        let text = serde_json::to_string(value).map_err(|source| StoreError::Json {
            field: "settings.value",
            source,
        })?;
        dispatch!(self.store, p => {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(text)
            .bind(unix_now())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Removes a setting; false when it was not set.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM settings WHERE key = $1")
                .bind(key)
                .execute(p)
                .await?
                .rows_affected()
        }) > 0)
    }

    /// All settings, by key.
    pub async fn all(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let rows: Vec<(String, String)> = dispatch!(self.store, p => {
            sqlx::query_as("SELECT key, value FROM settings ORDER BY key").fetch_all(p).await?
        });
        rows.into_iter()
            .map(|(k, v)| {
                serde_json::from_str(&v)
                    .map(|v| (k, v))
                    .map_err(|source| StoreError::Json {
                        field: "settings.value",
                        source,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys() {
        assert!(super::check_key("gina.lock_after").is_ok());
        assert!(super::check_key("Gina").is_err());
        assert!(super::check_key("a b").is_err());
        assert!(super::check_key(".x").is_err());
        assert!(super::check_key("").is_err());
    }
}
