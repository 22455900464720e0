//! Accepting ERP updates: idempotency across requests and within one group commit, and a
//! group that fails to store.

use orderflow::config::Config;
use orderflow::inbox::{Inbox, InboxSettings};
use orderflow::store::group::GroupWriter;
use orderflow::store::inbox::{NewUpdate, Stored, UpdateFilter};
use orderflow::store::{self, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, start};

backend_tests!(
    a_repeated_key_gets_the_first_answer_and_no_second_row,
    repeats_that_meet_in_one_group_store_one_row,
    a_failed_group_stores_nothing_and_the_next_one_is_stored,
    a_request_that_cannot_be_stored_fails_alone,
    each_row_of_a_group_answers_with_its_own_seq,
    each_repeat_in_a_group_gets_the_row_stored_first_under_its_key,
    a_group_larger_than_one_insert_keeps_its_order_and_answers,
);

async fn post_update(s: &TestServer, key: &str, body: &Value) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/erp/order-updates", s.base))
        .bearer_auth(&s.erp)
        .header("prefer", "respond-async")
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("JSON"))
}

async fn rows_of(store: &Store, reference: &str) -> usize {
    let filter = UpdateFilter {
        order_reference: Some(reference.into()),
        limit: 1_000,
        ..UpdateFilter::default()
    };
    store.list_updates(&filter).await.expect("rows").len()
}

async fn a_repeated_key_gets_the_first_answer_and_no_second_row(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let body = json!({"order_reference": "ING-1", "attributes": {"n": 1}});
    let (status, first) = post_update(&s, "k-1", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = post_update(&s, "k-1", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], first["id"]);
    let other = json!({"order_reference": "ING-1", "attributes": {"n": 2}});
    let (status, reused) = post_update(&s, "k-1", &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(rows_of(&s.store, "ING-1").await, 1);
    s.stop().await;
}

async fn repeats_that_meet_in_one_group_store_one_row(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    // Within one request: two entries with one key.
    let entry =
        json!({"order_reference": "ING-2", "attributes": {"n": 1}, "idempotency_key": "same"});
    let (status, batch) = s
        .post(
            "/v1/erp/order-updates/batch",
            &s.erp,
            json!({"updates": [entry, entry]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let results = batch["results"].as_array().unwrap();
    assert!(results[0]["id"].is_string(), "{batch}");
    assert_eq!(results[0]["id"], results[1]["id"], "{batch}");
    assert_eq!(rows_of(&s.store, "ING-2").await, 1);

    // Many requests at once with one key: whichever groups they land in, one row.
    let body = json!({"order_reference": "ING-3", "attributes": {"n": 1}});
    let answers: Vec<_> = (0..16)
        .map(|_| {
            let (http, base, erp, body) =
                (s.http.clone(), s.base.clone(), s.erp.clone(), body.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{base}/v1/erp/order-updates"))
                    .bearer_auth(erp)
                    .header("prefer", "respond-async")
                    .header("idempotency-key", "racing")
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                (resp.status(), resp.json::<Value>().await.expect("JSON"))
            })
        })
        .collect();
    let mut ids = Vec::new();
    for a in answers {
        let (status, v) = a.await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        ids.push(v["id"].clone());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(rows_of(&s.store, "ING-3").await, 1);
    s.stop().await;
}

fn new_update(id: &str, key: &str) -> NewUpdate {
    NewUpdate {
        id: id.into(),
        client: "erp".into(),
        idempotency_key: Some(key.into()),
        request_hash: "h".into(),
        order_reference: "ING-4".into(),
        event: None,
        payload: json!({"order_reference": "ING-4", "attributes": {"k": key}}),
        response: None,
        received_at: store::now(),
    }
}

/// A group of many repeats, read back in one query per client: each repeat gets the row
/// stored first under its own client and key, whether that was in an earlier group or
/// earlier in this one; the same key of another client is a new update.
async fn each_repeat_in_a_group_gets_the_row_stored_first_under_its_key(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let mut writer = GroupWriter::new(s.store.clone());
    let earlier = [new_update("r-1", "r-a"), new_update("r-2", "r-b")];
    writer.insert(&earlier).await.expect("insert");
    let other_client = NewUpdate {
        client: "shop".into(),
        ..new_update("r-5", "r-a")
    };
    let group = [
        new_update("r-3", "r-b"),
        new_update("r-4", "r-a"),
        other_client,
        new_update("r-6", "r-b"),
        new_update("r-7", "r-c"),
        new_update("r-8", "r-c"),
    ];
    let stored = writer.insert(&group).await.expect("insert");
    let answers: Vec<(&str, &str)> = group
        .iter()
        .zip(&stored)
        .map(|(u, answer)| {
            let first = match answer {
                Stored::New(_) => "new",
                Stored::Existing(row) => {
                    assert_eq!(row.client, u.client, "{}", u.id);
                    assert_eq!(row.idempotency_key, u.idempotency_key, "{}", u.id);
                    row.id.as_str()
                }
            };
            (u.id.as_str(), first)
        })
        .collect();
    assert_eq!(
        answers,
        [
            ("r-3", "r-2"),
            ("r-4", "r-1"),
            ("r-5", "new"),
            ("r-6", "r-2"),
            ("r-7", "new"),
            ("r-8", "r-7"),
        ]
    );
    writer.release();
    s.stop().await;
}

/// The `seq` a group's answer gives each new row is the one the store holds for it, also
/// in a group where a repeated key stored nothing for one of its rows (SQLite reads the
/// `seq`s back only then; otherwise they follow from the last one inserted).
async fn each_row_of_a_group_answers_with_its_own_seq(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let mut writer = GroupWriter::new(s.store.clone());
    let first = [
        new_update("s-1", "s-a"),
        new_update("s-2", "s-b"),
        new_update("s-3", "s-c"),
    ];
    let second = [
        new_update("s-4", "s-d"),
        new_update("s-5", "s-a"),
        new_update("s-6", "s-f"),
        new_update("s-7", "s-g"),
    ];
    let mut seqs = Vec::new();
    for group in [&first[..], &second[..]] {
        let stored = writer.insert(group).await.expect("insert");
        assert_eq!(stored.len(), group.len());
        for (u, answer) in group.iter().zip(stored) {
            let row = s.store.update_by_id(&u.id).await.expect("read");
            match answer {
                Stored::New(seq) => {
                    let row = row.expect("a new row is stored");
                    assert_eq!(seq, row.seq, "the answer's seq of {}", u.id);
                    seqs.push(seq);
                }
                Stored::Existing(first) => {
                    assert_eq!(u.id, "s-5", "only the repeated key is not new");
                    assert_eq!(first.id, "s-1");
                    assert!(row.is_none(), "a repeat stores no row");
                }
            }
        }
    }
    assert_eq!(seqs.len(), 6);
    assert!(
        seqs.is_sorted(),
        "seqs follow the order of the group: {seqs:?}"
    );
    writer.release();
    s.stop().await;
}

/// A group of 75 updates (SQLite stores it as inserts of up to 32 rows), with repeats in
/// the second and the last insert: every new row answers with its own `seq`, in the
/// group's order, and every repeat with the row stored first under its key.
async fn a_group_larger_than_one_insert_keeps_its_order_and_answers(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let mut writer = GroupWriter::new(s.store.clone());
    let repeats = [(40, 3), (70, 45), (74, 0)];
    let group: Vec<NewUpdate> = (0..75)
        .map(|i| {
            let key = match repeats.iter().find(|(at, _)| *at == i) {
                Some((_, first)) => format!("big-{first}"),
                None => format!("big-{i}"),
            };
            new_update(&format!("big-id-{i}"), &key)
        })
        .collect();
    let stored = writer.insert(&group).await.expect("insert");
    assert_eq!(stored.len(), group.len());
    let mut seqs = Vec::new();
    for (i, (u, answer)) in group.iter().zip(stored).enumerate() {
        let row = s.store.update_by_id(&u.id).await.expect("read");
        match (answer, repeats.iter().find(|(at, _)| *at == i)) {
            (Stored::New(seq), None) => {
                assert_eq!(seq, row.expect("a new row is stored").seq, "{}", u.id);
                seqs.push(seq);
            }
            (Stored::Existing(first), Some((_, at))) => {
                assert_eq!(first.id, format!("big-id-{at}"), "the repeat at {i}");
                assert!(row.is_none(), "a repeat stores no row");
            }
            (answer, _) => panic!("update {i}: unexpected {answer:?}"),
        }
    }
    assert_eq!(seqs.len(), 72);
    assert!(seqs.is_sorted(), "seqs follow the group's order: {seqs:?}");
    writer.release();
    s.stop().await;
}

async fn a_failed_group_stores_nothing_and_the_next_one_is_stored(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let mut writer = GroupWriter::new(s.store.clone());
    // The second row repeats the first one's id: the insert fails after the first row.
    let group = [new_update("u-1", "a"), new_update("u-1", "b")];
    assert!(writer.insert(&group).await.is_err());
    assert_eq!(rows_of(&s.store, "ING-4").await, 0);
    // The writer (and on SQLite the one writer connection) is usable again.
    let stored = writer
        .insert(&[new_update("u-2", "c")])
        .await
        .expect("insert");
    assert!(matches!(stored[..], [Stored::New(_)]), "{stored:?}");
    writer.release();
    let (status, _) = post_update(
        &s,
        "k-4",
        &json!({"order_reference": "ING-4", "attributes": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(rows_of(&s.store, "ING-4").await, 2);
    s.stop().await;
}

/// Requests that meet in one group commit: one whose row the store refuses (a NUL
/// character, which PostgreSQL cannot keep; the HTTP edge refuses it earlier, this goes
/// around the edge) fails alone, and every other request of its group is stored.
async fn a_request_that_cannot_be_stored_fails_alone(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let settings = InboxSettings::from_config(&Config::default());
    let inbox = Inbox::new(s.service.clone(), settings);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..300 {
        let inbox = inbox.clone();
        tasks.spawn(async move {
            let bad = n % 25 == 7;
            let text = if bad { "a\u{0}b" } else { "fine" };
            let body = json!({"order_reference": format!("GRP-{n}"), "attributes": {"t": text}});
            let update = inbox.prepare("erp", None, body, "$").unwrap();
            (bad, inbox.store_updates(vec![update]).await.is_ok())
        });
    }
    let (mut stored, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (bad, ok) = done.unwrap();
        match (bad, ok) {
            (false, ok) => {
                assert!(ok, "a clean request failed with a bad one in its group");
                stored += 1;
            }
            (true, false) => refused += 1,
            (true, true) => {
                // SQLite keeps a NUL; only PostgreSQL refuses it.
                assert!(
                    matches!(backend, Backend::Sqlite),
                    "PostgreSQL stored a NUL"
                );
            }
        }
    }
    assert_eq!(stored, 288);
    if matches!(backend, Backend::Postgres) {
        assert_eq!(refused, 12);
    }
    s.stop().await;
}

/// PostgreSQL: the group writer keeps a connection of its own between groups. Cut while it
/// sat idle (a database restart, a proxy's idle timeout), it is replaced before the next
/// group, so that group is stored, not failed; the server's writer likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    orderflow_no_test_postgres,
    ignore = "PostgreSQL: set ORDERFLOW_TEST_DATABASE_URL to run it"
)]
async fn a_writer_connection_cut_while_idle_is_replaced() {
    let Some(s) = start(Backend::Postgres).await else {
        return;
    };
    let body = json!({"order_reference": "ING-5", "attributes": {}});
    let (status, _) = post_update(&s, "k-5a", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut writer = GroupWriter::new(s.store.clone());
    writer
        .insert(&[new_update("u-5a", "a")])
        .await
        .expect("insert");

    let admin = sqlx::PgPool::connect(&s.database_url)
        .await
        .expect("connect");
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&admin)
    .await
    .expect("terminate");
    assert!(
        cut.len() >= 2,
        "the writers' connections were open: {cut:?}"
    );
    admin.close().await;
    // Idle for longer than a connection is trusted without a ping.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;

    let stored = writer
        .insert(&[new_update("u-5b", "b")])
        .await
        .expect("stored on a new connection");
    assert!(matches!(stored[..], [Stored::New(_)]), "{stored:?}");
    let (status, answer) = post_update(&s, "k-5b", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(rows_of(&s.store, "ING-5").await, 2);
    assert_eq!(rows_of(&s.store, "ING-4").await, 2);
    s.stop().await;
}
