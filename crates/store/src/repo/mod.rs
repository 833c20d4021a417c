//! Typed repositories. Each file is one table family; the SQL in them runs
//! unchanged on SQLite and PostgreSQL (see the crate docs for why one
//! implementation rather than two parallel `backend/` trees).

mod domain_keys;
mod gina;
mod gina_portal;
mod keys;
mod licences;
mod lookup;
mod settings;
mod tracking;
mod users;

pub use domain_keys::{DomainKey, DomainKeyKind, DomainKeys, NewDomainKey, Ownership};
pub use gina::{FailedLogin, Gina, GinaAccount, NewGinaAccount, PASSWORD_HISTORY, PreferredMethod};
pub use gina_portal::{
    AuditEvent, AuditRecord, ContainerRecord, ContainerState, GinaAudit, GinaContainers,
    GinaSecrets, GinaSessions, GinaThrottle, GinaTokens, NewContainer, SessionRecord,
    ThrottleState, TokenRecord,
};
pub use keys::{KeyRecord, KeyTable, Keys, NewKey, SourceKind};
pub use licences::{Licence, Licences, NewLicence};
pub use lookup::{KeySummary, RecipientLookup};
pub use settings::Settings;
pub use tracking::{Tracking, TrackingEvent, TrackingRecord};
pub(crate) use users::RecentLicences;
pub use users::{LICENCE_STATE_TTL, LicenceState, NewUser, User, Users};

use siegel_types::Address;

use crate::{Store, StoreError};

/// Every table the schema must have (checked by `db check` on PostgreSQL).
pub(crate) const TABLES: [&str; 15] = [
    "master_key_check",
    "users",
    "certificates",
    "pgp_keys",
    "domain_keys",
    "gina_accounts",
    "tracking",
    "settings",
    "licences",
    "gina_containers",
    "gina_sessions",
    "gina_tokens",
    "gina_throttle",
    "gina_audit",
    "gina_secrets",
];

impl Store {
    /// Internal users.
    pub fn users(&self) -> Users<'_> {
        Users { store: self }
    }
    /// S/MIME certificates (own and harvested).
    pub fn certificates(&self) -> Keys<'_> {
        Keys {
            store: self,
            table: KeyTable::Certificates,
        }
    }
    /// OpenPGP keys (own and harvested).
    pub fn pgp_keys(&self) -> Keys<'_> {
        Keys {
            store: self,
            table: KeyTable::PgpKeys,
        }
    }
    /// Domain certificates and keys.
    pub fn domain_keys(&self) -> DomainKeys<'_> {
        DomainKeys { store: self }
    }
    /// GINA (web mail) accounts of external recipients.
    pub fn gina(&self) -> Gina<'_> {
        Gina { store: self }
    }
    /// GINA containers: their sealed content keys and state.
    pub fn gina_containers(&self) -> GinaContainers<'_> {
        GinaContainers { store: self }
    }
    /// Portal sessions (shared by all nodes).
    pub fn gina_sessions(&self) -> GinaSessions<'_> {
        GinaSessions { store: self }
    }
    /// One-time tokens (address verification).
    pub fn gina_tokens(&self) -> GinaTokens<'_> {
        GinaTokens { store: self }
    }
    /// Throttling and lock-out counters.
    pub fn gina_throttle(&self) -> GinaThrottle<'_> {
        GinaThrottle { store: self }
    }
    /// The portal's audit trail.
    pub fn gina_audit(&self) -> GinaAudit<'_> {
        GinaAudit { store: self }
    }
    /// Portal secrets shared by all nodes, sealed under the master key.
    pub fn gina_secrets(&self) -> GinaSecrets<'_> {
        GinaSecrets { store: self }
    }
    /// Message tracking trail.
    pub fn tracking(&self) -> Tracking<'_> {
        Tracking { store: self }
    }
    /// Settings (key → JSON).
    pub fn settings(&self) -> Settings<'_> {
        Settings { store: self }
    }
    /// Installed licences.
    pub fn licences(&self) -> Licences<'_> {
        Licences { store: self }
    }
}

/// Seconds since the Unix epoch, the store's unit of time in every column.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Reads back an address column. Addresses are normalised before they are
/// written, so a value that does not parse was written by someone else.
pub(crate) fn stored_address(field: &'static str, text: String) -> Result<Address, StoreError> {
    Address::parse(&text).map_err(|_| StoreError::Corrupt { field, value: text })
}

/// A non-empty single-line text no longer than `max`.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(StoreError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Fingerprints are stored as upper-case hex without separators, so the
/// unique constraint sees `ab:cd` and `ABCD` as the same key.
pub(crate) fn normalise_fingerprint(text: &str) -> Result<String, StoreError> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if hex.len() < 16 || hex.len() > 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::invalid(
            "fingerprint",
            format!("`{text}` is not 16 to 128 hex digits"),
        ));
    }
    Ok(hex)
}

/// Declares a closed set of values stored as text, with the conversions both
/// ways. Unknown stored text is [`StoreError::Corrupt`], never a default.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident, $field:literal, { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }
        impl $name {
            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub(crate) fn from_stored(text: String) -> Result<Self, $crate::StoreError> {
                match text.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::StoreError::Corrupt { field: $field, value: text }),
                }
            }
        }
        impl std::str::FromStr for $name {
            type Err = $crate::StoreError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_stored(s.to_ascii_lowercase())
                    .map_err(|_| $crate::StoreError::invalid($field, format!("`{s}` is not one of {}", [$($text),+].join(", "))))
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalise_and_refuse_garbage() {
        assert_eq!(
            normalise_fingerprint("ab:cd:ef:01:23:45:67:89")
                .ok()
                .as_deref(),
            Some("ABCDEF0123456789")
        );
        assert!(normalise_fingerprint("xyz").is_err());
        assert!(normalise_fingerprint("ABCD").is_err());
    }

    #[test]
    fn text_checks() {
        assert!(check_text("f", "", 10).is_err());
        assert!(check_text("f", "a\nb", 10).is_err());
        assert!(check_text("f", "abcdefghijk", 10).is_err());
        assert!(check_text("f", "ok", 10).is_ok());
    }
}
