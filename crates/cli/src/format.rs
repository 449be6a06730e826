//! Turning messages into text for people: money (`19.99 EUR`), UTC times, enum
//! names without their prefixes, aligned tables and the order views.

use std::{fmt, io, io::Write};

use emporium_proto::{
    common::v1::Money, inventory::v1 as inv, order::v1 as ord, payment::v1 as pay, user::v1 as usr,
};

use crate::error::CliError;

/// Writes one line to stdout (used through the `outln!` macro).
pub fn write_line(args: fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => CliError::BrokenPipe,
            _ => CliError::Io {
                what: "writing to stdout".into(),
                source: e,
            },
        })
}

/// Digits after the decimal point of an ISO 4217 currency (2 unless listed).
pub fn currency_exponent(code: &str) -> u32 {
    match code {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `1999, "EUR"` → `19.99 EUR`; `-5, "EUR"` → `-0.05 EUR`; `500, "JPY"` → `500 JPY`.
pub fn format_minor_units(units: i64, currency: &str) -> String {
    let exp = currency_exponent(currency);
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{abs} {currency}");
    }
    let scale = 10u64.pow(exp);
    let (whole, frac) = (abs / scale, abs % scale);
    format!(
        "{sign}{whole}.{frac:0width$} {currency}",
        width = exp as usize
    )
}

/// A money field, or `-` when absent.
pub fn money(m: Option<&Money>) -> String {
    m.map_or_else(
        || "-".to_owned(),
        |m| format_minor_units(m.units, &m.currency_code),
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds since the epoch → `2025-06-01 14:03:07 UTC`.
pub fn utc_date_time(seconds: i64) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Seconds and nanoseconds since the epoch → `14:03:07.512` (UTC time of day).
pub fn utc_clock(seconds: i64, nanos: i32) -> String {
    let secs = seconds.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60,
        nanos.clamp(0, 999_999_999) / 1_000_000
    )
}

/// `ORDER_STATUS_CONFIRMED` → `CONFIRMED`.
pub fn order_status(status: i32) -> &'static str {
    ord::OrderStatus::try_from(status).map_or("UNKNOWN", |s| {
        s.as_str_name()
            .strip_prefix("ORDER_STATUS_")
            .unwrap_or("UNKNOWN")
    })
}

/// `CANCEL_REASON_PAYMENT_DECLINED` → `PAYMENT_DECLINED`.
pub fn cancel_reason(reason: i32) -> &'static str {
    ord::CancelReason::try_from(reason).map_or("UNKNOWN", |r| {
        r.as_str_name()
            .strip_prefix("CANCEL_REASON_")
            .unwrap_or("UNKNOWN")
    })
}

/// `PAYMENT_STATUS_REFUNDED` → `REFUNDED`.
pub fn payment_status(status: i32) -> &'static str {
    pay::PaymentStatus::try_from(status).map_or("UNKNOWN", |s| {
        s.as_str_name()
            .strip_prefix("PAYMENT_STATUS_")
            .unwrap_or("UNKNOWN")
    })
}

/// `[ROLE_ADMIN, ROLE_CUSTOMER]` → `admin, customer`.
pub fn roles(roles: &[i32]) -> String {
    let names: Vec<String> = roles
        .iter()
        .map(|r| {
            usr::Role::try_from(*r).map_or("unknown".to_owned(), |r| {
                r.as_str_name()
                    .strip_prefix("ROLE_")
                    .unwrap_or("UNKNOWN")
                    .to_lowercase()
            })
        })
        .collect();
    names.join(", ")
}

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers and amounts.
    Right,
}

/// A plain-text table: a header row and columns padded to their widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns.iter().map(|(t, a)| ((*t).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// The lines of the table (header first), each indented by `indent` spaces,
    /// without trailing spaces.
    pub fn lines(&self, indent: usize) -> Vec<String> {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (title, _))| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| width(c))
                    .chain([width(title)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: Vec<&str>| {
            let mut line = " ".repeat(indent);
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).copied().unwrap_or("");
                let pad = " ".repeat(w.saturating_sub(width(cell)));
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            line.trim_end().to_owned()
        };
        let mut out = vec![render(
            self.columns.iter().map(|(t, _)| t.as_str()).collect(),
        )];
        out.extend(
            self.rows
                .iter()
                .map(|r| render(r.iter().map(String::as_str).collect())),
        );
        out
    }
}

/// The catalogue as a table.
pub fn products_table(products: &[inv::Product]) -> Table {
    let mut table = Table::new(&[
        ("SKU", Align::Left),
        ("NAME", Align::Left),
        ("PRICE", Align::Right),
        ("ON HAND", Align::Right),
        ("RESERVED", Align::Right),
        ("AVAILABLE", Align::Right),
    ]);
    for p in products {
        table.row(vec![
            p.sku.clone(),
            p.name.clone(),
            money(p.unit_price.as_ref()),
            p.stock_on_hand.to_string(),
            p.stock_reserved.to_string(),
            p.stock_available.to_string(),
        ]);
    }
    table
}

/// `CANCELLED (PAYMENT_DECLINED: card declined)`, or just the status.
pub fn order_state(order: &ord::Order) -> String {
    let status = order_status(order.status);
    if order.status == ord::OrderStatus::Cancelled as i32 {
        let reason = cancel_reason(order.cancel_reason);
        if order.cancel_detail.is_empty() {
            format!("{status} ({reason})")
        } else {
            format!("{status} ({reason}: {})", order.cancel_detail)
        }
    } else {
        status.to_owned()
    }
}

/// One order in full: header, dates, payment, lines and total.
pub fn order_detail(order: &ord::Order) -> Vec<String> {
    let when = |seconds: Option<i64>| seconds.map_or_else(|| "-".to_owned(), utc_date_time);
    let mut out = vec![
        format!("order {}  {}", order.id, order_state(order)),
        format!(
            "  placed   {}",
            when(order.create_time.as_ref().map(|t| t.seconds))
        ),
        format!(
            "  updated  {}",
            when(order.update_time.as_ref().map(|t| t.seconds))
        ),
    ];
    let payment = if order.payment_id.is_empty() {
        order.payment_method.clone()
    } else {
        format!("{} (payment {})", order.payment_method, order.payment_id)
    };
    out.push(format!("  payment  {payment}"));
    let mut table = Table::new(&[
        ("SKU", Align::Left),
        ("NAME", Align::Left),
        ("QTY", Align::Right),
        ("UNIT PRICE", Align::Right),
        ("LINE TOTAL", Align::Right),
    ]);
    for item in &order.items {
        table.row(vec![
            item.sku.clone(),
            item.name.clone(),
            item.quantity.to_string(),
            money(item.unit_price.as_ref()),
            money(item.line_total.as_ref()),
        ]);
    }
    table.row(vec![
        String::new(),
        String::new(),
        String::new(),
        "total".to_owned(),
        money(order.total.as_ref()),
    ]);
    out.push(String::new());
    out.extend(table.lines(2));
    out
}

/// Orders as a table, one row each.
pub fn orders_table(orders: &[ord::Order]) -> Table {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("PLACED", Align::Left),
        ("STATUS", Align::Left),
        ("UNITS", Align::Right),
        ("TOTAL", Align::Right),
        ("REASON", Align::Left),
    ]);
    for o in orders {
        let reason = if o.status == ord::OrderStatus::Cancelled as i32 {
            cancel_reason(o.cancel_reason)
        } else {
            ""
        };
        table.row(vec![
            o.id.clone(),
            o.create_time
                .as_ref()
                .map_or_else(|| "-".to_owned(), |t| utc_date_time(t.seconds)),
            order_status(o.status).to_owned(),
            o.items.iter().map(|i| i.quantity).sum::<i64>().to_string(),
            money(o.total.as_ref()),
            reason.to_owned(),
        ]);
    }
    table
}

/// What an order's status says beyond its name: the total once confirmed, the
/// reason once cancelled.
fn status_detail(order: &ord::Order) -> String {
    if order.status == ord::OrderStatus::Cancelled as i32 {
        let reason = cancel_reason(order.cancel_reason);
        if order.cancel_detail.is_empty() {
            reason.to_owned()
        } else {
            format!("{reason}: {}", order.cancel_detail)
        }
    } else if order.status == ord::OrderStatus::Pending as i32 {
        "placed".to_owned()
    } else {
        format!("total {}", money(order.total.as_ref()))
    }
}

/// What changed between two states of an order, in a few words; `None` when
/// nothing a person can see changed (the saga also reports its inner steps).
pub fn describe_change(before: Option<&ord::Order>, after: &ord::Order) -> Option<String> {
    let Some(before) = before else {
        return Some(status_detail(after));
    };
    if before.status != after.status {
        return Some(status_detail(after));
    }
    if before.total.is_none()
        && let Some(total) = after.total.as_ref()
    {
        return Some(format!("stock reserved, total {}", money(Some(total))));
    }
    if before.payment_id.is_empty() && !after.payment_id.is_empty() {
        return Some("payment captured".to_owned());
    }
    None
}

/// The watch line for one update: `14:03:07.512  <order id>  PENDING    placed`.
pub fn watch_line(update: &ord::WatchOrderUpdatesResponse, change: &str) -> String {
    let time = update.event_time.as_ref().map_or_else(
        || "--:--:--.---".to_owned(),
        |t| utc_clock(t.seconds, t.nanos),
    );
    let (id, status) = update.order.as_ref().map_or(("?", "UNKNOWN"), |o| {
        (o.id.as_str(), order_status(o.status))
    });
    let initial = if update.initial_state {
        "  (current state)"
    } else {
        ""
    };
    format!("{time}  {id}  {status:<9}  {change}{initial}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_formatted_from_minor_units() {
        assert_eq!(format_minor_units(1999, "EUR"), "19.99 EUR");
        assert_eq!(format_minor_units(5, "EUR"), "0.05 EUR");
        assert_eq!(format_minor_units(0, "USD"), "0.00 USD");
        assert_eq!(format_minor_units(-1205, "EUR"), "-12.05 EUR");
        assert_eq!(format_minor_units(500, "JPY"), "500 JPY");
        assert_eq!(format_minor_units(1234, "KWD"), "1.234 KWD");
        assert_eq!(
            format_minor_units(i64::MIN, "EUR"),
            "-92233720368547758.08 EUR"
        );
        assert_eq!(money(None), "-");
        let m = Money {
            currency_code: "EUR".into(),
            units: 4597,
        };
        assert_eq!(money(Some(&m)), "45.97 EUR");
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date_time(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(utc_clock(1_700_000_000, 512_345_678), "22:13:20.512");
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            order_status(ord::OrderStatus::Confirmed as i32),
            "CONFIRMED"
        );
        assert_eq!(
            cancel_reason(ord::CancelReason::PaymentDeclined as i32),
            "PAYMENT_DECLINED"
        );
        assert_eq!(order_status(99), "UNKNOWN");
        assert_eq!(
            roles(&[usr::Role::Admin as i32, usr::Role::Customer as i32]),
            "admin, customer"
        );
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&[("SKU", Align::Left), ("PRICE", Align::Right)]);
        t.row(vec!["MUG-1".into(), "12.99 EUR".into()]);
        t.row(vec!["T".into(), "1.00 EUR".into()]);
        assert_eq!(
            t.lines(1),
            [
                " SKU        PRICE",
                " MUG-1  12.99 EUR",
                " T       1.00 EUR"
            ]
        );
    }

    #[test]
    fn changes_are_described() {
        let pending = ord::Order {
            id: "o1".into(),
            status: ord::OrderStatus::Pending as i32,
            ..Default::default()
        };
        assert_eq!(describe_change(None, &pending).as_deref(), Some("placed"));
        assert_eq!(describe_change(Some(&pending), &pending), None);
        let priced = ord::Order {
            total: Some(Money {
                currency_code: "EUR".into(),
                units: 100,
            }),
            ..pending.clone()
        };
        assert_eq!(
            describe_change(Some(&pending), &priced).as_deref(),
            Some("stock reserved, total 1.00 EUR")
        );
        let cancelled = ord::Order {
            status: ord::OrderStatus::Cancelled as i32,
            cancel_reason: ord::CancelReason::PaymentDeclined as i32,
            cancel_detail: "card declined".into(),
            ..priced.clone()
        };
        assert_eq!(
            describe_change(Some(&priced), &cancelled).as_deref(),
            Some("PAYMENT_DECLINED: card declined")
        );
    }
}
