//! GraphQL at `/graphql`: read-after-write, versions, REST's error codes and roles, the
//! ERP inbox, processes. Limits, schema and GraphiQL: `graphql_schema`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, backend_tests, start};

backend_tests!(
    mutations_are_read_at_once,
    concurrent_updates_one_wins,
    errors_carry_rests_codes,
    roles_as_in_rest,
    erp_updates_go_through_the_inbox,
    processes_and_reservations,
);

/// Runs one GraphQL operation; returns the HTTP status and the response body.
pub(crate) async fn gql(
    s: &TestServer,
    token: &str,
    query: &str,
    variables: Value,
) -> (StatusCode, Value) {
    s.post(
        "/graphql",
        token,
        json!({"query": query, "variables": variables}),
    )
    .await
}

/// The `extensions.code` of the first error.
pub(crate) fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

const CREATE: &str = "mutation($input: CreateOrderInput!) { createOrder(input: $input) { \
    id reference version items { id sku state flags reserved } attributes } }";

async fn create(s: &TestServer, reference: &str) -> Value {
    let input = json!({"reference": reference, "process": "Test01", "currency": "EUR",
        "items": [{"sku": "SKU-A", "quantity": 2}, {"sku": "SKU-B", "quantity": 1}]});
    let (status, body) = gql(s, &s.shop, CREATE, json!({"input": input})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["createOrder"].clone()
}

async fn mutations_are_read_at_once(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = create(&s, "GQL-1").await;
    assert_eq!(order["version"], 1, "{order}");
    assert_eq!(order["attributes"]["stamped"], true, "onEnter ran: {order}");
    let id = order["id"].as_i64().unwrap();

    let read = "query($id: Int!) { order(id: $id) { version attributes \
        items { state } history { item from to event source } } }";
    let (_, body) = gql(&s, &s.shop, read, json!({"id": id})).await;
    assert_eq!(body["data"]["order"]["version"], 1, "{body}");
    let history = body["data"]["order"]["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["to"] == "waiting" && h["from"] == "new"),
        "{body}"
    );

    // Each mutation is visible to the very next query by id and by reference.
    let update = "mutation($id: Int!, $v: Int!, $a: JSON!) { \
        updateOrder(id: $id, version: $v, attributes: $a) { version attributes } }";
    for round in 1..=3 {
        let vars = json!({"id": id, "v": round, "a": {"round": round}});
        let (_, body) = gql(&s, &s.shop, update, vars).await;
        assert_eq!(body["data"]["updateOrder"]["version"], round + 1, "{body}");
        let (_, body) = gql(&s, &s.admin, read, json!({"id": id})).await;
        assert_eq!(body["data"]["order"]["version"], round + 1, "{body}");
        assert_eq!(
            body["data"]["order"]["attributes"]["round"], round,
            "{body}"
        );
    }
    let trigger = "mutation($id: Int!, $v: Int) { triggerEvent(id: $id, event: \"pay\", \
        version: $v) { order { version } moved { item from to } notApplicable } }";
    let (_, body) = gql(&s, &s.shop, trigger, json!({"id": id, "v": 4})).await;
    let result = &body["data"]["triggerEvent"];
    assert_eq!(result["order"]["version"], 5, "{body}");
    assert_eq!(result["moved"].as_array().unwrap().len(), 2, "{body}");
    let by_ref = "query { orderByReference(reference: \"GQL-1\") { id version items { state } } }";
    let (_, body) = gql(&s, &s.shop, by_ref, json!({})).await;
    assert_eq!(body["data"]["orderByReference"]["version"], 5, "{body}");
    assert_eq!(
        body["data"]["orderByReference"]["items"],
        json!([{"state": "paid"}, {"state": "paid"}])
    );

    // The list is eventually consistent: the projection catches up.
    let list = "query { orders(filter: {state: \"paid\"}, first: 10) { \
        edges { cursor node { id version states } } pageInfo { hasNextPage } } }";
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "list caught up",
        || async {
            let (_, body) = gql(&s, &s.shop, list, json!({})).await;
            let edges = body["data"]["orders"]["edges"].as_array()?.clone();
            (edges.len() == 1 && edges[0]["node"]["version"] == 5).then_some(())
        },
    )
    .await;
    s.stop().await;
}

async fn concurrent_updates_one_wins(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = create(&s, "GQL-RACE").await;
    let id = order["id"].as_i64().unwrap();
    let update = "mutation($id: Int!, $n: Int!) { \
        updateOrder(id: $id, version: 1, attributes: {writer: $n}) { version } }";
    let calls = (0..20).map(|n| gql(&s, &s.shop, update, json!({"id": id, "n": n})));
    let results = futures_util::future::join_all(calls).await;
    let mut won = 0;
    let mut conflicts = 0;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        if body["errors"].is_null() {
            assert_eq!(body["data"]["updateOrder"]["version"], 2, "{body}");
            won += 1;
        } else {
            assert_eq!(code(body), "VERSION_CONFLICT", "{body}");
            assert_eq!(
                body["errors"][0]["extensions"]["currentVersion"], 2,
                "{body}"
            );
            conflicts += 1;
        }
    }
    assert_eq!((won, conflicts), (1, 19));
    s.stop().await;
}

async fn errors_carry_rests_codes(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = create(&s, "GQL-E").await;
    let id = order["id"].as_i64().unwrap();
    let (_, body) = gql(&s, &s.shop, "{ order(id: 999999) { id } }", json!({})).await;
    assert_eq!(code(&body), "ORDER_NOT_FOUND", "{body}");
    assert!(body["data"].is_null(), "{body}");

    let input = json!({"reference": "GQL-E", "process": "Test01",
        "items": [{"sku": "X", "quantity": 1}]});
    let (_, body) = gql(&s, &s.shop, CREATE, json!({"input": input})).await;
    assert_eq!(code(&body), "REFERENCE_TAKEN", "{body}");
    let input = json!({"reference": "GQL-F", "process": "Nope",
        "items": [{"sku": "X", "quantity": 1}]});
    let (_, body) = gql(&s, &s.shop, CREATE, json!({"input": input})).await;
    assert_eq!(code(&body), "UNKNOWN_PROCESS", "{body}");
    let input = json!({"reference": "GQL-F", "process": "Test01",
        "items": [{"sku": "X", "quantity": 0}]});
    let (_, body) = gql(&s, &s.shop, CREATE, json!({"input": input})).await;
    assert_eq!(code(&body), "INVALID_REQUEST", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["path"],
        "input.items[0].quantity"
    );

    // Shop clients trigger manual events only; an event that applies to no item names
    // each item's state.
    let trigger = "mutation($id: Int!, $e: String!) { triggerEvent(id: $id, event: $e) { \
        order { version } } }";
    let (_, body) = gql(&s, &s.shop, trigger, json!({"id": id, "e": "expire"})).await;
    assert_eq!(code(&body), "EVENT_NOT_MANUAL", "{body}");
    let (_, body) = gql(&s, &s.shop, trigger, json!({"id": id, "e": "ship"})).await;
    assert_eq!(code(&body), "EVENT_NOT_APPLICABLE", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["event"], "ship", "{body}");
    let (_, body) = gql(&s, &s.shop, trigger, json!({"id": id, "e": "nope"})).await;
    assert_eq!(code(&body), "UNKNOWN_EVENT", "{body}");
    let stale = "mutation($id: Int!) { triggerEvent(id: $id, event: \"pay\", version: 7) { \
        order { version } } }";
    let (_, body) = gql(&s, &s.shop, stale, json!({"id": id})).await;
    assert_eq!(code(&body), "VERSION_CONFLICT", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["currentVersion"], 1,
        "{body}"
    );
    let (_, body) = gql(
        &s,
        &s.shop,
        "{ orders(first: 0) { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&body), "INVALID_REQUEST", "{body}");
    let (_, body) = gql(
        &s,
        &s.shop,
        "{ orders(after: \"x\") { nodes { id } } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&body), "INVALID_REQUEST", "{body}");
    s.stop().await;
}

async fn roles_as_in_rest(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = create(&s, "GQL-R").await;
    let id = order["id"].as_i64().unwrap();

    // No token, or an unknown one: the whole request is refused, as REST refuses it.
    let resp = s
        .http
        .post(format!("{}/graphql", s.base))
        .json(&json!({"query": "{ processes { name } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    let (status, body) = gql(&s, "of_unknown", "{ processes { name } }", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");

    // The shop sees no admin fields; an admin does.
    for admin_only in [
        "{ stats { inbox { dead } } }",
        "{ inbox(first: 5) { nodes { client } } }",
    ] {
        let (_, body) = gql(&s, &s.shop, admin_only, json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{admin_only}: {body}");
        assert!(body["data"].is_null(), "{body}");
        let (_, body) = gql(&s, &s.erp, admin_only, json!({})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{admin_only}: {body}");
        let (_, body) = gql(&s, &s.admin, admin_only, json!({})).await;
        assert!(body["errors"].is_null(), "{admin_only}: {body}");
    }
    // A forbidden field fails alone; the fields the caller may read are answered.
    let mixed = "query($id: Int!) { order(id: $id) { version } stats { oldestPendingAgeSeconds } }";
    let (_, body) = gql(&s, &s.shop, mixed, json!({"id": id})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["stats"]), "{body}");
    assert_eq!(body["data"]["order"]["version"], 1, "{body}");

    // Only admins trigger events that are not manual.
    let trigger =
        "mutation($id: Int!) { triggerEvent(id: $id, event: \"expire\") { order { version } } }";
    let (_, body) = gql(&s, &s.admin, trigger, json!({"id": id})).await;
    assert!(body["errors"].is_null(), "{body}");
    // ERP clients send updates and read their status; they do not read orders.
    let (_, body) = gql(
        &s,
        &s.erp,
        "query($id: Int!) { order(id: $id) { id } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let send =
        "mutation { sendOrderUpdate(input: {order_reference: \"GQL-R\", event: \"pay\"}) { id } }";
    let (_, body) = gql(&s, &s.shop, send, json!({})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = gql(&s, &s.erp, send, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    s.stop().await;
}

async fn erp_updates_go_through_the_inbox(b: Backend) {
    let Some(s) = start(b).await else { return };
    create(&s, "GQL-U").await;
    let send = "mutation($input: JSON!, $key: String, $wait: Int) { \
        sendOrderUpdate(input: $input, idempotencyKey: $key, wait: $wait) { \
        id status result lastError } }";
    let input = json!({"order_reference": "GQL-U", "event": "pay"});
    let vars = json!({"input": input, "key": "k-1", "wait": 10});
    let (_, body) = gql(&s, &s.erp, send, vars.clone()).await;
    let answer = body["data"]["sendOrderUpdate"].clone();
    assert_eq!(answer["status"], "APPLIED", "{body}");
    let update_id = answer["id"].as_str().unwrap().to_owned();
    // The same key and body: the first answer, nothing applied twice.
    let (_, body) = gql(&s, &s.erp, send, vars).await;
    assert_eq!(body["data"]["sendOrderUpdate"], answer, "{body}");
    // The same key, another update.
    let other = json!({"input": {"order_reference": "GQL-U", "event": "ship"}, "key": "k-1"});
    let (_, body) = gql(&s, &s.erp, send, other).await;
    assert_eq!(code(&body), "IDEMPOTENCY_KEY_REUSED", "{body}");
    // Invalid and unknown events are refused before anything is stored.
    let bad = json!({"input": {"order_reference": "GQL-U", "event": "nope"}});
    let (_, body) = gql(&s, &s.erp, send, bad).await;
    assert_eq!(code(&body), "UNKNOWN_EVENT", "{body}");
    let bad = json!({"input": {"event": "pay"}});
    let (_, body) = gql(&s, &s.erp, send, bad).await;
    assert_eq!(code(&body), "INVALID_REQUEST", "{body}");
    // REST and GraphQL read the same update.
    let status = "query($id: String!) { update(id: $id) { id status orderReference event } }";
    let (_, body) = gql(&s, &s.erp, status, json!({"id": update_id})).await;
    assert_eq!(body["data"]["update"]["status"], "APPLIED", "{body}");
    let (_, rest) = s
        .get(&format!("/v1/erp/order-updates/{update_id}"), &s.erp)
        .await;
    assert_eq!(rest["status"], "applied");
    // Another ERP client's update is not found, as in REST.
    let (_, body) = gql(&s, &s.shop, status, json!({"id": update_id})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = gql(&s, &s.erp, status, json!({"id": "nope"})).await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    // An update whose event does not apply now is parked (the default policy), with why.
    let cancel = json!({"input": {"order_reference": "GQL-U", "event": "cancel"}, "wait": 10});
    let (_, body) = gql(&s, &s.erp, send, cancel).await;
    let answer = &body["data"]["sendOrderUpdate"];
    assert_eq!(answer["status"], "PARKED", "{body}");
    assert_eq!(
        answer["lastError"]["code"], "event_not_applicable",
        "{body}"
    );
    // An update for an order that does not exist is an error with its code, update id
    // and status, as REST's 404 in wait mode.
    let missing = json!({"input": {"order_reference": "GQL-NONE", "event": "pay"}, "wait": 10});
    let (_, body) = gql(&s, &s.erp, send, missing).await;
    assert_eq!(code(&body), "ORDER_NOT_FOUND", "{body}");
    let extensions = &body["errors"][0]["extensions"];
    assert!(extensions["updateId"].is_string(), "{body}");
    assert_eq!(extensions["status"], "parked", "{body}");
    // Admins see it in the inbox, with everything stored about it.
    let inbox = "{ inbox(filter: {orderReference: \"GQL-U\"}, first: 10) { \
        edges { node { update { id status event } client payload } } pageInfo { hasNextPage } } }";
    let (_, body) = gql(&s, &s.admin, inbox, json!({})).await;
    let edges = body["data"]["inbox"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{body}");
    assert_eq!(edges[1]["node"]["update"]["status"], "PARKED", "{body}");
    assert_eq!(edges[0]["node"]["update"]["id"], update_id.as_str());
    assert_eq!(edges[0]["node"]["client"], "erp");
    assert_eq!(edges[0]["node"]["payload"]["event"], "pay");
    let (_, body) = gql(
        &s,
        &s.admin,
        "{ stats { inbox { applied rejected } projection { pendingChanges } } }",
        json!({}),
    )
    .await;
    assert_eq!(body["data"]["stats"]["inbox"]["applied"], 1, "{body}");
    s.stop().await;
}

async fn processes_and_reservations(b: Backend) {
    let Some(s) = start(b).await else { return };
    create(&s, "GQL-P").await;
    let q = "{ processes { name initialState } process(name: \"Test01\") { \
        states { name reserved flags } events { name manual } \
        transitions { source target event } graphSvg } reservation(sku: \"SKU-A\") { \
        sku reservedQuantity } }";
    let (_, body) = gql(&s, &s.shop, q, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let data = &body["data"];
    assert!(
        data["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Test01"),
        "{body}"
    );
    let process = &data["process"];
    assert!(
        process["states"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st["name"] == "paid"
                && st["reserved"] == true
                && st["flags"] == json!(["cancellable", "paid"]))
    );
    assert!(
        process["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "pay" && e["manual"] == true)
    );
    let svg = process["graphSvg"].as_str().unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
    // The same drawing as REST's, live counts included.
    let rest = s
        .http
        .get(format!("{}/v1/processes/Test01/graph.svg", s.base))
        .bearer_auth(&s.shop)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(svg, rest);
    assert_eq!(data["reservation"]["reservedQuantity"], 2, "{body}");
    let (_, body) = gql(
        &s,
        &s.shop,
        "{ process(name: \"Nope\") { name } }",
        json!({}),
    )
    .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    s.stop().await;
}
