//! Idempotency keys of `bench ingest` (`--keys`): a counter, as an ERP that numbers its
//! messages sends, or random UUIDs, as many ERPs send. Either is the same for the same
//! update, so a resent update repeats its key.

/// How `bench ingest` makes idempotency keys (`--keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Keys {
    Counter,
    Uuid,
}

impl Keys {
    /// What the run's first line calls these keys.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Uuid => "UUID",
        }
    }

    /// The key of the `n`-th new update of run `run_id`; the same for the same `n`, so a
    /// resend repeats it.
    pub(super) fn key(self, run_id: u32, n: u64) -> String {
        match self {
            Self::Counter => format!("bench-{run_id}-{n}"),
            Self::Uuid => {
                // Two splitmix64 steps from (run, n): random-looking, and repeatable.
                let mix = |mut z: u64| {
                    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^ (z >> 31)
                };
                let high = mix((u64::from(run_id) << 40) ^ n);
                let low = mix(high ^ n);
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&high.to_be_bytes());
                bytes[8..].copy_from_slice(&low.to_be_bytes());
                uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn uuid_keys_are_random_looking_and_the_same_for_a_resend() {
        let a = Keys::Uuid.key(7, 1_000);
        assert_eq!(a, Keys::Uuid.key(7, 1_000), "a resend repeats its key");
        let parsed = uuid::Uuid::parse_str(&a).expect(&a);
        assert_eq!(parsed.get_version_num(), 4, "{a}");
        let mut keys: Vec<String> = (0..1_000).map(|n| Keys::Uuid.key(7, n)).collect();
        let sorted = {
            let mut s = keys.clone();
            s.sort();
            s
        };
        assert_ne!(keys, sorted, "UUID keys do not arrive in order");
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 1_000);
        assert_ne!(Keys::Uuid.key(7, 1), Keys::Uuid.key(8, 1), "runs differ");
        assert_eq!(Keys::Counter.key(7, 12), "bench-7-12");
    }
}
