//! One signed delivery attempt, through the shared outbound sender
//! ([`crate::outbound::attempt`]: the HTTP client, the verdict, the excerpt and the address
//! guard).

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::outbound::attempt::{Attempt, Request, Sender, Verdict};
use crate::webhook::SigningSecret;

/// The Standard Webhooks headers of a delivery: `webhook-id`, `webhook-timestamp` (unix
/// seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of id.timestamp.body>`).
pub fn signed_headers(secret: &SigningSecret, id: &str, timestamp: i64, body: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signature = secret.sign(id, timestamp, body.as_bytes());
    for (name, value) in [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        // Event ids and signatures are ASCII; a value that is not is left out, and the
        // receiver refuses the delivery, which is then retried and seen in its attempts.
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    headers
}

/// Signs and posts `body` to `url`. Delivered on 2xx; anything else is a failure the
/// retry schedule takes care of (subscribers get every event, so a 4xx is retried as well,
/// as Svix does); a `Retry-After` is passed on.
pub async fn attempt(
    sender: &Sender,
    url: &str,
    secret: &SigningSecret,
    id: &str,
    timestamp: i64,
    body: &str,
    timeout: Duration,
) -> Attempt {
    let url = match crate::outbound::address::parse_url(url) {
        Ok(u) => u,
        Err(e) => {
            return Attempt {
                verdict: Verdict::Fatal,
                status: None,
                latency: Duration::ZERO,
                excerpt: None,
                error: Some(e.to_string()),
            };
        }
    };
    sender
        .send(Request {
            method: Method::POST,
            url,
            headers: signed_headers(secret, id, timestamp, body),
            body: body.as_bytes().to_vec(),
            timeout: Some(timeout),
        })
        .await
}
