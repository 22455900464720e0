//! `orderChanged` over WebSocket (graphql-transport-ws): the moves an ERP update causes,
//! in order; the token in `connection_init`; roles.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Backend, TestServer, backend_tests, start};

backend_tests!(
    subscription_sees_erp_moves_in_order,
    subscription_needs_a_shop_or_admin_token,
);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connection with `connection_init` sent (with `token`, when given).
async fn connect(s: &TestServer, token: Option<&str>) -> Socket {
    let url = format!("{}/graphql", s.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    let payload = match token {
        Some(t) => json!({"Authorization": format!("Bearer {t}")}),
        None => json!({}),
    };
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next protocol message, `None` when the server closed the connection.
async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

const SUBSCRIBE: &str = "subscription($ref: String!, $after: Int) { \
    orderChanged(reference: $ref, afterVersion: $after) { \
    reference version kind event source moved { item from to } } }";

async fn subscription_sees_erp_moves_in_order(b: Backend) {
    let Some(s) = start(b).await else { return };
    let order = s.create_order("WS-1", &[("SKU-A", 1), ("SKU-B", 1)]).await;
    let version = order["version"].as_i64().unwrap();
    let items: Vec<i64> = order["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();

    let mut socket = connect(&s, Some(&s.shop)).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_ack");
    let vars = json!({"ref": "WS-1", "after": version});
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE, "variables": vars}}),
    )
    .await;

    // Two ERP updates, processed by the inbox (wait mode answers once applied).
    let mut update_ids = Vec::new();
    for event in ["pay", "ship"] {
        let body = json!({"order_reference": "WS-1", "event": event});
        let resp = s
            .http
            .post(format!("{}/v1/erp/order-updates", s.base))
            .bearer_auth(&s.erp)
            .header("prefer", "wait=10")
            .json(&body)
            .send()
            .await
            .unwrap();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["status"], "applied", "{answer}");
        update_ids.push(answer["id"].as_str().unwrap().to_owned());
    }

    for (n, (event, from, to)) in [("pay", "waiting", "paid"), ("ship", "paid", "shipped")]
        .into_iter()
        .enumerate()
    {
        let message = next(&mut socket).await.expect("a change");
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], "1");
        let change = &message["payload"]["data"]["orderChanged"];
        assert_eq!(change["reference"], "WS-1");
        assert_eq!(change["version"], version + 1 + n as i64, "{change}");
        assert_eq!(change["event"], event, "{change}");
        assert_eq!(
            change["source"],
            format!("erp:{}", update_ids[n]),
            "{change}"
        );
        let moved: Vec<Value> = items
            .iter()
            .map(|i| json!({"item": i, "from": from, "to": to}))
            .collect();
        assert_eq!(change["moved"], json!(moved), "{change}");
    }

    // A change made over REST reaches the subscriber too, after the ERP's.
    let (status, _) = s
        .patch(
            &format!("/v1/orders/{}", order["id"]),
            &s.shop,
            json!({"version": version + 2, "attributes": {"note": "x"}}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let message = next(&mut socket).await.expect("a change");
    assert_eq!(
        message["payload"]["data"]["orderChanged"]["version"],
        version + 3,
        "{message}"
    );

    send(&mut socket, json!({"id": "1", "type": "complete"})).await;
    let _ = socket.close(None).await;
    s.stop().await;
}

async fn subscription_needs_a_shop_or_admin_token(b: Backend) {
    let Some(s) = start(b).await else { return };
    s.create_order("WS-2", &[("SKU-A", 1)]).await;

    // No token: the connection is refused at connection_init.
    let mut socket = connect(&s, None).await;
    let refused = next(&mut socket).await;
    assert!(
        refused.is_none() || refused.as_ref().unwrap()["type"] != "connection_ack",
        "{refused:?}"
    );

    // An ERP client may connect but not subscribe to orders.
    let mut socket = connect(&s, Some(&s.erp)).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_ack");
    let vars = json!({"ref": "WS-2"});
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE, "variables": vars}}),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        _ => message["payload"]["errors"].clone(),
    };
    assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{message}");

    // An unknown order is ORDER_NOT_FOUND, as for a query.
    let mut socket = connect(&s, Some(&s.admin)).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "connection_ack");
    let vars = json!({"ref": "WS-NOPE"});
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE, "variables": vars}}),
    )
    .await;
    let message = next(&mut socket).await.unwrap();
    let errors = match message["type"].as_str() {
        Some("error") => message["payload"].clone(),
        _ => message["payload"]["errors"].clone(),
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "ORDER_NOT_FOUND",
        "{message}"
    );
    s.stop().await;
}
