//! The storefront: a small shop page over the REST API, served at `/`.
//!
//! Plain HTML, CSS and ES modules from `services/edge/static/`, embedded in
//! the binary at compile time (a container needs nothing beside it), no build
//! step. Every answer carries a strict Content-Security-Policy (scripts,
//! styles and connections from this origin only, no inline code), a strong
//! `ETag` and `Cache-Control: no-cache`: browsers revalidate each time and get
//! a 304 when nothing changed, so a new release never mixes with cached files.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use axum::{
    Router,
    extract::Request,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The files of the storefront, by URL path.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../static/index.html"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/style.css"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/app.js"),
    },
    Asset {
        path: "/assets/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/api.js"),
    },
    Asset {
        path: "/assets/format.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/format.js"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../static/favicon.svg"),
    },
];

/// Only this origin's scripts, styles, images and connections (the API and
/// its event streams); no inline script or style, no framing, no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The storefront's routes (GET and HEAD), for any router state.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let etag = etag(asset.body);
        router.route(
            asset.path,
            get(move |req: Request| async move { serve(asset, &etag, req.headers()) }),
        )
    })
}

/// A strong validator for `body`: a hash of the bytes, stable for a build.
fn etag(body: &[u8]) -> HeaderValue {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
        .expect("a hex string is a valid header value")
}

/// `asset`, or 304 when the browser's copy is current.
fn serve(asset: &'static Asset, etag: &HeaderValue, request: &HeaderMap) -> Response {
    let current = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let mut resp = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The event streams carry the token in their URL: never send it on.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_and_a_body() {
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{}", asset.path);
            assert!(asset.path.starts_with('/'), "{}", asset.path);
        }
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..] {
            assert!(
                html.contains(asset.path) || asset.path.ends_with(".js"),
                "index.html does not link {}",
                asset.path
            );
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "inline event handler: on{handler:?}");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or("");
            assert!(tag.contains("src="), "inline <script>: {tag}");
        }
    }

    #[test]
    fn a_matching_etag_is_not_modified() {
        let asset = &ASSETS[0];
        let tag = etag(asset.body);
        let mut headers = HeaderMap::new();
        assert_eq!(serve(asset, &tag, &headers).status(), StatusCode::OK);
        headers.insert(header::IF_NONE_MATCH, tag.clone());
        let resp = serve(asset, &tag, &headers);
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(resp.headers()[header::CONTENT_SECURITY_POLICY], CSP);
    }
}
