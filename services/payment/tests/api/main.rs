//! API tests of the payment service: a real server on a real socket, a real tonic
//! client, a fresh database per test, on SQLite and PostgreSQL. Tokens are minted
//! with the shared test key, so no user service is needed.

mod charge;
mod commit;
mod concurrency;
mod crash;
mod hostile;
mod listing;
mod lost_reply;
mod mtls;
mod refund;
mod server;
mod store;
mod validation;
mod void;

pub(crate) use emporium_testkit::{refused, violated_fields};
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
    OrderLedger,
    domain::PaymentMethod,
    processor::{ChargeAttempt, Decision, Processor, Simulated, Unavailable},
};
use emporium_proto::{common::v1 as common_pb, payment::v1 as pb};
use emporium_testkit::{
    Spawned, TestDb, bearer, spawn_payment, spawn_payment_with, spawn_payment_with_processor,
    tokens,
};
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
    let svc = spawn_payment(db).await;
    connect(svc, database).await
}

/// The service charging through `processor`.
pub(crate) async fn app_with(db: TestDb, processor: Arc<dyn Processor>) -> App {
    let database = db.config();
    let svc = spawn_payment_with_processor(db, processor).await;
    connect(svc, database).await
}

/// The service charging through `processor`, presuming a charge claim dead
/// after `lease_ms` (the shortest lease the config accepts is 1000 ms).
pub(crate) async fn app_with_lease(
    db: TestDb,
    processor: Arc<dyn Processor>,
    lease_ms: u64,
) -> App {
    let database = db.config();
    let svc = spawn_payment_with(db, processor, |c| c.payment.claim_lease_ms = lease_ms).await;
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
    refused(first, Code::NotFound);
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

/// The order service acting for whoever `token` belongs to, for one call:
/// Charge and Refund accept only the order service, and each of its tokens
/// once. A service token is taken as naming the user it acts for.
pub(crate) fn via_order(token: &str) -> String {
    // Read, not verified: verifying would spend a service token's one use.
    let user = claims_user(token);
    emporium_testkit::order_service_token("payment", user)
}

/// The claims of a test token, read without verifying it.
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

/// The user a test token names: `obo` for a service token, else `sub`.
fn claims_user(token: &str) -> Uuid {
    let claims = claims(token);
    let user = claims["obo"]
        .as_str()
        .or(claims["sub"].as_str())
        .expect("a user");
    Uuid::parse_str(user).expect("a uuid")
}

/// Whether a test token is an admin's user token.
fn is_admin(token: &str) -> bool {
    claims(token)["roles"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r == "admin"))
}

/// A token of a new admin.
pub(crate) use emporium_testkit::admin_token as admin;

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

pub(crate) fn void_req(order_id: &str, user_id: &str, key: &str) -> pb::VoidChargeRequest {
    pb::VoidChargeRequest {
        order_id: order_id.into(),
        user_id: user_id.into(),
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
    /// Charges through the order service acting for whoever `token` belongs to;
    /// for an admin's token, acting for the user the charge names (as the saga
    /// acts for the order's user: a service token's rights are that user's, so
    /// "admin" here means the saga on anyone's order).
    pub(crate) async fn charge(
        &mut self,
        req: pb::ChargeRequest,
        token: &str,
    ) -> Result<pb::ChargeResponse, Status> {
        let token = if is_admin(token) {
            let user = Uuid::parse_str(&req.user_id).unwrap_or_else(|_| Uuid::now_v7());
            emporium_testkit::order_service_token("payment", user)
        } else {
            via_order(token)
        };
        self.client
            .charge(bearer(req, &token))
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

    /// Refunds through the order service acting for whoever `token` belongs to;
    /// for an admin's token, acting for the payment's owner when it exists.
    pub(crate) async fn refund(
        &mut self,
        req: pb::RefundRequest,
        token: &str,
    ) -> Result<pb::RefundResponse, Status> {
        let token = if is_admin(token) {
            let owner = self
                .get(&req.payment_id, token)
                .await
                .ok()
                .and_then(|p| Uuid::parse_str(&p.user_id).ok())
                .unwrap_or_else(Uuid::now_v7);
            emporium_testkit::order_service_token("payment", owner)
        } else {
            via_order(token)
        };
        self.client
            .refund(bearer(req, &token))
            .await
            .map(|r| r.into_inner())
    }

    /// VoidCharge through the order service acting for `user_id` (any user
    /// when it is not a UUID, so validation gets to see it).
    pub(crate) async fn void(
        &mut self,
        order_id: &str,
        user_id: &str,
        key: &str,
    ) -> Result<pb::VoidChargeResponse, Status> {
        let user = Uuid::parse_str(user_id).unwrap_or_else(|_| Uuid::now_v7());
        let token = emporium_testkit::order_service_token("payment", user);
        self.client
            .void_charge(bearer(void_req(order_id, user_id, key), &token))
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
