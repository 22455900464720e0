//! Per-client rate limits (`[clients.<name>] rate_limit_per_second = N`): one token bucket
//! per configured client, checked by the [`Caller`](super::extract::Caller) extractor right
//! after authentication.
//!
//! The bucket holds N tokens and refills at N per second (GCRA, via `governor`): a client
//! that was quiet may send a burst of N requests at once, then N per second. Clients without
//! a configured limit are not limited. Limits are per process: with several instances behind
//! a load balancer each one allows the full rate.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::ClientConfig;

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The token buckets of the clients that have a limit, by client name.
pub struct RateLimits<C: Clock = DefaultClock> {
    limiters: HashMap<String, Limiter<C>>,
    clock: C,
}

impl RateLimits {
    /// A bucket for each client with `rate_limit_per_second`, on the real clock.
    pub fn from_config(clients: &BTreeMap<String, ClientConfig>) -> Self {
        Self::with_clock(clients, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Like [`RateLimits::from_config`], with the given clock (tests use a fake one).
    pub fn with_clock(clients: &BTreeMap<String, ClientConfig>, clock: C) -> Self {
        let limiters = clients
            .iter()
            // A zero rate is refused by `Config::validate`; it can only mean "no limit" here.
            .filter_map(|(name, c)| Some((name, NonZeroU32::new(c.rate_limit_per_second?)?)))
            .map(|(name, rate)| {
                let quota = Quota::per_second(rate).allow_burst(rate);
                (
                    name.clone(),
                    RateLimiter::direct_with_clock(quota, clock.clone()),
                )
            })
            .collect();
        Self { limiters, clock }
    }

    /// Takes one token from `client`'s bucket. When it is empty: how long until the next
    /// token (a fraction of a second for most rates; the answer rounds it up).
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        let Some(limiter) = self.limiters.get(client) else {
            return Ok(());
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::http::header::RETRY_AFTER;
    use axum::response::IntoResponse;
    use governor::clock::FakeRelativeClock;

    use super::*;
    use crate::http::ApiError;

    fn limits(rates: &[(&str, Option<u32>)]) -> (RateLimits<FakeRelativeClock>, FakeRelativeClock) {
        let clients = rates
            .iter()
            .map(|(name, rate)| {
                let config = ClientConfig {
                    rate_limit_per_second: *rate,
                };
                ((*name).to_owned(), config)
            })
            .collect();
        let clock = FakeRelativeClock::default();
        (RateLimits::with_clock(&clients, clock.clone()), clock)
    }

    #[test]
    fn allows_a_burst_of_the_rate_then_limits() {
        let (limits, _clock) = limits(&[("erp-sap", Some(3))]);
        for i in 0..3 {
            assert_eq!(limits.check("erp-sap"), Ok(()), "request {i} of the burst");
        }
        assert!(
            limits.check("erp-sap").is_err(),
            "the fourth is over the limit"
        );
    }

    #[test]
    fn the_answer_says_retry_after_in_whole_seconds() {
        let (limits, _clock) = limits(&[("shop", Some(2))]);
        limits.check("shop").unwrap();
        limits.check("shop").unwrap();
        let wait = limits.check("shop").unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(500),
            "the next token comes after 1/rate"
        );
        let response = ApiError::RateLimited { retry_after: wait }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers()[RETRY_AFTER],
            "1",
            "rounded up to a whole second"
        );
    }

    #[test]
    fn refills_at_the_rate() {
        let (limits, clock) = limits(&[("shop", Some(2))]);
        limits.check("shop").unwrap();
        limits.check("shop").unwrap();
        assert!(limits.check("shop").is_err());
        clock.advance(Duration::from_millis(500));
        assert_eq!(limits.check("shop"), Ok(()), "one token back after 1/rate");
        assert!(limits.check("shop").is_err(), "but only one");
        clock.advance(Duration::from_secs(1));
        assert_eq!(limits.check("shop"), Ok(()));
        assert_eq!(limits.check("shop"), Ok(()));
        assert!(
            limits.check("shop").is_err(),
            "the burst never exceeds the rate"
        );
    }

    #[test]
    fn only_configured_clients_are_limited() {
        let (limits, _clock) = limits(&[("shop", Some(1)), ("admin", None)]);
        limits.check("shop").unwrap();
        assert!(limits.check("shop").is_err());
        for _ in 0..100 {
            assert_eq!(limits.check("admin"), Ok(()));
            assert_eq!(limits.check("erp"), Ok(()));
        }
    }
}
