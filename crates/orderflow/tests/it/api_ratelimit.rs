//! Per-client rate limits (429 with `retry-after`) and token checks against the client
//! cache.

use std::time::Duration;

use orderflow::config::ClientConfig;
use orderflow::domain::types::Role;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

use crate::support::{Backend, TestServer, backend_tests, start, start_with};

backend_tests!(
    a_limited_client_gets_429_until_retry_after,
    a_limited_client_is_refused_before_its_body_is_read,
    a_client_created_while_running_can_authenticate,
);

/// Upper bound on requests sent to empty a bucket of 2: far more than 2 requests per
/// second would need a server that answers slower than a request per 400 ms.
const TRIES: usize = 20;

async fn start_with_shop_limit(b: Backend, per_second: u32) -> Option<TestServer> {
    start_with(b, |config| {
        config.clients.insert(
            "shop".into(),
            ClientConfig {
                rate_limit_per_second: Some(per_second),
            },
        );
    })
    .await
}

async fn get(s: &TestServer, path: &str, token: &str) -> reqwest::Response {
    s.http
        .get(format!("{}{path}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn a_limited_client_gets_429_until_retry_after(b: Backend) {
    let Some(s) = start_with_shop_limit(b, 2).await else {
        return;
    };
    for i in 0..2 {
        let status = get(&s, "/v1/processes", &s.shop).await.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i} is within the burst of 2"
        );
    }
    let mut limited = None;
    for _ in 0..TRIES {
        let resp = get(&s, "/v1/processes", &s.shop).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = limited.expect("a burst over 2/s is limited");
    let retry_after: u64 = resp.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .expect("retry-after in whole seconds");
    assert!(retry_after >= 1, "retry-after {retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["retry_after"], retry_after, "{body}");

    // Other clients have their own (here: no) limit.
    for _ in 0..5 {
        let (status, _) = s.get("/v1/processes", &s.admin).await;
        assert_eq!(status, StatusCode::OK, "admin is not limited");
    }
    // A wrong token is 401, not 429: authentication comes first.
    let (status, body) = s.get("/v1/processes", "of_wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = s.get("/v1/processes", &s.shop).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "passes again after retry-after: {body}"
    );
    s.stop().await;
}

async fn a_limited_client_is_refused_before_its_body_is_read(b: Backend) {
    let Some(s) = start_with_shop_limit(b, 2).await else {
        return;
    };
    // Not JSON: 415 while the client is within its limit, 429 once it is over it.
    let mut statuses = Vec::new();
    for _ in 0..TRIES {
        let resp = s
            .http
            .post(format!("{}/v1/orders", s.base))
            .bearer_auth(&s.shop)
            .header(CONTENT_TYPE, "text/plain")
            .body("not json")
            .send()
            .await
            .expect("request");
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(statuses[..2], [StatusCode::UNSUPPORTED_MEDIA_TYPE; 2]);
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    s.stop().await;
}

async fn a_client_created_while_running_can_authenticate(b: Backend) {
    let Some(s) = start(b).await else { return };
    // Warm the cache, with a known and an unknown token.
    let (status, _) = s.get("/v1/processes", &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.get("/v1/processes", "of_not_yet").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let late = orderflow::auth::create_client(&s.store, "late-shop", Role::Shop, false)
        .await
        .unwrap();
    let (status, body) = s.get("/v1/processes", &late.token).await;
    assert_eq!(status, StatusCode::OK, "a new client works at once: {body}");
    let (status, _) = s.get("/v1/processes", &s.shop).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}
