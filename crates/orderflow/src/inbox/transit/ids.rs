//! Update ids a broker transport issues before the update reaches the database: signed
//! (HMAC-SHA256 with a key the store keeps, see `Store::transit_key`), so any process can
//! answer `GET /v1/erp/order-updates/{id}` with `accepted` for an id it issued that no
//! consumer has stored yet, and 404 for one it did not issue.
//!
//! An id carries what that answer shows: the client (an ERP client sees only its own), the
//! order reference and event, and the receive time. An update with an idempotency key gets
//! an id derived from (client, key, body hash) and no receive time, so a repeat of it gets
//! the identical id and answer; a different body under the key gets another id, and its
//! consumer records it as rejected (`idempotency_key_reused`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::inbox::NewUpdate;

/// The name of the store's key for transit ids.
pub(crate) const KEY_NAME: &str = "transit_id";

/// Marks an id as a transit id, version 1.
const PREFIX: &str = "t1.";

/// What a transit id says about its update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InTransit {
    #[serde(rename = "c")]
    pub client: String,
    #[serde(rename = "r")]
    pub order_reference: String,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Milliseconds since the epoch; absent for an update with an idempotency key.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    received_ms: Option<i64>,
    /// Makes the id unique: random, or derived from (client, key, body hash).
    #[serde(rename = "n")]
    nonce: String,
}

impl InTransit {
    pub fn received_at(&self) -> Option<DateTime<Utc>> {
        self.received_ms.and_then(DateTime::from_timestamp_millis)
    }
}

/// Issues and checks transit ids with one key.
#[derive(Clone)]
pub struct TransitIds {
    key: Vec<u8>,
}

impl std::fmt::Debug for TransitIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransitIds(****)")
    }
}

impl TransitIds {
    pub fn new(key: &str) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
        }
    }

    /// The id of `u` (its `id` field is ignored).
    pub fn issue(&self, u: &NewUpdate) -> String {
        let (received_ms, nonce) = match &u.idempotency_key {
            Some(key) => {
                let mut h = Sha256::new();
                for part in [
                    u.client.as_bytes(),
                    key.as_bytes(),
                    u.request_hash.as_bytes(),
                ] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part);
                }
                (None, B64.encode(&h.finalize()[..12]))
            }
            None => (
                Some(u.received_at.timestamp_millis()),
                B64.encode(uuid::Uuid::now_v7().as_bytes()),
            ),
        };
        let claims = InTransit {
            client: u.client.clone(),
            order_reference: u.order_reference.clone(),
            event: u.event.clone(),
            received_ms,
            nonce,
        };
        let body = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = B64.encode(self.tag(&body));
        format!("{PREFIX}{body}.{tag}")
    }

    /// What `id` says, when this key issued it.
    pub fn verify(&self, id: &str) -> Option<InTransit> {
        let (body, tag) = id.strip_prefix(PREFIX)?.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        if tag.len() != 16 {
            return None;
        }
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        serde_json::from_slice(&B64.decode(body).ok()?).ok()
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_key())
    }

    fn tag(&self, body: &str) -> [u8; 16] {
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

#[cold]
fn unreachable_key() -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(b"-").unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(key: Option<&str>, hash: &str) -> NewUpdate {
        NewUpdate {
            id: String::new(),
            client: "erp".into(),
            idempotency_key: key.map(str::to_owned),
            request_hash: hash.into(),
            order_reference: "DE-1".into(),
            event: Some("ship".into()),
            payload: json!({}),
            response: None,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn ids_verify_with_their_key_only() {
        let ids = TransitIds::new("k1");
        let id = ids.issue(&update(None, "h"));
        let t = ids.verify(&id).expect("issued here");
        assert_eq!(t.client, "erp");
        assert_eq!(t.order_reference, "DE-1");
        assert!(t.received_at().is_some());
        assert_eq!(TransitIds::new("k2").verify(&id), None);
        let mut forged = id.clone();
        forged.push('A');
        assert_eq!(ids.verify(&forged), None);
        assert_eq!(ids.verify("0198c0de-0000-7000-8000-000000000000"), None);
    }

    #[test]
    fn a_key_gives_the_same_id_for_the_same_body_only() {
        let ids = TransitIds::new("k1");
        let a = ids.issue(&update(Some("K"), "h1"));
        assert_eq!(a, ids.issue(&update(Some("K"), "h1")));
        assert_ne!(a, ids.issue(&update(Some("K"), "h2")));
        assert_ne!(a, ids.issue(&update(Some("L"), "h1")));
        assert_eq!(ids.verify(&a).unwrap().received_at(), None);
        assert_ne!(
            ids.issue(&update(None, "h1")),
            ids.issue(&update(None, "h1"))
        );
    }
}
