//! The gateway-key format: `tg_` + 32 random base62 characters + 6 base62
//! characters of the CRC-32 (IEEE) of everything before them, 41 in all.
//!
//! The checksum lets a typo or a made-up key be refused before any lookup.
//! At rest only the SHA-256 of the whole key is kept ([`KeyHash`]), with a
//! short display prefix.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{SecretString, base62};

pub const PREFIX: &str = "tg_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Characters of the key shown in listings: `tg_` and four more.
const DISPLAY_LEN: usize = PREFIX.len() + 4;

/// A syntactically valid gateway key (prefix, length, alphabet, checksum).
/// Whether it exists is for the store to say.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayKey(SecretString);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("a gateway key starts with `tg_`")]
    Prefix,
    #[error("a gateway key is {KEY_LEN} characters long")]
    Length,
    #[error("a gateway key holds only the characters 0-9, A-Z and a-z after `tg_`")]
    Alphabet,
    #[error("the gateway key's checksum does not match: it was mistyped or made up")]
    Checksum,
}

fn checksum(body: &str) -> String {
    base62::encode_padded(u64::from(crc32fast::hash(body.as_bytes())), CHECKSUM_LEN)
}

impl GatewayKey {
    /// A new random key.
    pub fn generate() -> Self {
        let body = format!("{PREFIX}{}", base62::random(RANDOM_LEN));
        let sum = checksum(&body);
        GatewayKey(SecretString::new(body + &sum))
    }

    /// Checks the format and the checksum; no lookup happens here.
    pub fn parse(candidate: &str) -> Result<Self, KeyParseError> {
        let rest = candidate.strip_prefix(PREFIX).ok_or(KeyParseError::Prefix)?;
        if candidate.len() != KEY_LEN {
            return Err(KeyParseError::Length);
        }
        if !base62::is_base62(rest) {
            return Err(KeyParseError::Alphabet);
        }
        let (body, sum) = candidate.split_at(KEY_LEN - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(KeyParseError::Checksum);
        }
        Ok(GatewayKey(SecretString::new(candidate)))
    }

    /// The plaintext, for the one-time display at creation.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.expose())
    }

    /// `tg_AbCd`: enough to recognise a key in a list, useless to an attacker.
    pub fn display_prefix(&self) -> String {
        self.expose()[..DISPLAY_LEN].to_owned()
    }

    /// The last four characters, shown as `tg_AbCd…wxyz`.
    pub fn last4(&self) -> String {
        self.expose()[KEY_LEN - 4..].to_owned()
    }
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatewayKey({}…)", self.display_prefix())
    }
}

/// SHA-256 of a secret token, hex-encoded: what the store keeps. Keys carry
/// 190 bits of randomness, so a fast hash is safe here and keeps lookups
/// cheap (no per-request bcrypt).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        KeyHash(hex)
    }

    /// A hash read back from the store.
    pub fn from_stored(hex: String) -> Self {
        KeyHash(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = GatewayKey::generate();
        let s = key.expose();
        assert_eq!(s.len(), 41);
        assert!(s.starts_with("tg_"));
        assert!(base62::is_base62(&s[3..]));
        assert_eq!(&s[35..], checksum(&s[..35]));
    }

    #[test]
    fn refusals_name_the_broken_rule() {
        let good = GatewayKey::generate().expose().to_owned();
        let check = |candidate: &str, expected| assert_eq!(GatewayKey::parse(candidate), Err(expected));
        check("sk_abc", KeyParseError::Prefix);
        check(&good[..40], KeyParseError::Length);
        check(&format!("{good}x"), KeyParseError::Length);
        check(&format!("{}-{}", &good[..10], &good[11..]), KeyParseError::Alphabet);
        let mut flipped = good.clone().into_bytes();
        flipped[10] = if flipped[10] == b'a' { b'b' } else { b'a' };
        check(std::str::from_utf8(&flipped).unwrap(), KeyParseError::Checksum);
    }

    #[test]
    fn debug_never_shows_more_than_the_prefix() {
        let key = GatewayKey::generate();
        let printed = format!("{key:?}");
        assert!(!printed.contains(&key.expose()[7..]));
        assert!(printed.contains(&key.display_prefix()));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(KeyHash::of("abc").as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    proptest! {
        #[test]
        fn every_generated_key_parses_back(_seed in any::<u64>()) {
            let key = GatewayKey::generate();
            let parsed = GatewayKey::parse(key.expose()).unwrap();
            prop_assert_eq!(parsed.hash(), key.hash());
        }

        #[test]
        fn changing_any_one_character_is_caught(pos in 3usize..41, replacement in 0usize..62) {
            let key = GatewayKey::generate();
            let mut bytes = key.expose().as_bytes().to_vec();
            let new = base62::ALPHABET[replacement];
            prop_assume!(bytes[pos] != new);
            bytes[pos] = new;
            let changed = String::from_utf8(bytes).unwrap();
            // CRC-32 detects every single-symbol change in so short a message.
            prop_assert_eq!(GatewayKey::parse(&changed), Err(KeyParseError::Checksum));
        }

        #[test]
        fn arbitrary_strings_never_panic_and_rarely_pass(s in "\\PC{0,60}") {
            if let Ok(key) = GatewayKey::parse(&s) {
                prop_assert_eq!(key.expose(), s.as_str());
            }
        }
    }
}
