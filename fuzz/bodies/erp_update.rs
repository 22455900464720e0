//! The `erp_update` fuzz target's body, shared with the test that replays its corpus
//! (`crates/orderflow/tests/it/fuzz_corpus.rs`).
//!
//! The bytes are an ERP update's request body, read as `POST /v1/erp/order-updates` reads
//! it: [`parse_json`] into a JSON value (the payload the inbox stores), the
//! [`OrderUpdate`] from that value, then [`OrderUpdate::check`]. Refusing is fine;
//! panicking is not. An update that is accepted must be one the store can keep: its
//! payload and the update itself serialise to JSON that parses back to the same value,
//! and no string in them holds a NUL character (PostgreSQL's `jsonb` cannot store one).

use orderflow::http::extract::parse_json;
use orderflow::inbox::model::OrderUpdate;
use serde_json::Value;

pub(crate) fn run(data: &[u8]) {
    if let Some((payload, update)) = accepted(data) {
        assert_storable("payload", &payload);
        let update = serde_json::to_value(&update).expect("an OrderUpdate serialises");
        assert_storable("update", &update);
    }
}

/// The payload the ERP endpoint would store for this body and the update read from it,
/// or `None` when the endpoint refuses the body.
pub(crate) fn accepted(data: &[u8]) -> Option<(Value, OrderUpdate)> {
    let payload = parse_json::<Value>(data).ok()?;
    let update = serde_json::from_value::<OrderUpdate>(payload.clone()).ok()?;
    // Every event is known here: which are depends on the loaded processes, and an
    // unknown one is refused before anything is stored.
    update.check(|_| true).ok()?;
    Some((payload, update))
}

/// Panics unless `value` serialises to JSON that parses back equal, with no NUL anywhere.
pub(crate) fn assert_storable(what: &str, value: &Value) {
    let text = serde_json::to_vec(value).expect("a JSON value serialises");
    let shown = String::from_utf8_lossy(&text);
    let back: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("accepted {what} does not parse back ({e}): {shown}"));
    assert_eq!(
        &back, value,
        "accepted {what} changes in a round trip: {shown}"
    );
    if let Some(path) = nul_at(value) {
        panic!("accepted {what} holds a NUL character at ${path}: {shown}");
    }
}

/// The JSON path (after `$`) of the first string or key holding a NUL character.
fn nul_at(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => (items.iter().enumerate())
            .find_map(|(i, v)| nul_at(v).map(|path| format!("[{i}]{path}"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(format!(".{k:?}"))
            } else {
                nul_at(v).map(|path| format!(".{k}{path}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}
