//! ImportStock: good rows applied together, bad rows reported, whole-call
//! errors, idempotent by key.

use emporium_common::rpc::{Code, Status};
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{App, app, counters, eur, pb, pb_common, refused, violated_fields};

backend_tests!(
    good_rows_are_applied_and_bad_ones_reported,
    a_replay_returns_the_first_summary_and_changes_nothing,
    a_key_reused_for_other_rows_is_refused,
    whole_call_errors_apply_nothing,
    large_imports_are_batched_and_list_the_first_failures,
);

fn row(key: &str, sku: &str, quantity: i64) -> pb::ImportStockRequest {
    pb::ImportStockRequest {
        idempotency_key: key.into(),
        sku: sku.into(),
        quantity,
        ..Default::default()
    }
}

fn creating(
    sku: &str,
    quantity: i64,
    name: &str,
    price: Option<pb_common::Money>,
) -> pb::ImportStockRequest {
    pb::ImportStockRequest {
        name: Some(name.into()),
        unit_price: price,
        ..row("", sku, quantity)
    }
}

impl App {
    pub(crate) async fn import(
        &mut self,
        rows: Vec<pb::ImportStockRequest>,
    ) -> Result<pb::ImportStockResponse, Status> {
        let admin = self.admin.clone();
        self.client
            .import_stock(bearer(futures::stream::iter(rows), &admin))
            .await
            .map(|r| r.into_inner())
    }
}

/// `(row number, sku, code, message)` of each failed row.
fn failures(r: &pb::ImportStockResponse) -> Vec<(i64, String, Code, String)> {
    r.failed_rows
        .iter()
        .map(|f| {
            let e = f.error.as_ref().expect("error of a failed row");
            (
                f.row_number,
                f.sku.clone(),
                Code::from_i32(e.code),
                e.message.clone(),
            )
        })
        .collect()
}

async fn good_rows_are_applied_and_bad_ones_reported(db: TestDb) {
    let mut app = app(db).await;
    app.create("EXIST", 100).await;
    let rows = vec![
        row("import-1", "EXIST", 5),
        creating("NEW-1", 10, "New one", eur(500)),
        row("", "bad sku", 1),
        // Created by row 2, which arrived first.
        row("import-1", "NEW-1", 2),
        // New, and nothing to create it from.
        row("", "GHOST", 3),
        row("", "EXIST", -1),
        // Zero units only creates the product.
        creating("NEW-2", 0, "Zero", eur(100)),
        // An invalid name matters only when the row creates the product...
        creating("NEW-3", 1, " ", eur(100)),
        // ...and is ignored for an existing one.
        creating("EXIST", 1, " ", None),
        creating(
            "NEW-4",
            1,
            "Dollars",
            Some(pb_common::Money {
                currency_code: "USD".into(),
                units: 100,
            }),
        ),
    ];
    let summary = app.import(rows).await.unwrap();
    assert_eq!(
        (
            summary.rows_received,
            summary.rows_applied,
            summary.products_created,
            summary.units_added
        ),
        (10, 5, 2, 18)
    );
    let failed = failures(&summary);
    let brief: Vec<(i64, &str, Code)> = failed
        .iter()
        .map(|(n, sku, code, _)| (*n, sku.as_str(), *code))
        .collect();
    assert_eq!(
        brief,
        [
            (3, "bad sku", Code::InvalidArgument),
            (5, "GHOST", Code::NotFound),
            (6, "EXIST", Code::InvalidArgument),
            (8, "NEW-3", Code::InvalidArgument),
            (10, "NEW-4", Code::InvalidArgument),
        ]
    );
    for ((n, _, _, message), field) in failed.iter().zip([
        Some("sku"),
        None,
        Some("quantity"),
        Some("name"),
        Some("unit_price.currency_code"),
    ]) {
        if let Some(field) = field {
            assert!(
                message.starts_with(&format!("invalid request: {field}: ")),
                "row {n}: {message}"
            );
        }
    }
    // Field-level detail travels as a google.rpc.BadRequest.
    let details = &summary.failed_rows[0].error.as_ref().unwrap().details;
    assert_eq!(details.len(), 1);
    assert!(details[0].type_url.ends_with("google.rpc.BadRequest"));

    let new1 = app.product("NEW-1").await;
    assert_eq!(
        (
            new1.name.as_str(),
            new1.unit_price.clone(),
            new1.stock_on_hand
        ),
        ("New one", eur(500), 12)
    );
    assert_eq!(app.product("NEW-2").await.stock_on_hand, 0);
    let levels = app.levels().await;
    let skus: Vec<&str> = levels.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["EXIST", "NEW-1", "NEW-2"]);
    assert_eq!(counters(&levels[0]), (6, 0, 6, 0));
    assert_eq!(counters(&levels[1]), (12, 0, 12, 0));
}

async fn a_replay_returns_the_first_summary_and_changes_nothing(db: TestDb) {
    let mut app = app(db).await;
    let rows = vec![
        creating("BULK-A", 4, "A", eur(100)),
        row("", "GHOST", 1),
        creating("BULK-B", 6, "B", eur(100)),
    ];
    let mut first_rows = rows.clone();
    first_rows[0].idempotency_key = "delivery-7".into();
    let first = app.import(first_rows.clone()).await.unwrap();
    assert_eq!((first.rows_applied, first.units_added), (2, 10));
    app.adjust("BULK-A", 1, "after").await.unwrap();

    let again = app.import(first_rows.clone()).await.unwrap();
    assert_eq!(again, first);
    // Every message may repeat the key; the rows are what count.
    let mut keyed = first_rows;
    keyed
        .iter_mut()
        .for_each(|r| r.idempotency_key = "delivery-7".into());
    assert_eq!(app.import(keyed).await.unwrap(), first);
    assert_eq!(counters(&app.level("BULK-A").await), (5, 0, 5, 0));
    assert_eq!(counters(&app.level("BULK-B").await), (6, 0, 6, 0));
}

async fn a_key_reused_for_other_rows_is_refused(db: TestDb) {
    let mut app = app(db).await;
    app.import(vec![
        creating("ONE", 1, "One", eur(100)).into_keyed("same-key"),
    ])
    .await
    .unwrap();
    for other in [
        vec![creating("ONE", 2, "One", eur(100)).into_keyed("same-key")],
        vec![
            creating("ONE", 1, "One", eur(100)).into_keyed("same-key"),
            row("", "ONE", 1),
        ],
        vec![creating("ONE", 1, "Other name", eur(100)).into_keyed("same-key")],
    ] {
        let s = refused(app.import(other).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), ["idempotency_key"]);
    }
    assert_eq!(counters(&app.level("ONE").await), (1, 0, 1, 0));
}

trait Keyed {
    fn into_keyed(self, key: &str) -> Self;
}

impl Keyed for pb::ImportStockRequest {
    fn into_keyed(mut self, key: &str) -> Self {
        self.idempotency_key = key.into();
        self
    }
}

async fn whole_call_errors_apply_nothing(db: TestDb) {
    let mut app = app(db).await;
    app.create("ITEM", 100).await;
    for (rows, field) in [
        (vec![], "rows"),
        (vec![row("", "ITEM", 1)], "idempotency_key"),
        (
            vec![row("key", "ITEM", 1), row("another", "ITEM", 1)],
            "idempotency_key",
        ),
        (vec![row(&"k".repeat(129), "ITEM", 1)], "idempotency_key"),
    ] {
        let s = refused(app.import(rows).await, Code::InvalidArgument);
        assert_eq!(violated_fields(&s), [field]);
    }
    assert_eq!(counters(&app.level("ITEM").await), (0, 0, 0, 0));
    // The key of the refused import is still free.
    let ok = app.import(vec![row("key", "ITEM", 1)]).await.unwrap();
    assert_eq!(ok.rows_applied, 1);
    assert_eq!(counters(&app.level("ITEM").await), (1, 0, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100000_rows_are_refused_before_anything_is_applied() {
    let mut app = app(TestDb::sqlite()).await;
    app.create("MANY", 100).await;
    let rows: Vec<_> = (0..100_001)
        .map(|i| row(if i == 0 { "big" } else { "" }, "MANY", 1))
        .collect();
    let s = refused(app.import(rows).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&s), ["rows"]);
    assert_eq!(counters(&app.level("MANY").await), (0, 0, 0, 0));
}

async fn large_imports_are_batched_and_list_the_first_failures(db: TestDb) {
    let mut app = app(db).await;
    // More rows of each kind than one batched statement takes.
    let existing: Vec<String> = (0..260).map(|i| format!("OLD-{i:04}")).collect();
    let seed: Vec<_> = existing
        .iter()
        .enumerate()
        .map(|(i, sku)| {
            let r = creating(sku, 1, "Old", eur(100));
            if i == 0 { r.into_keyed("seed") } else { r }
        })
        .collect();
    assert_eq!(app.import(seed).await.unwrap().products_created, 260);

    let mut rows: Vec<_> = (0..1_200)
        .map(|i| row(if i == 0 { "big" } else { "" }, &format!("GONE-{i:04}"), 1))
        .collect();
    rows.extend(existing.iter().map(|sku| row("", sku, 2)));
    rows.extend((0..260).map(|i| creating(&format!("NEW-{i:04}"), 4, "New", eur(100))));
    let summary = app.import(rows).await.unwrap();
    assert_eq!(
        (
            summary.rows_received,
            summary.rows_applied,
            summary.products_created,
            summary.units_added
        ),
        (1_720, 520, 260, 260 * 2 + 260 * 4)
    );
    // All 1,200 failures are counted; the first 1,000 are listed.
    assert_eq!(summary.failed_rows.len(), 1_000);
    let numbers: Vec<i64> = summary.failed_rows.iter().map(|f| f.row_number).collect();
    assert_eq!(numbers, (1..=1_000).collect::<Vec<i64>>());
    assert!(
        summary
            .failed_rows
            .iter()
            .all(|f| f.error.as_ref().unwrap().code == Code::NotFound as i32)
    );

    let levels = app.levels().await;
    assert_eq!(levels.len(), 520);
    for l in &levels {
        let expected = if l.sku.starts_with("OLD") { 1 + 2 } else { 4 };
        assert_eq!(counters(l), (expected, 0, expected, 0), "{}", l.sku);
    }
}
