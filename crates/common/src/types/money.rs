//! Money: integer minor units of one ISO 4217 currency. Never a float.

use std::fmt;

use emporium_proto::common::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::status::Violations;

/// The active ISO 4217 codes of currencies a shop can price in (funds,
/// precious metals, and test and bond-market units left out).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP",
    "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY",
    "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD",
    "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK",
    "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG",
    "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code in use today, such as `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses a code; three capitals are not enough, the code must be assigned.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("must be an ISO 4217 code of three upper-case letters like EUR");
        }
        if ISO_4217.binary_search(&s).is_err() {
            return Err("is not an ISO 4217 currency code in use");
        }
        Ok(Self(s.to_owned()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, &'static str> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount: minor units (cents for EUR) of one currency. Which amounts are
/// allowed (a price, a charge, a total) is the using service's rule; this type
/// only keeps the currency valid and the units whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Money {
    currency: Currency,
    units: i64,
}

impl Money {
    /// `units` minor units of `currency`.
    pub fn new(currency: Currency, units: i64) -> Self {
        Self { currency, units }
    }

    /// Nothing, in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::new(currency, 0)
    }

    /// Checks the units of an amount that must be positive (a charge, a refund).
    pub fn positive_units(units: i64) -> Result<i64, &'static str> {
        if units > 0 {
            Ok(units)
        } else {
            Err("must be > 0")
        }
    }

    /// The currency.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    /// The amount in minor units.
    pub fn units(&self) -> i64 {
        self.units
    }

    /// The proto form.
    pub fn to_proto(&self) -> pb::Money {
        pb::Money {
            currency_code: self.currency.0.clone(),
            units: self.units,
        }
    }

    /// Reads the proto form at `field` (`price`, `items[2].amount`), checking the
    /// units with `units_rule`; every problem is recorded in `v` under
    /// `field.currency_code` / `field.units` (or `field` when absent).
    pub fn from_proto(
        v: &mut Violations,
        field: &str,
        m: Option<&pb::Money>,
        units_rule: impl FnOnce(i64) -> Result<i64, &'static str>,
    ) -> Option<Self> {
        let Some(m) = m else {
            v.add(field, "is required");
            return None;
        };
        let currency = v.check(
            &format!("{field}.currency_code"),
            Currency::parse(&m.currency_code),
        );
        let units = v.check(&format!("{field}.units"), units_rule(m.units));
        Some(Self::new(currency?, units?))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency, self.units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_iso_list_is_sorted_so_lookups_find_every_code() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        for code in ISO_4217 {
            assert!(Currency::parse(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn currencies_are_assigned_codes_not_just_three_capitals() {
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("CHF").is_ok());
        assert_eq!(Currency::parse(""), Err("is required"));
        for bad in ["eur", "EURO", "E1R"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Currency::parse("ABC"),
            Err("is not an ISO 4217 currency code in use")
        );
        // Funds and test codes are not prices.
        assert!(Currency::parse("XTS").is_err());
        let from_json: Result<Currency, _> = serde_json::from_str("\"XYZ\"");
        assert!(from_json.is_err());
    }

    #[test]
    fn proto_money_names_each_bad_field() {
        let mut v = Violations::new();
        let bad = pb::Money {
            currency_code: "eur".into(),
            units: 0,
        };
        assert!(Money::from_proto(&mut v, "amount", Some(&bad), Money::positive_units).is_none());
        let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["amount.currency_code", "amount.units"]);
        let mut v = Violations::new();
        assert!(Money::from_proto(&mut v, "price", None, Ok).is_none());
        assert_eq!(v.iter().next().unwrap().field, "price");
        let good = pb::Money {
            currency_code: "EUR".into(),
            units: 1999,
        };
        let m = Money::from_proto(&mut Violations::new(), "price", Some(&good), Ok).unwrap();
        assert_eq!(m.to_proto(), good);
    }
}
