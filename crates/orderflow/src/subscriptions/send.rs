//! One signed HTTP attempt of a delivery, and the URL rules (http(s) only; optionally no
//! private addresses, against server-side request forgery).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use crate::webhook::SigningSecret;

/// Stored response bodies are cut to this many bytes.
pub const EXCERPT_BYTES: usize = 1024;

/// Why a subscription URL is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("url is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("url must use http or https, not {0:?}")]
    Scheme(String),
    #[error("url must name a host")]
    NoHost,
    #[error("url must not carry a user name or password")]
    Credentials,
    #[error("url host {host} resolves to {addr}, a private or local address (subscriptions.deny_private_addresses)")]
    Private { host: String, addr: IpAddr },
    #[error("url host {0} does not resolve")]
    Unresolved(String),
}

/// Parses and checks a subscription URL; with `deny_private` its host must resolve to
/// public addresses only.
pub async fn check_url(text: &str, deny_private: bool) -> Result<reqwest::Url, UrlError> {
    let url = reqwest::Url::parse(text).map_err(|e| UrlError::Invalid(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(UrlError::Scheme(other.to_owned())),
    }
    let Some(host) = url.host_str() else {
        return Err(UrlError::NoHost);
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if deny_private {
        let port = url.port_or_known_default().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| UrlError::Unresolved(host.clone()))?
            .collect();
        let mut any = false;
        for a in addrs {
            any = true;
            if !is_public(a.ip()) {
                return Err(UrlError::Private { host, addr: a.ip() });
            }
        }
        if !any {
            return Err(UrlError::Unresolved(host));
        }
    }
    Ok(url)
}

/// True for addresses on the public internet: not loopback, private, link-local, shared
/// (carrier-grade NAT), documentation, multicast, broadcast or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// What one attempt found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The response status, when there was a response.
    pub status: Option<u16>,
    pub latency: Duration,
    /// The start of the response body (at most [`EXCERPT_BYTES`]).
    pub excerpt: Option<String>,
    /// Why there was no 2xx answer: a transport error, or the status.
    pub error: Option<String>,
    /// The answer's `Retry-After` (seconds), if any.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Signs and posts `body` to `url`: `webhook-id`, `webhook-timestamp` (`timestamp`, unix
/// seconds) and `webhook-signature` headers, the Standard Webhooks way.
pub async fn attempt(
    client: &reqwest::Client,
    url: &str,
    secret: &SigningSecret,
    id: &str,
    timestamp: i64,
    body: &str,
    timeout: Duration,
) -> Outcome {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let signature = secret.sign(id, timestamp, body.as_bytes());
    for (name, value) in [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    let started = Instant::now();
    let sent = client
        .post(url)
        .headers(headers)
        .body(body.to_owned())
        .timeout(timeout)
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                status: None,
                latency: started.elapsed(),
                excerpt: None,
                error: Some(transport_error(&e)),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(timeout.saturating_sub(started.elapsed()), async {
        while bytes.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                _ => break,
            }
        }
    })
    .await;
    let latency = started.elapsed();
    bytes.truncate(EXCERPT_BYTES);
    let mut excerpt = String::from_utf8_lossy(&bytes).into_owned();
    if read.is_err() {
        excerpt.push_str(" [body cut off: timeout]");
    }
    let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
    Outcome {
        status: Some(status.as_u16()),
        latency,
        excerpt: (!excerpt.is_empty()).then_some(excerpt),
        error,
        retry_after,
    }
}

/// A transport error in a few words (reqwest's own text repeats the URL).
fn transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    let mut cause = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(c) = cause {
        detail = c.to_string();
        cause = c.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_private_addresses() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(check_url("http://127.0.0.1:9/x", false).await.is_ok());
        assert!(matches!(
            check_url("ftp://example.com/", false).await,
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            check_url("not a url", false).await,
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(
            check_url("http://u:p@example.com/", false).await,
            Err(UrlError::Credentials)
        ));
        assert!(matches!(
            check_url("http://127.0.0.1:9/x", true).await,
            Err(UrlError::Private { .. })
        ));
        assert!(matches!(
            check_url("http://[::1]:9/x", true).await,
            Err(UrlError::Private { .. })
        ));
    }
}
