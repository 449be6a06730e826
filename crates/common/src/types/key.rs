//! The idempotency key of a retryable write.

use std::fmt;

/// A caller-chosen key that makes a retried write (CreateOrder, AdjustStock,
/// Charge, Refund) a replay: 1 to 128 visible ASCII characters (`!` to `~`; no
/// spaces, so a key copied with a stray blank is not silently another key).
/// Nothing is trimmed: the key is exactly what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest key accepted.
    pub const MAX_LEN: usize = 128;

    /// Parses a key.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > Self::MAX_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be 1 to 128 visible ASCII characters, without spaces");
        }
        Ok(Self(s.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_key() {
        assert!(IdempotencyKey::parse("order-0190b1d4-charge").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in ["", "has space", " lead", "tab\t", "é", &"k".repeat(129)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
