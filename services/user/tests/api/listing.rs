//! ListUsers: admin-only, stable order, opaque tokens, bounded pages.

use std::collections::HashSet;

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{app, pb, refused, violated_fields};

backend_tests!(
    pages_cover_every_user_once_in_order,
    listing_is_admin_only_and_validated
);

async fn pages_cover_every_user_once_in_order(db: TestDb) {
    let mut app = app(db).await;
    let mut created = vec![app.admin_id.clone()];
    for i in 0..7 {
        created.push(
            app.signup(&format!("u{i}@example.com"), "U", "password-1")
                .await
                .id,
        );
    }
    let admin = app.admin_token.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .client
            .list_users(bearer(
                pb::ListUsersRequest {
                    page_size: 3,
                    page_token: token.clone(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.users.len() <= 3);
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "creation order, each user once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 8);

    // 0 means the default (50) and huge sizes are clamped: one page here.
    for size in [0, i32::MAX] {
        let page = app
            .client
            .list_users(bearer(
                pb::ListUsersRequest {
                    page_size: size,
                    page_token: String::new(),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.users.len(), 8);
        assert!(page.next_page_token.is_empty());
    }
}

async fn listing_is_admin_only_and_validated(db: TestDb) {
    let mut app = app(db).await;
    let (_, customer) = app.customer("nosy@example.com").await;
    refused(
        app.client
            .list_users(bearer(pb::ListUsersRequest::default(), &customer))
            .await,
        Code::PermissionDenied,
    );
    let admin = app.admin_token.clone();
    for (req, field) in [
        (
            pb::ListUsersRequest {
                page_size: -1,
                page_token: String::new(),
            },
            "page_size",
        ),
        (
            pb::ListUsersRequest {
                page_size: 1,
                page_token: "not-a-token".into(),
            },
            "page_token",
        ),
        (
            pb::ListUsersRequest {
                page_size: 1,
                // A well-formed token of another listing.
                page_token: emporium_common::paging::encode_token("orders.v1", "1/x"),
            },
            "page_token",
        ),
        (
            pb::ListUsersRequest {
                page_size: 1,
                page_token: emporium_common::paging::encode_token("users.v1", "garbage"),
            },
            "page_token",
        ),
    ] {
        let s = refused(
            app.client.list_users(bearer(req, &admin)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&s), [field]);
    }
}
