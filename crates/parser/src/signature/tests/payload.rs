//! [`signed_payload`] and [`decode_signature`]: which bytes are signed and
//! which text is the signature.

use super::*;

#[test]
fn corpus_cef_payload_is_line_minus_sig_field() {
    let Some(c) = corpus() else { return };
    let line = std::str::from_utf8(&c.cef[0]).unwrap();
    let (payload, sig) = payload(line, LineFormat::Cef).unwrap();
    assert_eq!(format!("{payload} sig={sig}"), line);
    assert!(payload.ends_with("kong_initiated=false"));
    let line = std::str::from_utf8(&c.json[0]).unwrap();
    let (payload, sig) = self::payload(line, LineFormat::Json).unwrap();
    let object = payload.strip_suffix('}').unwrap();
    assert_eq!(format!("{object},\"sig\":\"{sig}\"}}"), line);
}
#[test]
fn line_without_sig_is_missing() {
    let keys = keyset(&[&seeded(1)]);
    let cases: &[(&str, LineFormat)] = &[
        (CEF_UNSIGNED, LineFormat::Cef),
        (JSON_UNSIGNED, LineFormat::Json),
        ("", LineFormat::Cef),
        ("", LineFormat::Json),
        // `sig` inside the CEF header, escaped pipes included.
        (
            r"CEF:0|Kong\| sig=abc|Konnect|1.0|x|y|1|rt=1",
            LineFormat::Cef,
        ),
        (r"CEF:0|Kong\|x|Konnect|1.0|x|y sig=abc|1", LineFormat::Cef),
        // Not a key: `xsig=`, `sigx=`, and not CEF at all.
        ("CEF:0|a|b|c|d|e|f|xsig=abc sigx=def", LineFormat::Cef),
        ("a=b sig=abc", LineFormat::Cef),
        // JSON: nested, inside strings, non-string values, not an object.
        (r#"{"a":{"sig":"abc"},"b":["sig"]}"#, LineFormat::Json),
        (r#"{"a":"x\",\"sig\":\"abc\"","b":1}"#, LineFormat::Json),
        (r#"{"a":"x\\\",\"sig\":\"abc\"","b":1}"#, LineFormat::Json),
        (r#"{"a":1,"sig":null}"#, LineFormat::Json),
        (r#"{"a":1,"sig":123}"#, LineFormat::Json),
        (r#"["sig","abc"]"#, LineFormat::Json),
        (r#"{"a":1}{"b":2,"sig":"abc"}"#, LineFormat::Json),
        (r#"{"a":1,"Sig":"abc"}"#, LineFormat::Json),
    ];
    for &(line, format) in cases {
        assert_eq!(signed_payload(line.as_bytes(), format), None, "{line}");
        assert_eq!(keys.verify_line(line.as_bytes(), format), Missing, "{line}");
    }
}
#[test]
fn cef_field_rules() {
    let p = |l: &str| payload(l, LineFormat::Cef);
    let s = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
    // Last one wins; a following key stays; trailing whitespace is not
    // part of the signature but stays in the payload.
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA y=2 sig=BBB"),
        s("CEF:0|a|b|c|d|e|f|x=1 sig=AAA y=2", "BBB")
    );
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA y=2"),
        s("CEF:0|a|b|c|d|e|f|x=1 y=2", "AAA")
    );
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA \r"),
        s("CEF:0|a|b|c|d|e|f|x=1 \r", "AAA")
    );
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|x=1 sig=AAA  y=2"),
        s("CEF:0|a|b|c|d|e|f|x=1  y=2", "AAA")
    );
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|x=1 sig=A b c"),
        s("CEF:0|a|b|c|d|e|f|x=1", "A b c")
    );
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|x=1 sig="),
        s("CEF:0|a|b|c|d|e|f|x=1", "")
    );
    // Escaped pipes in the header; a pipe in the extension is just a byte.
    assert_eq!(
        p(r"<13>Apr 14 h CEF:0|a\|b|c|d|e|f|g|x=a|b sig=Q"),
        s(r"<13>Apr 14 h CEF:0|a\|b|c|d|e|f|g|x=a|b", "Q")
    );
    assert_eq!(
        p(r"CEF:0|a\\|b|c|d|e|f|x=1 sig=Q"),
        s(r"CEF:0|a\\|b|c|d|e|f|x=1", "Q")
    );
    // Extension: `sig` first.
    assert_eq!(
        p("CEF:0|a|b|c|d|e|f|sig=Q x=1"),
        s("CEF:0|a|b|c|d|e|f|x=1", "Q")
    );
    assert_eq!(p("CEF:0|a|b|c|d|e|f|sig=Q"), s("CEF:0|a|b|c|d|e|f|", "Q"));
    assert_eq!(p("CEF:0|a|b|c|d|e|f| sig=Q"), s("CEF:0|a|b|c|d|e|f|", "Q"));
}
#[test]
fn json_field_rules() {
    let p = |l: &str| payload(l, LineFormat::Json);
    let s = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
    assert_eq!(p(r#"{"a":1,"sig":"Q"}"#), s(r#"{"a":1}"#, "Q"));
    assert_eq!(p(r#"{"a":1,"sig":"Q","b":2}"#), s(r#"{"a":1,"b":2}"#, "Q"));
    assert_eq!(
        p(r#"  {"a":1 , "sig" : "Q" }  "#),
        s(r#"  {"a":1  }  "#, "Q")
    );
    // Last top-level one; nested ones ignored.
    assert_eq!(
        p(r#"{"sig":"P","a":{"sig":"N"},"sig":"Q","b":[{"sig":"M"}]}"#),
        s(r#"{"sig":"P","a":{"sig":"N"},"b":[{"sig":"M"}]}"#, "Q")
    );
    // First key (extension) and only key.
    assert_eq!(p(r#"{"sig":"Q","a":1}"#), s(r#"{"a":1}"#, "Q"));
    assert_eq!(p(r#"{ "sig":"Q" , "a":1}"#), s(r#"{  "a":1}"#, "Q"));
    assert_eq!(p(r#"{"sig":"Q"}"#), s(r#"{}"#, "Q"));
    // Backslashes: `x\\` ends the string, so the next `"sig"` is a key.
    assert_eq!(p(r#"{"a":"x\\","sig":"Q"}"#), s(r#"{"a":"x\\"}"#, "Q"));
    assert_eq!(p(r#"{"a":"x\\\"","sig":"Q"}"#), s(r#"{"a":"x\\\""}"#, "Q"));
    // The value is taken raw; an escape in it makes it undecodable later.
    assert_eq!(p(r#"{"a":1,"sig":"Q\"R"}"#), s(r#"{"a":1}"#, r#"Q\"R"#));
    // Truncated after the signature: still found.
    assert_eq!(p(r#"{"a":1,"sig":"Q","b":"#), s(r#"{"a":1,"b":"#, "Q"));
}
#[test]
fn signature_encoding() {
    let pair = seeded(3);
    let keys = keyset(&[&pair]);
    let line = pair.sign_cef_line(CEF_UNSIGNED);
    let sig = signed_payload(line.as_bytes(), LineFormat::Cef)
        .unwrap()
        .sig
        .to_vec();
    assert_eq!(sig.len(), 86);
    let bytes = decode_signature(&sig).unwrap();
    let padded = format!(
        "{CEF_UNSIGNED} sig={}==",
        String::from_utf8(sig.clone()).unwrap()
    );
    assert_eq!(keys.verify_line(padded.as_bytes(), LineFormat::Cef), Valid);
    let standard = base64::engine::general_purpose::STANDARD.encode(bytes);
    let standard = format!("{CEF_UNSIGNED} sig={standard}");
    let expected = if standard.contains(['+', '/']) {
        Invalid
    } else {
        Valid
    };
    assert_eq!(
        keys.verify_line(standard.as_bytes(), LineFormat::Cef),
        expected
    );
    // Non-zero trailing bits decode to the same bytes in lax decoders: rejected.
    let mut lax = sig.clone();
    let last = lax.len() - 1;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = alphabet.iter().position(|&c| c == lax[last]).unwrap();
    lax[last] = alphabet[v ^ 1];
    assert_eq!(decode_signature(&lax), None);
    // Wrong lengths.
    assert_eq!(decode_signature(&sig[..85]), None);
    assert_eq!(decode_signature(B64URL.encode([0u8; 63]).as_bytes()), None);
    assert_eq!(decode_signature(B64URL.encode([0u8; 65]).as_bytes()), None);
    assert_eq!(decode_signature(&[b'A'; 200]), None);
    for bad in [&b"QUJD"[..], b"", b"!!!"] {
        let line = [CEF_UNSIGNED.as_bytes(), b" sig=", bad].concat();
        assert_eq!(keys.verify_line(&line, LineFormat::Cef), Invalid);
    }
}
