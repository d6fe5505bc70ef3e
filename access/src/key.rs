//! API keys: random, prefixed so a leaked one is recognisable (`cvk_…`), stored and
//! configured only as their SHA-256, compared in constant time.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Prefix of generated keys, so a leaked one is recognisable in a secret scanner.
pub const KEY_PREFIX: &str = "cvk_";
/// Prefix of a configured key hash (`producer.api_keys`).
pub const HASH_PREFIX: &str = "sha256:";

/// A key in the clear: handed to its holder once, never stored, never logged (its
/// `Debug` shows only the prefix).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new random key: `cvk_` and 64 hex digits (256 bits).
    ///
    /// # Errors
    /// When the system's random source fails.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes)?;
        Ok(Self(format!("{KEY_PREFIX}{}", hex(&bytes))))
    }

    /// The key, to show its holder.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(cvk_***)")
    }
}

/// SHA-256 of a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of a presented key.
    pub fn of(key: &str) -> Self {
        let digest = digest::digest(&digest::SHA256, key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// Parses the configured form, `sha256:<64 hex digits>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(HASH_PREFIX)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }

    /// The configured form, `sha256:<hex>`.
    pub fn to_configured(&self) -> String {
        format!("{HASH_PREFIX}{}", hex(&self.0))
    }

    /// Equality that takes the same time whatever the bytes.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_hashes_to_its_configured_form_and_hides_in_debug() {
        let key = ApiKey::generate().unwrap();
        assert!(key.expose().starts_with(KEY_PREFIX));
        assert_eq!(key.expose().len(), 4 + 64);
        let configured = key.hash().to_configured();
        assert!(KeyHash::parse(&configured).unwrap().ct_eq(&key.hash()));
        assert!(!KeyHash::of("cvk_other").ct_eq(&key.hash()));
        assert!(!format!("{key:?}").contains(&key.expose()[4..]));
    }

    #[test]
    fn malformed_configured_hashes_are_refused() {
        assert!(KeyHash::parse("plaintext").is_none());
        assert!(KeyHash::parse("sha256:abc").is_none());
        assert!(KeyHash::parse(&format!("sha256:{}", "g".repeat(64))).is_none());
    }
}
