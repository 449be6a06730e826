//! The inventory service's errors and the one place they become gRPC statuses.

use emporium_common::{
    rpc::{Code, ErrorDetails, Status, StatusExt as _},
    status as common_error,
    status::{InternalError, PreconditionViolation, Violations},
};

use crate::domain::{OrderId, ProductRef, Shortage, Sku};

/// Everything that can go wrong in the inventory service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input failed validation; every bad field is listed.
    #[error("invalid request: {0}")]
    InvalidArgument(Violations),
    /// The one thing asked for does not exist.
    #[error("{0}")]
    NotFound(&'static str),
    /// Products named by a reservation do not exist; all of them are listed.
    #[error("unknown products: {}", join(.0))]
    UnknownProducts(Vec<ProductRef>),
    /// The SKU is taken.
    #[error("a product with this sku already exists")]
    AlreadyExists,
    /// Not enough unreserved stock for one or more products; nothing was reserved.
    #[error("not enough stock for {}", join(.0.iter().map(|s| &s.sku)))]
    InsufficientStock(Vec<Shortage>),
    /// An adjustment would take stock below zero or below what is reserved.
    #[error("stock of {sku} cannot go below zero or below what is reserved")]
    StockBelowReserved {
        /// The product.
        sku: Sku,
        /// The change asked for.
        delta: i64,
        /// Stock on hand before.
        on_hand: i64,
        /// Reserved stock.
        reserved: i64,
    },
    /// The reservation was released, so it can no longer be committed.
    #[error("reservation of order {0} is released and cannot be committed")]
    ReservationReleased(OrderId),
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A bug or a broken invariant (e.g. a row that does not parse).; the cause is kept for the log.
    #[error("internal error")]
    Internal(#[from] InternalError),
}

fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => common_error::invalid_argument(&v),
            Error::NotFound(m) => Status::not_found(m),
            Error::UnknownProducts(ref missing) => unknown_products(e.to_string(), missing),
            Error::AlreadyExists => Status::already_exists(e.to_string()),
            Error::InsufficientStock(ref shortages) => {
                let violations: Vec<_> = shortages
                    .iter()
                    .map(|s| PreconditionViolation {
                        kind: "STOCK".into(),
                        subject: s.sku.to_string(),
                        description: format!(
                            "requested {}, available {}",
                            s.requested, s.available
                        ),
                    })
                    .collect();
                common_error::failed_precondition(e.to_string(), &violations)
            }
            Error::StockBelowReserved {
                ref sku,
                delta,
                on_hand,
                reserved,
            } => common_error::failed_precondition(
                e.to_string(),
                &[PreconditionViolation {
                    kind: "STOCK".into(),
                    subject: sku.to_string(),
                    description: format!(
                        "delta {delta} on {on_hand} on hand would leave {}, with {reserved} reserved",
                        on_hand.saturating_add(delta)
                    ),
                }],
            ),
            Error::ReservationReleased(order) => common_error::failed_precondition(
                e.to_string(),
                &[PreconditionViolation {
                    kind: "STATE".into(),
                    subject: order.to_string(),
                    description: "reservation is released".into(),
                }],
            ),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Database(ref db) => emporium_common::db::status(db),
            Error::Internal(_) => common_error::internal(&e),
        }
    }
}

/// NOT_FOUND with a `google.rpc.ResourceInfo` per missing product. `ErrorDetails`
/// holds a single ResourceInfo, so each is built on its own status and the
/// decoded details are gathered into one.
fn unknown_products(message: String, missing: &[ProductRef]) -> Status {
    let details = missing.iter().flat_map(|p| {
        let description = match p {
            ProductRef::Id(_) => "no product has this id",
            ProductRef::Sku(_) => "no product has this sku",
        };
        Status::with_error_details(
            Code::NotFound,
            "",
            ErrorDetails::with_resource_info(
                "emporium.inventory.v1.Product",
                p.to_string(),
                "",
                description,
            ),
        )
        .get_error_details_vec()
    });
    Status::with_error_details_vec(Code::NotFound, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductId;

    #[test]
    fn every_variant_maps_to_its_code_without_leaking() {
        let sku = Sku::parse("SKU-1").unwrap();
        let cases = [
            (
                Error::InvalidArgument(Violations::one("items[2].quantity", "must be > 0")),
                Code::InvalidArgument,
            ),
            (Error::NotFound("product not found"), Code::NotFound),
            (
                Error::UnknownProducts(vec![
                    ProductRef::Sku(sku.clone()),
                    ProductRef::Id(ProductId::generate()),
                ]),
                Code::NotFound,
            ),
            (Error::AlreadyExists, Code::AlreadyExists),
            (
                Error::InsufficientStock(vec![Shortage {
                    sku: sku.clone(),
                    requested: 5,
                    available: 2,
                }]),
                Code::FailedPrecondition,
            ),
            (
                Error::StockBelowReserved {
                    sku: sku.clone(),
                    delta: -5,
                    on_hand: 4,
                    reserved: 1,
                },
                Code::FailedPrecondition,
            ),
            (
                Error::ReservationReleased(OrderId(uuid::Uuid::now_v7())),
                Code::FailedPrecondition,
            ),
            (
                Error::PermissionDenied("only admins may adjust stock"),
                Code::PermissionDenied,
            ),
            (
                Error::Database(sqlx::Error::PoolTimedOut),
                Code::Unavailable,
            ),
            (Error::Database(sqlx::Error::RowNotFound), Code::Internal),
            (
                Error::Internal("stored row of products is broken".into()),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let s = Status::from(err);
            assert_eq!(s.code(), code, "{s:?}");
            assert!(!s.message().contains("row"), "{s:?}");
            assert!(!s.message().ends_with('.'), "{s:?}");
        }
    }

    #[test]
    fn details_name_every_product() {
        let s = Status::from(Error::InsufficientStock(vec![
            Shortage {
                sku: Sku::parse("A").unwrap(),
                requested: 5,
                available: 2,
            },
            Shortage {
                sku: Sku::parse("B").unwrap(),
                requested: 1,
                available: 0,
            },
        ]));
        assert_eq!(s.message(), "not enough stock for A, B");
        let pf = s.get_details_precondition_failure().unwrap();
        let got: Vec<_> = pf
            .violations
            .iter()
            .map(|v| {
                (
                    v.r#type.as_str(),
                    v.subject.as_str(),
                    v.description.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("STOCK", "A", "requested 5, available 2"),
                ("STOCK", "B", "requested 1, available 0")
            ]
        );

        let s = Status::from(Error::UnknownProducts(vec![
            ProductRef::Sku(Sku::parse("X").unwrap()),
            ProductRef::Sku(Sku::parse("Y").unwrap()),
        ]));
        assert_eq!(s.message(), "unknown products: X, Y");
        let names: Vec<_> = s
            .get_error_details_vec()
            .into_iter()
            .map(|d| format!("{d:?}"))
            .collect();
        assert_eq!(names.len(), 2);
        assert!(
            names[0].contains("\"X\"") && names[1].contains("\"Y\""),
            "{names:?}"
        );
    }
}
