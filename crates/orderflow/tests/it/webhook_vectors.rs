//! The Standard Webhooks reference vectors from the shared corpus.

use orderflow::webhook::{SigningSecret, VerifyError};
use serde_json::Value;

use crate::corpus::corpus_dir;

struct Vector {
    secret: String,
    id: String,
    timestamp: i64,
    payload: String,
    signature: String,
}

fn vectors() -> Option<(Vec<Vector>, Vec<String>)> {
    let dir = corpus_dir()?.join("standard-webhooks");
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let to_vector = |v: &Value| Vector {
        secret: v["secret"].as_str().unwrap().to_owned(),
        id: v["id"].as_str().unwrap().to_owned(),
        timestamp: v["timestamp"].as_i64().unwrap(),
        payload: v["payload"].as_str().unwrap().to_owned(),
        signature: v["signature"].as_str().unwrap().to_owned(),
    };
    let mut valid: Vec<Vector> = read("signatures.json")
        .as_array()
        .unwrap()
        .iter()
        .map(to_vector)
        .collect();
    let main = read("vectors-from-main-tests.json");
    valid.extend(main["valid"].as_array().unwrap().iter().map(to_vector));
    let mut decoys = Vec::new();
    for (k, v) in main["invalid_signatures_for_negative_tests"]
        .as_object()
        .unwrap()
    {
        if k.starts_with('_') {
            continue;
        }
        match v {
            Value::String(s) => decoys.push(s.clone()),
            Value::Array(a) => decoys.extend(a.iter().map(|s| s.as_str().unwrap().to_owned())),
            _ => {}
        }
    }
    Some((valid, decoys))
}

#[test]
fn reference_vectors_sign_and_verify() {
    let Some((valid, decoys)) = vectors() else {
        return;
    };
    assert_eq!(valid.len(), 3);
    for v in &valid {
        let secret = SigningSecret::parse(&v.secret).unwrap();
        assert_eq!(
            secret.sign(&v.id, v.timestamp, v.payload.as_bytes()),
            v.signature
        );
        let ts = v.timestamp.to_string();
        let check = |sig: &str, body: &str, now: i64| {
            secret.verify(
                |h| match h {
                    "webhook-id" => Some(v.id.as_str()),
                    "webhook-timestamp" => Some(ts.as_str()),
                    "webhook-signature" => Some(sig),
                    _ => None,
                },
                body.as_bytes(),
                now,
            )
        };
        assert_eq!(check(&v.signature, &v.payload, v.timestamp), Ok(()));
        // The right signature among decoys, as during key rotation.
        let rotated = format!("{} {} v1a,ignored", decoys.join(" "), v.signature);
        assert_eq!(check(&rotated, &v.payload, v.timestamp + 299), Ok(()));
        // Decoys alone, a tampered body, an old timestamp: all refused.
        assert_eq!(
            check(&decoys.join(" "), &v.payload, v.timestamp),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(&v.signature, &format!("{} ", v.payload), v.timestamp),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            check(&v.signature, &v.payload, v.timestamp + 301),
            Err(VerifyError::OutOfTolerance)
        );
        // A wrong secret.
        let other = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oE").unwrap();
        assert_ne!(
            other.sign(&v.id, v.timestamp, v.payload.as_bytes()),
            v.signature
        );
    }
}
