//! Claims side by side on one PostgreSQL database, with no worker in between: six tasks
//! claim small batches as fast as they can and finish each update by hand. Checked at
//! every claim: no update is claimed while another of its order is held, and each order's
//! updates are claimed in the order they were received (past a parked one only when it is
//! not due). This is the claim rule alone, with
//! no per-order work to hide a race behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use orderflow::config::Config;
use orderflow::domain::{OrderService, ProcessSet};
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::Store;
use orderflow::store::inbox::Stored;
use serde_json::json;

use crate::support::{self, Backend, fixtures};

const ORDERS: usize = 40;
const PER_ORDER: usize = 8;
const CLAIMERS: usize = 6;

/// Per order: the update held now, and the updates finished, in claim order.
#[derive(Default)]
struct Seen {
    held: Option<i64>,
    done: Vec<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn side_by_side_claims_keep_one_update_per_order_in_receive_order() {
    let Some((url, _db)) = support::database(Backend::Postgres).await else {
        return;
    };
    let config = Config {
        database_url: url.clone(),
        ..Config::default()
    };
    let processes = ProcessSet::load(&fixtures().join("fleet"), &config.bindings()).unwrap();
    let store = Store::open(&url).await.unwrap();
    let service = OrderService::new(store.clone(), Arc::new(processes));
    let inbox = Inbox::new(service, InboxSettings::from_config(&config));
    // Orders interleaved, as an ERP sends them; no order exists, which does not matter:
    // nothing is processed here.
    let mut rows = Vec::new();
    for n in 0..PER_ORDER {
        for o in 0..ORDERS {
            let body = json!({"order_reference": format!("RACE-{o:02}"), "event": "touch",
                "attributes": {"n": n}});
            rows.push(inbox.prepare("erp", None, body, "$").unwrap());
        }
    }
    let mut received: HashMap<String, Vec<i64>> = HashMap::new();
    let refs: Vec<String> = rows.iter().map(|r| r.order_reference.clone()).collect();
    for (r, s) in refs.iter().zip(inbox.store_updates(rows).await.unwrap()) {
        let Stored::New(seq) = s else {
            panic!("stored twice")
        };
        received.entry(r.clone()).or_default().push(seq);
    }

    let pool = store.postgres_pool().unwrap().clone();
    // Half the orders' first updates are parked (not due), so their later updates are
    // claimed past them; a waker makes them due one by one while the claims run, which is
    // when a claim deciding on an old snapshot would take an order's later update while
    // another claim takes the woken one.
    let parked: Vec<i64> = (0..ORDERS / 2)
        .map(|o| received[&format!("RACE-{o:02}")][0])
        .collect();
    sqlx::query(
        "UPDATE inbox SET status = 'parked', next_attempt_at = now() + interval '1 hour' \
         WHERE seq = ANY($1)",
    )
    .bind(&parked)
    .execute(&pool)
    .await
    .unwrap();
    let waker = {
        let pool = pool.clone();
        let parked = parked.clone();
        tokio::spawn(async move {
            for seq in parked {
                tokio::time::sleep(Duration::from_millis(3)).await;
                sqlx::query("UPDATE inbox SET next_attempt_at = now() WHERE seq = $1")
                    .bind(seq)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        })
    };
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..CLAIMERS {
        let (store, pool, seen) = (store.clone(), pool.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("claimer-{c}");
            let mut idle = 0;
            while idle < 50 {
                let now = Utc::now();
                let lease = now + chrono::Duration::seconds(60);
                let claimed = store.claim_updates(now, 4, &owner, lease).await.unwrap();
                if claimed.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                for row in &claimed {
                    let mut seen = seen.lock().unwrap();
                    let s = seen.entry(row.order_reference.clone()).or_default();
                    assert_eq!(
                        s.held, None,
                        "{owner} claimed {} of {} while {:?} was held",
                        row.seq, row.order_reference, s.held
                    );
                    s.held = Some(row.seq);
                }
                tokio::task::yield_now().await;
                for row in &claimed {
                    // Given up in the map before the finish commits: the next claim of
                    // the order can only come after it.
                    {
                        let mut seen = seen.lock().unwrap();
                        let s = seen.get_mut(&row.order_reference).unwrap();
                        s.held = None;
                        s.done.push(row.seq);
                    }
                    sqlx::query(
                        "UPDATE inbox SET status = 'applied', lease_owner = NULL, \
                         lease_until = NULL, processed_at = now() WHERE seq = $1",
                    )
                    .bind(row.seq)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            }
        }));
    }
    waker.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    for (reference, seqs) in &received {
        let done = &seen[reference].done;
        if parked.contains(&seqs[0]) {
            // Its later updates may pass the parked one; each is claimed once.
            let mut sorted = done.clone();
            sorted.sort_unstable();
            assert_eq!(&sorted, seqs, "{reference}: not each update claimed once");
            continue;
        }
        assert_eq!(
            seen.get(reference).map(|s| s.done.as_slice()),
            Some(seqs.as_slice()),
            "{reference}: claimed in another order than received"
        );
    }
}
