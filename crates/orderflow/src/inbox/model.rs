//! An ERP update as it is sent and stored, and its status as the API shows it.

use chrono::{DateTime, Utc};
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::domain::types::{EventName, OrderReference, Sku, check_idempotency_key};
use crate::domain::{Change, DomainError, EventInput, ItemRef, Source};
use crate::store::inbox::UpdateRow;

/// One order update from the ERP. It sets the given attributes and triggers the OMS event
/// on the selected items (all items when none are given).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderUpdate {
    /// The shop's order reference.
    #[schema(value_type = String, min_length = 1, max_length = 255, example = "DE--1001")]
    pub order_reference: OrderReference,
    /// The OMS event to trigger (`ship`, `invoice`, ...).
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, example = "ship")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventName>,
    /// Items by `{"id": ...}` or `{"sku": ...}` (every item with the SKU); at most 1,000.
    #[schema(max_items = 1000)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemSelector>>,
    /// Merged into the order's attributes (JSON merge patch: `null` removes a key).
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Map<String, Value>>,
    /// Merged into the attributes of each selected item.
    #[schema(value_type = Option<Object>)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_attributes: Option<Map<String, Value>>,
    /// When it happened at the ERP; kept for the record. Updates are applied in the order
    /// they were received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// In a batch entry: this entry's idempotency key (else the request's key and the
    /// entry's index). A single update takes its key from the `Idempotency-Key` header.
    /// 1 to 255 printable ASCII characters, no spaces.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Most item selectors one update may have.
pub const MAX_SELECTORS: usize = 1000;

/// An item of the order, by id or by SKU: `{"id": 7}` or `{"sku": "SKU-1"}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum ItemSelector {
    Id {
        id: i64,
    },
    Sku {
        #[schema(value_type = String, min_length = 1, max_length = 255)]
        sku: Sku,
    },
}

/// By hand rather than `untagged`, whose only message is "data did not match any
/// variant": this one says what an item selector looks like, and the path of a bad
/// `id` or `sku` reaches the client.
impl<'de> Deserialize<'de> for ItemSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const SHAPE: &str = "an item must be {\"id\": <integer>} or {\"sku\": <string>}";
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ItemSelector;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{\"id\": <integer>} or {\"sku\": <string>}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ItemSelector, A::Error> {
                let selector = match map.next_key::<String>()?.as_deref() {
                    Some("id") => ItemSelector::Id {
                        id: map.next_value()?,
                    },
                    Some("sku") => ItemSelector::Sku {
                        sku: map.next_value()?,
                    },
                    _ => return Err(A::Error::custom(SHAPE)),
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom(SHAPE));
                }
                Ok(selector)
            }
        }
        d.deserialize_map(V)
    }
}

impl OrderUpdate {
    /// Problems a structurally valid update can still have, as (JSON path, message).
    pub fn check(&self, known_event: impl Fn(&str) -> bool) -> Result<(), (String, String)> {
        if self.event.is_none() && self.attributes.is_none() && self.item_attributes.is_none() {
            return Err((
                "$".into(),
                "an update needs an event, attributes or item_attributes".into(),
            ));
        }
        if let Some(e) = &self.event
            && !known_event(e.as_str())
        {
            return Err((
                "$.event".into(),
                format!("no loaded process has an event {:?}", e.as_str()),
            ));
        }
        if let Some(items) = &self.items
            && items.len() > MAX_SELECTORS
        {
            return Err((
                "$.items".into(),
                format!(
                    "an update selects at most {MAX_SELECTORS} items, this one {}",
                    items.len()
                ),
            ));
        }
        if let Some(key) = &self.idempotency_key
            && let Err(e) = check_idempotency_key(key)
        {
            return Err(("$.idempotency_key".into(), format!("idempotency_key {e}")));
        }
        Ok(())
    }

    /// The change this update makes to its order, attributed to inbox update `id`.
    pub fn change(&self, id: &str) -> Change {
        Change {
            expected: None,
            attributes: self.attributes.clone(),
            items: self.items.as_ref().map(|items| {
                items
                    .iter()
                    .map(|s| match s {
                        ItemSelector::Id { id } => ItemRef::Id(*id),
                        ItemSelector::Sku { sku } => ItemRef::Sku(sku.as_str().to_owned()),
                    })
                    .collect()
            }),
            item_attributes: self.item_attributes.clone(),
            event: self.event.clone().map(|event| EventInput {
                event,
                manual_only: false,
            }),
            source: Source::Erp(id.to_owned()),
        }
    }
}

pub use crate::store::status::UpdateStatus;

/// True for the entry an operator's retry adds to an update's error history (not an
/// error: it marks where a fresh set of attempts starts).
pub fn is_retry_marker(entry: &Value) -> bool {
    entry.get("code").and_then(Value::as_str) == Some(crate::store::inbox::RETRY_CODE)
}

/// An update's status as `GET /v1/erp/order-updates/{id}` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UpdateView {
    pub id: String,
    pub status: UpdateStatus,
    pub order_reference: String,
    pub event: Option<String>,
    /// Processing attempts so far.
    pub attempts: i32,
    /// The last attempt's error: `{attempt, at, code, message, ...}`.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Value>,
    /// For `applied`: the order's new version and the items moved.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<DateTime<Utc>>,
}

/// Everything stored about an update (admin view and `inbox show`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UpdateDetail {
    #[serde(flatten)]
    pub view: UpdateView,
    pub client: String,
    pub idempotency_key: Option<String>,
    /// Every attempt's error, oldest first, and an `operator_retry` entry for each retry
    /// by an operator (`{attempt, at, code: "operator_retry", from: <status it had>}`).
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub park_until: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
}

impl UpdateView {
    pub fn of(row: &UpdateRow) -> Self {
        Self {
            id: row.id.clone(),
            status: row.status,
            order_reference: row.order_reference.clone(),
            event: row.event.clone(),
            attempts: row.attempts,
            last_error: row
                .errors()
                .iter()
                .rev()
                .find(|e| !is_retry_marker(e))
                .cloned(),
            result: row.result().cloned(),
            received_at: row.received_at,
            processed_at: row.processed_at,
        }
    }
}

impl UpdateDetail {
    pub fn of(row: &UpdateRow) -> Self {
        let view = UpdateView::of(row);
        let waiting = !view.status.is_final();
        Self {
            view,
            client: row.client.clone(),
            idempotency_key: row.idempotency_key.clone(),
            errors: row.errors().to_vec(),
            // A payload that cannot be read shows as the reason, so the row can still be
            // listed, inspected and retried.
            payload: row
                .payload()
                .cloned()
                .unwrap_or_else(|e| json!({ "unreadable": e })),
            next_attempt_at: waiting.then_some(row.next_attempt_at),
            park_until: row.park_until,
            lease_owner: row.lease_owner.clone(),
        }
    }
}

/// What the inbox answers about one update: where it was when answered, and what it came
/// to (its result, or the error that stopped it). Each transport renders it (HTTP:
/// `http::erp`). The first answer given for an idempotency key is stored as this value, so
/// a repeat gets the same answer whatever has happened to the update since.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    pub status: UpdateStatus,
    /// For `applied`, `ignored` and `dead`: what processing recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// For `ignored`, `dead`, `parked` and `rejected`: the last attempt's error entry
    /// (`{attempt, at, code, message, ...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Value>,
}

impl Answer {
    /// Stored and not finished: the worker will finish it.
    pub fn pending(id: &str, status: UpdateStatus) -> Self {
        Self {
            id: id.to_owned(),
            status,
            result: None,
            last_error: None,
        }
    }

    /// The answer that describes an update as it is now.
    pub fn of(row: &UpdateRow) -> Self {
        let status = row.status;
        let last_error = || {
            row.errors()
                .iter()
                .rev()
                .find(|e| !is_retry_marker(e))
                .cloned()
        };
        match status {
            UpdateStatus::Accepted | UpdateStatus::Processing => Self::pending(&row.id, status),
            UpdateStatus::Applied => Self {
                result: row.result().cloned(),
                ..Self::pending(&row.id, status)
            },
            UpdateStatus::Ignored | UpdateStatus::Dead => Self {
                result: row.result().cloned(),
                last_error: last_error(),
                ..Self::pending(&row.id, status)
            },
            UpdateStatus::Parked | UpdateStatus::Rejected => Self {
                last_error: last_error(),
                ..Self::pending(&row.id, status)
            },
        }
    }

    /// True once processing has decided (applied, ignored, rejected, dead) or parked the
    /// update: waiting longer will not change the answer.
    pub fn is_settled(&self) -> bool {
        !matches!(
            self.status,
            UpdateStatus::Accepted | UpdateStatus::Processing
        )
    }

    /// The error that means the update could not be applied: it was rejected, or it waits
    /// for an order that does not exist. (A parked update whose event does not apply yet
    /// is not a failure: it applies when the order changes.)
    pub fn failure(&self) -> Option<&Value> {
        let error = self.last_error.as_ref();
        match self.status {
            UpdateStatus::Rejected => error,
            UpdateStatus::Parked => error.filter(|e| {
                e.get("code").and_then(Value::as_str) == Some(DomainError::OrderNotFound.code())
            }),
            _ => None,
        }
    }

    /// The answer as stored for replays.
    pub fn to_stored(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({"id": self.id, "status": self.status}))
    }

    /// An answer as stored. Versions before the typed answer stored the HTTP body they
    /// sent; its error envelope (`{"error": {..., "update_id", "status"}}`) is read back
    /// into the answer it was rendered from, and the other bodies are answers already.
    pub fn from_stored(value: &Value) -> Result<Self, serde_json::Error> {
        if let Some(Value::Object(error)) = value.get("error") {
            let mut error = error.clone();
            let id = error.remove("update_id").unwrap_or_default();
            let status = error.remove("status").unwrap_or_default();
            return Ok(Self {
                id: serde_json::from_value(id)?,
                status: serde_json::from_value(status)?,
                result: None,
                last_error: Some(Value::Object(error)),
            });
        }
        serde_json::from_value(value.clone())
    }
}
