//! Client credentials: random bearer tokens stored as SHA-256 hashes, and Standard
//! Webhooks signing secrets.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::types::Role;
use crate::store::{Store, StoreError};

/// A new bearer token: `of_` and 32 random bytes, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("of_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A new Standard Webhooks secret: `whsec_` and 24 random bytes, base64.
pub fn new_signing_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// What is stored for a token: hex SHA-256. Tokens are long and random, so a plain hash
/// is enough (no password hashing needed) and lookups stay one indexed read.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A client just created; the token is shown once and never stored.
#[derive(Debug, serde::Serialize)]
pub struct NewClient {
    pub name: String,
    pub role: Role,
    pub token: String,
    pub signing_secret: Option<String>,
}

/// Creates a client with a fresh token (and a signing secret when asked for).
pub async fn create_client(
    store: &Store,
    name: &str,
    role: Role,
    with_signing_secret: bool,
) -> Result<NewClient, StoreError> {
    let token = new_token();
    let signing_secret = with_signing_secret.then(new_signing_secret);
    store
        .insert_client(
            name,
            role.as_str(),
            &hash_token(&token),
            signing_secret.as_deref(),
            Utc::now(),
        )
        .await?;
    Ok(NewClient {
        name: name.to_owned(),
        role,
        token,
        signing_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_token();
        assert!(a.starts_with("of_") && a.len() == 3 + 43, "{a}");
        assert_ne!(a, new_token());
        assert_eq!(hash_token("x").len(), 64);
        let s = new_signing_secret();
        assert!(s.starts_with("whsec_") && STANDARD.decode(&s[6..]).unwrap().len() == 24);
    }
}
