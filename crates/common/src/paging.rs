//! Page sizes, pages and opaque page tokens for List RPCs (AIP-158), the same
//! for every listing of every service.
//!
//! A token wraps a keyset cursor (the sort key of the last item served) together
//! with the name of the listing that issued it, base64url-encoded. Clients must
//! treat it as opaque; a token from another listing or a mangled one is refused.
//! Listings by creation time use [`TimeCursor`]; others encode their own key
//! with [`encode_token`].

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

/// What a refused page token is told.
pub const FOREIGN_TOKEN: &str = "is not a token issued by this listing";

/// How many items one page holds: the client's `page_size`, 0 meaning
/// [`PageSize::DEFAULT`], anything above [`PageSize::MAX`] meaning the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    /// Items per page when the client does not say.
    pub const DEFAULT: u32 = 50;
    /// Most items per page.
    pub const MAX: u32 = 500;

    /// Reads a requested size; negative is an error.
    pub fn parse(requested: i32) -> Result<Self, &'static str> {
        page_size(requested, Self::DEFAULT, Self::MAX).map(Self)
    }

    /// The largest page.
    pub fn max() -> Self {
        Self(Self::MAX)
    }

    /// The number of items.
    pub fn get(self) -> u32 {
        self.0
    }

    /// How many rows to ask the database for: one more than a page, so the
    /// extra row tells whether a next page exists without a COUNT.
    pub fn fetch(self) -> u32 {
        self.0 + 1
    }
}

/// One page of a listing and the cursor after its last item, when more may
/// follow.
#[derive(Debug)]
pub struct Page<T, C> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page from `items` fetched with [`PageSize::fetch`]: the extra item, if
    /// any, is dropped and says there is a next page after the last one kept.
    pub fn from_fetched(mut items: Vec<T>, size: PageSize, cursor: impl FnOnce(&T) -> C) -> Self {
        let size = size.get() as usize;
        let next = if items.len() > size {
            items.truncate(size);
            items.last().map(cursor)
        } else {
            None
        };
        Self { items, next }
    }
}

/// The paging fields of a List request over a listing in creation order: the
/// size and the position to continue after, each problem recorded in `v`.
pub fn time_page(
    v: &mut crate::status::Violations,
    listing: &str,
    page_size: i32,
    page_token: &str,
) -> Option<(PageSize, Option<TimeCursor>)> {
    let size = v.check("page_size", PageSize::parse(page_size));
    let after = v.check("page_token", TimeCursor::decode(listing, page_token));
    size.zip(after)
}

/// The keyset position of a listing in creation order: the creation time (µs)
/// and the id of the last item served, ties broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCursor {
    /// Creation time, µs since the epoch.
    pub created_at: i64,
    /// The item's id.
    pub id: Uuid,
}

impl TimeCursor {
    /// The opaque token of this position in `listing`.
    pub fn encode(&self, listing: &str) -> String {
        encode_token(listing, &format!("{}/{}", self.created_at, self.id))
    }

    /// Reads a token issued by [`Self::encode`] for the same `listing`; empty
    /// means the first page. The id must be a UUID: anything else was not issued
    /// here and must not reach the database (PostgreSQL refuses text with NUL).
    pub fn decode(listing: &str, token: &str) -> Result<Option<Self>, &'static str> {
        let Some(cursor) = decode_token(listing, token)? else {
            return Ok(None);
        };
        let (time, id) = cursor.split_once('/').ok_or(FOREIGN_TOKEN)?;
        let created_at = time.parse::<i64>().map_err(|_| FOREIGN_TOKEN)?;
        let id = crate::types::parse_uuid(id).map_err(|_| FOREIGN_TOKEN)?;
        Ok(Some(Self { created_at, id }))
    }

    /// The position as the stores bind it.
    pub fn to_row(self) -> (i64, String) {
        (self.created_at, self.id.to_string())
    }
}

/// Resolves a requested page size: 0 → `default`, above `max` → `max`,
/// negative → error.
fn page_size(requested: i32, default: u32, max: u32) -> Result<u32, &'static str> {
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
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| FOREIGN_TOKEN)?;
    let text = String::from_utf8(bytes).map_err(|_| FOREIGN_TOKEN)?;
    match text.split_once('\n') {
        Some((l, cursor)) if l == listing && !cursor.is_empty() => Ok(Some(cursor.to_owned())),
        _ => Err(FOREIGN_TOKEN),
    }
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
    fn time_cursors_round_trip_and_refuse_what_was_not_issued() {
        let c = TimeCursor {
            created_at: 1_700_000_000_000_000,
            id: Uuid::now_v7(),
        };
        let t = c.encode("orders");
        assert_eq!(TimeCursor::decode("orders", &t), Ok(Some(c)));
        assert_eq!(TimeCursor::decode("orders", ""), Ok(None));
        assert!(TimeCursor::decode("users", &t).is_err());
        for garbage in [
            "garbage",
            "12/",
            "x/0190b1d4-8b9c-7def-8123-456789abcdef",
            "12/not\0a-uuid",
        ] {
            assert_eq!(
                TimeCursor::decode("orders", &encode_token("orders", garbage)),
                Err(FOREIGN_TOKEN),
                "{garbage}"
            );
        }
    }

    #[test]
    fn pages_keep_the_size_and_point_past_their_last_item() {
        let size = PageSize::parse(2).unwrap();
        let page = Page::from_fetched(vec![1, 2, 3], size, |n| *n);
        assert_eq!((page.items, page.next), (vec![1, 2], Some(2)));
        let page = Page::from_fetched(vec![1, 2], size, |n| *n);
        assert_eq!((page.items, page.next), (vec![1, 2], None));
        assert_eq!(PageSize::parse(0).unwrap().get(), PageSize::DEFAULT);
        assert_eq!(PageSize::parse(10_000).unwrap().get(), PageSize::MAX);
        assert!(PageSize::parse(-1).is_err());
    }
}
