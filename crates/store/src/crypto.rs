//! Keys at rest: every private key the store holds is sealed with
//! AES-256-GCM under the node's master key.
//!
//! Sealed format (all stored in one BLOB/BYTEA column):
//! `b"S1"` ‖ key id (8 bytes) ‖ nonce (12 bytes, random per sealing) ‖
//! ciphertext ‖ tag (16 bytes).
//!
//! The key id travels with the ciphertext so a rotation can tell which rows
//! are done and a wrong key gives [`StoreError::UnknownKeyId`] instead of an
//! authentication failure that looks like tampering. The associated data names
//! the column and the row's natural key (e.g. `certificates:<fingerprint>`),
//! so a ciphertext copied into another row does not decrypt.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::StoreError;

/// The environment variable that holds the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "SIEGEL_MASTER_KEY";
/// The key file created in the data folder when no key is given.
pub const MASTER_KEY_FILE: &str = "master.key";
/// A key file a node whose key comes from `SIEGEL_MASTER_KEY` may also be
/// given: a running node looks for a rotated key there (besides the data
/// folder's key files), so such a node can follow a rotation without a
/// restart. Read when a key is missing, never at start-up.
pub const MASTER_KEY_FILE_ENV: &str = "SIEGEL_MASTER_KEY_FILE";
/// Where `siegel master-key rotate` stages the new key while it re-seals.
pub const STAGED_KEY_FILE: &str = "master.key.new";
/// Where `siegel master-key rotate` keeps the replaced key.
pub const OLD_KEY_FILE: &str = "master.key.old";

const MAGIC: &[u8; 2] = b"S1";
const KEY_ID_LEN: usize = 8;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

/// Secret bytes (a private key, a seed). Zeroed on drop; `Debug` does not
/// print them, so a secret cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes that must not be logged.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The plaintext. Named so that every use stands out in review.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// The identity of a master key: 8 bytes of SHA-256 over a label and the key.
/// Safe to show and store; reveals nothing usable about the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// Hex form, as stored in `master_key_check.key_id` and shown in errors.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl KeyId {
    /// The raw 8 bytes, as they appear in a sealed value's header.
    pub(crate) fn to_bytes(self) -> [u8; KEY_ID_LEN] {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// The 32-byte master key under which all secrets are sealed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: KeyId,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.id)
    }
}

impl MasterKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"siegel master key id v1\0");
        ctx.update(&bytes);
        let digest = ctx.finish();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        Self {
            bytes: Zeroizing::new(bytes),
            id: KeyId(id),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::MasterKey("the system random generator failed".into()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parses the base64 form used by `SIEGEL_MASTER_KEY` and the key file.
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| StoreError::MasterKey(format!("not valid base64: {e}")))?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            StoreError::MasterKey(format!("must be 32 bytes, got {}", decoded.len()))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// The base64 form, for writing a key file or printing a new key once.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*self.bytes))
    }

    /// This key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key a node starts with: `SIEGEL_MASTER_KEY` if set, else
    /// `data_dir/master.key`, created with a fresh key (mode 0600) on first
    /// start. An unreadable or malformed key is an error, never replaced:
    /// replacing it would orphan every secret already stored.
    pub fn load(data_dir: &Path) -> Result<Self, StoreError> {
        if let Some(value) = std::env::var_os(MASTER_KEY_ENV) {
            // Set but unusable is an error: silently falling back to the key
            // file would start the node under a different key than intended.
            let text = value.to_str().ok_or_else(|| {
                StoreError::MasterKey(format!("{MASTER_KEY_ENV} is not valid UTF-8"))
            })?;
            return Self::from_base64(text)
                .map_err(|e| StoreError::MasterKey(format!("{MASTER_KEY_ENV}: {e}")));
        }
        Self::load_or_create_file(&data_dir.join(MASTER_KEY_FILE))
    }

    /// Reads the key file, or creates it with a new key when it does not
    /// exist. `create_new` makes two nodes starting at once agree: the loser
    /// of the race reads the winner's key.
    pub fn load_or_create_file(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        match Self::read_file(path) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            other => return other,
        }
        let key = Self::generate()?;
        match key.write_file(path) {
            Ok(()) => Ok(key),
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Self::read_file(path)
            }
            Err(StoreError::Io { source, .. }) => Err(io(source)),
            Err(e) => Err(e),
        }
    }

    /// Reads a key file (base64 text).
    pub fn read_file(path: &Path) -> Result<Self, StoreError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| StoreError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        Self::from_base64(&text)
            .map_err(|e| StoreError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// Writes this key to a new file with mode 0600. Refuses to overwrite.
    pub fn write_file(&self, path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(self.to_base64().as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::Io {
                    path: PathBuf::from(dir),
                    source,
                })?;
        }
        Ok(())
    }

    pub(crate) fn key_id_bytes(&self) -> [u8; KEY_ID_LEN] {
        self.id.0
    }

    fn aead(&self) -> Result<LessSafeKey, StoreError> {
        // Only fails for a key of the wrong length, which `bytes` cannot be.
        UnboundKey::new(&AES_256_GCM, &*self.bytes)
            .map(LessSafeKey::new)
            .map_err(|_| StoreError::MasterKey("AES-256-GCM refused the key".into()))
    }

    /// Seals `plaintext`, bound to `context` (column and row key).
    pub(crate) fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::MasterKey("the system random generator failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| StoreError::MasterKey("sealing failed".into()))?;
        // `body` now holds only ciphertext and tag: nothing left to wipe.
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// The key id a sealed value names, or `None` when it is not a sealed value.
pub(crate) fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    if sealed.len() < HEADER_LEN + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]);
    Some(KeyId(id))
}

/// The keys a node can decrypt with: the current one (used for all new
/// sealing) and, during a rotation, the one being replaced.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    others: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            others: Vec::new(),
        }
    }

    /// The key new secrets are sealed with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Makes `key` current and keeps the previous one for decryption only.
    pub(crate) fn rotate_to(&mut self, key: MasterKey) {
        let old = std::mem::replace(&mut self.current, key);
        if old.id != self.current.id {
            self.others.retain(|k| k.id != self.current.id);
            self.others.push(old);
        }
    }

    /// Whether this keyring holds the key with this id (hex form).
    pub(crate) fn holds_hex(&self, id: &str) -> bool {
        self.find_hex(id).is_some()
    }

    /// The key with this id (hex form), current or not.
    pub(crate) fn find_hex(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(self.others.iter())
            .find(|k| k.id.to_hex() == id)
    }

    /// Adds a key for decryption only (a node learning a rotated key).
    pub(crate) fn add(&mut self, key: MasterKey) {
        if key.id != self.current.id && !self.others.iter().any(|k| k.id == key.id) {
            self.others.push(key);
        }
    }

    /// Forgets every key but the current one (rotation finished).
    pub(crate) fn drop_others(&mut self) {
        self.others.clear();
    }

    pub(crate) fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.current.seal(context, plaintext)
    }

    /// Opens a sealed value. `table` only names the place in errors.
    pub(crate) fn open(
        &self,
        table: &'static str,
        context: &str,
        sealed: &[u8],
    ) -> Result<SecretBytes, StoreError> {
        let id = sealed_key_id(sealed).ok_or(StoreError::Tampered(table))?;
        let key = std::iter::once(&self.current)
            .chain(self.others.iter())
            .find(|k| k.id == id)
            .ok_or_else(|| StoreError::UnknownKeyId(id.to_hex()))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        let mut body = sealed[HEADER_LEN..].to_vec();
        let len = key
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| StoreError::Tampered(table))?
            .len();
        body.truncate(len);
        Ok(SecretBytes::new(body))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_fresh_nonce() {
        let ring = Keyring::new(MasterKey::from_bytes([7; 32]));
        let a = ring.seal("certificates:AA", b"secret").unwrap();
        let b = ring.seal("certificates:AA", b"secret").unwrap();
        assert_ne!(a, b, "nonce must differ per sealing");
        let opened = ring.open("certificates", "certificates:AA", &a).unwrap();
        assert_eq!(opened.expose(), b"secret");
    }

    #[test]
    fn moved_or_altered_ciphertext_is_refused() {
        let ring = Keyring::new(MasterKey::from_bytes([7; 32]));
        let mut a = ring.seal("certificates:AA", b"secret").unwrap();
        assert!(matches!(
            ring.open("certificates", "certificates:BB", &a),
            Err(StoreError::Tampered(_))
        ));
        let last = a.len() - 1;
        a[last] ^= 1;
        assert!(matches!(
            ring.open("certificates", "certificates:AA", &a),
            Err(StoreError::Tampered(_))
        ));
        assert!(matches!(
            ring.open("certificates", "certificates:AA", b"short"),
            Err(StoreError::Tampered(_))
        ));
    }

    #[test]
    fn other_key_gives_unknown_key_id_and_rotation_keeps_old_readable() {
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        let sealed = Keyring::new(old.clone()).seal("x", b"s").unwrap();
        assert!(matches!(
            Keyring::new(new.clone()).open("t", "x", &sealed),
            Err(StoreError::UnknownKeyId(_))
        ));
        let mut ring = Keyring::new(old);
        ring.rotate_to(new.clone());
        assert_eq!(ring.open("t", "x", &sealed).unwrap().expose(), b"s");
        assert_eq!(
            sealed_key_id(&ring.seal("x", b"s").unwrap()),
            Some(new.id())
        );
        ring.drop_others();
        assert!(ring.open("t", "x", &sealed).is_err());
    }

    #[test]
    fn added_key_opens_but_does_not_seal() {
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        let sealed = Keyring::new(new.clone()).seal("x", b"s").unwrap();
        let mut ring = Keyring::new(old.clone());
        assert!(!ring.holds_hex(&new.id().to_hex()));
        ring.add(new.clone());
        ring.add(new.clone());
        ring.add(old.clone());
        assert_eq!(ring.others.len(), 1, "no duplicates, current not repeated");
        assert!(ring.holds_hex(&new.id().to_hex()));
        assert_eq!(ring.open("t", "x", &sealed).unwrap().expose(), b"s");
        assert_eq!(ring.current().id(), old.id());
        let found = ring.find_hex(&new.id().to_hex()).cloned().unwrap();
        ring.rotate_to(found);
        assert_eq!(ring.current().id(), new.id());
        assert!(
            ring.holds_hex(&old.id().to_hex()),
            "old key kept for reading"
        );
        assert_eq!(ring.others.len(), 1);
    }

    #[test]
    fn base64_and_key_file() {
        let key = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.id(), again.id());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());

        let dir = std::env::temp_dir().join(format!("siegel-key-{}", key.id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(MASTER_KEY_FILE);
        let created = MasterKey::load_or_create_file(&path).unwrap();
        let loaded = MasterKey::load_or_create_file(&path).unwrap();
        assert_eq!(
            created.id(),
            loaded.id(),
            "second start must read, not replace"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "garbage").unwrap();
        assert!(
            MasterKey::load_or_create_file(&path).is_err(),
            "bad file is never replaced"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
