//! Crash safety of after-commit effects: the real `orderflow` binary is killed with SIGKILL
//! while HTTP commands are in flight (the receiver answers slowly), then restarted on the
//! same database, twice. Afterwards every effect is `done`, settled by exactly one
//! successful attempt, and the receiver saw every effect's idempotency key: at least once
//! (a call cut off by the kill is sent again with the same key, which the receiver
//! deduplicates), never a key of an effect that does not exist.

use std::collections::HashSet;
use std::time::Duration;

use orderflow::store::Store;
use orderflow::store::effects::EffectFilter;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::binary::{Server, create_client};
use crate::support::receiver::{Receiver, Reply};
use crate::support::{self, Backend, backend_tests, eventually};

backend_tests!(effects_end_done_once_across_sigkill);

const ORDERS: usize = 24;
const KILLS: usize = 2;

async fn effects_end_done_once_across_sigkill(backend: Backend) {
    let Some((url, _db)) = support::database(backend).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.always(Reply::Slow(Duration::from_millis(400)));
    let dir = tempfile::tempdir().expect("temp dir");
    // Short leases: effects a killed server held are claimed again soon after restart.
    let config = format!(
        r#"
[outbound]
timeout = "2s"

[effects]
lease = "1s"
poll_interval = "100ms"
backoff_base = "100ms"
backoff_max = "1s"
batch_size = 4

[commands."Test/Capture"]
type = "http"
url = "{0}/capture"

[commands."Test/Refund"]
type = "http"
url = "{0}/refund"
"#,
        receiver.url
    );
    std::fs::write(dir.path().join("orderflow.toml"), config).expect("config");
    let processes = support::fixtures().join("effects");
    let shop = create_client(&url, dir.path(), "shop-crash", "shop").await;
    let mut server = Server::start(&url, dir.path(), &processes, 0).await;

    let http = reqwest::Client::new();
    for o in 0..ORDERS {
        let body = json!({"reference": format!("EC-{o}"), "process": "Capture01",
            "items": [{"sku": "A", "quantity": 1}]});
        let resp = http
            .post(format!("{}/v1/orders", server.base))
            .bearer_auth(&shop)
            .json(&body)
            .send()
            .await
            .expect("create order");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let id = resp.json::<serde_json::Value>().await.unwrap()["id"].clone();
        let resp = http
            .post(format!("{}/v1/orders/{id}/events", server.base))
            .bearer_auth(&shop)
            .json(&json!({"event": "capture"}))
            .send()
            .await
            .expect("trigger capture");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Kill while calls are in flight: after a few more requests have arrived each time.
    for generation in 1..=KILLS {
        let seen = receiver.hits().len();
        eventually(Duration::from_secs(30), "calls in flight", || async {
            (receiver.hits().len() >= seen + 3).then_some(())
        })
        .await;
        server.kill().await;
        server = Server::start(&url, dir.path(), &processes, generation).await;
    }

    let store = Store::connect(&url).await.expect("store");
    let filter = EffectFilter {
        limit: 1000,
        ..EffectFilter::default()
    };
    let effects = eventually(Duration::from_secs(90), "every effect done", || async {
        let rows = store.list_effects(&filter).await.expect("effects");
        (rows.len() == ORDERS && rows.iter().all(|r| r.status == "done")).then_some(rows)
    })
    .await;
    let keys = receiver.by_key();
    let mut resent = 0;
    for e in &effects {
        let successes = store
            .effect_attempts(e.id)
            .await
            .expect("attempts")
            .iter()
            .filter(|a| a.status_code == Some(200))
            .count();
        assert_eq!(successes, 1, "effect {} settled by one success", e.id);
        let n = keys.get(&e.id.to_string()).copied().unwrap_or(0);
        assert!(n >= 1, "effect {} reached the receiver", e.id);
        resent += n - 1;
    }
    let ids: HashSet<String> = effects.iter().map(|e| e.id.to_string()).collect();
    assert!(
        keys.keys().all(|k| ids.contains(k)),
        "only keys of stored effects: {keys:?}"
    );
    eprintln!(
        "effects crash test: {} effects done, {} requests, {resent} sent again after a kill",
        effects.len(),
        receiver.hits().len()
    );
    store.close().await;
    server.kill().await;
}
