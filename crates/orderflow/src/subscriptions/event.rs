//! The event a subscriber receives for one change-feed row, and its type. The body is built
//! only from what the feed row holds (and the order's reference, which never changes), with
//! typed structs in a fixed field order: the same change gives the same bytes on every
//! attempt, replay and instance, so an event id never comes with a different payload.

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::subscriptions::{FeedEvent, NewDelivery, SubscriptionRow};

/// The kinds of events a subscription can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// A new order (its items entered the initial state; `moved` lists the onEnter moves).
    #[serde(rename = "order.created")]
    OrderCreated,
    /// A change that moved items (an event, a timeout, a condition, an operator's move).
    #[serde(rename = "item.state_changed")]
    ItemStateChanged,
    /// A change that moved nothing (attributes).
    #[serde(rename = "order.updated")]
    OrderUpdated,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::OrderCreated,
        EventType::ItemStateChanged,
        EventType::OrderUpdated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::ItemStateChanged => "item.state_changed",
            Self::OrderUpdated => "order.updated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every delivery (Standard Webhooks' `{type, timestamp, data}`, plus the id).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Stable per change: `evt_<order id>_<version>`; also the `webhook-id` header.
    pub id: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "item.state_changed")]
    pub kind: String,
    /// When the change was committed (RFC 3339, UTC, microseconds).
    pub timestamp: String,
    pub data: EventData,
}

/// What changed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EventData {
    pub order_id: i64,
    pub reference: String,
    /// The order's version after the change.
    pub version: i64,
    /// The OMS event that was triggered, if one was (`null` for attribute changes,
    /// timeouts and conditions name theirs in `moved`).
    pub event: Option<String>,
    /// Who caused the change: `api`, `erp:<update id>`, `operator`, `timeout`,
    /// `condition`.
    pub source: String,
    /// The items that moved, in the order they moved.
    pub moved: Vec<MovedItem>,
}

/// One item's move.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MovedItem {
    pub item: i64,
    pub from: Option<String>,
    pub to: String,
    pub event: Option<String>,
    pub source: String,
}

/// The change feed's payload, as `domain::plan` writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FeedPayload {
    kind: String,
    event: Option<String>,
    source: String,
    moved: Vec<FeedMove>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FeedMove {
    item: i64,
    from: Option<String>,
    to: String,
}

/// The stable id of the event of a change.
pub fn event_id(order_id: i64, version: i64) -> String {
    format!("evt_{order_id}_{version}")
}

/// The event of a feed row.
pub fn event_of(row: &FeedEvent) -> Event {
    let payload: FeedPayload = match row.payload.get() {
        Ok(v) => serde_json::from_value(v.clone()).unwrap_or_else(|e| {
            tracing::warn!(order = row.order_id, version = row.version, error = %e,
                "change-feed payload not as expected; the event lists no moves");
            FeedPayload::default()
        }),
        Err(e) => {
            tracing::warn!(order = row.order_id, version = row.version, error = %e,
                "change-feed payload unreadable; the event lists no moves");
            FeedPayload::default()
        }
    };
    let kind = if row.kind == "created" || payload.kind == "created" {
        EventType::OrderCreated
    } else if !payload.moved.is_empty() {
        EventType::ItemStateChanged
    } else {
        EventType::OrderUpdated
    };
    let moved = payload
        .moved
        .into_iter()
        .map(|m| MovedItem {
            item: m.item,
            from: m.from,
            to: m.to,
            event: payload.event.clone(),
            source: payload.source.clone(),
        })
        .collect();
    Event {
        id: event_id(row.order_id, row.version),
        kind: kind.as_str().to_owned(),
        timestamp: row.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        data: EventData {
            order_id: row.order_id,
            reference: row.reference.clone(),
            version: row.version,
            event: payload.event,
            source: payload.source,
            moved,
        },
    }
}

/// The event types a subscription takes (stored comma-separated; empty: all).
pub fn takes(sub: &SubscriptionRow, kind: &str) -> bool {
    sub.events.is_empty() || sub.events.split(',').any(|t| t == kind)
}

/// The delivery of `row` for `sub`, when it takes that type.
pub fn delivery_of(sub: &SubscriptionRow, row: &FeedEvent) -> Option<NewDelivery> {
    let event = event_of(row);
    if !takes(sub, &event.kind) {
        return None;
    }
    let body = serde_json::to_string(&event).unwrap_or_default();
    Some(NewDelivery {
        event_id: event.id,
        event_type: event.kind,
        order_id: row.order_id,
        version: row.version,
        body,
    })
}
