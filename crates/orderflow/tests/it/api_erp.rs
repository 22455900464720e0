//! ERP updates over HTTP: 202 then applied, idempotency (sequential and concurrent), wait
//! mode, policies, parking until the order exists, batches, signatures, bad input.

use std::time::{Duration, Instant};

use orderflow::domain::types::Role;
use orderflow::store::inbox::UpdateFilter;
use orderflow::webhook::SigningSecret;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, eventually, start, start_with, transport_tests};

transport_tests!(
    async_update_is_accepted_then_applied,
    repeats_have_one_effect_and_the_first_answer,
    concurrent_repeats_get_identical_answers,
    wait_mode_answers_with_the_result,
    wait_mode_answers_202_at_the_deadline,
    policies_reject_and_ignore,
    update_before_its_order_is_parked_then_applied,
    batch_gives_results_per_entry_in_order,
    signed_clients_must_sign,
    invalid_updates_never_enter_the_inbox,
    keys_are_freed_after_the_retention,
    follow_up_events_go_through_the_inbox,
);

const WAIT: Duration = Duration::from_secs(20);

/// POSTs an update with extra headers; returns status, headers and JSON body.
async fn send(
    s: &TestServer,
    token: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, HeaderMap, Value) {
    send_raw(s, "/v1/erp/order-updates", token, headers, body.to_string()).await
}

async fn send_raw(
    s: &TestServer,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

/// Waits until the update reaches `status`; returns its status view.
async fn until_status(s: &TestServer, id: &str, status: &str) -> Value {
    eventually(WAIT, &format!("update {id} {status}"), || async {
        let (code, v) = s.get(&format!("/v1/erp/order-updates/{id}"), &s.erp).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        (v["status"] == status).then_some(v)
    })
    .await
}

/// The inbox's rows once there are `n` (a broker transport stores them when consumed).
async fn rows_eventually(s: &TestServer, n: usize) -> usize {
    eventually(WAIT, "inbox rows", || async {
        let have = inbox_rows(s).await;
        (have == n).then_some(have)
    })
    .await
}

async fn inbox_rows(s: &TestServer) -> usize {
    let filter = UpdateFilter {
        limit: 100_000,
        ..UpdateFilter::default()
    };
    s.store.list_updates(&filter).await.unwrap().len()
}

async fn order(s: &TestServer, reference: &str) -> Value {
    let (code, o) = s
        .get(&format!("/v1/orders/by-reference/{reference}"), &s.shop)
        .await;
    assert_eq!(code, StatusCode::OK, "{o}");
    o
}

async fn erp_history(s: &TestServer, order: &Value) -> Vec<Value> {
    let (_, h) = s
        .get(&format!("/v1/orders/{}/history", order["id"]), &s.shop)
        .await;
    h["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["source"].as_str().unwrap_or_default().starts_with("erp:"))
        .collect()
}

async fn async_update_is_accepted_then_applied(b: Backend) {
    let Some(s) = start(b).await else { return };
    s.create_order("R-1", &[("A", 1), ("B", 2)]).await;
    let body = json!({"order_reference": "R-1", "event": "pay",
        "attributes": {"payment": {"status": "paid"}}, "item_attributes": {"paid_by": "erp"}});
    let (code, headers, r) = send(&s, &s.erp, &[("prefer", "respond-async")], &body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    assert_eq!(r["status"], "accepted");
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/v1/erp/order-updates/{id}")
    );
    assert_eq!(headers["preference-applied"], "respond-async");

    let done = until_status(&s, &id, "applied").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(
        done["result"]["moved"].as_array().unwrap().len(),
        2,
        "{done}"
    );
    assert!(done["processed_at"].is_string());
    let o = order(&s, "R-1").await;
    assert_eq!(o["attributes"]["payment"]["status"], "paid");
    for item in o["items"].as_array().unwrap() {
        assert_eq!(item["state"], "paid");
        assert_eq!(item["attributes"]["paid_by"], "erp");
    }
    let history = erp_history(&s, &o).await;
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|h| h["source"] == format!("erp:{id}")));
    s.stop().await;
}

async fn repeats_have_one_effect_and_the_first_answer(b: Backend) {
    let Some(s) = start(b).await else { return };
    s.create_order("R-2", &[("A", 1)]).await;
    let body = json!({"order_reference": "R-2", "event": "pay"});
    let key = [("idempotency-key", "pay-R-2")];
    let first = send(&s, &s.erp, &key, &body).await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.2);
    let id = first.2["id"].as_str().unwrap().to_owned();
    until_status(&s, &id, "applied").await;
    let again = send(&s, &s.erp, &key, &body).await;
    assert_eq!((again.0, &again.2), (first.0, &first.2));
    assert_eq!(
        again.1["location"], first.1["location"],
        "the repeat names the same update"
    );
    // Same key, other body: refused, nothing stored. Through a broker the fast path
    // cannot see the key's first body: the update is accepted under an id of its own and
    // recorded as rejected when consumed.
    let other = json!({"order_reference": "R-2", "event": "ship"});
    let (code, _, r) = send(&s, &s.erp, &key, &other).await;
    let mut rows = 2;
    if b.is_broker() {
        assert_eq!(code, StatusCode::ACCEPTED, "{r}");
        assert_ne!(r["id"], first.2["id"]);
        let v = until_status(&s, r["id"].as_str().unwrap(), "rejected").await;
        assert_eq!(v["last_error"]["code"], "idempotency_key_reused", "{v}");
        rows += 1;
    } else {
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
        assert_eq!(r["error"]["code"], "idempotency_key_reused");
    }
    // Key order in the body does not make it another request.
    let reordered = r#"{"event": "pay", "order_reference": "R-2"}"#.to_owned();
    let (code, _, r) = send_raw(&s, "/v1/erp/order-updates", &s.erp, &key, reordered).await;
    assert_eq!((code, &r), (first.0, &first.2));
    // The key is the client's: another client may use it.
    let admin = send(&s, &s.admin, &key, &body).await;
    assert_eq!(admin.0, StatusCode::ACCEPTED);
    assert_ne!(admin.2["id"], first.2["id"]);

    assert_eq!(rows_eventually(&s, rows).await, rows);
    let o = order(&s, "R-2").await;
    assert_eq!(erp_history(&s, &o).await.len(), 1, "one effect");
    s.stop().await;
}

async fn concurrent_repeats_get_identical_answers(b: Backend) {
    let Some(s) = start(b).await else { return };
    s.create_order("R-3", &[("A", 1)]).await;
    s.create_order("R-4", &[("A", 1)]).await;
    for (reference, prefer) in [("R-3", "respond-async"), ("R-4", "wait=5")] {
        let body = json!({"order_reference": reference, "event": "pay"});
        let key = format!("pay-{reference}");
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (http, url, token) = (
                s.http.clone(),
                format!("{}/v1/erp/order-updates", s.base),
                s.erp.clone(),
            );
            let (body, key) = (body.to_string(), key.clone());
            tasks.push(tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .header("prefer", prefer)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let code = resp.status();
                (code, resp.json::<Value>().await.unwrap())
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        for a in &answers {
            assert_eq!(
                a, &answers[0],
                "{prefer}: every repeat gets the first answer"
            );
        }
        let id = answers[0].1["id"]
            .as_str()
            .or(answers[0].1["error"]["update_id"].as_str())
            .unwrap()
            .to_owned();
        until_status(&s, &id, "applied").await;
        let o = order(&s, reference).await;
        assert_eq!(erp_history(&s, &o).await.len(), 1, "{prefer}: one effect");
        assert_eq!(o["version"], 2);
    }
    assert_eq!(rows_eventually(&s, 2).await, 2);
    s.stop().await;
}

async fn wait_mode_answers_with_the_result(b: Backend) {
    let Some(s) = start(b).await else { return };
    s.create_order("R-5", &[("A", 1), ("B", 1)]).await;
    let o = order(&s, "R-5").await;
    let a = o["items"][0]["id"].as_i64().unwrap();
    let body = json!({"order_reference": "R-5", "event": "pay", "items": [{"id": a}]});
    let (code, headers, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &body).await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert_eq!(headers["preference-applied"], "wait=5");
    assert_eq!(r["status"], "applied");
    assert_eq!(
        r["result"]["moved"],
        json!([{"item": a, "from": "waiting", "to": "paid"}])
    );
    assert_eq!(r["result"]["order"]["version"], 2);
    // By SKU.
    let body = json!({"order_reference": "R-5", "event": "pay", "items": [{"sku": "B"}]});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &body).await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert_eq!(r["result"]["moved"][0]["to"], "paid");
    // An unknown SKU cannot apply to this order: rejected at once.
    let body = json!({"order_reference": "R-5", "event": "ship", "items": [{"sku": "NOPE"}]});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &body).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(r["error"]["code"], "unknown_item");
    assert_eq!(r["error"]["status"], "rejected");
    s.stop().await;
}

async fn wait_mode_answers_202_at_the_deadline(b: Backend) {
    // No worker: an earlier update of the order stays `accepted`, so a later one may not
    // be processed inline (updates of one order apply in receive order) and the wait runs
    // out.
    let Some(s) = start_with(b, |c| c.worker.in_process = false).await else {
        return;
    };
    s.create_order("R-6", &[("A", 1)]).await;
    let first = json!({"order_reference": "R-6", "attributes": {"n": 1}});
    let (code, _, _) = send(&s, &s.erp, &[("prefer", "respond-async")], &first).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let second = json!({"order_reference": "R-6", "event": "pay"});
    let started = Instant::now();
    let (code, headers, r) = send(&s, &s.erp, &[("prefer", "wait=1")], &second).await;
    let took = started.elapsed();
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "accepted");
    assert!(headers.contains_key("location"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    s.stop().await;
}

async fn policies_reject_and_ignore(b: Backend) {
    let Some(s) = start_with(b, |c| {
        for (event, policy) in [("ship", "reject"), ("cancel", "ignore")] {
            c.events.insert(
                event.into(),
                serde_json::from_value(json!({"policy": policy})).unwrap(),
            );
        }
    })
    .await
    else {
        return;
    };
    s.create_order("R-7", &[("A", 1)]).await;
    s.post(
        &format!("/v1/orders/{}/events", order(&s, "R-7").await["id"]),
        &s.shop,
        json!({"event": "cancel"}),
    )
    .await;
    // `ship` does not apply to a cancelled item; its policy is reject.
    let ship = json!({"order_reference": "R-7", "event": "ship"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &ship).await;
    assert_eq!(code, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"]["code"], "event_not_applicable");
    assert_eq!(r["error"]["status"], "rejected");
    assert_eq!(r["error"]["items"][0]["state"], "cancelled");
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "respond-async")], &ship).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let v = until_status(&s, r["id"].as_str().unwrap(), "rejected").await;
    assert_eq!(v["last_error"]["code"], "event_not_applicable");
    // `cancel` again: ignored.
    let cancel = json!({"order_reference": "R-7", "event": "cancel"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "respond-async")], &cancel).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    until_status(&s, r["id"].as_str().unwrap(), "ignored").await;
    // `pay` (default policy park) on a cancelled item can never apply: rejected at once.
    let pay = json!({"order_reference": "R-7", "event": "pay"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &pay).await;
    assert_eq!(code, StatusCode::CONFLICT, "{r}");
    assert_eq!(r["error"]["status"], "rejected");
    // `export` (park) on a waiting item waits for a change of the order.
    s.create_order("R-7b", &[("A", 1)]).await;
    let export = json!({"order_reference": "R-7b", "event": "export"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &export).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "parked");
    s.stop().await;
}

async fn update_before_its_order_is_parked_then_applied(b: Backend) {
    let Some(s) = start(b).await else { return };
    let pay = json!({"order_reference": "R-8", "event": "pay"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "respond-async")], &pay).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let pay_id = r["id"].as_str().unwrap().to_owned();
    let parked = until_status(&s, &pay_id, "parked").await;
    assert_eq!(parked["last_error"]["code"], "order_not_found");
    // Wait mode says so with 404, and keeps the update.
    let ship = json!({"order_reference": "R-8", "event": "ship"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &ship).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{r}");
    assert_eq!(r["error"]["code"], "order_not_found");
    assert_eq!(r["error"]["status"], "parked");
    let ship_id = r["error"]["update_id"].as_str().unwrap().to_owned();

    s.create_order("R-8", &[("A", 1)]).await;
    until_status(&s, &pay_id, "applied").await;
    until_status(&s, &ship_id, "applied").await;
    let o = order(&s, "R-8").await;
    assert_eq!(o["items"][0]["state"], "shipped");
    let history = erp_history(&s, &o).await;
    let sources: Vec<&str> = history
        .iter()
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [format!("erp:{pay_id}"), format!("erp:{ship_id}")],
        "in the order received"
    );
    s.stop().await;
}

async fn batch_gives_results_per_entry_in_order(b: Backend) {
    let Some(s) = start_with(b, |c| c.max_body_bytes = 1 << 20).await else {
        return;
    };
    for i in 0..10 {
        s.create_order(&format!("B-{i}"), &[("A", 1)]).await;
    }
    let mut updates = Vec::new();
    let mut invalid = Vec::new();
    for i in 0..1000 {
        let entry = match i % 250 {
            7 => json!({"event": "pay"}),
            8 => json!({"order_reference": "B-1", "event": "fly"}),
            9 => json!({"order_reference": "B-1", "items": [{"sku": 5}], "attributes": {}}),
            10 => json!({"order_reference": "B-1", "surprise": true, "attributes": {}}),
            _ => json!({"order_reference": format!("B-{}", i % 10), "attributes": {"n": i}}),
        };
        if i % 250 >= 7 && i % 250 <= 10 {
            invalid.push(i);
        }
        updates.push(entry);
    }
    let body = json!({ "updates": updates }).to_string();
    let path = "/v1/erp/order-updates/batch";
    let (code, _, r) = send_raw(
        &s,
        path,
        &s.erp,
        &[("idempotency-key", "batch-1")],
        body.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, res) in results.iter().enumerate() {
        if invalid.contains(&i) {
            let path = res["error"]["path"].as_str().unwrap_or_default();
            assert!(path.starts_with(&format!("$.updates[{i}]")), "{i}: {res}");
        } else {
            assert_eq!(res["status"], "accepted", "{i}: {res}");
        }
    }
    assert_eq!(results[7]["error"]["code"], "invalid_request");
    assert_eq!(results[8]["error"]["code"], "unknown_event");
    assert_eq!(results[8]["error"]["path"], "$.updates[8].event");
    assert_eq!(
        rows_eventually(&s, 1000 - invalid.len()).await,
        1000 - invalid.len()
    );
    // The same batch again: the same results, nothing stored twice.
    let (code, _, again) =
        send_raw(&s, path, &s.erp, &[("idempotency-key", "batch-1")], body).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    // The same ids: a broker transport's consumer skips what the inbox has.
    assert_eq!(again, r);
    assert_eq!(inbox_rows(&s).await, 1000 - invalid.len());
    // Each order ends with the attributes of its last update, applied in order.
    let last = results.iter().rev().find(|r| r["id"].is_string()).unwrap();
    until_status(&s, last["id"].as_str().unwrap(), "applied").await;
    for k in 0..10_usize {
        let o = eventually(WAIT, "batch applied", || async {
            let o = order(&s, &format!("B-{k}")).await;
            (o["attributes"]["n"] == 990 + k).then_some(o)
        })
        .await;
        let applied = (0..1000)
            .filter(|i| i % 10 == k && !invalid.contains(i))
            .count();
        assert_eq!(o["version"], 1 + applied, "B-{k}: one version per update");
    }
    // Over the maximum: refused as a whole.
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"order_reference": "B-0", "attributes": {"n": i}}))
        .collect();
    let (code, _, r) = send_raw(
        &s,
        path,
        &s.erp,
        &[],
        json!({ "updates": too_many }).to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(r["error"]["path"], "$.updates");
    s.stop().await;
}

async fn signed_clients_must_sign(b: Backend) {
    let Some(s) = start(b).await else { return };
    s.create_order("R-9", &[("A", 1)]).await;
    let client = orderflow::auth::create_client(&s.store, "erp-signed", Role::Erp, true)
        .await
        .unwrap();
    let secret = SigningSecret::parse(client.signing_secret.as_deref().unwrap()).unwrap();
    let body = json!({"order_reference": "R-9", "attributes": {"signed": true}}).to_string();
    let now = chrono::Utc::now().timestamp();
    let sign = |id: &str, ts: i64, body: &str| secret.sign(id, ts, body.as_bytes());
    let post = |headers: Vec<(String, String)>, body: String| {
        let s = &s;
        let token = client.token.clone();
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            send_raw(s, "/v1/erp/order-updates", &token, &h, body).await
        }
    };
    let headers = |id: &str, ts: i64, sig: String| {
        vec![
            ("webhook-id".to_owned(), id.to_owned()),
            ("webhook-timestamp".to_owned(), ts.to_string()),
            ("webhook-signature".to_owned(), sig),
        ]
    };

    let ok = post(
        headers("msg_1", now, sign("msg_1", now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!(ok.0, StatusCode::ACCEPTED, "{}", ok.2);
    // webhook-id is the idempotency key: the redelivery gets the first answer.
    let again = post(
        headers("msg_1", now, sign("msg_1", now, &body)),
        body.clone(),
    )
    .await;
    assert_eq!((again.0, &again.2), (ok.0, &ok.2));
    // svix-* names and several signatures (one stale key, one current).
    let svix = vec![
        ("svix-id".to_owned(), "msg_2".to_owned()),
        ("svix-timestamp".to_owned(), now.to_string()),
        (
            "svix-signature".to_owned(),
            format!(
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}",
                sign("msg_2", now, &body)
            ),
        ),
    ];
    let r = post(svix, body.clone()).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.2);

    let tampered = body.replace("true", "false");
    let wrong_secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    for (what, h, b) in [
        (
            "tampered body",
            headers("msg_3", now, sign("msg_3", now, &body)),
            tampered,
        ),
        (
            "old timestamp",
            headers("msg_4", now - 400, sign("msg_4", now - 400, &body)),
            body.clone(),
        ),
        (
            "wrong secret",
            headers(
                "msg_5",
                now,
                wrong_secret.sign("msg_5", now, body.as_bytes()),
            ),
            body.clone(),
        ),
        ("no signature", Vec::new(), body.clone()),
    ] {
        let (code, _, r) = post(h, b).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{what}: {r}");
        assert_eq!(r["error"]["code"], "bad_signature", "{what}");
    }
    // Clients without a secret need no signature.
    let plain = send(
        &s,
        &s.erp,
        &[],
        &json!({"order_reference": "R-9", "attributes": {"p": 1}}),
    )
    .await;
    assert_eq!(plain.0, StatusCode::ACCEPTED);
    assert_eq!(rows_eventually(&s, 3).await, 3);
    s.stop().await;
}

async fn invalid_updates_never_enter_the_inbox(b: Backend) {
    let Some(s) = start(b).await else { return };
    let path = "/v1/erp/order-updates";
    let cases: Vec<(String, &str, StatusCode, &str, Option<&str>)> = vec![
        (
            r#"{"order_reference": "R", "event": 5}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("$.event"),
        ),
        (
            r#"{"order_reference": "R", "items": [{"id": "x"}], "event": "pay"}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("$.items[0].id"),
        ),
        (
            r#"{"order_reference": "R"}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Some("$"),
        ),
        (
            r#"{"order_reference": "R", "event": "pay", "extra": 1}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            None,
        ),
        (
            r#"{"order_reference": "R", "event": "nope"}"#.into(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_event",
            Some("$.event"),
        ),
        (
            "{not json".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            r#"{"order_reference": "R", "event": "pay"}"#.into(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            format!(
                r#"{{"order_reference": "R", "attributes": {{"x": "{}"}}}}"#,
                "y".repeat(20_000)
            ),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            None,
        ),
    ];
    for (body, ct, want, code, want_path) in cases {
        let resp = s
            .http
            .post(format!("{}{path}", s.base))
            .bearer_auth(&s.erp)
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let r: Value = resp.json().await.unwrap();
        assert_eq!(status, want, "{body:.80}: {r}");
        assert_eq!(r["error"]["code"], code, "{body:.80}");
        if let Some(p) = want_path {
            assert_eq!(r["error"]["path"], p, "{body:.80}");
        }
    }
    // Roles and authentication.
    let ok_body = json!({"order_reference": "R", "event": "pay"});
    let (code, _, _) = send(&s, &s.shop, &[], &ok_body).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _, _) = send(&s, "of_wrong", &[], &ok_body).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=soon")], &ok_body).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(inbox_rows(&s).await, 0, "nothing invalid was stored");
    // An ERP client sees only its own updates.
    let (code, _, r) = send(&s, &s.admin, &[], &ok_body).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let (code, _) = s
        .get(
            &format!("/v1/erp/order-updates/{}", r["id"].as_str().unwrap()),
            &s.erp,
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    s.stop().await;
}

async fn keys_are_freed_after_the_retention(b: Backend) {
    let Some(s) = start(b).await else { return };
    let key = [("idempotency-key", "k-retention")];
    let first = json!({"order_reference": "R-10", "attributes": {"n": 1}});
    let (code, _, r1) = send(&s, &s.erp, &key, &first).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    // Within the retention the key is taken.
    assert_eq!(
        s.store
            .expire_keys(None, chrono::Utc::now() - chrono::Duration::days(7))
            .await
            .unwrap(),
        0
    );
    let second = json!({"order_reference": "R-10", "attributes": {"n": 2}});
    let (code, _, r) = send(&s, &s.erp, &key, &second).await;
    let mut second = second;
    if b.is_broker() {
        // Refused when consumed; that id stays the rejected one, so the update after the
        // retention is another body.
        assert_eq!(code, StatusCode::ACCEPTED);
        until_status(&s, r["id"].as_str().unwrap(), "rejected").await;
        second = json!({"order_reference": "R-10", "attributes": {"n": 3}});
    } else {
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    }
    until_status(&s, r1["id"].as_str().unwrap(), "parked").await;
    // Seven days later (the worker runs this on its own) the key is free again; the
    // update stays in the inbox.
    let later = chrono::Utc::now() + chrono::Duration::days(7) + chrono::Duration::seconds(1);
    // A run that starts where the last one ended reads only what was received since: an
    // update received before `from` keeps its key.
    let cutoff = later - chrono::Duration::days(7);
    let expire_from = |from| s.store.expire_keys(Some(from), cutoff);
    assert_eq!(
        expire_from(cutoff - chrono::Duration::milliseconds(500))
            .await
            .unwrap(),
        0
    );
    let freed = expire_from(cutoff - chrono::Duration::minutes(5))
        .await
        .unwrap();
    assert_eq!(freed, 1);
    let (code, _, r2) = send(&s, &s.erp, &key, &second).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_ne!(r1["id"], r2["id"]);
    let rows = if b.is_broker() { 3 } else { 2 };
    assert_eq!(rows_eventually(&s, rows).await, rows);
    s.stop().await;
}

async fn follow_up_events_go_through_the_inbox(b: Backend) {
    let Some(s) = start(b).await else { return };
    let body = json!({"reference": "F-1", "process": "FollowUp01", "items": [{"sku": "A", "quantity": 1}]});
    let (code, _) = s.post("/v1/orders", &s.shop, body).await;
    assert_eq!(code, StatusCode::CREATED);
    let confirm = json!({"order_reference": "F-1", "event": "confirm"});
    let (code, _, r) = send(&s, &s.erp, &[("prefer", "wait=5")], &confirm).await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert_eq!(r["result"]["moved"][0]["to"], "confirmed");
    // The command's `ship` is an inbox update of its own, applied after the confirmation.
    let o = eventually(WAIT, "follow-up applied", || async {
        let o = order(&s, "F-1").await;
        (o["items"][0]["state"] == "shipped").then_some(o)
    })
    .await;
    let history = erp_history(&s, &o).await;
    assert_eq!(history.len(), 2, "{history:?}");
    let follow_up = history[1]["source"]
        .as_str()
        .unwrap()
        .trim_start_matches("erp:");
    let (code, v) = s
        .get(&format!("/v1/erp/order-updates/{follow_up}"), &s.admin)
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["event"].as_str()),
        (Some("applied"), Some("ship"))
    );
    s.stop().await;
}
