//! `x-request-id`: the caller's when it is sane, else a new UUID v7; set on the
//! request (handlers and logs read [`RequestId`] from extensions) and echoed on
//! the response. tower-http does the work; ours only refuses ids that would
//! make log lines unreadable or unbounded.

use http::{HeaderValue, Request};
use tower_http::request_id::MakeRequestId;
pub use tower_http::request_id::RequestId;
use uuid::Uuid;

/// The header every request and response carries.
pub const X_REQUEST_ID: &str = "x-request-id";

/// Drops a caller's id that is empty, longer than 128 bytes, or holds anything
/// but `A-Z a-z 0-9 - _ . :`, so that a fresh one is made in its place.
pub(super) fn drop_insane_id<B>(mut req: Request<B>) -> Request<B> {
    let sane = req.headers().get(X_REQUEST_ID).is_none_or(|v| {
        let v = v.as_bytes();
        !v.is_empty()
            && v.len() <= 128
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !sane {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    req
}

/// Makes time-ordered ids, so ids sort like the requests they name.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MakeUuidV7;

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// The id of `req`, as text (empty when the layer did not run).
pub fn request_id<B>(req: &Request<B>) -> &str {
    req.extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
}
