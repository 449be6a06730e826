//! One function per subcommand: build the request, call the service, print the
//! answer for people.

use std::collections::HashMap;

use emporium_common::rpc::{Code, Streaming};
use emporium_proto::{inventory::v1 as inv, order::v1 as ord, user::v1 as usr};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    certs,
    cli::{
        AdjustStockArgs, Cli, Command, CreateProductArgs, LoginArgs, OrderCommand, PlaceOrderArgs,
        ProductsCommand, SignupArgs, StockCommand,
    },
    demo,
    error::CliError,
    format::{self, Align, Table},
    session::{self, Clients, Service, anonymous, authed, streaming_authed},
};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let clients = Clients::new(&cli.global)?;
    let token = || session::resolve_token(cli.global.token.as_deref());
    let result = match cli.command {
        // These bring their own credentials (or need none).
        Command::Signup(args) => return signup(&clients, args).await,
        Command::Login(args) => return login(&clients, args, cli.global.token.is_some()).await,
        Command::Logout => return logout(),
        Command::Demo(args) => return demo::run(&clients, args).await,
        Command::DevCerts(args) => return certs::write_dev_certs(&args),
        // These act as the logged-in user.
        Command::Whoami => whoami(&clients, &token()?).await,
        Command::Products(c) => products(&clients, &token()?, c).await,
        Command::Stock(StockCommand::Adjust(args)) => adjust_stock(&clients, &token()?, args).await,
        Command::Order(c) => order(&clients, &token()?, c).await,
    };
    result.map_err(|e| e.with_hint(Code::Unauthenticated, "log in again with `emporium login`"))
}

async fn signup(clients: &Clients, args: SignupArgs) -> Result<(), CliError> {
    let request = usr::CreateUserRequest {
        email: args.email,
        name: args.name,
        password: args.password,
    };
    let response = clients
        .call(
            Service::User,
            clients.user().create_user(anonymous(request)),
        )
        .await?;
    let user = response.user.unwrap_or_default();
    outln!(
        "signed up {} <{}> as {} (id {})",
        user.name,
        user.email,
        format::roles(&user.roles),
        user.id
    )?;
    outln!("next: emporium login --email {}", user.email)
}

async fn login(clients: &Clients, args: LoginArgs, token_overridden: bool) -> Result<(), CliError> {
    let path = session::token_path().ok_or_else(|| {
        CliError::Usage("cannot tell where to keep the token: set XDG_CONFIG_HOME or HOME".into())
    })?;
    let request = usr::AuthenticateRequest {
        email: args.email,
        password: args.password,
    };
    let response = clients
        .call(
            Service::User,
            clients.user().authenticate(anonymous(request)),
        )
        .await?;
    session::write_token(&path, &response.access_token)?;
    let user = response.user.unwrap_or_default();
    outln!(
        "logged in as {} <{}> ({})",
        user.name,
        user.email,
        format::roles(&user.roles)
    )?;
    let expiry = response.expire_time.map_or_else(
        || "unknown".to_owned(),
        |t| format::utc_date_time(t.seconds),
    );
    outln!("token saved to {} (valid until {expiry})", path.display())?;
    if token_overridden {
        outln!("note: --token or EMPORIUM_TOKEN is set and is used instead of the saved token")?;
    }
    Ok(())
}

fn logout() -> Result<(), CliError> {
    let Some(path) = session::token_path() else {
        return outln!("not logged in");
    };
    match std::fs::remove_file(&path) {
        Ok(()) => outln!("logged out (removed {})", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => outln!("not logged in"),
        Err(source) => Err(CliError::Io {
            what: format!("removing {}", path.display()),
            source,
        }),
    }
}

async fn whoami(clients: &Clients, token: &str) -> Result<(), CliError> {
    let claims = session::peek_claims(token)?;
    let request = usr::GetUserRequest {
        user_id: claims.user_id,
    };
    let response = clients
        .call(
            Service::User,
            clients.user().get_user(authed(request, token)?),
        )
        .await?;
    let user = response.user.unwrap_or_default();
    outln!("{} <{}>", user.name, user.email)?;
    outln!("  id      {}", user.id)?;
    outln!("  roles   {}", format::roles(&user.roles))?;
    outln!("  active  {}", if user.active { "yes" } else { "no" })?;
    if let Some(t) = user.create_time {
        outln!("  since   {}", format::utc_date_time(t.seconds))?;
    }
    if let Some(exp) = claims.expires_at {
        outln!("  token   valid until {}", format::utc_date_time(exp))?;
    }
    Ok(())
}

async fn products(
    clients: &Clients,
    token: &str,
    command: ProductsCommand,
) -> Result<(), CliError> {
    match command {
        ProductsCommand::List => {
            let mut products = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = inv::ListProductsRequest {
                    page_size: 500,
                    page_token,
                };
                let page = clients
                    .call(
                        Service::Inventory,
                        clients.inventory().list_products(authed(request, token)?),
                    )
                    .await?;
                products.extend(page.products);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if products.is_empty() {
                return outln!(
                    "the catalogue is empty (admins add products with `emporium products create`)"
                );
            }
            for line in format::products_table(&products).lines(0) {
                outln!("{line}")?;
            }
            Ok(())
        }
        ProductsCommand::Get { sku } => {
            let product = get_product(clients, token, &sku).await?;
            print_product(&product)
        }
        ProductsCommand::Create(args) => create_product(clients, token, args).await,
    }
}

/// Reads one product by SKU.
pub async fn get_product(
    clients: &Clients,
    token: &str,
    sku: &str,
) -> Result<inv::Product, CliError> {
    let request = inv::GetProductRequest {
        product: Some(inv::get_product_request::Product::Sku(sku.to_owned())),
    };
    let response = clients
        .call(
            Service::Inventory,
            clients.inventory().get_product(authed(request, token)?),
        )
        .await?;
    Ok(response.product.unwrap_or_default())
}

fn print_product(product: &inv::Product) -> Result<(), CliError> {
    for line in format::products_table(std::slice::from_ref(product)).lines(0) {
        outln!("{line}")?;
    }
    outln!("id {}", product.id)?;
    if !product.description.is_empty() {
        outln!("{}", product.description)?;
    }
    Ok(())
}

async fn create_product(
    clients: &Clients,
    token: &str,
    args: CreateProductArgs,
) -> Result<(), CliError> {
    let request = inv::CreateProductRequest {
        sku: args.sku,
        name: args.name,
        description: args.description.unwrap_or_default(),
        unit_price: Some(emporium_proto::common::v1::Money {
            currency_code: args.currency,
            units: args.price,
        }),
    };
    let response = clients
        .call(
            Service::Inventory,
            clients.inventory().create_product(authed(request, token)?),
        )
        .await?;
    let product = response.product.unwrap_or_default();
    outln!("created product {}", product.sku)?;
    print_product(&product)?;
    outln!(
        "next: emporium stock adjust --sku {} --delta 10 --reason \"goods received\"",
        product.sku
    )
}

async fn adjust_stock(
    clients: &Clients,
    token: &str,
    args: AdjustStockArgs,
) -> Result<(), CliError> {
    let key = args.key.unwrap_or_else(|| Uuid::now_v7().to_string());
    let request = inv::AdjustStockRequest {
        product: Some(inv::adjust_stock_request::Product::Sku(args.sku)),
        delta: args.delta,
        reason: args.reason,
        idempotency_key: key.clone(),
    };
    let response = clients
        .call(
            Service::Inventory,
            clients.inventory().adjust_stock(authed(request, token)?),
        )
        .await?;
    let p = response.product.unwrap_or_default();
    outln!(
        "{}: {:+} -> on hand {}, reserved {}, available {}",
        p.sku,
        args.delta,
        p.stock_on_hand,
        p.stock_reserved,
        p.stock_available
    )?;
    outln!("idempotency key {key} (repeat with --key {key} to retry safely)")
}

async fn order(clients: &Clients, token: &str, command: OrderCommand) -> Result<(), CliError> {
    match command {
        OrderCommand::Place(args) => place_order(clients, token, args).await,
        OrderCommand::Get { id } => {
            let request = ord::GetOrderRequest { order_id: id };
            let response = clients
                .call(
                    Service::Order,
                    clients.order().get_order(authed(request, token)?),
                )
                .await?;
            print_order(&response.order.unwrap_or_default())
        }
        OrderCommand::List { limit } => list_orders(clients, token, limit).await,
        OrderCommand::Cancel { id, reason } => {
            let request = ord::CancelOrderRequest {
                order_id: id,
                reason: reason.unwrap_or_default(),
            };
            let response = clients
                .call(
                    Service::Order,
                    clients.order().cancel_order(authed(request, token)?),
                )
                .await?;
            print_order(&response.order.unwrap_or_default())
        }
        OrderCommand::Watch { id } => watch(clients, token, id).await,
    }
}

/// Prints an order in full.
pub fn print_order(order: &ord::Order) -> Result<(), CliError> {
    for line in format::order_detail(order) {
        outln!("{line}")?;
    }
    Ok(())
}

async fn place_order(clients: &Clients, token: &str, args: PlaceOrderArgs) -> Result<(), CliError> {
    let key = args.key.unwrap_or_else(|| Uuid::now_v7().to_string());
    let request = ord::CreateOrderRequest {
        user_id: String::new(),
        items: args
            .items
            .into_iter()
            .map(|i| ord::CreateOrderItem {
                sku: i.sku,
                quantity: i.quantity,
            })
            .collect(),
        payment_method: args.payment_method,
        idempotency_key: key.clone(),
    };
    // The root of the order's trace: the services continue it.
    let span = tracing::info_span!(target: "emporium::cli", "emporium order place");
    let trace_id = emporium_common::telemetry::trace::trace_id(&span);
    let response = clients
        .call(
            Service::Order,
            clients.order().create_order(authed(request, token)?),
        )
        .instrument(span)
        .await?;
    let order = response.order.unwrap_or_default();
    print_order(&order)?;
    outln!()?;
    outln!("idempotency key {key} (repeat with --key {key} to retry safely)")?;
    if let Some(trace_id) = trace_id {
        outln!("trace id {trace_id} (the services' log lines and the trace UI know it)")?;
    }
    if order.status == ord::OrderStatus::Pending as i32 {
        outln!(
            "the order is still being processed; follow it with `emporium order watch {}`",
            order.id
        )?;
    }
    Ok(())
}

async fn list_orders(clients: &Clients, token: &str, limit: u32) -> Result<(), CliError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut orders = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let request = ord::ListOrdersRequest {
            page_size: i32::try_from(limit - orders.len()).unwrap_or(500).min(500),
            page_token,
            ..Default::default()
        };
        let page = clients
            .call(
                Service::Order,
                clients.order().list_orders(authed(request, token)?),
            )
            .await?;
        orders.extend(page.orders);
        if page.next_page_token.is_empty() {
            break false;
        }
        if orders.len() >= limit {
            break true;
        }
        page_token = page.next_page_token;
    };
    orders.truncate(limit);
    if orders.is_empty() {
        return outln!("no orders yet");
    }
    for line in format::orders_table(&orders).lines(0) {
        outln!("{line}")?;
    }
    if more {
        outln!("(more orders exist: raise --limit)")?;
    }
    Ok(())
}

/// Remembers the last state of each watched order, to say what changed.
#[derive(Debug, Default)]
pub struct WatchView {
    last: HashMap<String, ord::Order>,
}

impl WatchView {
    /// The line to print for `update`, or `None` when nothing a person can see
    /// changed (the order service also reports the saga's inner steps).
    pub fn line(&mut self, update: &ord::WatchOrderUpdatesResponse) -> Option<String> {
        let order = update.order.as_ref()?;
        let previous = if update.initial_state {
            None
        } else {
            self.last.get(&order.id)
        };
        let change = format::describe_change(previous, order);
        self.last.insert(order.id.clone(), order.clone());
        change.map(|change| format::watch_line(update, &change))
    }
}

/// Opens a WatchOrderUpdates stream: one order, or all of the caller's.
pub async fn open_watch(
    clients: &Clients,
    token: &str,
    order_id: Option<String>,
) -> Result<Streaming<ord::WatchOrderUpdatesResponse>, CliError> {
    use ord::watch_order_updates_request::Target;
    let target = match order_id {
        Some(id) => Target::OrderId(id),
        None => Target::UserOrders(ord::UserOrders::default()),
    };
    let request = ord::WatchOrderUpdatesRequest {
        target: Some(target),
    };
    clients
        .call(
            Service::Order,
            clients
                .order()
                .watch_order_updates(streaming_authed(request, token)?),
        )
        .await
}

async fn watch(clients: &Clients, token: &str, order_id: Option<String>) -> Result<(), CliError> {
    let what = order_id
        .as_ref()
        .map_or_else(|| "your orders".to_owned(), |id| format!("order {id}"));
    let mut stream = open_watch(clients, token, order_id).await?;
    outln!("watching {what}; times are UTC; Ctrl-C stops")?;
    let mut view = WatchView::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return outln!("stopped"),
            message = stream.message() => match message {
                Ok(Some(update)) => {
                    if let Some(line) = view.line(&update) {
                        outln!("{line}")?;
                    }
                }
                Ok(None) => return outln!("the stream ended"),
                Err(status) => return Err(CliError::rpc(status)),
            },
        }
    }
}

/// Orders of the caller as a table (used by the demo's summary).
pub fn orders_lines(orders: &[ord::Order], indent: usize) -> Vec<String> {
    format::orders_table(orders).lines(indent)
}

/// A one-column-per-SKU stock view: `SKU  ON HAND  RESERVED  AVAILABLE`.
pub fn stock_table(products: &[inv::Product]) -> Table {
    let mut table = Table::new(&[
        ("SKU", Align::Left),
        ("ON HAND", Align::Right),
        ("RESERVED", Align::Right),
        ("AVAILABLE", Align::Right),
    ]);
    for p in products {
        table.row(vec![
            p.sku.clone(),
            p.stock_on_hand.to_string(),
            p.stock_reserved.to_string(),
            p.stock_available.to_string(),
        ]);
    }
    table
}
