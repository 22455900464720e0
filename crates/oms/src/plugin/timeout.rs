//! Timeout processors: Spryker's `timeoutProcessor="OmsTimeout/Initiation"` on an event
//! names a plugin that computes when the event's timeout is due, instead of "entered the
//! state + `timeout`". They are looked up by name like conditions and commands.
//!
//! Until a processor is bound, the plain timeout applies (and `process check` lists the
//! name among the unbound ones; strict mode refuses it).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Scope, lookup};
use crate::duration::Timeout;
use crate::engine::{Item, Order};

/// What a timeout processor sees. Time is passed in: `entered_at` is when the item entered
/// the state whose timeout event is being scheduled.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutContext<'a> {
    pub order: &'a Order,
    pub item: &'a Item,
    /// The timeout event's name.
    pub event: &'a str,
    /// The event's own `timeout="..."`, if it has one.
    pub timeout: Option<&'a Timeout>,
    pub entered_at: DateTime<Utc>,
}

impl TimeoutContext<'_> {
    /// Spryker's answer without a processor: `entered_at + timeout`.
    pub fn plain(&self) -> Option<DateTime<Utc>> {
        self.timeout.map(|t| t.after(self.entered_at))
    }
}

/// Decides when an item's timeout event is due.
pub trait TimeoutProcessor: Send + Sync {
    /// The due time; `None` means the processor has no answer for this item and the plain
    /// timeout applies (none at all when the event has no `timeout`).
    fn due_at(&self, ctx: &TimeoutContext<'_>) -> Option<DateTime<Utc>>;
}

/// Built-in timeout processors, bound by name in configuration:
///
/// ```toml
/// # Due 30 days after the order's `created_at` attribute (RFC 3339 or Unix seconds).
/// [timeout_processors."OmsTimeout/Initiation"]
/// type = "attribute"
/// scope = "order"
/// path = "created_at"
/// offset = "30days"
///
/// # Spryker's default: entered the state + the event's timeout.
/// [timeout_processors."OmsTimeout/Plain"]
/// type = "entered_at"
/// ```
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimeoutProcessorBinding {
    /// Entered the state + the event's `timeout` (what applies without a processor).
    EnteredAt,
    /// The timestamp in an order or item attribute (RFC 3339 text or Unix seconds) plus
    /// `offset` (a Spryker or ISO 8601 duration; none means the timestamp itself). When the
    /// attribute is missing or not a timestamp, the plain timeout applies.
    Attribute {
        #[serde(default)]
        scope: Scope,
        path: String,
        #[serde(default)]
        offset: Option<Timeout>,
    },
}

impl TimeoutProcessor for TimeoutProcessorBinding {
    fn due_at(&self, ctx: &TimeoutContext<'_>) -> Option<DateTime<Utc>> {
        match self {
            Self::EnteredAt => ctx.plain(),
            Self::Attribute {
                scope,
                path,
                offset,
            } => {
                let attrs = match scope {
                    Scope::Order => &ctx.order.attributes,
                    Scope::Item => &ctx.item.attributes,
                };
                let at = timestamp(lookup(attrs, path)?)?;
                Some(offset.as_ref().map_or(at, |o| o.after(at)))
            }
        }
    }
}

/// An attribute value read as an instant: RFC 3339 text or whole Unix seconds.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => Utc.timestamp_opt(n.as_i64()?, 0).single(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StateId;
    use serde_json::json;

    fn order(attrs: Value) -> Order {
        Order {
            reference: "R".into(),
            attributes: attrs.as_object().cloned().unwrap_or_default(),
            items: vec![Item {
                id: 1,
                sku: "S".into(),
                quantity: 1,
                state: StateId(0),
                state_entered_at: DateTime::UNIX_EPOCH,
                attributes: Default::default(),
            }],
        }
    }

    fn due(b: &TimeoutProcessorBinding, o: &Order, timeout: Option<&Timeout>) -> Option<String> {
        let ctx = TimeoutContext {
            order: o,
            item: &o.items[0],
            event: "cancel",
            timeout,
            entered_at: "2026-01-10T00:00:00Z".parse().unwrap(),
        };
        b.due_at(&ctx).map(|t| t.to_rfc3339())
    }

    #[test]
    fn attribute_plus_offset() {
        let b: TimeoutProcessorBinding = serde_json::from_value(
            json!({"type": "attribute", "path": "placed.at", "offset": "2days"}),
        )
        .unwrap();
        let o = order(json!({"placed": {"at": "2026-01-01T12:00:00+02:00"}}));
        assert_eq!(due(&b, &o, None).unwrap(), "2026-01-03T10:00:00+00:00");
        let o = order(json!({"placed": {"at": 86_400}}));
        assert_eq!(due(&b, &o, None).unwrap(), "1970-01-04T00:00:00+00:00");
    }

    #[test]
    fn attribute_missing_or_not_a_time_has_no_answer() {
        let b = TimeoutProcessorBinding::Attribute {
            scope: Scope::Order,
            path: "placed_at".into(),
            offset: None,
        };
        assert_eq!(due(&b, &order(json!({})), None), None);
        assert_eq!(due(&b, &order(json!({"placed_at": "soon"})), None), None);
    }

    #[test]
    fn entered_at_is_the_plain_timeout() {
        let t = Timeout::parse("1 hour").unwrap();
        let o = order(json!({}));
        assert_eq!(
            due(&TimeoutProcessorBinding::EnteredAt, &o, Some(&t)).unwrap(),
            "2026-01-10T01:00:00+00:00"
        );
        assert_eq!(due(&TimeoutProcessorBinding::EnteredAt, &o, None), None);
    }

    #[test]
    fn a_bad_offset_is_refused_when_configured() {
        let e = serde_json::from_value::<TimeoutProcessorBinding>(
            json!({"type": "attribute", "path": "p", "offset": "soonish"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("soonish"), "{e}");
    }
}
