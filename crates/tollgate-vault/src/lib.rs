//! Envelope encryption for the secrets Tollgate must be able to read back
//! (users' provider credentials, webhook signing secrets): AES-256-GCM under
//! a master key, a random 96-bit nonce per encryption, and associated data
//! that binds each ciphertext to its owner.
//!
//! * [`MasterKey`]: 32 bytes, zeroized on drop, never printed; known by its
//!   [`MasterKeyId`], the first 8 hex digits of its SHA-256.
//! * [`Keyring`]: the current key, which seals, and retired keys, which
//!   only open (during a rotation).
//! * [`Sealed`]: what is stored: the key id, the nonce and the ciphertext
//!   (with its tag). None of it is secret.
//!
//! The associated data is not stored: the caller rebuilds it from where the
//! ciphertext is found (for credentials, [`credential_aad`]), so a
//! ciphertext moved to another row fails to open, and [`OpenError`] says
//! which case it is. This crate knows nothing of storage, HTTP or async
//! runtimes; no message it produces holds key material or plaintext.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Bytes in a master key (AES-256).
pub const KEY_LEN: usize = 32;
/// Bytes in a nonce (96 bits, the size GCM is made for).
pub const NONCE_LEN: usize = 12;
/// The longest plaintext [`Keyring::seal`] accepts: secrets are small.
pub const MAX_PLAINTEXT: usize = 64 * 1024;

/// The associated data of a user's provider credential: `user_id|provider`.
/// Provider names hold no `|` (the domain's `ProviderName` refuses it), so
/// the split at the last `|` is unambiguous even for user ids that hold one.
pub fn credential_aad(user_id: &str, provider: &str) -> Vec<u8> {
    debug_assert!(!provider.contains('|'), "a provider name has no `|`");
    format!("{user_id}|{provider}").into_bytes()
}

/// The associated data of a webhook endpoint's signing secret:
/// `webhook:<endpoint id>`. It holds no `|`, so it never equals a
/// credential's (which always does).
pub fn webhook_aad(endpoint_id: &str) -> Vec<u8> {
    format!("webhook:{endpoint_id}").into_bytes()
}

/// A master key's public name: 8 lowercase hex digits of the key's SHA-256.
/// Stored beside each ciphertext; reveals nothing useful about the key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MasterKeyId(String);

impl MasterKeyId {
    /// A stored id: 8 lowercase hex digits.
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        if raw.len() == 8 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(MasterKeyId(raw.to_owned()))
        } else {
            Err(KeyError::BadId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MasterKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MasterKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKeyId({})", self.0)
    }
}

/// A 256-bit master key. The bytes are zeroized on drop (the cipher's key
/// schedule too); `Debug` shows only the id, and nothing else prints it.
#[derive(Clone)]
pub struct MasterKey {
    id: MasterKeyId,
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let bytes = Zeroizing::new(bytes);
        let digest = Sha256::digest(bytes.as_slice());
        let id = MasterKeyId(digest[..4].iter().map(|b| format!("{b:02x}")).collect());
        // A 32-byte slice is exactly the length AES-256 takes.
        let cipher = Aes256Gcm::new_from_slice(bytes.as_slice()).expect("a 32-byte key");
        MasterKey { id, bytes, cipher }
    }

    /// A new random key.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(bytes.as_mut_slice());
        MasterKey::from_bytes(*bytes)
    }

    /// Base64 (standard alphabet, padded) of exactly 32 bytes; surrounding
    /// white space is ignored. Errors never repeat the text.
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| KeyError::NotBase64)?);
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| KeyError::WrongLength(decoded.len()))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// The key as base64, for the key file. Handle with care.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.bytes.as_slice()))
    }

    pub fn id(&self) -> &MasterKeyId {
        &self.id
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

/// Why a master key (or a stored key id) was refused. Never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a master key is base64 of 32 bytes, and this is not valid base64")]
    NotBase64,
    #[error("a master key is base64 of 32 bytes, and this decodes to {0} bytes")]
    WrongLength(usize),
    #[error("a master key id is 8 lowercase hex digits")]
    BadId,
}

/// A ciphertext as stored: the id of the key that sealed it, the nonce, and
/// the ciphertext with its 16-byte tag. None of it is secret.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Sealed {
    pub key_id: MasterKeyId,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Why a [`Sealed`] value did not open. Both cases name the key id only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// No configured key has this id: the master key in use is not the one
    /// the value was sealed with.
    #[error(
        "it was encrypted under master key {0}, which is not configured (set TOLLGATE_MASTER_KEY to it, or list it in TOLLGATE_MASTER_KEYS_OLD)"
    )]
    UnknownKey(MasterKeyId),
    /// The key is known but the tag does not match: the ciphertext, nonce
    /// or key id was altered, or it was moved from another owner's row.
    #[error(
        "authentication failed under master key {0}: the ciphertext was altered or belongs to another owner (moved from another row)"
    )]
    Authentication(MasterKeyId),
}

/// Why [`Keyring::seal`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sealed secret is at most {MAX_PLAINTEXT} bytes; this one is {0}")]
pub struct SealError(pub usize);

/// The current master key, which seals, and retired ones, which only open.
#[derive(Clone)]
pub struct Keyring {
    current: MasterKey,
    retired: Vec<MasterKey>,
}

impl Keyring {
    /// A retired key equal to the current one, or listed twice, is kept once.
    pub fn new(current: MasterKey, retired: impl IntoIterator<Item = MasterKey>) -> Keyring {
        let mut kept: Vec<MasterKey> = Vec::new();
        for key in retired {
            if key.id != current.id && !kept.iter().any(|k| k.id == key.id) {
                kept.push(key);
            }
        }
        Keyring { current, retired: kept }
    }

    pub fn current_id(&self) -> &MasterKeyId {
        &self.current.id
    }

    /// The ids of the retired keys, in the order given.
    pub fn retired_ids(&self) -> impl Iterator<Item = &MasterKeyId> {
        self.retired.iter().map(|k| &k.id)
    }

    /// Whether a key with this id is configured (current or retired).
    pub fn knows(&self, id: &MasterKeyId) -> bool {
        self.key(id).is_some()
    }

    fn key(&self, id: &MasterKeyId) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(&self.retired).find(|k| &k.id == id)
    }

    /// A 32-byte key for another purpose (signing web links, …): the
    /// HMAC-SHA256 of `label` under the current master key, so that every
    /// instance sharing the master key derives the same one, and a
    /// rotation changes it.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; KEY_LEN]> {
        use hmac::Mac;
        // HMAC takes a key of any length: this cannot fail.
        let mut mac =
            <hmac::Hmac<Sha256> as Mac>::new_from_slice(self.current.bytes.as_slice()).expect("any key length");
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// Encrypts under the current key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError(plaintext.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG seeded from the operating system.
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .map_err(|_| SealError(plaintext.len()))?;
        Ok(Sealed { key_id: self.current.id.clone(), nonce, ciphertext })
    }

    /// Decrypts with whichever configured key sealed `sealed`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let key = self.key(&sealed.key_id).ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        key.cipher
            .decrypt(&Nonce::from(sealed.nonce), Payload { msg: &sealed.ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Authentication(sealed.key_id.clone()))
    }

    /// Re-encrypts under the current key; `None` when it already is.
    pub fn reseal(&self, sealed: &Sealed, aad: &[u8]) -> Result<Option<Sealed>, OpenError> {
        if sealed.key_id == self.current.id {
            return Ok(None);
        }
        let plaintext = self.open(sealed, aad)?;
        // What opened was sealed by us, so it is within MAX_PLAINTEXT.
        let resealed = self.seal(&plaintext, aad).map_err(|_| OpenError::Authentication(sealed.key_id.clone()))?;
        Ok(Some(resealed))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("current", &self.current.id).field("retired", &self.retired.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; KEY_LEN])
    }

    #[test]
    fn key_ids_are_stable_short_fingerprints() {
        let a = key(1);
        assert_eq!(a.id(), key(1).id());
        assert_ne!(a.id(), key(2).id());
        assert_eq!(a.id().as_str().len(), 8);
        assert_eq!(MasterKeyId::parse(a.id().as_str()).unwrap(), *a.id());
        assert!(MasterKeyId::parse("ABCDEF12").is_err());
        assert!(MasterKeyId::parse("abc").is_err());
    }

    #[test]
    fn base64_keys_are_checked_without_repeating_them() {
        let k = MasterKey::generate();
        let text = k.to_base64();
        assert_eq!(MasterKey::from_base64(&format!(" {}\n", text.as_str())).unwrap().id(), k.id());
        let short = MasterKey::from_base64("bm90IDMyIGJ5dGVz").unwrap_err();
        assert_eq!(short, KeyError::WrongLength(12));
        assert!(!short.to_string().contains("bm90"));
        assert_eq!(MasterKey::from_base64("not base64!").unwrap_err(), KeyError::NotBase64);
    }

    #[test]
    fn neither_a_key_nor_a_keyring_prints_key_material() {
        let k = MasterKey::generate();
        let ring = Keyring::new(k.clone(), [key(9)]);
        let shown = format!("{k:?} {ring:?}");
        assert!(!shown.contains(k.to_base64().as_str()));
        assert!(shown.contains(k.id().as_str()));
    }

    #[test]
    fn each_seal_uses_a_new_nonce() {
        let ring = Keyring::new(key(1), []);
        let a = ring.seal(b"sk-same", b"u|openai").unwrap();
        let b = ring.seal(b"sk-same", b"u|openai").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_ciphertext_moved_to_another_owner_fails_authentication() {
        let ring = Keyring::new(key(1), []);
        let sealed = ring.seal(b"sk-alice", &credential_aad("alice", "openai")).unwrap();
        for (user, provider) in [("bob", "openai"), ("alice", "groq")] {
            let moved = ring.open(&sealed, &credential_aad(user, provider)).unwrap_err();
            assert_eq!(moved, OpenError::Authentication(key(1).id().clone()));
            assert!(moved.to_string().contains("another owner"));
        }
    }

    #[test]
    fn retired_keys_open_and_rotation_reseals_under_the_current_key() {
        let old = Keyring::new(key(1), []);
        let sealed = old.seal(b"sk-secret", b"aad").unwrap();
        let new_only = Keyring::new(key(2), []);
        assert_eq!(new_only.open(&sealed, b"aad").unwrap_err(), OpenError::UnknownKey(key(1).id().clone()));
        let rotating = Keyring::new(key(2), [key(1), key(2), key(1)]);
        assert_eq!(rotating.retired_ids().count(), 1, "duplicates and the current key are dropped");
        let resealed = rotating.reseal(&sealed, b"aad").unwrap().expect("resealed");
        assert_eq!(&resealed.key_id, key(2).id());
        assert_eq!(new_only.open(&resealed, b"aad").unwrap().as_slice(), b"sk-secret");
        assert!(rotating.reseal(&resealed, b"aad").unwrap().is_none(), "already current");
    }

    #[test]
    fn oversized_plaintexts_are_refused() {
        let ring = Keyring::new(key(1), []);
        assert!(ring.seal(&vec![0; MAX_PLAINTEXT + 1], b"").is_err());
    }

    proptest! {
        #[test]
        fn seal_then_open_round_trips(secret in proptest::collection::vec(any::<u8>(), 0..512), aad in ".{0,64}") {
            let ring = Keyring::new(MasterKey::generate(), []);
            let sealed = ring.seal(&secret, aad.as_bytes()).unwrap();
            let opened = ring.open(&sealed, aad.as_bytes()).unwrap();
            prop_assert_eq!(opened.as_slice(), secret.as_slice());
        }

        #[test]
        fn any_tampering_is_rejected(
            secret in proptest::collection::vec(any::<u8>(), 1..256),
            which in 0usize..4,
            position in any::<usize>(),
            bit in 0u8..8,
        ) {
            let (a, b) = (MasterKey::generate(), MasterKey::generate());
            let ring = Keyring::new(a, [b.clone()]);
            let aad = credential_aad("u_1", "openai");
            let mut sealed = ring.seal(&secret, &aad).unwrap();
            let mut aad_used = aad.clone();
            let flip = |bytes: &mut [u8]| {
                let i = position % bytes.len();
                bytes[i] ^= 1 << bit;
            };
            match which {
                0 => flip(&mut sealed.ciphertext),
                1 => flip(&mut sealed.nonce),
                2 => sealed.key_id = b.id().clone(),
                _ => flip(&mut aad_used),
            }
            let refused = ring.open(&sealed, &aad_used).unwrap_err();
            prop_assert!(matches!(refused, OpenError::Authentication(_)), "{refused:?}");
            // A key id that no configured key has is named as such.
            sealed.key_id = MasterKeyId::parse("00000000").unwrap();
            prop_assert!(matches!(ring.open(&sealed, &aad).unwrap_err(), OpenError::UnknownKey(_)));
        }
    }
}
