//! ListProducts: SKU byte order, opaque tokens, bounded pages.

use std::collections::HashSet;

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{app, pb, refused, violated_fields};

backend_tests!(
    pages_cover_every_product_once_in_sku_byte_order,
    listing_validates_size_and_token,
);

async fn pages_cover_every_product_once_in_sku_byte_order(db: TestDb) {
    let mut app = app(db).await;
    // '-' < digits < letters < '_' in bytes; a linguistic collation would
    // ignore the punctuation and interleave these.
    let skus = ["B", "A_1", "A-2", "A1", "A-1", "AB", "Z"];
    for sku in skus {
        app.create(sku, 100).await;
    }
    let mut expected: Vec<&str> = skus.to_vec();
    expected.sort();
    assert_eq!(expected, ["A-1", "A-2", "A1", "AB", "A_1", "B", "Z"]);

    let customer = app.customer.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .client
            .list_products(bearer(
                pb::ListProductsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                },
                &customer,
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.products.len() <= 3);
        seen.extend(page.products.into_iter().map(|p| p.sku));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

    // 0 means the default (50) and huge sizes are clamped: one page here.
    for size in [0, i32::MAX] {
        let page = app
            .client
            .list_products(bearer(
                pb::ListProductsRequest {
                    page_size: size,
                    page_token: String::new(),
                },
                &customer,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.products.len(), 7);
        assert!(page.next_page_token.is_empty());
    }
}

async fn listing_validates_size_and_token(db: TestDb) {
    let mut app = app(db).await;
    let customer = app.customer.clone();
    for (req, field) in [
        (
            pb::ListProductsRequest {
                page_size: -1,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            pb::ListProductsRequest {
                page_size: 1,
                page_token: "not-a-token".into(),
            },
            "page_token",
        ),
        (
            pb::ListProductsRequest {
                page_size: 1,
                // A well-formed token of another listing.
                page_token: emporium_common::paging::encode_token("users.v1", "1/x"),
            },
            "page_token",
        ),
        (
            pb::ListProductsRequest {
                page_size: 1,
                page_token: emporium_common::paging::encode_token("products.v1", "not a sku"),
            },
            "page_token",
        ),
    ] {
        let s = refused(
            app.client.list_products(bearer(req, &customer)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&s), [field]);
    }
}
