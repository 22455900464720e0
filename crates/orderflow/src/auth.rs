//! Client credentials: random bearer tokens stored as SHA-256 hashes, Standard Webhooks
//! signing secrets, and the in-memory cache that keeps token checks off the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use moka::Expiry;
use moka::future::Cache;
use rand::RngCore;
use secrecy::SecretString;
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
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// Lower-case hex, as `hex::encode` writes it; that goes through a `char` iterator, a few
/// times slower for a digest hashed on every request.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // `out` is twice as long as `bytes`, which is all `encode_to_slice` asks.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
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
            role,
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

/// [`create_client`], or, when a client of that name and role exists, new credentials for
/// it: the old token (and signing secret) stop working, at the latest when a running
/// server's token cache lets go of them ([`KNOWN_TOKEN_TTL`]). Returns the credentials
/// and whether the client existed.
pub async fn reissue_client(
    store: &Store,
    name: &str,
    role: Role,
    with_signing_secret: bool,
) -> Result<(NewClient, bool), StoreError> {
    let token = new_token();
    let signing_secret = with_signing_secret.then(new_signing_secret);
    let existed = store
        .reissue_client(
            name,
            role,
            &hash_token(&token),
            signing_secret.as_deref(),
            Utc::now(),
        )
        .await?;
    let client = NewClient {
        name: name.to_owned(),
        role,
        token,
        signing_secret,
    };
    Ok((client, existed))
}

/// A known client as a request sees it.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    pub role: Role,
    /// Standard Webhooks secret (`whsec_...`); `SecretString` keeps it out of Debug output.
    pub signing_secret: Option<SecretString>,
}

/// How long a known token is served from memory. A client removed from the store (or given
/// a new role) is seen within this time.
pub const KNOWN_TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an unknown token is remembered as unknown, so a caller repeating a wrong token
/// does not cost a database read each time.
pub const UNKNOWN_TOKEN_TTL: Duration = Duration::from_secs(5);
/// Tokens held at most; the least useful are dropped first.
const CAPACITY: u64 = 10_000;

/// Token hash → client, cached in memory so a request does not read the database to
/// authenticate.
///
/// Known tokens are kept for [`KNOWN_TOKEN_TTL`]; unknown ones for [`UNKNOWN_TOKEN_TTL`]
/// only. A client created with `orderflow clients create` while the server runs works at
/// once: its token is new and random, so no "unknown" entry can exist for it. (A token
/// that was tried before it was stored, which only a hand-made token could be, works after
/// at most `UNKNOWN_TOKEN_TTL`.) Concurrent lookups of one uncached token share one read.
#[derive(Clone)]
pub struct ClientCache {
    store: Store,
    cache: Cache<String, Option<Arc<Client>>>,
}

impl ClientCache {
    pub fn new(store: Store) -> Self {
        let cache = Cache::builder()
            .max_capacity(CAPACITY)
            .time_to_live(KNOWN_TOKEN_TTL)
            .expire_after(ShortForUnknown)
            .build();
        Self { store, cache }
    }

    /// The client with this bearer token, `None` when the token is unknown.
    pub async fn by_token(&self, token: &str) -> Result<Option<Arc<Client>>, Arc<StoreError>> {
        let hash = hash_token(token);
        self.cache
            .try_get_with_by_ref(&hash, self.load(&hash))
            .await
    }

    async fn load(&self, hash: &str) -> Result<Option<Arc<Client>>, StoreError> {
        let Some(row) = self.store.client_by_token_hash(hash).await? else {
            return Ok(None);
        };
        // An unknown stored role fails the read as `StoreError::Corrupt`.
        Ok(Some(Arc::new(Client {
            name: row.name,
            role: row.role,
            signing_secret: row.signing_secret.map(SecretString::from),
        })))
    }
}

/// Unknown tokens expire after [`UNKNOWN_TOKEN_TTL`]; known ones by the cache's TTL.
struct ShortForUnknown;

impl Expiry<String, Option<Arc<Client>>> for ShortForUnknown {
    fn expire_after_create(
        &self,
        _token_hash: &String,
        client: &Option<Arc<Client>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        client.is_none().then_some(UNKNOWN_TOKEN_TTL)
    }
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

    #[test]
    fn a_token_hash_is_the_lower_case_hex_of_its_sha256() {
        // Stored hashes depend on it: tokens created before must keep working.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn unknown_tokens_expire_sooner() {
        let now = Instant::now();
        let key = "hash".to_owned();
        assert_eq!(
            ShortForUnknown.expire_after_create(&key, &None, now),
            Some(UNKNOWN_TOKEN_TTL)
        );
        let known = Some(Arc::new(Client {
            name: "shop".into(),
            role: Role::Shop,
            signing_secret: None,
        }));
        // None: the cache-wide KNOWN_TOKEN_TTL applies.
        assert_eq!(ShortForUnknown.expire_after_create(&key, &known, now), None);
    }

    #[test]
    fn debug_output_hides_the_signing_secret() {
        let client = Client {
            name: "erp-sap".into(),
            role: Role::Erp,
            signing_secret: Some(SecretString::from("whsec_c2VjcmV0")),
        };
        let debug = format!("{client:?}");
        assert!(!debug.contains("whsec_"), "{debug}");
        assert!(debug.contains("erp-sap"), "{debug}");
    }
}
