//! The inbox worker's step on both backends, driven through the library: outcomes of a
//! batch (applied, parked and woken, ignored, rejected), a database error that fails only
//! its own update, and an update whose lease another worker took over.

use std::sync::Arc;
use std::time::Duration;

use orderflow::domain::types::{EventName, OrderReference};
use orderflow::domain::{Change, EventInput, OrderService, ProcessSet, Source, Target};
use orderflow::inbox::model::UpdateStatus;
use orderflow::inbox::worker::WorkerOptions;
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::{Backend as StoreBackend, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Backend, Db, backend_tests, fixtures};

struct Fixture {
    service: OrderService,
    inbox: Inbox,
    _db: Db,
}

impl Fixture {
    /// `backoff`: `worker.backoff_base`, the delay before a failed or parked update is due
    /// again.
    async fn new(backend: Backend, backoff: &str) -> Option<Self> {
        let (url, db) = support::database(backend).await?;
        let mut config = support::test_config(&url);
        config.events.insert(
            "export".into(),
            serde_json::from_value(json!({"policy": "ignore"})).unwrap(),
        );
        config.events.insert(
            "cancel".into(),
            serde_json::from_value(json!({"policy": "reject"})).unwrap(),
        );
        config.worker.backoff_base = orderflow::config::duration::parse(backoff).unwrap();
        let processes =
            ProcessSet::load(&fixtures().join("processes"), &config.bindings()).unwrap();
        let store = Store::open(&url).await.unwrap();
        let service = OrderService::new(store, Arc::new(processes));
        let inbox = Inbox::new(service.clone(), InboxSettings::from_config(&config));
        Some(Self {
            service,
            inbox,
            _db: db,
        })
    }

    fn store(&self) -> &Store {
        self.service.store()
    }

    /// An order of Test01 with one item, `waiting` after its onEnter chain.
    async fn order(&self, reference: &str) {
        let input = support::one_item_order(reference, "Test01");
        self.service.create(input, Source::Api).await.unwrap();
    }

    async fn trigger(&self, reference: &str, event: &str) {
        let change = Change {
            expected: None,
            attributes: None,
            items: None,
            item_attributes: None,
            event: Some(EventInput {
                event: EventName::parse(event).unwrap(),
                manual_only: false,
            }),
            source: Source::Api,
        };
        let target = Target::Reference(OrderReference::parse(reference).unwrap());
        self.service.apply(target, change).await.unwrap();
    }

    /// Stores updates as the API would; returns their ids.
    async fn store_updates(&self, updates: &[Value]) -> Vec<String> {
        let rows: Vec<_> = updates
            .iter()
            .map(|u| self.inbox.prepare("erp", None, u.clone(), "$").unwrap())
            .collect();
        let ids = rows.iter().map(|r| r.id.clone()).collect();
        self.inbox.store_updates(rows).await.unwrap();
        ids
    }

    async fn run_once(&self) {
        let options = WorkerOptions {
            once: true,
            ..WorkerOptions::default()
        };
        self.inbox
            .run_worker(options, CancellationToken::new())
            .await
            .unwrap();
    }

    async fn status(&self, id: &str) -> (String, Value, i32) {
        let row = self.store().update_by_id(id).await.unwrap().unwrap();
        let code = row
            .errors()
            .last()
            .map(|e| e["code"].clone())
            .unwrap_or(Value::Null);
        (row.status.to_string(), code, row.attempts)
    }

    async fn state(&self, reference: &str) -> String {
        let (_, items) = self
            .store()
            .order_by_reference(reference)
            .await
            .unwrap()
            .unwrap();
        items[0].state.clone()
    }

    /// Sources of the history rows of `reference` that ERP updates wrote.
    async fn erp_history(&self, reference: &str) -> Vec<String> {
        let (order, _) = self
            .store()
            .order_by_reference(reference)
            .await
            .unwrap()
            .unwrap();
        let history = self.store().history(order.id).await.unwrap();
        history
            .into_iter()
            .map(|h| h.source)
            .filter(|s| s.starts_with("erp:"))
            .collect()
    }
}

backend_tests!(
    batch_outcomes_and_parked_updates_woken_by_their_order,
    a_database_error_fails_only_its_own_update,
    an_update_taken_over_is_not_finished_by_its_first_worker,
);

async fn batch_outcomes_and_parked_updates_woken_by_their_order(backend: Backend) {
    // Parked updates are due again only when their order changes.
    let Some(f) = Fixture::new(backend, "1h").await else {
        return;
    };
    for r in ["A", "D", "E", "F", "G", "H"] {
        f.order(r).await;
    }
    f.trigger("G", "pay").await;
    let ids = f
        .store_updates(&[
            json!({"order_reference": "A", "event": "pay", "attributes": {"erp": 1}}),
            json!({"order_reference": "C", "event": "pay"}),
            json!({"order_reference": "D", "event": "pay", "items": [{"sku": "NOPE"}]}),
            json!({"order_reference": "E", "event": "export"}),
            json!({"order_reference": "F", "event": "ship", "attributes": {"x": 1}}),
            json!({"order_reference": "G", "event": "cancel"}),
            // Parked (not applicable yet), then woken when the next one changes H.
            json!({"order_reference": "H", "event": "ship"}),
            json!({"order_reference": "H", "event": "pay"}),
        ])
        .await;
    f.run_once().await;

    let want = [
        ("applied", Value::Null),
        ("parked", json!("order_not_found")),
        ("rejected", json!("unknown_item")),
        ("ignored", json!("event_not_applicable")),
        ("parked", json!("event_not_applicable")),
        ("rejected", json!("event_not_applicable")),
    ];
    for (id, (status, code)) in ids.iter().zip(want) {
        let (s, c, attempts) = f.status(id).await;
        assert_eq!((s.as_str(), &c), (status, &code), "update {id}");
        assert_eq!(attempts, 1);
    }
    assert_eq!(f.state("A").await, "paid");
    assert_eq!(
        f.state("F").await,
        "waiting",
        "a parked update changes nothing"
    );
    let (a, _) = f.store().order_by_reference("A").await.unwrap().unwrap();
    assert_eq!(a.attributes.0["erp"], 1);
    assert_eq!(f.erp_history("A").await, vec![format!("erp:{}", ids[0])]);

    // H: `pay` applied while `ship` was parked, which woke `ship`: it applied after.
    assert_eq!(f.status(&ids[6]).await.0, "applied");
    assert_eq!(f.status(&ids[7]).await.0, "applied");
    assert_eq!(f.state("H").await, "shipped");
    assert_eq!(
        f.erp_history("H").await,
        vec![format!("erp:{}", ids[7]), format!("erp:{}", ids[6])]
    );

    // The order the ERP was faster than: creating it wakes its parked update.
    f.order("C").await;
    f.run_once().await;
    assert_eq!(f.status(&ids[1]).await.0, "applied");
    assert_eq!(f.state("C").await, "paid");
}

/// Makes inserting the history row of update `id` fail inside the database.
async fn fail_history_of(store: &Store, id: &str) {
    let source = format!("erp:{id}");
    let sql = match store.backend() {
        StoreBackend::Sqlite => format!(
            "CREATE TRIGGER fail_one BEFORE INSERT ON item_history \
             WHEN NEW.source = '{source}' BEGIN SELECT RAISE(ABORT, 'injected'); END"
        ),
        StoreBackend::Postgres => format!(
            "CREATE FUNCTION fail_one() RETURNS trigger AS $$ BEGIN \
             IF NEW.source = '{source}' THEN RAISE EXCEPTION 'injected'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER fail_one BEFORE INSERT ON item_history \
             FOR EACH ROW EXECUTE FUNCTION fail_one();"
        ),
    };
    let mut tx = store.begin().await.unwrap();
    tx.execute_script(sqlx::AssertSqlSafe(sql)).await.unwrap();
    tx.commit().await.unwrap();
}

async fn drop_failure(store: &Store) {
    let sql = match store.backend() {
        StoreBackend::Sqlite => "DROP TRIGGER fail_one",
        StoreBackend::Postgres => "DROP TRIGGER fail_one ON item_history",
    };
    let mut tx = store.begin().await.unwrap();
    tx.execute_script(sql).await.unwrap();
    tx.commit().await.unwrap();
}

async fn a_database_error_fails_only_its_own_update(backend: Backend) {
    let Some(f) = Fixture::new(backend, "1s").await else {
        return;
    };
    for r in ["A", "B", "C"] {
        f.order(r).await;
    }
    let ids = f
        .store_updates(&[
            json!({"order_reference": "A", "event": "pay"}),
            json!({"order_reference": "B", "event": "pay"}),
            json!({"order_reference": "C", "event": "pay"}),
        ])
        .await;
    fail_history_of(f.store(), &ids[1]).await;
    f.run_once().await;
    assert_eq!(f.status(&ids[0]).await.0, "applied");
    assert_eq!(f.status(&ids[2]).await.0, "applied");
    let (status, code, attempts) = f.status(&ids[1]).await;
    assert_eq!(
        (status.as_str(), code, attempts),
        ("accepted", json!("store_error"), 1)
    );
    assert_eq!(f.state("B").await, "waiting", "its change was rolled back");
    assert!(f.erp_history("B").await.is_empty());

    drop_failure(f.store()).await;
    // Due again after its backoff, 0.5 to 1 s after the failed attempt: the step is driven
    // with the clock set just before and at that time.
    let row = f.store().update_by_id(&ids[1]).await.unwrap().unwrap();
    let failed_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(row.errors().last().unwrap()["at"].clone()).unwrap();
    let backoff = (row.next_attempt_at - failed_at).num_milliseconds();
    assert!((500..=1000).contains(&backoff), "backoff {backoff} ms");
    let early = row.next_attempt_at - chrono::Duration::milliseconds(1);
    let step = f.inbox.process_next_batch("stepper", early).await.unwrap();
    assert!(step.is_empty(), "not due before its backoff: {step:?}");
    let step = f
        .inbox
        .process_next_batch("stepper", row.next_attempt_at)
        .await
        .unwrap();
    assert_eq!(step, vec![Some(UpdateStatus::Applied)]);
    assert_eq!(f.state("B").await, "paid");
    assert_eq!(f.erp_history("B").await, vec![format!("erp:{}", ids[1])]);
    assert_eq!(f.status(&ids[1]).await.2, 2);
}

async fn an_update_taken_over_is_not_finished_by_its_first_worker(backend: Backend) {
    let Some(f) = Fixture::new(backend, "1s").await else {
        return;
    };
    f.order("A").await;
    let ids = f
        .store_updates(&[json!({"order_reference": "A", "event": "pay"})])
        .await;
    let now = orderflow::store::now();
    let expired = now - chrono::Duration::seconds(1);
    // Worker `a` claims with a lease that has already run out; `b` takes the update over.
    let a = f
        .store()
        .claim_updates(now, 10, "worker-a", expired)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    let b = f
        .store()
        .claim_updates(now, 10, "worker-b", now + chrono::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "an expired lease is claimed again");
    assert_eq!(b[0].attempts, 2);

    let lost = f.inbox.process_batch(&a, "worker-a", now).await.unwrap();
    assert_eq!(lost, vec![None]);
    assert_eq!(f.status(&ids[0]).await.0, "processing");
    assert_eq!(f.state("A").await, "waiting");

    let done = f.inbox.process_batch(&b, "worker-b", now).await.unwrap();
    assert_eq!(done, vec![Some(UpdateStatus::Applied)]);
    assert_eq!(f.erp_history("A").await, vec![format!("erp:{}", ids[0])]);
}

backend_tests!(wait_mode_applies_inline_and_the_server_worker_applies_async);

async fn wait_mode_applies_inline_and_the_server_worker_applies_async(backend: Backend) {
    let Some(s) = support::start(backend).await else {
        return;
    };
    s.create_order("W-1", &[("SKU-1", 1)]).await;
    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", "wait=5")
        .json(&json!({"order_reference": "W-1", "event": "pay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "applied", "{body}");
    assert_eq!(body["result"]["moved"][0]["to"], "paid", "{body}");

    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", "respond-async")
        .json(&json!({"order_reference": "W-1", "event": "ship"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/erp/order-updates/{id}");
    let done = support::eventually(Duration::from_secs(10), "the worker applies it", || {
        let (s, path) = (&s, &path);
        async move {
            let (_, v) = s.get(path, &s.erp).await;
            (v["status"] == "applied").then_some(v)
        }
    })
    .await;
    assert!(done["processed_at"].is_string(), "{done}");
    let (_, order) = s.get("/v1/orders/by-reference/W-1", &s.shop).await;
    assert_eq!(order["items"][0]["state"], "shipped");
    s.stop().await;
}

backend_tests!(
    an_update_is_claimed_only_after_its_predecessors_are_admitted,
    the_claim_reads_the_due_and_the_per_order_index,
    the_oldest_pending_update_is_the_first_stored_of_any_pending_status
);

/// On SQLite the group commit stores updates outside the per-order index, and a claim of
/// 1,024 updates admits at most 1,024 of them; an update stored inside a transaction (a follow-up) is in
/// the index at once. The claim must not take such an update while an earlier one of its
/// order waits to be admitted, even when that earlier one is not due yet.
async fn an_update_is_claimed_only_after_its_predecessors_are_admitted(backend: Backend) {
    let Some(f) = Fixture::new(backend, "1s").await else {
        return;
    };
    // Prepared first: received (and due) before the updates stored next.
    let follow_up = f
        .inbox
        .prepare(
            "erp",
            None,
            json!({"order_reference": "A", "event": "ship"}),
            "$",
        )
        .unwrap();
    let (second, due_before) = (follow_up.id.clone(), follow_up.received_at);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // 1,024 updates of other orders, then the first of A: a claim of 1,024 admits no more
    // than the others.
    let mut batch: Vec<Value> = (0..1024)
        .map(|n| json!({"order_reference": format!("O{n}"), "event": "pay"}))
        .collect();
    batch.push(json!({"order_reference": "A", "event": "pay"}));
    let first = f.store_updates(&batch).await.pop().unwrap();
    let mut tx = f.store().begin().await.unwrap();
    tx.insert_updates(&[follow_up]).await.unwrap();
    tx.commit().await.unwrap();

    let lease = orderflow::store::now() + chrono::Duration::seconds(30);
    // At a time when only the second update of A is due: it must wait for the first.
    let early = f
        .store()
        .claim_updates(due_before, 1024, "w0", lease)
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "claimed before the first update of A: {:?}",
        early.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    let now = orderflow::store::now();
    let mut claimed_first = false;
    for round in 1..3 {
        let rows = f
            .store()
            .claim_updates(now, 1024, &format!("w{round}"), lease)
            .await
            .unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert!(
            !ids.contains(&second.as_str()),
            "round {round}: the second update of A was claimed before the first finished"
        );
        claimed_first |= ids.contains(&first.as_str());
    }
    assert!(claimed_first, "the first update of A was never claimed");
}

async fn the_claim_reads_the_due_and_the_per_order_index(backend: Backend) {
    let Some(f) = Fixture::new(backend, "1s").await else {
        return;
    };
    let plan = f
        .store()
        .explain_claim(orderflow::store::now())
        .await
        .unwrap();
    let text = plan.join("\n");
    match backend {
        Backend::Sqlite => {
            assert!(text.contains("inbox_due"), "{text}");
            // Covering: the order rule reads no table row.
            assert!(
                text.contains("COVERING INDEX inbox_order_pending"),
                "{text}"
            );
            assert!(!plan.iter().any(|l| l.contains("SCAN")), "{text}");
        }
        // PostgreSQL picks by its statistics (a new table has none worth reading).
        _ => assert!(!text.is_empty()),
    }
}

/// The inbox gauge's oldest pending update: the first stored of those accepted, parked or
/// processing, whichever status it has; finished updates do not count, however old.
async fn the_oldest_pending_update_is_the_first_stored_of_any_pending_status(backend: Backend) {
    let Some(f) = Fixture::new(backend, "1h").await else {
        return;
    };
    assert_eq!(f.store().oldest_pending().await.unwrap(), None);
    f.order("OLD-1").await;
    // Parks (no such order), then one that applies, both before the next.
    let ids = f
        .store_updates(&[
            json!({"order_reference": "OLD-MISSING", "event": "ship"}),
            json!({"order_reference": "OLD-1", "event": "pay"}),
        ])
        .await;
    let received = |id: &str| {
        let (store, id) = (f.store().clone(), id.to_owned());
        async move { store.update_by_id(&id).await.unwrap().unwrap().received_at }
    };
    let parked = received(&ids[0]).await;
    assert_eq!(f.store().oldest_pending().await.unwrap(), Some(parked));
    f.run_once().await;
    assert_eq!(f.status(&ids[0]).await.0, "parked");
    assert_eq!(f.status(&ids[1]).await.0, "applied");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = f
        .store_updates(&[json!({"order_reference": "OLD-2", "event": "ship"})])
        .await;
    // The parked one is older than the accepted one stored after it.
    assert_eq!(f.store().oldest_pending().await.unwrap(), Some(parked));
    assert!(received(&later[0]).await > parked);
}
