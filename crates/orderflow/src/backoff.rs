//! Exponential backoff, one type for every retry loop: inbox updates, timers that moved
//! nothing, and the projector after a failed step.

use std::time::Duration;

use rand::Rng;

/// `base * 2^retries`, capped at `max`; with `jitter`, a random part of the lower half is
/// taken off ("equal jitter"), so work that failed together does not come back together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: bool,
}

impl Backoff {
    /// Without jitter.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: false,
        }
    }

    /// The same, with equal jitter.
    pub const fn jittered(self) -> Self {
        Self {
            jitter: true,
            ..self
        }
    }

    /// The delay after `retries` earlier retries (0: the first delay, `base`).
    pub fn delay(&self, retries: u32) -> Duration {
        let capped = self
            .base
            .saturating_mul(1_u32 << retries.min(31))
            .min(self.max);
        if !self.jitter {
            return capped;
        }
        let half = capped / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter).min(half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let secs: Vec<u64> = (0..8).map(|r| b.delay(r).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60)).jittered();
        for _ in 0..100 {
            let d = b.delay(1);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }
}
