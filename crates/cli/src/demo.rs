//! `emporium demo`: a narrated story against the running stack that doubles as
//! an end-to-end check. Every step says what it does, shows what came back and
//! checks it; the first surprise stops the story with [`CliError::Demo`].
//!
//! The story: the bootstrap admin logs in, creates two products (SKUs unique to
//! this run) and stocks them; a new customer signs up and logs in; a watch on the
//! customer's orders runs in the background and prints every change as it
//! happens; a paid order is CONFIRMED and the stock drops; a declined card ends
//! CANCELLED (PAYMENT_DECLINED) with the stock as it was; cancelling the confirmed
//! order refunds it and returns its stock. Then the watch is stopped.

use std::time::Duration;

use emporium_common::rpc::{Code, Streaming};
use emporium_proto::{
    common::v1::Money, inventory::v1 as inv, order::v1 as ord, payment::v1 as pay, user::v1 as usr,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use uuid::Uuid;

use crate::{
    cli::DemoArgs,
    commands::{WatchView, get_product, open_watch, orders_lines, stock_table},
    error::CliError,
    format::{self, money},
    session::{Clients, Service, anonymous, authed},
};

/// Steps in the story.
const STEPS: usize = 7;
/// How long the watch may take to report a change the demo just caused.
const WATCH_WAIT: Duration = Duration::from_secs(15);
/// Units of each product received in step 2.
const STOCK: i64 = 10;

/// Runs the story; `Err` when a step did not behave as described.
pub async fn run(clients: &Clients, args: DemoArgs) -> Result<(), CliError> {
    let run_id: String = Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(6)
        .collect::<String>()
        .to_uppercase();
    let mut demo = Demo { clients, step: 0 };
    outln!("Emporium demo, run {run_id}")?;
    outln!(
        "  services: user {}, inventory {}, payment {}, order {}",
        clients.url(Service::User),
        clients.url(Service::Inventory),
        clients.url(Service::Payment),
        clients.url(Service::Order)
    )?;
    outln!("  times are UTC; lines starting with [watch] come live from WatchOrderUpdates")?;

    // 1. The admin.
    demo.step("The bootstrap admin logs in")?;
    let (admin_token, admin) = demo
        .authenticate(&args.admin_email, &args.admin_password)
        .await
        .map_err(|e| {
            e.with_hint(
                Code::Unauthenticated,
                "the user service creates this admin at start from EMPORIUM_USER__ADMIN_EMAIL and \
                 EMPORIUM_USER__ADMIN_PASSWORD; give the demo the same values",
            )
        })?;
    demo.check(admin.roles.contains(&(usr::Role::Admin as i32)), || {
        format!(
            "{} is not an admin (roles: {})",
            admin.email,
            format::roles(&admin.roles)
        )
    })?;
    demo.ok(format!(
        "logged in as {} <{}> ({})",
        admin.name,
        admin.email,
        format::roles(&admin.roles)
    ))?;

    // 2. The catalogue.
    demo.step("The admin adds two products and receives stock")?;
    let specs = [
        (
            format!("DEMO-{run_id}-MUG"),
            "Emporium mug",
            "Stoneware, 350 ml",
            1299,
        ),
        (
            format!("DEMO-{run_id}-TEE"),
            "Emporium T-shirt",
            "Organic cotton, size M",
            1999,
        ),
    ];
    let mut products = Vec::new();
    for (sku, name, description, price) in &specs {
        let request = inv::CreateProductRequest {
            sku: sku.clone(),
            name: (*name).to_owned(),
            description: (*description).to_owned(),
            unit_price: Some(Money {
                currency_code: "EUR".into(),
                units: *price,
            }),
        };
        let created = clients
            .call(
                Service::Inventory,
                clients
                    .inventory()
                    .create_product(authed(request, &admin_token)?),
            )
            .await?
            .product
            .unwrap_or_default();
        demo.ok(format!(
            "created {} \"{}\" at {}",
            created.sku,
            created.name,
            money(created.unit_price.as_ref())
        ))?;
        let request = inv::AdjustStockRequest {
            product: Some(inv::adjust_stock_request::Product::Sku(sku.clone())),
            delta: STOCK,
            reason: format!("demo {run_id}: goods received"),
            idempotency_key: Uuid::now_v7().to_string(),
        };
        let stocked = clients
            .call(
                Service::Inventory,
                clients
                    .inventory()
                    .adjust_stock(authed(request, &admin_token)?),
            )
            .await?
            .product
            .unwrap_or_default();
        demo.check(stocked.stock_on_hand == STOCK, || {
            format!(
                "{sku}: stock on hand is {} after receiving {STOCK}",
                stocked.stock_on_hand
            )
        })?;
        demo.ok(format!(
            "received {STOCK} x {sku}: stock on hand {}",
            stocked.stock_on_hand
        ))?;
        products.push(stocked);
    }
    demo.table(format::products_table(&products).lines(4))?;
    let (mug, tee) = (specs[0].0.clone(), specs[1].0.clone());
    let price = |sku: &str| specs.iter().find(|s| s.0 == sku).map_or(0, |s| s.3);

    // 3. The customer.
    demo.step("A new customer signs up and logs in")?;
    let email = format!("demo-{}@example.com", run_id.to_lowercase());
    let password = format!("demo-{run_id}-password");
    let request = usr::CreateUserRequest {
        email: email.clone(),
        name: format!("Demo Customer {run_id}"),
        password: password.clone(),
    };
    let user = clients
        .call(
            Service::User,
            clients.user().create_user(anonymous(request)),
        )
        .await?
        .user
        .unwrap_or_default();
    demo.ok(format!(
        "signed up {} <{}> as {}",
        user.name,
        user.email,
        format::roles(&user.roles)
    ))?;
    let (token, customer) = demo.authenticate(&email, &password).await?;
    demo.check(customer.id == user.id, || {
        format!("logged in as {} but signed up as {}", customer.id, user.id)
    })?;
    demo.ok(format!(
        "logged in as {} (id {})",
        customer.email, customer.id
    ))?;

    // 4. The watch.
    demo.step("A watch on the customer's orders starts in the background")?;
    let mut watch = Watch::start(open_watch(clients, &token, None).await?);
    demo.ok("WatchOrderUpdates(user_orders) is streaming; changes appear below as [watch] lines")?;

    // 5. A paid order.
    demo.step("The customer orders 2 mugs and 1 T-shirt, paying with pm_card_ok")?;
    let before = demo.stock(&admin_token, &[&mug, &tee]).await?;
    let items = [(mug.as_str(), 2), (tee.as_str(), 1)];
    let paid = demo
        .place_order(&token, &mut watch, &items, "pm_card_ok")
        .await?;
    demo.check(paid.status == ord::OrderStatus::Confirmed as i32, || {
        format!("expected CONFIRMED, got {}", format::order_state(&paid))
    })?;
    let expected_total: i64 = items.iter().map(|(sku, q)| price(sku) * q).sum();
    demo.check(
        paid.total.as_ref().map(|m| m.units) == Some(expected_total),
        || {
            format!(
                "expected a total of {}, got {}",
                format::format_minor_units(expected_total, "EUR"),
                money(paid.total.as_ref())
            )
        },
    )?;
    demo.ok(format!(
        "order {} is CONFIRMED, total {}",
        paid.id,
        money(paid.total.as_ref())
    ))?;
    demo.table(
        format::order_detail(&paid)
            .iter()
            .skip(1)
            .map(|l| format!("  {l}").trim_end().to_owned())
            .collect(),
    )?;
    let payment = demo.payment(&token, &paid.payment_id).await?;
    demo.check(
        payment.status == pay::PaymentStatus::Captured as i32
            && payment.amount.as_ref().map(|m| m.units) == Some(expected_total),
        || {
            format!(
                "expected a CAPTURED payment of {}, got {} {}",
                format::format_minor_units(expected_total, "EUR"),
                format::payment_status(payment.status),
                money(payment.amount.as_ref())
            )
        },
    )?;
    demo.ok(format!(
        "payment {} CAPTURED {}",
        payment.id,
        money(payment.amount.as_ref())
    ))?;
    let after_paid = demo.stock(&admin_token, &[&mug, &tee]).await?;
    demo.expect_stock(
        &before,
        &after_paid,
        &[2, 1],
        "the stock dropped by what was sold",
    )?;

    // 6. A declined card.
    demo.step("The customer orders 3 T-shirts with a card that is declined (pm_card_declined)")?;
    let items = [(tee.as_str(), 3)];
    let declined = demo
        .place_order(&token, &mut watch, &items, "pm_card_declined")
        .await?;
    demo.check(
        declined.status == ord::OrderStatus::Cancelled as i32
            && declined.cancel_reason == ord::CancelReason::PaymentDeclined as i32,
        || {
            format!(
                "expected CANCELLED (PAYMENT_DECLINED), got {}",
                format::order_state(&declined)
            )
        },
    )?;
    demo.ok(format!(
        "order {} is {}",
        declined.id,
        format::order_state(&declined)
    ))?;
    let after_declined = demo.stock(&admin_token, &[&mug, &tee]).await?;
    demo.expect_stock(
        &after_paid,
        &after_declined,
        &[0, 0],
        "the stock is back to what it was before this order",
    )?;

    // 7. Cancelling the paid order.
    demo.step("The customer cancels the confirmed order")?;
    let request = ord::CancelOrderRequest {
        order_id: paid.id.clone(),
        reason: String::new(),
    };
    let cancelled = clients
        .call(
            Service::Order,
            clients.order().cancel_order(authed(request, &token)?),
        )
        .await?
        .order
        .unwrap_or_default();
    let seen = watch
        .wait_for(&paid.id, "CANCELLED", |o| {
            o.status == ord::OrderStatus::Cancelled as i32
        })
        .await?;
    demo.check(
        cancelled.status == ord::OrderStatus::Cancelled as i32
            && cancelled.cancel_reason == ord::CancelReason::CustomerRequested as i32,
        || {
            format!(
                "expected CANCELLED (CUSTOMER_REQUESTED), got {}",
                format::order_state(&cancelled)
            )
        },
    )?;
    demo.check(seen.status == cancelled.status, || {
        format!(
            "the watch saw {} but CancelOrder answered {}",
            format::order_state(&seen),
            format::order_state(&cancelled)
        )
    })?;
    demo.ok(format!(
        "order {} is {}",
        cancelled.id,
        format::order_state(&cancelled)
    ))?;
    let payment = demo.payment(&token, &paid.payment_id).await?;
    demo.check(
        payment.status == pay::PaymentStatus::Refunded as i32
            && payment.amount_refunded.as_ref().map(|m| m.units) == Some(expected_total),
        || {
            format!(
                "expected the payment REFUNDED in full ({}), got {} with {} refunded",
                format::format_minor_units(expected_total, "EUR"),
                format::payment_status(payment.status),
                money(payment.amount_refunded.as_ref())
            )
        },
    )?;
    demo.ok(format!(
        "payment {} REFUNDED {}",
        payment.id,
        money(payment.amount_refunded.as_ref())
    ))?;
    let after_cancel = demo.stock(&admin_token, &[&mug, &tee]).await?;
    demo.expect_stock(
        &after_declined,
        &after_cancel,
        &[-2, -1],
        "the goods are back in stock",
    )?;
    for (b, a) in before.iter().zip(&after_cancel) {
        demo.check(a.stock_on_hand == b.stock_on_hand, || {
            format!(
                "{}: {} on hand, but {} before the first order",
                a.sku, a.stock_on_hand, b.stock_on_hand
            )
        })?;
    }

    // Summary.
    let updates = watch.stop().await?;
    outln!()?;
    outln!("Summary")?;
    let request = ord::ListOrdersRequest::default();
    let orders = clients
        .call(
            Service::Order,
            clients.order().list_orders(authed(request, &token)?),
        )
        .await?
        .orders;
    demo.check(orders.len() == 2, || {
        format!(
            "expected the customer to have 2 orders, ListOrders returned {}",
            orders.len()
        )
    })?;
    demo.table(orders_lines(&orders, 2))?;
    outln!(
        "  the watch reported {updates} changes live and was stopped; {mug} and {tee} are back to {STOCK} on hand"
    )?;
    outln!("  demo passed: {STEPS} steps, every check held")
}

/// The narrator: numbers the steps and stops at the first failed check.
struct Demo<'a> {
    clients: &'a Clients,
    step: usize,
}

impl Demo<'_> {
    fn step(&mut self, title: &str) -> Result<(), CliError> {
        self.step += 1;
        outln!()?;
        outln!("[{}/{STEPS}] {title}", self.step)
    }

    fn ok(&self, what: impl std::fmt::Display) -> Result<(), CliError> {
        outln!("  ok  {what}")
    }

    fn table(&self, lines: Vec<String>) -> Result<(), CliError> {
        for line in lines {
            outln!("{line}")?;
        }
        Ok(())
    }

    fn check(&self, holds: bool, failure: impl FnOnce() -> String) -> Result<(), CliError> {
        if holds {
            Ok(())
        } else {
            Err(CliError::Demo(format!("step {}: {}", self.step, failure())))
        }
    }

    async fn authenticate(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(String, usr::User), CliError> {
        let request = usr::AuthenticateRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        let response = self
            .clients
            .call(
                Service::User,
                self.clients.user().authenticate(anonymous(request)),
            )
            .await?;
        Ok((response.access_token, response.user.unwrap_or_default()))
    }

    async fn stock(&self, token: &str, skus: &[&str]) -> Result<Vec<inv::Product>, CliError> {
        let mut products = Vec::with_capacity(skus.len());
        for sku in skus {
            products.push(get_product(self.clients, token, sku).await?);
        }
        Ok(products)
    }

    /// Checks that `after` is `before` minus `sold` (per product, in order; negative
    /// for goods coming back) with nothing left reserved, and prints the change.
    fn expect_stock(
        &self,
        before: &[inv::Product],
        after: &[inv::Product],
        sold: &[i64],
        what: &str,
    ) -> Result<(), CliError> {
        for ((b, a), sold) in before.iter().zip(after).zip(sold) {
            self.check(
                a.stock_on_hand == b.stock_on_hand - sold && a.stock_reserved == 0,
                || {
                    format!(
                        "{}: expected {} on hand and 0 reserved, got {} on hand and {} reserved",
                        a.sku,
                        b.stock_on_hand - sold,
                        a.stock_on_hand,
                        a.stock_reserved
                    )
                },
            )?;
        }
        let changes: Vec<String> = before
            .iter()
            .zip(after)
            .map(|(b, a)| format!("{} {} -> {}", a.sku, b.stock_on_hand, a.stock_on_hand))
            .collect();
        self.ok(format!("{what}: {}", changes.join(", ")))?;
        self.table(stock_table(after).lines(4))
    }

    /// Places an order and returns it in its final state, checking that the watch
    /// reported that same state.
    async fn place_order(
        &self,
        token: &str,
        watch: &mut Watch,
        items: &[(&str, i64)],
        payment_method: &str,
    ) -> Result<ord::Order, CliError> {
        let request = ord::CreateOrderRequest {
            user_id: String::new(),
            items: items
                .iter()
                .map(|(sku, quantity)| ord::CreateOrderItem {
                    sku: (*sku).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
            payment_method: payment_method.to_owned(),
            idempotency_key: Uuid::now_v7().to_string(),
        };
        let placed = self
            .clients
            .call(
                Service::Order,
                self.clients.order().create_order(authed(request, token)?),
            )
            .await?
            .order
            .unwrap_or_default();
        let seen = watch
            .wait_for(&placed.id, "CONFIRMED or CANCELLED", |o| {
                o.status != ord::OrderStatus::Pending as i32
            })
            .await?;
        // CreateOrder may answer PENDING when the saga outlives its deadline;
        // the watch then told us when it settled.
        let order = if placed.status == ord::OrderStatus::Pending as i32 {
            let request = ord::GetOrderRequest {
                order_id: placed.id.clone(),
            };
            self.clients
                .call(
                    Service::Order,
                    self.clients.order().get_order(authed(request, token)?),
                )
                .await?
                .order
                .unwrap_or_default()
        } else {
            placed
        };
        self.check(seen.status == order.status, || {
            format!(
                "the watch saw {} but the order is {}",
                format::order_state(&seen),
                format::order_state(&order)
            )
        })?;
        Ok(order)
    }

    async fn payment(&self, token: &str, payment_id: &str) -> Result<pay::Payment, CliError> {
        self.check(!payment_id.is_empty(), || {
            "the confirmed order names no payment".to_owned()
        })?;
        let request = pay::GetPaymentRequest {
            payment_id: payment_id.to_owned(),
        };
        Ok(self
            .clients
            .call(
                Service::Payment,
                self.clients.payment().get_payment(authed(request, token)?),
            )
            .await?
            .payment
            .unwrap_or_default())
    }
}

/// The background watch: a task that prints every update as it arrives and
/// forwards the orders to the story, which waits on them to check each step.
struct Watch {
    orders: mpsc::UnboundedReceiver<ord::Order>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<usize, CliError>>,
}

impl Watch {
    fn start(mut stream: Streaming<ord::WatchOrderUpdatesResponse>) -> Self {
        let (orders_tx, orders) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut view = WatchView::default();
            let mut updates = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(updates),
                    message = stream.message() => match message {
                        Ok(Some(update)) => {
                            if let Some(line) = view.line(&update) {
                                updates += 1;
                                outln!("    [watch] {line}")?;
                            }
                            if let Some(order) = update.order {
                                // The story may have stopped listening; that is fine.
                                let _ = orders_tx.send(order);
                            }
                        }
                        Ok(None) => return Ok(updates),
                        Err(status) => return Err(CliError::rpc(status)),
                    },
                }
            }
            // Dropping `stream` here cancels the call on the server.
        });
        Self {
            orders,
            stop: Some(stop),
            task,
        }
    }

    /// Waits until the watch reports order `id` in a state for which `wanted`
    /// holds, and returns that state.
    async fn wait_for(
        &mut self,
        id: &str,
        what: &str,
        wanted: impl Fn(&ord::Order) -> bool,
    ) -> Result<ord::Order, CliError> {
        let deadline = Instant::now() + WATCH_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.orders.recv()).await {
                Ok(Some(order)) if order.id == id && wanted(&order) => return Ok(order),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(CliError::Demo(format!(
                        "the watch stream ended before order {id} was reported {what}"
                    )));
                }
                Err(_) => {
                    return Err(CliError::Demo(format!(
                        "the watch did not report order {id} as {what} within {} s",
                        WATCH_WAIT.as_secs()
                    )));
                }
            }
        }
    }

    /// Stops the stream and returns how many changes it printed.
    async fn stop(mut self) -> Result<usize, CliError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(CliError::Demo(format!("the watch task failed: {e}"))),
        }
    }
}
