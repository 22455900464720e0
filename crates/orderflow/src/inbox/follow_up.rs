//! Follow-up events: a command asks for another event on the same order. The domain hands
//! over the order, the event and the items ([`FollowUp`]); how the event is kept is the
//! inbox's business: an update of client `orderflow`, stored in the transaction of the
//! change that caused it, so it is applied after that change, in order with the order's
//! other updates, exactly once.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::ingest::request_hash;
use crate::store::batch::Writes;
use crate::store::inbox::NewUpdate;

/// The client name follow-up updates are stored under.
pub const CLIENT: &str = "orderflow";

/// A command's follow-up event for one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowUp<'a> {
    pub order_reference: &'a str,
    pub event: &'a str,
    /// Ids of the items to trigger it for.
    pub items: &'a [i64],
}

impl FollowUp<'_> {
    /// Adds the inbox row this follow-up becomes to `writes`, to be sent with the change
    /// that caused it. `at` is when it counts as received.
    pub fn stage(&self, writes: &mut Writes, at: DateTime<Utc>) {
        writes.follow_up(self.update(at));
    }

    /// The inbox update, as an ERP would have sent it (items by id), without an idempotency
    /// key: nothing repeats it.
    fn update(&self, at: DateTime<Utc>) -> NewUpdate {
        let items: Vec<Value> = self.items.iter().map(|id| json!({ "id": id })).collect();
        let payload = json!({
            "order_reference": self.order_reference,
            "event": self.event,
            "items": items,
        });
        NewUpdate {
            id: uuid::Uuid::now_v7().to_string(),
            client: CLIENT.into(),
            idempotency_key: None,
            request_hash: request_hash(&payload),
            order_reference: self.order_reference.to_owned(),
            event: Some(self.event.to_owned()),
            payload,
            response: None,
            received_at: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_up_is_an_update_of_the_same_order_with_items_by_id() {
        let at = crate::store::now();
        let f = FollowUp {
            order_reference: "R-1",
            event: "ship",
            items: &[3, 4],
        };
        let u = f.update(at);
        assert_eq!(
            u.payload,
            json!({"order_reference": "R-1", "event": "ship", "items": [{"id": 3}, {"id": 4}]})
        );
        assert_eq!(
            (u.client.as_str(), u.event.as_deref(), u.received_at),
            (CLIENT, Some("ship"), at)
        );
        assert_eq!(u.idempotency_key, None);
        assert_eq!(u.request_hash, request_hash(&u.payload));
        assert_ne!(f.update(at).id, u.id, "every follow-up is its own update");
    }
}
