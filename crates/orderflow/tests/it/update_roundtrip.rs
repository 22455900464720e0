//! Whatever the ERP endpoint accepts can be stored and read back: generated update bodies
//! (odd references and events, item selectors, attributes with nested JSON, unicode,
//! integers of every size, floats written every way) either are refused or round-trip
//! through serde and through the inbox of each store.
//!
//! "Accepted" is decided by the `erp_update` fuzz target's body, which reads a body as the
//! endpoint does. The `hostile` generators also write NUL characters and the extreme
//! doubles that issue 14 found accepted but not storable on PostgreSQL.

use std::cell::Cell;

use orderflow::inbox::ingest::request_hash;
use orderflow::store::group::GroupWriter;
use orderflow::store::inbox::{NewUpdate, Stored};
use orderflow::store::{self, Store};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::fuzz_corpus::body::{accepted, assert_storable};
use crate::support::{self, Backend};

/// Cases per backend: each one is a store round trip.
const STORE_CASES: u32 = 64;

#[test]
fn accepted_updates_round_trip_through_serde() {
    let seen = Counts::default();
    runner(512)
        .run(&update_body(false), |body| {
            seen.add(accepted(&body).is_some());
            crate::fuzz_corpus::body::run(&body);
            Ok(())
        })
        .unwrap();
    seen.assert_mixed();
}

#[test]
fn hostile_accepted_updates_round_trip_through_serde() {
    runner(512)
        .run(&update_body(true), |body| {
            crate::fuzz_corpus::body::run(&body);
            Ok(())
        })
        .unwrap();
}

mod through_the_store {
    use super::*;

    #[test]
    fn sqlite() {
        round_trips_through_the_store(Backend::Sqlite, false);
    }

    #[test]
    fn postgres() {
        round_trips_through_the_store(Backend::Postgres, false);
    }

    #[test]
    fn hostile_sqlite() {
        round_trips_through_the_store(Backend::Sqlite, true);
    }

    #[test]
    fn hostile_postgres() {
        round_trips_through_the_store(Backend::Postgres, true);
    }
}

/// The doubles at the edges of `f64`, and integers past `u64`, read back as stored: issue
/// 14's `1.7976931348623157e308` came back from `jsonb` as a 309-digit integer that the
/// default (approximate) float parser of `serde_json` turned into infinity and refused.
async fn extreme_numbers_round_trip_through_the_store(backend: Backend) {
    let Some((url, _db)) = support::database(backend).await else {
        return;
    };
    let store = Store::open(&url).await.expect("open the store");
    // Past 1e300 the edge refuses a number (README, "Limits and hostile input"); the store
    // keeps even those exactly, for rows written before the rule or by hand.
    for n in ["1.7976931348623157e308", "-1.7976931348623157e308", "1e301"] {
        let body = format!(r#"{{"order_reference":"DE--1","attributes":{{"x":{n}}}}}"#);
        assert!(
            accepted(body.as_bytes()).is_none(),
            "{n} is refused at the edge"
        );
        let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
        let read = store_and_read(&store, &payload).await.expect(n);
        assert!(
            same_json(&read, &payload),
            "stored {payload} but read {read}"
        );
    }
    let numbers = [
        "1e300",
        "-1e300",
        "5e-324",
        "2.2250738585072014e-308",
        "1e16",
        "-0.0",
        "18446744073709551615",
        "-922337203685473709551615",
    ];
    for n in numbers {
        let body = format!(r#"{{"order_reference":"DE--1","attributes":{{"x":{n}}}}}"#);
        let (payload, _) = accepted(body.as_bytes()).expect("accepted");
        let read = store_and_read(&store, &payload).await.expect(n);
        assert!(
            same_json(&read, &payload),
            "stored {payload} but read {read}"
        );
    }
    store.close().await;
}

support::backend_tests!(extreme_numbers_round_trip_through_the_store);

/// Stores every accepted body in a fresh database's inbox and reads its payload back.
fn round_trips_through_the_store(backend: Backend, hostile: bool) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some((url, _db)) = rt.block_on(support::database(backend)) else {
        return;
    };
    let store = rt.block_on(Store::open(&url)).expect("open the store");
    let seen = Counts::default();
    runner(STORE_CASES)
        .run(&update_body(hostile), |body| {
            let Some((payload, _)) = accepted(&body) else {
                seen.add(false);
                return Ok(());
            };
            seen.add(true);
            let read = rt
                .block_on(store_and_read(&store, &payload))
                .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
            prop_assert!(
                same_json(&read, &payload),
                "stored {payload} but read back {read}"
            );
            Ok(())
        })
        .unwrap();
    if hostile {
        // Most hostile bodies are refused at the edge now; some must still get through.
        assert!(seen.accepted.get() > 0, "no hostile body was accepted");
    } else {
        seen.assert_mixed();
    }
    rt.block_on(store.close());
}

/// Inserts `payload` as the inbox does and reads it back by id.
async fn store_and_read(store: &Store, payload: &Value) -> anyhow::Result<Value> {
    let id = uuid::Uuid::now_v7().to_string();
    let update = NewUpdate {
        id: id.clone(),
        client: "erp".into(),
        // Unique, so a key the generator repeats does not replay an earlier row.
        idempotency_key: Some(format!(
            "{}#{id}",
            payload["idempotency_key"].as_str().unwrap_or_default()
        )),
        request_hash: request_hash(payload),
        order_reference: payload["order_reference"]
            .as_str()
            .unwrap_or_default()
            .into(),
        event: payload["event"].as_str().map(str::to_owned),
        payload: payload.clone(),
        response: None,
        received_at: store::now(),
    };
    // The group writer is the inbox's own insert path.
    let stored = GroupWriter::new(store.clone()).insert(&[update]).await?;
    anyhow::ensure!(
        matches!(stored[..], [Stored::New(_)]),
        "not stored as new: {stored:?}"
    );
    let row = store
        .update_by_id(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("update {id} is gone"))?;
    let payload = row
        .payload()
        .map_err(|e| anyhow::anyhow!("the stored payload does not read back: {e}"))?
        .clone();
    assert_storable("stored payload", &payload);
    Ok(payload)
}

/// Equal as JSON: numbers by value, whatever their written form. PostgreSQL's `jsonb`
/// keeps numbers as `numeric`, so the double `1e16` comes back as the integer
/// `10000000000000000`: the same number, another `serde_json` variant.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// How many generated bodies were accepted and refused, so a generator that only makes
/// one kind fails the test instead of testing nothing.
#[derive(Default)]
struct Counts {
    accepted: Cell<u32>,
    refused: Cell<u32>,
}

impl Counts {
    fn add(&self, accepted: bool) {
        let c = if accepted {
            &self.accepted
        } else {
            &self.refused
        };
        c.set(c.get() + 1);
    }

    fn assert_mixed(&self) {
        let (a, r) = (self.accepted.get(), self.refused.get());
        // About 45% are accepted; an eighth leaves room for chance on 64 cases.
        assert!(8 * a >= a + r, "only {a} of {} bodies accepted", a + r);
        assert!(
            r > 0,
            "every body was accepted: the generator makes no near-misses"
        );
    }
}

/// An ERP update body: mostly valid, sometimes refused (empty or odd references, bad
/// selectors, timestamps and keys, numbers out of range).
fn update_body(hostile: bool) -> impl Strategy<Value = Vec<u8>> {
    let reference = prop_oneof![
        4 => "[A-Z]{2}--[0-9]{1,6}".prop_map(|r| quoted(&r)),
        1 => string(hostile),
    ];
    let event =
        prop_oneof![4 => "[a-z][a-z ]{0,15}".prop_map(|e| quoted(&e)), 1 => string(hostile)];
    let selector = prop_oneof![
        4 => any::<i64>().prop_map(|id| format!(r#"{{"id":{id}}}"#)),
        4 => string(hostile).prop_map(|sku| format!(r#"{{"sku":{sku}}}"#)),
        1 => Just(r#"{"id":"one"}"#.to_owned()),
    ];
    let items = vec(selector, 0..4).prop_map(|s| format!("[{}]", s.join(",")));
    let attributes = vec((string(hostile), json(hostile)), 0..5).prop_map(|f| object(&f));
    let occurred_at = prop_oneof![
        4 => (0i64..4_102_444_800).prop_map(|s| {
            let at = chrono::DateTime::from_timestamp(s, 0).expect("in range");
            quoted(&at.to_rfc3339())
        }),
        1 => Just(quoted("yesterday")),
    ];
    let fields = (
        reference,
        option::weighted(0.7, event),
        option::of(items),
        option::weighted(0.7, attributes.clone()),
        option::of(attributes),
        option::of(occurred_at),
        // Keys are printable ASCII without spaces; now and then one that is not.
        option::of(prop_oneof![
            4 => "[!-~]{1,40}".prop_map(|k| quoted(&k)),
            1 => string(hostile),
        ]),
    );
    fields.prop_map(|(r, event, items, attrs, item_attrs, at, key)| {
        let named = [
            ("event", event),
            ("items", items),
            ("attributes", attrs),
            ("item_attributes", item_attrs),
            ("occurred_at", at),
            ("idempotency_key", key),
        ];
        let mut fields = vec![(quoted("order_reference"), r)];
        fields.extend(named.into_iter().filter_map(|(k, v)| Some((quoted(k), v?))));
        object(&fields).into_bytes()
    })
}

/// Any JSON value as text, nested up to four levels.
fn json(hostile: bool) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        number(hostile),
        string(hostile),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            vec((string(hostile), inner), 0..6).prop_map(|f| object(&f)),
        ]
    })
    .boxed()
}

/// A JSON number as a client might write it: integers of any size (past `u64` too),
/// doubles printed plainly and with exponents, subnormals, negative zero.
fn number(hostile: bool) -> BoxedStrategy<String> {
    let finite = any::<f64>().prop_filter("finite", |x| x.is_finite());
    let bounded = finite.prop_filter("not extreme", move |x| hostile || x.abs() <= 1e300);
    let mut edges = vec![
        "-0",
        "-0.0",
        "5e-324",
        "2.2250738585072014e-308",
        "1e16",
        "1E+2",
    ];
    if hostile {
        edges.extend(["1.7976931348623157e308", "-1.7976931348623157e308", "1e400"]);
    }
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        bounded.clone().prop_map(|x| x.to_string()),
        bounded.prop_map(|x| format!("{x:e}")),
        "-?[1-9][0-9]{19,40}",
        "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,20})?[eE][+-]?[0-9]{1,2}",
        proptest::sample::select(edges).prop_map(str::to_owned),
    ]
    .boxed()
}

/// A JSON string as text: any unicode (control characters and astral planes included),
/// escaped by serde or written with `\u` escapes and surrogate pairs. Only `hostile`
/// strings hold NUL.
fn string(hostile: bool) -> BoxedStrategy<String> {
    let text = prop_oneof![any::<String>(), "\\PC{0,12}", "[a-z_]{1,8}"]
        .prop_map(move |s| if hostile { s } else { s.replace('\0', "") });
    let mut escaped = vec![r#""\u00e9t\u00e9""#, r#""\ud83d\ude00""#, r#""tab\there""#];
    if hostile {
        escaped.extend([r#""a\u0000b""#, "\"\\u0000\""]);
    }
    prop_oneof![
        6 => text.prop_map(|s| quoted(&s)),
        1 => proptest::sample::select(escaped).prop_map(str::to_owned),
    ]
    .boxed()
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn object(fields: &[(String, String)]) -> String {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", fields.join(","))
}
