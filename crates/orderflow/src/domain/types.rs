//! Values that are checked once at the edge: past `parse`, they are valid.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A value from outside did not pass its check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks length, control characters and surrounding whitespace.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
                let raw = raw.into();
                check_text(&raw, $what, $max)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_text(raw: &str, what: &str, max: usize) -> Result<(), InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue(format!("{what} must not be empty")));
    }
    if raw.chars().count() > max {
        return Err(InvalidValue(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if raw.trim() != raw || raw.chars().any(char::is_control) {
        return Err(InvalidValue(format!(
            "{what} must not contain control characters or surrounding whitespace"
        )));
    }
    Ok(())
}

text_newtype!(
    /// The shop's order reference (`DE--1234`), unique across orders.
    OrderReference,
    "order reference",
    255
);
text_newtype!(
    /// A stock keeping unit.
    Sku,
    "sku",
    255
);
text_newtype!(
    /// An OMS event name as the process XML spells it.
    EventName,
    "event name",
    255
);

/// An item quantity: an integer from 1 to [`Quantity::MAX`]. The bound keeps sums over
/// many items (reservations, totals) far from overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if (1..=Self::MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue(format!(
                "quantity must be an integer from 1 to {}, got {raw}",
                Self::MAX
            )))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A unit price in minor units (cents) of the order's currency: an integer from 0 to
/// [`UnitPrice::MAX`] (ten billion in major units), so that price × quantity fits in i64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UnitPrice(i64);

impl UnitPrice {
    pub const MAX: i64 = 1_000_000_000_000;

    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if (0..=Self::MAX).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue(format!(
                "unit_price must be an integer from 0 to {} (minor units), got {raw}",
                Self::MAX
            )))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for UnitPrice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An idempotency key (`Idempotency-Key`, or a batch entry's `idempotency_key`): 1 to
/// 255 printable ASCII characters, no spaces or control characters, so it can travel in a
/// header, a log line and a URL unchanged.
pub fn check_idempotency_key(key: &str) -> Result<(), InvalidValue> {
    if (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(InvalidValue(
            "must be 1 to 255 printable ASCII characters without spaces".into(),
        ))
    }
}

/// A currency code: three upper-case ASCII letters (ISO 4217).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue(format!(
                "currency must be three upper-case letters (ISO 4217), got {raw:?}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The id of an order row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub i64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order's version: increases with every committed change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub i64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sends order updates and reads their status.
    Erp,
    /// Creates and reads orders, triggers manual events.
    Shop,
    /// Everything, including operations.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erp => "erp",
            Self::Shop => "shop",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "erp" => Some(Self::Erp),
            "shop" => Some(Self::Shop),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_checked() {
        assert!(OrderReference::parse("DE--1").is_ok());
        assert!(OrderReference::parse("").is_err());
        assert!(OrderReference::parse(" x").is_err());
        assert!(Sku::parse("a\nb").is_err());
        assert!(Sku::parse("x".repeat(256)).is_err());
    }

    #[test]
    fn quantity_and_price_are_bounded() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(1_000_000).is_ok());
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(1_000_001).is_err());
        assert!(serde_json::from_str::<Quantity>("-2").is_err());
        assert!(UnitPrice::parse(0).is_ok());
        assert!(UnitPrice::parse(UnitPrice::MAX).is_ok());
        assert!(UnitPrice::parse(-1).is_err());
        assert!(UnitPrice::parse(UnitPrice::MAX + 1).is_err());
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        assert!(check_idempotency_key("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W#3").is_ok());
        assert!(check_idempotency_key(&"k".repeat(255)).is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
        assert!(check_idempotency_key("a b").is_err());
        assert!(check_idempotency_key("a\u{7f}").is_err());
        assert!(check_idempotency_key("schlüssel").is_err());
    }

    #[test]
    fn currency_is_iso_code() {
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }
}
