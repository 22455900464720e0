//! Wake-ups between processes (PostgreSQL): a caller waiting on an update in one instance
//! is woken when another instance settles it, and a worker when another instance stores
//! an update, not by polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orderflow::domain::{OrderService, ProcessSet, Source};
use orderflow::inbox::ingest::{Accepted, Incoming, Mode};
use orderflow::inbox::model::UpdateStatus;
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::Store;
use serde_json::json;

use crate::support::{self, Backend, fixtures};

/// One instance: its own store (pools, listener) and inbox on the shared database.
async fn instance(url: &str, settle_poll: Duration) -> Inbox {
    let config = support::test_config(url);
    let processes = ProcessSet::load(&fixtures().join("processes"), &config.bindings()).unwrap();
    let store = Store::open(url).await.unwrap();
    let service = OrderService::new(store, Arc::new(processes));
    let mut settings = InboxSettings::from_config(&config);
    settings.settle_poll = settle_poll;
    Inbox::new(service, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn a_repeat_waiting_in_one_instance_is_woken_by_the_other() {
    let Some((url, _db)) = support::database(Backend::Postgres).await else {
        return;
    };
    // `a` would read the update again only after a minute: only a wake-up answers in time.
    let a = instance(&url, Duration::from_secs(60)).await;
    let b = instance(&url, Duration::from_secs(60)).await;
    let order = support::one_item_order("W-1", "Test01");
    b.service().create(order, Source::Api).await.unwrap();

    // An earlier update of the order, held under another worker's lease: neither instance
    // can process the next one inline.
    let pay = b
        .prepare(
            "erp",
            None,
            json!({"order_reference": "W-1", "event": "pay"}),
            "$",
        )
        .unwrap();
    b.store_updates(vec![pay]).await.unwrap();
    let now = orderflow::store::now();
    let lease = now + chrono::Duration::seconds(60);
    let held = b
        .store()
        .claim_updates(now, 10, "worker-x", lease)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);

    // The first request (in `b`) waits for its answer; a repeat of its key (in `a`) waits
    // for that first answer.
    let ship = json!({"order_reference": "W-1", "event": "ship"});
    let first = {
        let u = incoming("K-1", ship.clone());
        let b = b.clone();
        tokio::spawn(async move { b.accept(u, Mode::Wait(Duration::from_secs(30))).await })
    };
    support::eventually(
        Duration::from_secs(10),
        "the first request is stored",
        || {
            let a = a.clone();
            async move {
                let rows = a
                    .store()
                    .list_updates(&orderflow::store::inbox::UpdateFilter {
                        event: Some("ship".into()),
                        limit: 10,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                (!rows.is_empty()).then_some(())
            }
        },
    )
    .await;
    let started = Instant::now();
    let repeat = {
        let u = incoming("K-1", ship);
        let a = a.clone();
        tokio::spawn(async move { a.accept(u, Mode::Wait(Duration::from_secs(30))).await })
    };

    // `b` finishes the held update; then the waiting one is applied in `b`, by its worker
    // step or by the first request itself (wait mode claims it inline when its claim comes
    // after the held one is done).
    let done = b.process_batch(&held, "worker-x", now).await.unwrap();
    assert_eq!(done, vec![Some(UpdateStatus::Applied)]);
    let step = b
        .process_next_batch("worker-b", orderflow::store::now())
        .await
        .unwrap();
    assert!(
        step.is_empty() || step == vec![Some(UpdateStatus::Applied)],
        "{step:?}"
    );

    let first = first.await.unwrap().unwrap();
    let repeat = repeat.await.unwrap().unwrap();
    let Accepted::Settled(answer) = &first else {
        panic!("the first request settles in wait mode: {first:?}")
    };
    assert_eq!(answer.status, UpdateStatus::Applied, "{first:?}");
    assert_eq!(
        repeat,
        Accepted::Replayed(answer.clone()),
        "the repeat gets the first answer"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the repeat was answered by polling, not woken: {:?}",
        started.elapsed()
    );
    a.store().close().await;
    b.store().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn an_update_stored_in_one_instance_wakes_the_workers_of_the_other() {
    let Some((url, _db)) = support::database(Backend::Postgres).await else {
        return;
    };
    let a = instance(&url, Duration::from_secs(60)).await;
    let b = instance(&url, Duration::from_secs(60)).await;
    // `a` stores nothing itself, so only a NOTIFY from `b`'s group commit wakes it. Its
    // listener connects in the background once someone waits, so an update stored before
    // that is not heard: `b` stores one a second until `a` is woken.
    let wakeups = a.store().wakeups().clone();
    let woken = tokio::spawn(async move { wakeups.inbox_due().await });
    tokio::pin!(woken);
    for n in 0..10 {
        let update = b
            .prepare(
                "erp",
                None,
                json!({"order_reference": format!("N-{n}"), "event": "pay"}),
                "$",
            )
            .unwrap();
        b.store_updates(vec![update]).await.unwrap();
        if tokio::time::timeout(Duration::from_secs(1), &mut woken)
            .await
            .is_ok()
        {
            a.store().close().await;
            b.store().close().await;
            return;
        }
    }
    panic!("ten updates stored in `b` and `a`'s workers were never woken");
}

/// An ERP update from client `erp` with idempotency key `key`.
fn incoming(key: &str, body: serde_json::Value) -> Incoming {
    Incoming {
        client: "erp".into(),
        key: Some(key.into()),
        body,
        path: "$".into(),
    }
}
