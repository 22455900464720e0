//! Page sizes and cursors of the list endpoints.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// A page size (`limit`): an integer from 1 to [`PageLimit::MAX`], default
/// [`PageLimit::DEFAULT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageLimit(i64);

impl PageLimit {
    pub(crate) const DEFAULT: i64 = 50;
    pub(crate) const MAX: i64 = 500;

    pub(super) fn get(limit: Option<Self>) -> i64 {
        limit.map_or(Self::DEFAULT, |l| l.0)
    }
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PageLimit;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an integer from 1 to {}", PageLimit::MAX)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<PageLimit, E> {
                if (1..=PageLimit::MAX).contains(&n) {
                    Ok(PageLimit(n))
                } else {
                    Err(E::custom(format!(
                        "must be an integer from 1 to {}, got {n}",
                        PageLimit::MAX
                    )))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<PageLimit, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<PageLimit, E> {
                match s.parse::<i64>() {
                    Ok(n) => self.visit_i64(n),
                    Err(_) => Err(E::custom(format!(
                        "must be an integer from 1 to {}",
                        PageLimit::MAX
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Opaque page cursors: the position the next page starts after, tagged with the list it
/// belongs to, so a cursor of one list is refused by another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// `GET /v1/orders`: after an order id.
    Orders,
    /// `GET /v1/admin/inbox`: after an update's sequence number.
    Inbox,
    /// `GET /v1/admin/effects`: after an effect's id.
    Effects,
}

impl Cursor {
    fn tag(self) -> &'static str {
        match self {
            Self::Orders => "o:",
            Self::Inbox => "u:",
            Self::Effects => "e:",
        }
    }

    pub(crate) fn encode(self, position: i64) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{position}", self.tag()))
    }

    /// The position in `cursor`; 422 on the `cursor` parameter when this list did not
    /// issue it.
    pub(crate) fn decode(self, cursor: &str) -> Result<i64, ApiError> {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|s| s.strip_prefix(self.tag())?.parse().ok())
            .ok_or_else(|| ApiError::InvalidRequest {
                message: "cursor is not one this server issued".into(),
                path: Some("cursor".into()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_one_list() {
        assert_eq!(
            Cursor::Orders.decode(&Cursor::Orders.encode(42)).ok(),
            Some(42)
        );
        assert_eq!(Cursor::Inbox.decode(&Cursor::Inbox.encode(7)).ok(), Some(7));
        assert!(Cursor::Inbox.decode(&Cursor::Orders.encode(7)).is_err());
        assert!(Cursor::Orders.decode("42").is_err());
        assert!(Cursor::Orders.decode("!!").is_err());
    }
}
