//! One outbound HTTP attempt, the same for every sender (after-commit effects, webhook
//! deliveries): the client built from `[outbound]`, one request, and its verdict.
//!
//! - 2xx is done;
//! - a timeout, a connection error, 5xx, 408 and 429 are worth retrying, after the
//!   `Retry-After` the receiver asked for when it gave one (seconds or an HTTP date);
//! - any other status (3xx: redirects are not followed; other 4xx) is fatal.
//!
//! Which URLs may be called is [`super::address`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Client, Method, StatusCode, Url};

use crate::config::OutboundConfig;

/// Stored response bodies are cut to this many bytes (on a character boundary).
pub const EXCERPT_BYTES: usize = 1024;

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the receiver has it.
    Done,
    /// Worth trying again; `after` is the receiver's `Retry-After`, when it gave one.
    Retry { after: Option<Duration> },
    /// Trying again will not help (a refused request).
    Fatal,
}

/// One attempt, as it is recorded.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub verdict: Verdict,
    /// The response's status; none when no response came (timeout, connection error).
    pub status: Option<u16>,
    /// From sending until the response body was read, or until the error.
    pub latency: Duration,
    /// The start of the response body, at most [`EXCERPT_BYTES`], lossy UTF-8.
    pub excerpt: Option<String>,
    /// What went wrong, when the verdict is not `Done`.
    pub error: Option<String>,
}

/// A request to send. The body is sent as is; `headers` come on top of the client's.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The whole attempt's deadline; the client's `[outbound] timeout` when none.
    pub timeout: Option<Duration>,
}

/// The HTTP client for outbound requests, built once from `[outbound]`: its timeouts, no
/// redirects (a redirect is the receiver's answer, not an instruction to call somewhere
/// else), rustls for https, and with `block_private_addresses` a resolver that refuses
/// internal addresses. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sender {
    client: Client,
    block_private: bool,
}

impl Sender {
    pub fn new(config: &OutboundConfig) -> reqwest::Result<Self> {
        let mut builder = Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderflow/", env!("CARGO_PKG_VERSION")));
        if config.block_private_addresses {
            builder = builder.dns_resolver(Arc::new(super::address::PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            block_private: config.block_private_addresses,
        })
    }

    /// Whether URLs are checked against internal addresses (see [`super::address::check_url`]).
    pub fn blocks_private(&self) -> bool {
        self.block_private
    }

    /// Sends one request and classifies the outcome. Never fails: every error is an
    /// attempt with a verdict.
    pub async fn send(&self, request: Request) -> Attempt {
        let started = Instant::now();
        // An address literal never reaches the resolver; check it here.
        if self.block_private
            && let Err(e) = super::address::check_literal(&request.url)
        {
            return failed(Verdict::Fatal, started, e.to_string());
        }
        let mut builder = self
            .client
            .request(request.method, request.url)
            .headers(request.headers)
            .body(request.body);
        if let Some(t) = request.timeout {
            builder = builder.timeout(t);
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let verdict = if e.is_builder() {
                    Verdict::Fatal
                } else {
                    Verdict::Retry { after: None }
                };
                return failed(verdict, started, error_text(&e));
            }
        };
        let status = response.status();
        let after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let (excerpt, body_error) = read_excerpt(&mut response).await;
        let verdict = classify(status, after);
        let error = match (verdict, body_error) {
            (Verdict::Done, _) => None,
            (_, Some(e)) => Some(format!("HTTP {status}; reading the body: {e}")),
            _ => Some(format!("HTTP {status}")),
        };
        Attempt {
            verdict,
            status: Some(status.as_u16()),
            latency: started.elapsed(),
            excerpt: Some(excerpt),
            error,
        }
    }
}

fn failed(verdict: Verdict, started: Instant, error: String) -> Attempt {
    Attempt {
        verdict,
        status: None,
        latency: started.elapsed(),
        excerpt: None,
        error: Some(error),
    }
}

/// The verdict on a response's status; `after` is its parsed `Retry-After`.
pub fn classify(status: StatusCode, after: Option<Duration>) -> Verdict {
    if status.is_success() {
        Verdict::Done
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Verdict::Retry { after }
    } else {
        Verdict::Fatal
    }
}

/// A `Retry-After` value as a delay from `now`: whole seconds, or an HTTP date (a date in
/// the past is no delay). `None` when it is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads at most [`EXCERPT_BYTES`] (and a few more, to finish a character) of the body.
async fn read_excerpt(response: &mut reqwest::Response) -> (String, Option<String>) {
    let mut bytes = Vec::new();
    let mut error = None;
    while bytes.len() < EXCERPT_BYTES + 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(error_text(&e));
                break;
            }
        }
    }
    (excerpt(&bytes), error)
}

/// The start of a body as text, at most [`EXCERPT_BYTES`], cut on a character boundary.
pub fn excerpt(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(EXCERPT_BYTES + 4)];
    let text = String::from_utf8_lossy(head);
    let cut = text.floor_char_boundary(EXCERPT_BYTES.min(text.len()));
    text[..cut].to_owned()
}

/// reqwest's error with its causes ("error sending request: ... : connection refused").
fn error_text(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let after = Some(Duration::from_secs(3));
        for (code, want) in [
            (200, Verdict::Done),
            (201, Verdict::Done),
            (204, Verdict::Done),
            (500, Verdict::Retry { after }),
            (502, Verdict::Retry { after }),
            (503, Verdict::Retry { after }),
            (408, Verdict::Retry { after }),
            (429, Verdict::Retry { after }),
            (400, Verdict::Fatal),
            (401, Verdict::Fatal),
            (404, Verdict::Fatal),
            (409, Verdict::Fatal),
            (422, Verdict::Fatal),
            (301, Verdict::Fatal),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify(status, after), want, "{code}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past: no wait.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(retry_after("1.5", now), None);
    }

    #[test]
    fn excerpts_are_cut_on_a_character_boundary() {
        assert_eq!(excerpt(b"short"), "short");
        let long = "a".repeat(EXCERPT_BYTES - 1) + "é" + "tail";
        let e = excerpt(long.as_bytes());
        assert_eq!(e.len(), EXCERPT_BYTES - 1);
        assert!(e.chars().all(|c| c == 'a'));
        let exact = "b".repeat(EXCERPT_BYTES * 3);
        assert_eq!(excerpt(exact.as_bytes()).len(), EXCERPT_BYTES);
        assert_eq!(excerpt(&[0xff, b'x']), "\u{fffd}x");
    }

    /// A real request to a local server: status, `Retry-After`, excerpt and timeout.
    #[tokio::test]
    async fn a_real_attempt_is_classified() {
        use axum::Router;
        use axum::http::HeaderMap as Headers;
        use axum::routing::post;
        let app = Router::new()
            .route("/ok", post(|| async { "accepted" }))
            .route(
                "/busy",
                post(|| async {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "7")],
                        "slow down",
                    )
                }),
            )
            .route(
                "/bad",
                post(|| async { (StatusCode::BAD_REQUEST, "x".repeat(5000)) }),
            )
            .route(
                "/echo",
                post(|h: Headers| async move {
                    h.get("idempotency-key")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                }),
            )
            .route(
                "/hang",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = Sender::new(&OutboundConfig::default()).unwrap();
        let request = |path: &str| Request {
            method: Method::POST,
            url: Url::parse(&format!("http://{addr}{path}")).unwrap(),
            headers: HeaderMap::new(),
            body: b"{}".to_vec(),
            timeout: Some(Duration::from_millis(300)),
        };

        let a = sender.send(request("/ok")).await;
        assert_eq!(
            (a.verdict, a.status, a.error),
            (Verdict::Done, Some(200), None)
        );
        assert_eq!(a.excerpt.as_deref(), Some("accepted"));

        let a = sender.send(request("/busy")).await;
        let after = Some(Duration::from_secs(7));
        assert_eq!((a.verdict, a.status), (Verdict::Retry { after }, Some(429)));
        assert_eq!(a.excerpt.as_deref(), Some("slow down"));

        let a = sender.send(request("/bad")).await;
        assert_eq!((a.verdict, a.status), (Verdict::Fatal, Some(400)));
        assert_eq!(a.excerpt.unwrap().len(), EXCERPT_BYTES);

        let mut r = request("/echo");
        r.headers
            .insert("idempotency-key", "effect-9".parse().unwrap());
        assert_eq!(sender.send(r).await.excerpt.as_deref(), Some("effect-9"));

        let a = sender.send(request("/hang")).await;
        assert_eq!(
            (a.verdict, a.status),
            (Verdict::Retry { after: None }, None)
        );
        assert!(a.error.unwrap().contains("timed out"));

        // Nothing listens on the port of a listener just closed: a connection error.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut r = request("/");
        r.url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let a = sender.send(r).await;
        assert_eq!(
            (a.verdict, a.status),
            (Verdict::Retry { after: None }, None)
        );

        // With the guard on, a loopback literal is refused without a request.
        let guarded = Sender::new(&OutboundConfig {
            block_private_addresses: true,
            ..OutboundConfig::default()
        })
        .unwrap();
        let a = guarded.send(request("/ok")).await;
        assert_eq!((a.verdict, a.status), (Verdict::Fatal, None));
        let mut r = request("/ok");
        r.url = Url::parse(&format!("http://localhost:{}/ok", addr.port())).unwrap();
        let a = guarded.send(r).await;
        assert_eq!(a.status, None, "{:?}", a.error);
        assert!(a.error.unwrap().contains("internal"));
    }
}
