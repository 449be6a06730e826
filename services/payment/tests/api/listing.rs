//! GetPayment and ListPayments: ownership, newest-first keyset pages, filters.

use std::collections::HashSet;

use emporium_common::rpc::Code;
use emporium_testkit::{TestDb, backend_tests};

use crate::{App, app, customer, new_id, pb, refund_req, refused, violated_fields};

backend_tests!(
    pages_cover_every_payment_once_newest_first,
    customers_see_only_their_own_payments,
    listing_and_get_are_validated,
);

/// Follows next_page_token to the end: (ids in order, pages).
async fn all_pages(
    app: &mut App,
    req: pb::ListPaymentsRequest,
    token: &str,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .list(
                pb::ListPaymentsRequest {
                    page_token: page_token.clone(),
                    ..req.clone()
                },
                token,
            )
            .await
            .unwrap();
        pages += 1;
        if req.page_size > 0 {
            assert!(page.payments.len() <= req.page_size as usize);
        }
        ids.extend(page.payments.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            return (ids, pages);
        }
        page_token = page.next_page_token;
        assert!(pages < 20, "pagination does not terminate");
    }
}

async fn pages_cover_every_payment_once_newest_first(db: TestDb) {
    let mut app = app(db).await;
    let (alice, alice_token) = customer();
    let (bob, bob_token) = customer();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.paid(&alice, &alice_token, 100 + i).await.id);
    }
    created.push(app.paid(&bob, &bob_token, 50).await.id);
    app.refund(refund_req(&created[2], Some(10), "r-1"), &alice_token)
        .await
        .unwrap();
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let admin = app.admin.clone();
    let (ids, pages) = all_pages(
        &mut app,
        pb::ListPaymentsRequest {
            page_size: 3,
            ..Default::default()
        },
        &admin,
    )
    .await;
    assert_eq!(pages, 3);
    assert_eq!(ids, newest_first);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 8);

    // A customer's listing is theirs alone, with or without naming themselves.
    for user_id in [String::new(), alice.clone()] {
        let (ids, _) = all_pages(
            &mut app,
            pb::ListPaymentsRequest {
                user_id,
                page_size: 2,
                ..Default::default()
            },
            &alice_token,
        )
        .await;
        assert_eq!(ids, newest_first[1..]);
    }

    // Listed payments carry their refunds, exactly as GetPayment shows them.
    let listed = app
        .list(
            pb::ListPaymentsRequest {
                user_id: alice.clone(),
                ..Default::default()
            },
            &admin,
        )
        .await
        .unwrap()
        .payments;
    let refunded = listed.iter().find(|p| p.id == created[2]).unwrap();
    assert_eq!(refunded.refunds.len(), 1);
    assert_eq!(*refunded, app.get(&created[2], &alice_token).await.unwrap());

    // 0 is the default (50) and huge sizes are clamped: one page here.
    for page_size in [0, i32::MAX] {
        let page = app
            .list(
                pb::ListPaymentsRequest {
                    page_size,
                    ..Default::default()
                },
                &admin,
            )
            .await
            .unwrap();
        assert_eq!(page.payments.len(), 8);
        assert!(page.next_page_token.is_empty());
    }
}

async fn customers_see_only_their_own_payments(db: TestDb) {
    let mut app = app(db).await;
    let (alice, alice_token) = customer();
    let (bob, bob_token) = customer();
    let mine = app.paid(&alice, &alice_token, 100).await;
    let theirs = app.paid(&bob, &bob_token, 200).await;
    let admin = app.admin.clone();

    assert_eq!(app.get(&mine.id, &alice_token).await.unwrap().id, mine.id);
    refused(
        app.get(&theirs.id, &alice_token).await,
        Code::PermissionDenied,
    );
    // Not even existence leaks: an unknown id answers the same for a customer.
    let unknown = new_id();
    refused(
        app.get(&unknown, &alice_token).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.get(&theirs.id, &admin).await.unwrap().id, theirs.id);
    refused(app.get(&unknown, &admin).await, Code::NotFound);

    refused(
        app.list(
            pb::ListPaymentsRequest {
                user_id: bob.clone(),
                ..Default::default()
            },
            &alice_token,
        )
        .await,
        Code::PermissionDenied,
    );
    // Another user's order: an empty list, not their payments.
    let page = app
        .list(
            pb::ListPaymentsRequest {
                order_id: theirs.order_id.clone(),
                ..Default::default()
            },
            &alice_token,
        )
        .await
        .unwrap();
    assert!(page.payments.is_empty());

    // Admins filter by user, by order, or both (AND).
    for (user_id, order_id, expected) in [
        (bob.clone(), String::new(), vec![theirs.id.clone()]),
        (String::new(), mine.order_id.clone(), vec![mine.id.clone()]),
        (alice.clone(), mine.order_id.clone(), vec![mine.id.clone()]),
        (alice.clone(), theirs.order_id.clone(), vec![]),
    ] {
        let ids: Vec<String> = app
            .list(
                pb::ListPaymentsRequest {
                    user_id,
                    order_id,
                    ..Default::default()
                },
                &admin,
            )
            .await
            .unwrap()
            .payments
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, expected);
    }
}

async fn listing_and_get_are_validated(db: TestDb) {
    let mut app = app(db).await;
    let admin = app.admin.clone();
    let (user, token) = customer();
    for _ in 0..2 {
        app.paid(&user, &token, 10).await;
    }
    let token_of_user = app
        .list(
            pb::ListPaymentsRequest {
                user_id: user.clone(),
                page_size: 1,
                ..Default::default()
            },
            &admin,
        )
        .await
        .unwrap()
        .next_page_token;
    assert!(!token_of_user.is_empty());
    for (req, fields) in [
        (
            pb::ListPaymentsRequest {
                user_id: "nope".into(),
                order_id: "0190b1d48b9c7def8123456789abcdef".into(),
                page_size: -1,
                page_token: String::new(),
            },
            vec!["user_id", "order_id", "page_size"],
        ),
        (
            pb::ListPaymentsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            vec!["page_token"],
        ),
        (
            // A well-formed token of another listing.
            pb::ListPaymentsRequest {
                page_token: emporium_common::paging::encode_token("users.v1", "1/x"),
                ..Default::default()
            },
            vec!["page_token"],
        ),
        (
            // This listing's token with other filters.
            pb::ListPaymentsRequest {
                page_token: token_of_user.clone(),
                ..Default::default()
            },
            vec!["page_token"],
        ),
    ] {
        let s = refused(app.list(req, &admin).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), fields);
    }
    for bad in ["", "nope", "0190b1d48b9c7def8123456789abcdef", "\0", "ü"] {
        let s = refused(app.get(bad, &admin).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["payment_id"], "{bad:?}");
    }
}
