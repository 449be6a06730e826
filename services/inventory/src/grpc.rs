//! Transport: the generated `InventoryService` trait over [`Inventory`]. Every RPC
//! runs the same four steps: proto → domain (collecting field violations), call
//! the domain, domain → proto, and `?` through `From<Error> for Status`. No SQL,
//! no rules.

use std::collections::HashMap;

use emporium_common::{
    auth::caller,
    paging::{self, PageSize},
    rpc::{Request, Response, RpcResult, Status, Streaming, async_trait},
    status::{Violations, to_rpc_status},
    time::timestamp_from_micros,
};
use emporium_proto::{common::v1 as pb_common, inventory::v1 as pb};

use crate::{
    domain::{
        self, Adjustment, Creation, Description, FailedRow, IdempotencyKey, ImportBuilder,
        ImportSummary, MAX_RESERVATION_LINES, Money, NewProduct, OrderId, Product, ProductDetails,
        ProductId, ProductName, ProductRef, Quantity, RawRow, Reason, ReceivedUnits, Reservation,
        ReservationLine, ReservationStatus, ReserveItem, RowError, Sku, StockDelta, StockRow,
    },
    error::Error,
    service::Inventory,
};

const LISTING: &str = "products.v1";

/// The gRPC face of the inventory service.
#[derive(Debug, Clone)]
pub struct InventoryApi {
    inventory: Inventory,
}

impl InventoryApi {
    /// Wraps the domain service.
    pub fn new(inventory: Inventory) -> Self {
        Self { inventory }
    }

    /// The generated server, with message limits from configuration.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::inventory_service_server::InventoryServiceServer<Self> {
        pb::inventory_service_server::InventoryServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

fn order_id(raw: &str) -> Result<OrderId, Error> {
    OrderId::parse(raw).map_err(|e| Error::InvalidArgument(Violations::one("order_id", e)))
}

/// The `product` oneof of any request, borrowed.
enum Named<'a> {
    Id(&'a str),
    Sku(&'a str),
}

macro_rules! named_from_oneof {
    ($($module:ident),*) => {$(
        impl<'a> From<&'a pb::$module::Product> for Named<'a> {
            fn from(p: &'a pb::$module::Product) -> Self {
                match p {
                    pb::$module::Product::ProductId(id) => Named::Id(id),
                    pb::$module::Product::Sku(sku) => Named::Sku(sku),
                }
            }
        }
    )*};
}

named_from_oneof!(
    get_product_request,
    adjust_stock_request,
    reserve_stock_item
);

/// `prefix.field`, or `field` at the top level.
fn path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn product_ref(v: &mut Violations, prefix: &str, named: Option<Named<'_>>) -> Option<ProductRef> {
    match named {
        None => {
            v.add(path(prefix, "product"), "product_id or sku is required");
            None
        }
        Some(Named::Id(id)) => v
            .check(&path(prefix, "product_id"), ProductId::parse(id))
            .map(ProductRef::Id),
        Some(Named::Sku(sku)) => v
            .check(&path(prefix, "sku"), Sku::parse(sku))
            .map(ProductRef::Sku),
    }
}

/// A unit price; `field` is where it sits in the request.
fn price(v: &mut Violations, field: &str, m: Option<&pb_common::Money>) -> Option<Money> {
    Money::from_proto(v, field, m, domain::price_units)
}

impl TryFrom<pb::CreateProductRequest> for NewProduct {
    type Error = Violations;
    fn try_from(r: pb::CreateProductRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let sku = v.check("sku", Sku::parse(&r.sku));
        let name = v.check("name", ProductName::parse(&r.name));
        let description = v.check("description", Description::parse(&r.description));
        let unit_price = price(&mut v, "unit_price", r.unit_price.as_ref());
        match (sku, name, description, unit_price) {
            (Some(sku), Some(name), Some(description), Some(unit_price)) => Ok(NewProduct {
                sku,
                details: ProductDetails {
                    name,
                    description,
                    unit_price,
                },
            }),
            _ => Err(v),
        }
    }
}

impl TryFrom<pb::AdjustStockRequest> for Adjustment {
    type Error = Violations;
    fn try_from(r: pb::AdjustStockRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let product = product_ref(&mut v, "", r.product.as_ref().map(Named::from));
        let delta = v.check("delta", StockDelta::parse(r.delta));
        let reason = v.check("reason", Reason::parse(&r.reason));
        let key = v.check("idempotency_key", IdempotencyKey::parse(&r.idempotency_key));
        match (product, delta, reason, key) {
            (Some(product), Some(delta), Some(reason), Some(key)) => Ok(Adjustment {
                product,
                delta,
                reason,
                key,
            }),
            _ => Err(v),
        }
    }
}

/// A ReserveStock request in domain terms.
struct ReserveRequest {
    order_id: OrderId,
    items: Vec<ReserveItem>,
}

impl TryFrom<pb::ReserveStockRequest> for ReserveRequest {
    type Error = Violations;
    fn try_from(r: pb::ReserveStockRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let order_id = v.check("order_id", OrderId::parse(&r.order_id));
        let mut items = Vec::with_capacity(r.items.len());
        if r.items.is_empty() {
            v.add("items", "must contain at least one item");
        } else if r.items.len() > MAX_RESERVATION_LINES {
            v.add("items", "must contain at most 100 items");
        } else {
            let mut seen: HashMap<ProductRef, usize> = HashMap::new();
            for (i, item) in r.items.iter().enumerate() {
                let prefix = format!("items[{i}]");
                let product = product_ref(&mut v, &prefix, item.product.as_ref().map(Named::from));
                let quantity = v.check(&path(&prefix, "quantity"), Quantity::parse(item.quantity));
                if let Some(p) = &product {
                    if let Some(first) = seen.get(p) {
                        let field = match p {
                            ProductRef::Id(_) => "product_id",
                            ProductRef::Sku(_) => "sku",
                        };
                        v.add(path(&prefix, field), format!("duplicates items[{first}]"));
                    } else {
                        seen.insert(p.clone(), i);
                    }
                }
                if let (Some(product), Some(quantity)) = (product, quantity) {
                    items.push(ReserveItem { product, quantity });
                }
            }
        }
        v.finish()?;
        Ok(ReserveRequest {
            order_id: order_id.expect("no violations means the order id parsed"),
            items,
        })
    }
}

/// An import message split into its key and its row as sent.
fn raw_row(r: pb::ImportStockRequest) -> (String, RawRow) {
    (
        r.idempotency_key,
        RawRow {
            sku: r.sku,
            quantity: r.quantity,
            name: r.name,
            description: r.description,
            unit_price: r.unit_price.map(|m| (m.currency_code, m.units)),
        },
    )
}

impl TryFrom<&RawRow> for StockRow {
    type Error = Violations;
    fn try_from(r: &RawRow) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let sku = v.check("sku", Sku::parse(&r.sku));
        let quantity = v.check("quantity", ReceivedUnits::parse(r.quantity));
        let (Some(sku), Some(quantity)) = (sku, quantity) else {
            return Err(v);
        };
        // Creation fields matter only when the SKU turns out to be new, so their
        // problems are kept with the row rather than failing it now.
        let mut c = Violations::new();
        let name = r
            .name
            .as_deref()
            .map(|n| c.check("name", ProductName::parse(n)));
        let description = r
            .description
            .as_deref()
            .map(|d| c.check("description", Description::parse(d)));
        let unit_price = r.unit_price.as_ref().map(|(code, units)| {
            let m = pb_common::Money {
                currency_code: code.clone(),
                units: *units,
            };
            price(&mut c, "unit_price", Some(&m))
        });
        let creation = if !c.is_empty() {
            Creation::Invalid(c)
        } else {
            match (name.flatten(), unit_price.flatten()) {
                (Some(name), Some(unit_price)) => Creation::Ready(ProductDetails {
                    name,
                    description: description.flatten().unwrap_or_default(),
                    unit_price,
                }),
                _ => Creation::Incomplete,
            }
        };
        Ok(StockRow {
            sku,
            quantity,
            creation,
        })
    }
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        pb::Product {
            id: p.id.to_string(),
            stock_available: p.available(),
            sku: p.sku.to_string(),
            name: p.name,
            description: p.description,
            unit_price: Some(p.unit_price.to_proto()),
            stock_on_hand: p.on_hand,
            stock_reserved: p.reserved,
            create_time: Some(timestamp_from_micros(p.created_at)),
            update_time: Some(timestamp_from_micros(p.updated_at)),
        }
    }
}

impl From<ReservationLine> for pb::ReservationLine {
    fn from(l: ReservationLine) -> Self {
        pb::ReservationLine {
            line_total: Some(l.total().to_proto()),
            product_id: l.product_id.to_string(),
            sku: l.sku.to_string(),
            name: l.name,
            quantity: l.quantity.get(),
            unit_price: Some(l.unit_price.to_proto()),
        }
    }
}

impl From<Reservation> for pb::Reservation {
    fn from(r: Reservation) -> Self {
        let status = match r.status {
            ReservationStatus::Reserved => pb::ReservationStatus::Reserved,
            ReservationStatus::Committed => pb::ReservationStatus::Committed,
            ReservationStatus::Released => pb::ReservationStatus::Released,
        };
        pb::Reservation {
            order_id: r.order_id.to_string(),
            status: status as i32,
            lines: r.lines.into_iter().map(Into::into).collect(),
            total: Some(r.total.to_proto()),
            create_time: Some(timestamp_from_micros(r.created_at)),
            update_time: Some(timestamp_from_micros(r.updated_at)),
        }
    }
}

impl From<FailedRow> for pb::ImportStockFailedRow {
    fn from(f: FailedRow) -> Self {
        let error = match &f.error {
            RowError::Invalid(list) => Error::InvalidArgument(RowError::violations(list)),
            RowError::NoSuchProduct => Error::NotFound(
                "no product has this sku, and the row lacks the name or unit_price to create one",
            ),
        };
        pb::ImportStockFailedRow {
            row_number: f.row_number,
            sku: f.sku,
            error: Some(to_rpc_status(&Status::from(error))),
        }
    }
}

impl From<ImportSummary> for pb::ImportStockResponse {
    fn from(s: ImportSummary) -> Self {
        pb::ImportStockResponse {
            rows_received: s.rows_received,
            rows_applied: s.rows_applied,
            products_created: s.products_created,
            units_added: s.units_added,
            failed_rows: s.failed_rows.into_iter().map(Into::into).collect(),
        }
    }
}

#[async_trait]
impl pb::inventory_service_server::InventoryService for InventoryApi {
    async fn create_product(
        &self,
        req: Request<pb::CreateProductRequest>,
    ) -> RpcResult<pb::CreateProductResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        self.inventory.ensure_may_manage(&caller)?;
        let new = NewProduct::try_from(req.into_inner()).map_err(Error::InvalidArgument)?;
        let product = self.inventory.create(&caller, new).await?;
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product.into()),
        }))
    }

    async fn get_product(
        &self,
        req: Request<pb::GetProductRequest>,
    ) -> RpcResult<pb::GetProductResponse> {
        caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let which = product_ref(&mut v, "", r.product.as_ref().map(Named::from));
        v.finish().map_err(Error::InvalidArgument)?;
        let which = which.expect("no violations means the product parsed");
        let product = self.inventory.get(&which).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product.into()),
        }))
    }

    async fn list_products(
        &self,
        req: Request<pb::ListProductsRequest>,
    ) -> RpcResult<pb::ListProductsResponse> {
        caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        // The cursor is the SKU of the last product served.
        let after = v.check(
            "page_token",
            paging::decode_token(LISTING, &r.page_token).and_then(|c| {
                c.map(|c| Sku::parse(&c).map_err(|_| paging::FOREIGN_TOKEN))
                    .transpose()
            }),
        );
        let (size, after) = v
            .finish_with(size.zip(after))
            .map_err(Error::InvalidArgument)?;
        let page = self.inventory.list(after, size).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page
                .next
                .map(|sku| paging::encode_token(LISTING, sku.as_str()))
                .unwrap_or_default(),
        }))
    }

    async fn adjust_stock(
        &self,
        req: Request<pb::AdjustStockRequest>,
    ) -> RpcResult<pb::AdjustStockResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        self.inventory.ensure_may_manage(&caller)?;
        let adjustment = Adjustment::try_from(req.into_inner()).map_err(Error::InvalidArgument)?;
        let product = self.inventory.adjust(&caller, adjustment).await?;
        Ok(Response::new(pb::AdjustStockResponse {
            product: Some(product.into()),
        }))
    }

    async fn import_stock(
        &self,
        req: Request<Streaming<pb::ImportStockRequest>>,
    ) -> RpcResult<pb::ImportStockResponse> {
        let caller = caller(&req)?;
        // Refuse before reading: a customer must not make us buffer 100,000 rows.
        self.inventory.ensure_may_import(&caller)?;
        let mut inbound = req.into_inner();
        let mut import = ImportBuilder::new();
        // A broken stream or a passed deadline ends here with its status, before
        // anything is applied: the key stays unused.
        while let Some(message) = inbound.message().await? {
            let (key, raw) = raw_row(message);
            let checked = StockRow::try_from(&raw);
            import
                .push(&key, &raw, checked)
                .map_err(Error::InvalidArgument)?;
        }
        let import = import.finish().map_err(Error::InvalidArgument)?;
        let summary = self.inventory.import(&caller, import).await?;
        Ok(Response::new(summary.into()))
    }

    async fn reserve_stock(
        &self,
        req: Request<pb::ReserveStockRequest>,
    ) -> RpcResult<pb::ReserveStockResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        caller
            .ensure_order_service()
            .map_err(Error::PermissionDenied)?;
        let r = ReserveRequest::try_from(req.into_inner()).map_err(Error::InvalidArgument)?;
        let reservation = self.inventory.reserve(r.order_id, r.items).await?;
        Ok(Response::new(pb::ReserveStockResponse {
            reservation: Some(reservation.into()),
        }))
    }

    async fn commit_reservation(
        &self,
        req: Request<pb::CommitReservationRequest>,
    ) -> RpcResult<pb::CommitReservationResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        caller
            .ensure_order_service()
            .map_err(Error::PermissionDenied)?;
        let order = order_id(&req.get_ref().order_id)?;
        let reservation = self.inventory.commit(order).await?;
        Ok(Response::new(pb::CommitReservationResponse {
            reservation: Some(reservation.into()),
        }))
    }

    async fn release_reservation(
        &self,
        req: Request<pb::ReleaseReservationRequest>,
    ) -> RpcResult<pb::ReleaseReservationResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        caller
            .ensure_order_service()
            .map_err(Error::PermissionDenied)?;
        let order = order_id(&req.get_ref().order_id)?;
        let reservation = self.inventory.release(order).await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            reservation: Some(reservation.into()),
        }))
    }
}
