//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded `whsec_` secret,
//! sent as `v1,<base64>`; several space-separated signatures allow key rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a `webhook-timestamp` may be from now, both ways (every reference library: 5 min).
pub const TOLERANCE_SECONDS: i64 = 300;

/// Header names, each with its `svix-*` alias.
pub const ID_HEADERS: [&str; 2] = ["webhook-id", "svix-id"];
pub const TIMESTAMP_HEADERS: [&str; 2] = ["webhook-timestamp", "svix-timestamp"];
pub const SIGNATURE_HEADERS: [&str; 2] = ["webhook-signature", "svix-signature"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than {TOLERANCE_SECONDS} s away from the server's clock")]
    OutOfTolerance,
    #[error("no signature in webhook-signature matches")]
    NoMatch,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a signing secret is `whsec_` followed by base64")]
pub struct BadSecret;

/// A client's signing key. The bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// Parses `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(text: &str) -> Result<Self, BadSecret> {
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let key = STANDARD.decode(b64).map_err(|_| BadSecret)?;
        if key.is_empty() {
            return Err(BadSecret);
        }
        Ok(Self(key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` signature of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Checks the headers against `body` at `now` (unix seconds). `header` looks a header up
    /// by its lower-case name. The comparison is constant-time.
    pub fn verify<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let find = |names: [&'static str; 2]| {
            names
                .iter()
                .find_map(|n| header(n))
                .ok_or(VerifyError::MissingHeader(names[0]))
        };
        let id = find(ID_HEADERS)?;
        let timestamp = find(TIMESTAMP_HEADERS)?;
        let signatures = find(SIGNATURE_HEADERS)?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        // abs_diff: a timestamp near i64::MIN or MAX must not wrap into the window.
        if now.abs_diff(ts) > TOLERANCE_SECONDS.unsigned_abs() {
            return Err(VerifyError::OutOfTolerance);
        }
        let mac = self.mac(id, timestamp.trim(), body);
        let matched = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .any(|tag| mac.clone().verify_slice(&tag).is_ok());
        if matched {
            Ok(())
        } else {
            Err(VerifyError::NoMatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `whsec_` secret of 24 bytes of 7.
    fn secret_of_sevens() -> SigningSecret {
        SigningSecret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 24]))).unwrap()
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> impl Fn(&str) -> Option<&'a str> {
        move |name| match name {
            "webhook-id" => Some(id),
            "webhook-timestamp" => Some(ts),
            "webhook-signature" => Some(sig),
            _ => None,
        }
    }

    #[test]
    fn round_trip_and_tolerance() {
        let secret = secret_of_sevens();
        let sig = secret.sign("msg_1", 1_000, b"{}");
        assert_eq!(
            secret.verify(headers("msg_1", "1000", &sig), b"{}", 1_300),
            Ok(())
        );
        assert_eq!(
            secret.verify(headers("msg_1", "1000", &sig), b"{}", 700),
            Ok(())
        );
        assert_eq!(
            secret.verify(headers("msg_1", "1000", &sig), b"{}", 1_301),
            Err(VerifyError::OutOfTolerance)
        );
        assert_eq!(
            secret.verify(headers("msg_1", "1000", &sig), b"{ }", 1_000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            secret.verify(headers("msg_1", "soon", &sig), b"{}", 1_000),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn timestamps_far_away_do_not_wrap_into_the_window() {
        let secret = secret_of_sevens();
        let now = 1_764_000_000;
        for ts in [
            i64::MIN,
            i64::MIN + now,
            i64::MAX,
            now.wrapping_add(i64::MIN),
        ] {
            let sig = secret.sign("msg_1", ts, b"{}");
            assert_eq!(
                secret.verify(headers("msg_1", &ts.to_string(), &sig), b"{}", now),
                Err(VerifyError::OutOfTolerance),
                "timestamp {ts}"
            );
        }
    }

    #[test]
    fn svix_aliases_and_missing_headers() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign("msg_2", 50, b"x");
        let svix = |name: &str| match name {
            "svix-id" => Some("msg_2"),
            "svix-timestamp" => Some("50"),
            "svix-signature" => Some(sig.as_str()),
            _ => None,
        };
        assert_eq!(secret.verify(svix, b"x", 50), Ok(()));
        assert_eq!(
            secret.verify(|_| None, b"x", 50),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{s:?}"), "SigningSecret(***)");
        assert!(SigningSecret::parse("whsec_!!!").is_err());
    }
}
