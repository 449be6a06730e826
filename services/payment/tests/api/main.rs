//! API tests of the payment service: a real server on a real socket, a real tonic
//! client, a fresh database per test, on SQLite and PostgreSQL. Tokens are minted
//! with the shared test key, so no user service is needed.

mod charge;
mod concurrency;
mod hostile;
mod listing;
mod mtls;
mod refund;
mod server;
mod store;
mod validation;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use emporium_common::{
    auth::Role,
    db::Db,
    rpc::{Channel, Code, Request, Status},
};
use emporium_payment::{
    Config, OrderLedger,
    domain::PaymentMethod,
    processor::{ChargeAttempt, Decision, Processor, Simulated, Unavailable},
};
use emporium_proto::{common::v1 as common_pb, payment::v1 as pb};
use emporium_testkit::{Spawned, TestDb, base_config, bearer, spawn, tokens};
use futures::future::BoxFuture;
use pb::payment_service_client::PaymentServiceClient;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

/// A running payment service, a client, and a handle on its database.
pub(crate) struct App {
    pub(crate) svc: Spawned,
    pub(crate) client: PaymentServiceClient<Channel>,
    pub(crate) db: Db,
    pub(crate) admin: String,
}

/// The service with the simulated processor, started as the binary starts it.
pub(crate) async fn app(db: TestDb) -> App {
    let database = db.config();
    let svc = spawn(db, |database, listeners, stop| {
        emporium_payment::serve(
            Config {
                base: base_config(database),
                ..Default::default()
            },
            listeners,
            stop,
        )
    })
    .await;
    connect(svc, database).await
}

/// The service charging through `processor`.
pub(crate) async fn app_with(db: TestDb, processor: Arc<dyn Processor>) -> App {
    let database = db.config();
    let svc = spawn(db, |database, listeners, stop| {
        emporium_payment::serve_with_processor(
            Config {
                base: base_config(database),
                ..Default::default()
            },
            processor,
            listeners,
            stop,
        )
    })
    .await;
    connect(svc, database).await
}

async fn connect(svc: Spawned, database: emporium_common::config::DatabaseConfig) -> App {
    let mut client = PaymentServiceClient::new(svc.channel().await);
    let admin = admin();
    // The first answer means migrations ran, so the ledger's tables exist.
    let first = client
        .get_payment(bearer(
            pb::GetPaymentRequest {
                payment_id: Uuid::now_v7().to_string(),
            },
            &admin,
        ))
        .await;
    assert_code(first, Code::NotFound);
    let db = Db::connect(&database)
        .await
        .expect("connect to the test db");
    App {
        svc,
        client,
        db,
        admin,
    }
}

/// A new customer: (user id, token).
pub(crate) fn customer() -> (String, String) {
    let id = Uuid::now_v7();
    let token = tokens().issue(id, &[Role::Customer]).unwrap().token;
    (id.to_string(), token)
}

/// The order service acting for whoever `token` belongs to (same user, same
/// roles): Charge and Refund accept only the order service. A service token is
/// passed through.
pub(crate) fn via_order(token: &str) -> String {
    let caller = tokens().verify(token).expect("a token the test issued");
    if caller.service.is_some() {
        return token.to_owned();
    }
    tokens()
        .issue_service("order", caller.user_id, &caller.roles)
        .expect("test keys can sign service tokens")
        .token
}

/// A token of a new admin.
pub(crate) fn admin() -> String {
    tokens()
        .issue(Uuid::now_v7(), &[Role::Customer, Role::Admin])
        .unwrap()
        .token
}

pub(crate) fn new_id() -> String {
    Uuid::now_v7().to_string()
}

pub(crate) fn eur(units: i64) -> Option<common_pb::Money> {
    Some(common_pb::Money {
        currency_code: "EUR".into(),
        units,
    })
}

pub(crate) fn charge_req(
    order_id: &str,
    user_id: &str,
    units: i64,
    method: &str,
    key: &str,
) -> pb::ChargeRequest {
    pb::ChargeRequest {
        order_id: order_id.into(),
        user_id: user_id.into(),
        amount: eur(units),
        payment_method: method.into(),
        idempotency_key: key.into(),
    }
}

pub(crate) fn refund_req(payment_id: &str, units: Option<i64>, key: &str) -> pb::RefundRequest {
    pb::RefundRequest {
        payment_id: payment_id.into(),
        amount: units.and_then(eur),
        reason: "order cancelled".into(),
        idempotency_key: key.into(),
    }
}

impl App {
    /// Charges through the order service acting for whoever `token` belongs to.
    pub(crate) async fn charge(
        &mut self,
        req: pb::ChargeRequest,
        token: &str,
    ) -> Result<pb::ChargeResponse, Status> {
        self.client
            .charge(bearer(req, &via_order(token)))
            .await
            .map(|r| r.into_inner())
    }

    /// A successful charge of `units` EUR for a new order: (payment, order id).
    pub(crate) async fn paid(&mut self, user_id: &str, token: &str, units: i64) -> pb::Payment {
        self.charge(
            charge_req(&new_id(), user_id, units, "pm_card_ok", &new_id()),
            token,
        )
        .await
        .expect("charge")
        .payment
        .expect("payment")
    }

    /// Refunds through the order service acting for whoever `token` belongs to.
    pub(crate) async fn refund(
        &mut self,
        req: pb::RefundRequest,
        token: &str,
    ) -> Result<pb::RefundResponse, Status> {
        self.client
            .refund(bearer(req, &via_order(token)))
            .await
            .map(|r| r.into_inner())
    }

    pub(crate) async fn get(&mut self, id: &str, token: &str) -> Result<pb::Payment, Status> {
        self.client
            .get_payment(bearer(
                pb::GetPaymentRequest {
                    payment_id: id.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().payment.expect("payment"))
    }

    pub(crate) async fn list(
        &mut self,
        req: pb::ListPaymentsRequest,
        token: &str,
    ) -> Result<pb::ListPaymentsResponse, Status> {
        self.client
            .list_payments(bearer(req, token))
            .await
            .map(|r| r.into_inner())
    }

    /// Every payment of an order, as an admin sees them.
    pub(crate) async fn of_order(&mut self, order_id: &str) -> Vec<pb::Payment> {
        let admin = self.admin.clone();
        self.list(
            pb::ListPaymentsRequest {
                order_id: order_id.into(),
                ..Default::default()
            },
            &admin,
        )
        .await
        .unwrap()
        .payments
    }

    /// The ledger, after checking every per-order invariant holds.
    pub(crate) async fn ledger(&self) -> Vec<OrderLedger> {
        let ledger = emporium_payment::ledger(&self.db).await.unwrap();
        for entry in &ledger {
            assert!(entry.holds(), "invariant broken: {entry:?}");
        }
        ledger
    }
}

/// The wire bytes of a message, to compare replays exactly.
pub(crate) fn bytes(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

/// Asserts the code, and that the message leaks nothing internal.
#[track_caller]
pub(crate) fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    let s = r.expect_err("expected an error status");
    assert_eq!(s.code(), code, "{s:?}");
    for leak in [
        "SELECT", "INSERT", "UPDATE ", "sqlx", "panicked", "/src/", ".rs:",
    ] {
        assert!(!s.message().contains(leak), "status leaks internals: {s:?}");
    }
    s
}

/// The fields named by a status's BadRequest detail.
pub(crate) fn violated_fields(s: &Status) -> Vec<String> {
    use emporium_common::rpc::StatusExt as _;
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// `(reason, domain, payment_id)` of a status's ErrorInfo.
pub(crate) fn error_info(s: &Status) -> (String, String, String) {
    use emporium_common::rpc::StatusExt as _;
    let info = s.get_details_error_info().expect("an ErrorInfo detail");
    let id = info.metadata.get("payment_id").cloned().unwrap_or_default();
    (info.reason, info.domain, id)
}

/// The simulated processor, counting the calls that reach it.
#[derive(Debug, Default)]
pub(crate) struct Counting {
    pub(crate) calls: AtomicUsize,
}

impl Processor for Counting {
    fn charge<'a>(
        &'a self,
        attempt: ChargeAttempt<'a>,
    ) -> BoxFuture<'a, Result<Decision, Unavailable>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Simulated.charge(attempt)
    }
}

/// Fails transiently for the first `failures` calls, then behaves like the
/// simulated processor.
#[derive(Debug)]
pub(crate) struct FailFirst {
    pub(crate) failures: usize,
    pub(crate) calls: AtomicUsize,
}

impl Processor for FailFirst {
    fn charge<'a>(
        &'a self,
        attempt: ChargeAttempt<'a>,
    ) -> BoxFuture<'a, Result<Decision, Unavailable>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            Box::pin(async { Err(Unavailable) })
        } else {
            Simulated.charge(attempt)
        }
    }
}

/// Holds every charge inside the processor until the test lets it through, and
/// says when one has arrived: "still running" without sleeping.
#[derive(Debug)]
pub(crate) struct Gate {
    entered: mpsc::UnboundedSender<PaymentMethod>,
    permits: Semaphore,
}

impl Gate {
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<PaymentMethod>) {
        let (entered, arrivals) = mpsc::unbounded_channel();
        let gate = Arc::new(Self {
            entered,
            permits: Semaphore::new(0),
        });
        (gate, arrivals)
    }

    /// Lets `n` held charges through.
    pub(crate) fn open(&self, n: usize) {
        self.permits.add_permits(n);
    }
}

impl Processor for Gate {
    fn charge<'a>(
        &'a self,
        attempt: ChargeAttempt<'a>,
    ) -> BoxFuture<'a, Result<Decision, Unavailable>> {
        Box::pin(async move {
            let _ = self.entered.send(attempt.payment_method);
            self.permits.acquire().await.expect("gate open").forget();
            Simulated::decide(attempt.payment_method)
        })
    }
}

/// A request without a token.
pub(crate) fn anonymous<T>(msg: T) -> Request<T> {
    Request::new(msg)
}
