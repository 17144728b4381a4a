//! [`KeySet::from_jwks`]: malformed documents, and the shape the signer
//! writes.

use super::*;

#[test]
fn malformed_jwks() {
    let err = |doc: &str| KeySet::from_jwks(doc.as_bytes()).unwrap_err();
    let okp = |kid: &str, x: &str| {
        format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"{kid}","x":"{x}"}}]}}"#
        )
    };
    assert!(matches!(err("not json"), JwksError::NotJson(_)));
    assert!(matches!(err(""), JwksError::NotJson(_)));
    assert_eq!(err("{}"), JwksError::NoKeysArray);
    assert_eq!(err("[]"), JwksError::NoKeysArray);
    assert_eq!(err(r#"{"keys":{}}"#), JwksError::NoKeysArray);
    assert_eq!(err(r#"{"keys":[]}"#), JwksError::Empty);
    assert_eq!(err(r#"{"keys":[1]}"#), JwksError::KeyNotObject { index: 0 });
    assert_eq!(
        err(r#"{"keys":[{"x":"abc"}]}"#),
        JwksError::MissingField {
            key: "#0".into(),
            field: "kty"
        }
    );
    assert_eq!(
        err(r#"{"keys":[{"kty":"OKP","kid":"k1"}]}"#),
        JwksError::MissingField {
            key: "\"k1\"".into(),
            field: "crv"
        }
    );
    assert_eq!(
        err(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1"}]}"#),
        JwksError::MissingField {
            key: "\"k1\"".into(),
            field: "x"
        }
    );
    let rsa = r#"{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},{"kty":"OKP","crv":"X25519","x":"AAAA"},{"kty":"OKP","crv":"Ed25519","use":"enc","x":"AAAA"}]}"#;
    assert_eq!(err(rsa), JwksError::NoUsableKeys { skipped: 3 });

    let bad = |doc: String| match KeySet::from_jwks(doc.as_bytes()).unwrap_err() {
        JwksError::BadKey { key, reason } => {
            let message = JwksError::BadKey {
                key: key.clone(),
                reason: reason.clone(),
            }
            .to_string();
            assert!(message.contains("\"bad-one\""), "{message}");
            reason
        }
        other => panic!("{other:?}"),
    };
    assert!(bad(okp("bad-one", "not base64!")).contains("base64url"));
    assert!(bad(okp("bad-one", &B64URL.encode([1u8; 31]))).contains("31 bytes"));
    assert!(bad(okp("bad-one", &B64URL.encode([1u8; 33]))).contains("33 bytes"));
    // A y coordinate with no x on the curve.
    let not_on_curve = (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| VerifyingKey::from_bytes(b).is_err())
        .unwrap();
    assert!(bad(okp("bad-one", &B64URL.encode(not_on_curve))).contains("not a point"));
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(bad(okp("bad-one", &B64URL.encode(identity))).contains("weak"));
    // A prime-order key plus a small-order point: mixed order.
    let pair = seeded(5);
    let mut order_four = [0u8; 32]; // y = 0: (±sqrt(-1), 0), of order 4
    order_four[31] = 0x80;
    let torsion = VerifyingKey::from_bytes(&order_four).unwrap();
    assert!(torsion.is_weak());
    let mixed = (pair.verifying_key().to_edwards() + torsion.to_edwards())
        .compress()
        .to_bytes();
    assert!(!VerifyingKey::from_bytes(&mixed).unwrap().is_weak());
    assert!(bad(okp("bad-one", &B64URL.encode(mixed))).contains("weak"));

    // The error names the key by index when it has no kid.
    let doc = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#,
        B64URL.encode([1u8; 31])
    );
    assert!(KeySet::from_jwks(doc.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("#0"));

    // Skipped keys next to a good one; a missing kid is derived.
    let x = B64URL.encode(pair.verifying_key().as_bytes());
    let doc = format!(
        r#"{{"keys":[{{"kty":"RSA","n":"AQAB","e":"AQAB"}},{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#
    );
    let keys = KeySet::from_jwks(doc.as_bytes()).unwrap();
    assert_eq!(keys.kids(), [pair.kid()]);
    // Padded x is accepted too.
    let keys = KeySet::from_jwks(okp("p", &format!("{x}=")).as_bytes()).unwrap();
    assert_eq!(keys.len(), 1);
}
#[test]
fn jwks_document_shape_matches_the_sample() {
    let Some(dir) = corpus_dir() else {
        println!("skipping: shared corpus not found");
        return;
    };
    let sample = std::fs::read_to_string(dir.join("konnect-sample-jwks.json")).unwrap();
    let keys = KeySet::from_jwks(sample.as_bytes()).unwrap();
    // Re-render the sample key with our writer's layout.
    let x = B64URL.encode(keys.keys[0].key.as_bytes());
    let pair = seeded(9);
    let ours = SigningKeyPair::jwks(&[&pair])
        .replace(pair.kid(), keys.kids()[0])
        .replace(&B64URL.encode(pair.verifying_key().as_bytes()), &x);
    assert_eq!(ours, sample);
}
