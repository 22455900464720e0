//! Page sizes of the list endpoints.

use serde::de::Visitor;
use serde::{Deserialize, Deserializer};

/// A page size (`limit`): an integer from 1 to [`PageLimit::MAX`], default
/// [`PageLimit::DEFAULT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(i64);

impl PageLimit {
    pub const DEFAULT: i64 = 50;
    pub const MAX: i64 = 500;

    pub fn get(limit: Option<Self>) -> i64 {
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
