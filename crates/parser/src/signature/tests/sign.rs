//! [`SigningKeyPair`]: signed lines verify, keys round-trip through their
//! text.

use super::*;

#[test]
fn generated_pair_signs_lines_that_verify() {
    let pair = SigningKeyPair::generate();
    let keys = keyset(&[&pair]);
    let cef = pair.sign_cef_line(CEF_UNSIGNED);
    assert!(cef.starts_with(&format!("{CEF_UNSIGNED} sig=")));
    assert_eq!(keys.verify_line(cef.as_bytes(), LineFormat::Cef), Valid);
    assert_eq!(payload(&cef, LineFormat::Cef).unwrap().0, CEF_UNSIGNED);

    let json = pair.sign_json_line(JSON_UNSIGNED).unwrap();
    assert_eq!(keys.verify_line(json.as_bytes(), LineFormat::Json), Valid);
    assert_eq!(payload(&json, LineFormat::Json).unwrap().0, JSON_UNSIGNED);
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["status"], 200);
    assert!(parsed["sig"].is_string());

    for line in ["{}", " { } ", r#"{"a":{"b":"}"}}  "#, "{\"a\":[1,2]}\r"] {
        let signed = pair.sign_json_line(line).unwrap();
        serde_json::from_str::<Value>(&signed).unwrap();
        assert_eq!(payload(&signed, LineFormat::Json).unwrap().0, line);
        assert_eq!(keys.verify_line(signed.as_bytes(), LineFormat::Json), Valid);
    }
    for line in [
        "CEF:0|a|b|c|d|e|f|",
        r"<13>h CEF:0|a\|b|c|d|e|f|g|x=1\\",
        "CEF:0|a|b|c|d|e|f|x=1 sig=old",
    ] {
        let signed = pair.sign_cef_line(line);
        assert_eq!(payload(&signed, LineFormat::Cef).unwrap().0, line);
        assert_eq!(keys.verify_line(signed.as_bytes(), LineFormat::Cef), Valid);
    }
    for not_object in ["[1]", "not json", "{\"a\":1", "", "\"{}\""] {
        assert!(
            matches!(
                pair.sign_json_line(not_object),
                Err(SignError::NotJsonObject(_))
            ),
            "{not_object}"
        );
    }
}
#[test]
fn key_pair_serialisation() {
    let pair = seeded(42);
    let pk = pair.verifying_key();
    assert_eq!(pair.kid().len(), 40);
    assert_eq!(pair.kid(), derive_kid(&pk));
    assert!(pair
        .kid()
        .starts_with(&format!("{:02x}{:02x}", pk.as_bytes()[0], pk.as_bytes()[1])));

    let secret = pair.secret_base64url();
    assert_eq!(secret.len(), 43);
    let again = SigningKeyPair::from_secret_base64url(&secret).unwrap();
    assert_eq!(again.verifying_key(), pk);
    assert_eq!(again.kid(), pair.kid());
    let raw: [u8; 32] = B64URL.decode(&secret).unwrap().try_into().unwrap();
    assert_eq!(SigningKeyPair::from_secret_bytes(&raw).verifying_key(), pk);
    assert!(matches!(
        SigningKeyPair::from_secret_base64url("!!"),
        Err(SecretKeyError::NotBase64(_))
    ));
    assert_eq!(
        SigningKeyPair::from_secret_base64url("QUJD").unwrap_err(),
        SecretKeyError::Length(3)
    );
    assert!(!format!("{pair:?}").contains(&secret));

    let jwk = pair.public_jwk();
    let names: Vec<&str> = jwk
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["alg", "crv", "kid", "kty", "x"]);
    assert_eq!(jwk["x"].as_str().unwrap(), B64URL.encode(pk.as_bytes()));

    let doc = SigningKeyPair::jwks(&[&pair]);
    let expected = format!(
        "{{\n  \"keys\": [\n    {{\n      \"alg\": \"EdDSA\",\n      \"crv\": \"Ed25519\",\n      \"kid\": \"{}\",\n      \"kty\": \"OKP\",\n      \"x\": \"{}\"\n    }}\n  ]\n}}",
        pair.kid(),
        B64URL.encode(pk.as_bytes())
    );
    assert_eq!(doc, expected);
    assert_eq!(
        KeySet::from_jwks(SigningKeyPair::jwks(&[]).as_bytes()).unwrap_err(),
        JwksError::Empty
    );
}
