//! UUID ids: one spelling (canonical hyphenated), one parser, one newtype macro.

use uuid::Uuid;

/// What a malformed id is told.
pub const UUID_HINT: &str = "must be a UUID like 0190b1d4-8b9c-7def-8123-456789abcdef";

/// A UUID in canonical hyphenated form only: one spelling per id keeps lookups
/// exact.
pub fn parse_uuid(s: &str) -> Result<Uuid, &'static str> {
    if s.is_empty() {
        return Err("is required");
    }
    if s.len() != 36 {
        return Err(UUID_HINT);
    }
    Uuid::try_parse(s).map_err(|_| UUID_HINT)
}

/// Declares a UUID id newtype: `generate` (v7, time-ordered), `parse` (the
/// canonical form, see [`parse_uuid`]), and `Display` in that form.
#[macro_export]
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub ::uuid::Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn generate() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            /// Parses the canonical hyphenated form.
            pub fn parse(s: &str) -> Result<Self, &'static str> {
                $crate::types::parse_uuid(s).map(Self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

#[cfg(test)]
#[allow(unreachable_pub)]
mod tests {
    use super::*;

    crate::uuid_id!(
        /// A test id.
        ThingId
    );

    #[test]
    fn one_spelling_of_an_id() {
        let id = ThingId::generate();
        assert_eq!(ThingId::parse(&id.to_string()), Ok(id));
        assert_eq!(ThingId::parse(""), Err("is required"));
        assert_eq!(ThingId::parse(&id.0.simple().to_string()), Err(UUID_HINT));
        assert_eq!(
            ThingId::parse(&id.to_string().to_uppercase()).map(|t| t.0),
            Ok(id.0),
            "case is not a second spelling: uuid parses either case to the same value"
        );
        assert!(ThingId::parse("0190b1d4-8b9c-7def-8123-456789abcdeg").is_err());
    }
}
