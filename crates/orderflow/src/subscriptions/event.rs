//! The event a subscriber receives for one change-feed row, and its type. The body is built
//! only from what the feed row holds (and the order's reference, which never changes), with
//! typed structs in a fixed field order: the same change gives the same bytes on every
//! attempt, replay and instance, so an event id never comes with a different payload.
//! An `update.dead` event is built once, when the update dies, and stored with its
//! deliveries; replays copy those bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::subscriptions::{DeadUpdate, FeedEvent, NewDelivery, SubscriptionRow};

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
    /// An ERP update ended `dead` (body: `DeadUpdateEvent`).
    #[serde(rename = "update.dead")]
    UpdateDead,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::OrderCreated,
        EventType::ItemStateChanged,
        EventType::OrderUpdated,
        EventType::UpdateDead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::ItemStateChanged => "item.state_changed",
            Self::OrderUpdated => "order.updated",
            Self::UpdateDead => "update.dead",
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

/// The body of an `update.dead` delivery: an ERP update ended `dead` (after its last
/// attempt, past `park_ttl`, or unreadable).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadUpdateEvent {
    /// Stable per death: `evt_update_<update id>_<attempts>`; also the `webhook-id` header.
    /// An operator's retry that dies again is a new event with a new id.
    pub id: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "update.dead")]
    pub kind: String,
    /// When the update was set dead (RFC 3339, UTC, microseconds).
    pub timestamp: String,
    pub data: DeadUpdateData,
}

/// Which update died, and why.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadUpdateData {
    /// The update's id (`GET /v1/erp/order-updates/{id}`).
    pub update_id: String,
    /// The ERP client that sent it.
    pub client: String,
    pub order_reference: String,
    /// The order of that reference when the update died; `null` when there was none.
    pub order_id: Option<i64>,
    /// The OMS event it asked for; `null` for an attribute update (or an unreadable row).
    pub event: Option<String>,
    /// Attempts made, over every operator retry.
    pub attempts: i64,
    /// The last attempt's error; `null` when none was recorded.
    pub error: Option<DeadUpdateError>,
    /// When orderflow received the update; `null` when the stored row cannot be read.
    pub received_at: Option<String>,
}

/// An attempt's error, as `GET /v1/erp/order-updates/{id}` shows it in `last_error`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadUpdateError {
    /// A stable code, such as `order_not_found`, `invalid_payload` or `unreadable_row`.
    pub code: Option<String>,
    pub message: Option<String>,
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

/// The stable id of the event of an update's death.
pub fn dead_event_id(update_id: &str, attempts: i64) -> String {
    format!("evt_update_{update_id}_{attempts}")
}

/// The event of a dead update; `now` stands in for the time it died when the row does not
/// say.
pub fn dead_event_of(dead: &DeadUpdate, now: DateTime<Utc>) -> DeadUpdateEvent {
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let error = dead
        .errors
        .as_ref()
        .and_then(|e| e.ok())
        .and_then(|e| e.last())
        .map(|e| DeadUpdateError {
            code: e.get("code").and_then(Value::as_str).map(str::to_owned),
            message: e.get("message").and_then(Value::as_str).map(str::to_owned),
        });
    let attempts = i64::from(dead.attempts);
    DeadUpdateEvent {
        id: dead_event_id(&dead.id, attempts),
        kind: EventType::UpdateDead.as_str().to_owned(),
        timestamp: at(dead.processed_at.unwrap_or(now)),
        data: DeadUpdateData {
            update_id: dead.id.clone(),
            client: dead.client.clone(),
            order_reference: dead.order_reference.clone(),
            order_id: dead.order_id,
            event: dead.event.clone(),
            attempts,
            error,
            received_at: dead.received_at.map(at),
        },
    }
}

/// The delivery of a dead update's event (the same for every subscription that takes it).
/// It waits in its order's lane, or in one of its own when there is no such order.
pub fn dead_delivery(dead: &DeadUpdate, now: DateTime<Utc>) -> NewDelivery {
    let event = dead_event_of(dead, now);
    NewDelivery {
        body: serde_json::to_string(&event).unwrap_or_default(),
        event_id: event.id,
        event_type: event.kind,
        order_id: dead.order_id,
        version: None,
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
        order_id: Some(row.order_id),
        version: Some(row.version),
        body,
    })
}
