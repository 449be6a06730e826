//! Page sizes and opaque page tokens for List RPCs (AIP-158).
//!
//! A token wraps a keyset cursor (the sort key of the last item served) together
//! with the name of the listing that issued it, base64url-encoded. Clients must
//! treat it as opaque; a token from another listing or a mangled one is refused.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// Resolves a requested page size: 0 → `default`, above `max` → `max`,
/// negative → error.
pub fn page_size(requested: i32, default: u32, max: u32) -> Result<u32, &'static str> {
    match requested {
        n if n < 0 => Err("must not be negative"),
        0 => Ok(default),
        n => Ok((n as u32).min(max)),
    }
}

/// Encodes a cursor for `listing` as an opaque token.
pub fn encode_token(listing: &str, cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{listing}\n{cursor}"))
}

/// Decodes a token issued by [`encode_token`] for the same `listing`. An empty
/// token means the first page (`Ok(None)`).
pub fn decode_token(listing: &str, token: &str) -> Result<Option<String>, &'static str> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| "is not a token issued by this listing")?;
    let text = String::from_utf8(bytes).map_err(|_| "is not a token issued by this listing")?;
    match text.split_once('\n') {
        Some((l, cursor)) if l == listing && !cursor.is_empty() => Ok(Some(cursor.to_owned())),
        _ => Err("is not a token issued by this listing"),
    }
}

/// Encodes a `(time µs, id)` keyset position — the sort key of the last item
/// served by a listing ordered by creation time, ties broken by id.
pub fn encode_time_cursor(listing: &str, (time, id): &(i64, String)) -> String {
    encode_token(listing, &format!("{time}/{id}"))
}

/// Decodes a token from [`encode_time_cursor`]; empty means the first page.
pub fn decode_time_cursor(
    listing: &str,
    token: &str,
) -> Result<Option<(i64, String)>, &'static str> {
    let Some(cursor) = decode_token(listing, token)? else {
        return Ok(None);
    };
    cursor
        .split_once('/')
        .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
        .filter(|(_, id)| !id.is_empty())
        .map(Some)
        .ok_or("is not a token issued by this listing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(page_size(0, 50, 500), Ok(50));
        assert_eq!(page_size(7, 50, 500), Ok(7));
        assert_eq!(page_size(10_000, 50, 500), Ok(500));
        assert!(page_size(-1, 50, 500).is_err());
    }

    #[test]
    fn tokens_round_trip_and_refuse_foreign_ones() {
        let t = encode_token("users", "abc");
        assert_eq!(decode_token("users", &t), Ok(Some("abc".into())));
        assert_eq!(decode_token("users", ""), Ok(None));
        assert!(decode_token("orders", &t).is_err());
        assert!(decode_token("users", "%%%").is_err());
        assert!(decode_token("users", &encode_token("users", "")).is_err());
    }

    #[test]
    fn time_cursors_round_trip() {
        let c = (1_700_000_000_000_000, "0190-id".to_owned());
        let t = encode_time_cursor("orders", &c);
        assert_eq!(decode_time_cursor("orders", &t), Ok(Some(c)));
        assert_eq!(decode_time_cursor("orders", ""), Ok(None));
        assert!(decode_time_cursor("orders", &encode_token("orders", "garbage")).is_err());
        assert!(decode_time_cursor("orders", &encode_token("orders", "12/")).is_err());
    }
}
