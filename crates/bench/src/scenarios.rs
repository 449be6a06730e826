//! The scenarios: what one call is, and which processes it costs CPU in.

use std::{str::FromStr, sync::Arc};

use emporium_proto::{
    inventory::v1::{self as inv, inventory_service_client::InventoryServiceClient},
    order::v1::{self as ord, order_service_client::OrderServiceClient},
    user::v1::{self as usr, user_service_client::UserServiceClient},
};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    load::{Call, Failure},
    world::{World, bearer},
};

/// A scenario of the standard set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// grpc.health.v1 Check on a bare tonic server: the ceiling.
    Echo,
    /// The same Check through a service's full server stack.
    Health,
    /// UserService.GetUser of the caller, with a customer token.
    GetUser,
    /// InventoryService.ListProducts, ten a page.
    ListProducts,
    /// OrderService.CreateOrder: the whole saga over four services.
    CreateOrder,
    /// GetProduct as REST through the edge (`GET /v1/products/{id}`).
    EdgeGet,
    /// The same GetProduct over gRPC, straight to inventory.
    GrpcGet,
    /// 60% ListProducts, 30% GetUser, 10% CreateOrder.
    Mixed,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Self; 8] = [
        Self::Echo,
        Self::Health,
        Self::GetUser,
        Self::ListProducts,
        Self::CreateOrder,
        Self::EdgeGet,
        Self::GrpcGet,
        Self::Mixed,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Health => "health",
            Self::GetUser => "get-user",
            Self::ListProducts => "list-products",
            Self::CreateOrder => "create-order",
            Self::EdgeGet => "edge-get",
            Self::GrpcGet => "grpc-get",
            Self::Mixed => "mixed",
        }
    }

    /// The processes whose CPU a call of this scenario costs.
    pub fn processes(self) -> &'static [&'static str] {
        match self {
            Self::Echo => &["echo"],
            Self::Health | Self::GetUser => &["user"],
            Self::ListProducts | Self::GrpcGet => &["inventory"],
            Self::EdgeGet => &["edge", "inventory"],
            Self::CreateOrder | Self::Mixed => &["user", "inventory", "payment", "order"],
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?} (one of: {})", names.join(", "))
            })
    }
}

fn code(s: &tonic::Status) -> Failure {
    use tonic_types::StatusExt as _;
    Failure {
        kind: format!("{:?}", s.code()),
        retry_after: s.get_details_retry_info().and_then(|r| r.retry_delay),
    }
}

/// The call of `scenario` against `world`, over `connections` connections
/// per process (callers share them round robin). `run` makes idempotency
/// keys unique across runs.
pub async fn call(scenario: Scenario, world: &World, connections: usize, run: u64) -> Call {
    let connections = connections.max(1);
    let channels = |name: &'static str| async move {
        let mut out = Vec::new();
        for _ in 0..connections {
            out.push(world.channel(name).await);
        }
        out
    };
    let customers: Arc<Vec<(String, String)>> = Arc::new(world.customers.clone());
    match scenario {
        Scenario::Echo | Scenario::Health => {
            let target = if scenario == Scenario::Echo {
                "echo"
            } else {
                "user"
            };
            let ch = Arc::new(channels(target).await);
            Arc::new(move |caller, _| {
                let mut health = HealthClient::new(ch[caller % ch.len()].clone());
                Box::pin(async move {
                    health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map(drop)
                        .map_err(|s| code(&s))
                })
            })
        }
        Scenario::GetUser => get_user(Arc::new(channels("user").await), customers),
        Scenario::ListProducts => list_products(Arc::new(channels("inventory").await), customers),
        Scenario::CreateOrder => create_order(
            Arc::new(channels("order").await),
            customers,
            world.sku.clone(),
            run,
        ),
        Scenario::GrpcGet => {
            let ch = Arc::new(channels("inventory").await);
            let product = world.product_id.clone();
            Arc::new(move |caller, _| {
                let mut client = InventoryServiceClient::new(ch[caller % ch.len()].clone());
                let token = customers[caller % customers.len()].1.clone();
                let product_id = product.clone();
                Box::pin(async move {
                    client
                        .get_product(bearer(
                            inv::GetProductRequest {
                                product: Some(inv::get_product_request::Product::ProductId(
                                    product_id,
                                )),
                            },
                            &token,
                        ))
                        .await
                        .map(drop)
                        .map_err(|s| code(&s))
                })
            })
        }
        Scenario::EdgeGet => edge_get(world, connections, customers).await,
        Scenario::Mixed => {
            let list = list_products(Arc::new(channels("inventory").await), customers.clone());
            let get = get_user(Arc::new(channels("user").await), customers.clone());
            let order = create_order(
                Arc::new(channels("order").await),
                customers,
                world.sku.clone(),
                run,
            );
            Arc::new(move |caller, seq| match seq % 10 {
                0 => order(caller, seq),
                1..=3 => get(caller, seq),
                _ => list(caller, seq),
            })
        }
    }
}

fn get_user(ch: Arc<Vec<Channel>>, customers: Arc<Vec<(String, String)>>) -> Call {
    Arc::new(move |caller, _| {
        let mut client = UserServiceClient::new(ch[caller % ch.len()].clone());
        let (user_id, token) = customers[caller % customers.len()].clone();
        Box::pin(async move {
            client
                .get_user(bearer(usr::GetUserRequest { user_id }, &token))
                .await
                .map(drop)
                .map_err(|s| code(&s))
        })
    })
}

fn list_products(ch: Arc<Vec<Channel>>, customers: Arc<Vec<(String, String)>>) -> Call {
    Arc::new(move |caller, _| {
        let mut client = InventoryServiceClient::new(ch[caller % ch.len()].clone());
        let token = customers[caller % customers.len()].1.clone();
        Box::pin(async move {
            client
                .list_products(bearer(
                    inv::ListProductsRequest {
                        page_size: 10,
                        page_token: String::new(),
                    },
                    &token,
                ))
                .await
                .map(drop)
                .map_err(|s| code(&s))
        })
    })
}

fn create_order(
    ch: Arc<Vec<Channel>>,
    customers: Arc<Vec<(String, String)>>,
    sku: String,
    run: u64,
) -> Call {
    Arc::new(move |caller, seq| {
        let mut client = OrderServiceClient::new(ch[caller % ch.len()].clone());
        let token = customers[caller % customers.len()].1.clone();
        let request = ord::CreateOrderRequest {
            user_id: String::new(),
            items: vec![ord::CreateOrderItem {
                sku: sku.clone(),
                quantity: 1,
            }],
            payment_method: "pm_card_ok".into(),
            idempotency_key: format!("bench-{run}-{seq}"),
        };
        Box::pin(async move {
            let order = client
                .create_order(bearer(request, &token))
                .await
                .map_err(|s| code(&s))?
                .into_inner()
                .order
                .ok_or("no order")?;
            let status = ord::OrderStatus::try_from(order.status).unwrap_or_default();
            if status == ord::OrderStatus::Confirmed {
                Ok(())
            } else {
                Err(format!("order {}", status.as_str_name()).into())
            }
        })
    })
}

type Http1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// REST through the edge over keep-alive HTTP/1.1 connections (one request
/// at a time on each, as HTTP/1.1 is): `connections` per 8 callers at least.
async fn edge_get(
    world: &World,
    connections: usize,
    customers: Arc<Vec<(String, String)>>,
) -> Call {
    let addr = world.service("edge").addr;
    let mut pool = Vec::new();
    for _ in 0..connections.max(1) {
        pool.push(Arc::new(Mutex::new(None::<Http1>)));
    }
    let pool = Arc::new(pool);
    let path = format!("/v1/products/{}", world.product_id);
    Arc::new(move |caller, _| {
        let slot = pool[caller % pool.len()].clone();
        let token = customers[caller % customers.len()].1.clone();
        let path = path.clone();
        Box::pin(async move {
            let mut conn = slot.lock().await;
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                *conn = Some(connect_http1(addr).await?);
            }
            let sender = conn.as_mut().expect("connected");
            sender.ready().await.map_err(|e| format!("http: {e}"))?;
            let req = http::Request::get(&path)
                .header("host", addr.to_string())
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("http: {e}"))?;
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| format!("http: {e}"))?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()).into())
            }
        })
    })
}

async fn connect_http1(addr: std::net::SocketAddr) -> Result<Http1, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}
