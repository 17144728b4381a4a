//! [`KeySet::verify_line`]: the corpus, tampered lines, key rotation,
//! sharing, an empty set, arbitrary bytes.

use super::*;

#[test]
fn corpus_verifies_in_both_formats() {
    let Some(c) = corpus() else { return };
    assert_eq!(c.keys.kids(), ["90cbe85c55b7f3e143f44d92abbc11b9dd597dec"]);
    assert_eq!(c.cef.len(), 60);
    assert_eq!(c.json.len(), 60);
    for line in &c.cef {
        assert_eq!(
            c.keys.verify_line(line, LineFormat::Cef),
            Valid,
            "{}",
            String::from_utf8_lossy(line)
        );
        // Konnect's CEF signature ends the line: the payload is borrowed.
        assert!(matches!(
            signed_payload(line, LineFormat::Cef).unwrap().payload,
            Cow::Borrowed(_)
        ));
    }
    for line in &c.json {
        assert_eq!(
            c.keys.verify_line(line, LineFormat::Json),
            Valid,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    let batch: Vec<(&[u8], LineFormat)> = c
        .cef
        .iter()
        .map(|l| (l.as_slice(), LineFormat::Cef))
        .chain(c.json.iter().map(|l| (l.as_slice(), LineFormat::Json)))
        .collect();
    assert!(c.keys.verify_lines(&batch).iter().all(|&s| s == Valid));
}
/// Flips every byte of two lines (a CEF one with a syslog prefix, a JSON
/// one with escapes), one at a time (`^0x01` everywhere, `^0x20` and
/// `^0x80` at every fifth byte, to keep debug builds fast): never
/// `Valid`; `Invalid` for every flip inside the signature value and of
/// every letter or digit outside the `sig` key and the `CEF:` marker
/// (header fields, keys, values). Only flips of structure (quotes, pipes,
/// the key) may make the signature field disappear (`Missing`).
#[test]
fn single_byte_flips_never_verify() {
    let Some(c) = corpus() else { return };
    let cef = c.cef.iter().find(|l| !l[0].is_ascii_digit()).unwrap();
    let json = c.json.iter().find(|l| l.contains(&b'\\')).unwrap();
    let picks = [(cef, LineFormat::Cef), (json, LineFormat::Json)];
    for (line, format) in picks {
        let sig = signed_payload(line, format).unwrap().sig;
        let sig_start = sig.as_ptr() as usize - line.as_ptr() as usize;
        let in_sig = sig_start..sig_start + sig.len();
        let key_len = if format == LineFormat::Cef {
            b" sig=".len()
        } else {
            br#""sig":""#.len()
        };
        let key = sig_start - key_len..sig_start;
        let marker = line
            .windows(4)
            .position(|w| w == b"CEF:")
            .map_or(0..0, |p| p..p + 4);
        let (mut invalid, mut missing) = (0, 0);
        for pos in 0..line.len() {
            let masks: &[u8] = if pos % 5 == 0 {
                &[0x01, 0x20, 0x80]
            } else {
                &[0x01]
            };
            for &mask in masks {
                let mut bad = line.clone();
                bad[pos] ^= mask;
                let status = c.keys.verify_line(&bad, format);
                let what = || {
                    format!(
                        "flip {mask:#x} at {pos} of {}",
                        String::from_utf8_lossy(line)
                    )
                };
                assert_ne!(status, Valid, "{}", what());
                let alnum = line[pos].is_ascii_alphanumeric();
                if in_sig.contains(&pos) || (alnum && !key.contains(&pos) && !marker.contains(&pos))
                {
                    assert_eq!(status, Invalid, "{}", what());
                }
                match status {
                    Invalid => invalid += 1,
                    Missing => missing += 1,
                    other => panic!("{other:?}: {}", what()),
                }
            }
        }
        assert!(
            invalid > 5 * missing,
            "{invalid} invalid, {missing} missing"
        );
    }
}
#[test]
fn key_rotation() {
    let (old, new) = (seeded(10), seeded(11));
    let keys = keyset(&[&old, &new]);
    assert_eq!(keys.len(), 2);
    assert!(!keys.is_empty());
    assert_eq!(keys.kids(), [old.kid(), new.kid()]);
    let by_old = old.sign_json_line(JSON_UNSIGNED).unwrap();
    let by_new = new.sign_json_line(JSON_UNSIGNED).unwrap();
    for _ in 0..2 {
        assert_eq!(keys.verify_line(by_new.as_bytes(), LineFormat::Json), Valid);
        assert_eq!(keys.last_good.load(Ordering::Relaxed), 1);
        assert_eq!(keys.verify_line(by_old.as_bytes(), LineFormat::Json), Valid);
        assert_eq!(keys.last_good.load(Ordering::Relaxed), 0);
    }
    // A batch of new-key lines after the hint points at the old key.
    let lines: Vec<String> = (0..5)
        .map(|i| new.sign_cef_line(&format!("{CEF_UNSIGNED} n={i}")))
        .collect();
    let refs: Vec<(&[u8], LineFormat)> = lines
        .iter()
        .map(|l| (l.as_bytes(), LineFormat::Cef))
        .collect();
    assert_eq!(keys.verify_lines(&refs), vec![Valid; 5]);
    assert_eq!(keys.last_good.load(Ordering::Relaxed), 1);
    assert_eq!(keys.verify_lines(&refs), vec![Valid; 5]);
    // Neither key: invalid; only the old key configured: the new line is invalid.
    let stranger = seeded(12).sign_cef_line(CEF_UNSIGNED);
    assert_eq!(
        keys.verify_line(stranger.as_bytes(), LineFormat::Cef),
        Invalid
    );
    let only_old = keyset(&[&old]);
    assert_eq!(
        only_old.verify_line(by_new.as_bytes(), LineFormat::Json),
        Invalid
    );
    // A clone keeps keys and hint; Debug lists kids.
    let clone = keys.clone();
    assert_eq!(clone.kids(), keys.kids());
    assert!(format!("{clone:?}").contains(new.kid()));
}
#[test]
fn key_set_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<KeySet>();
    assert_send_sync::<SigningKeyPair>();
    let pair = seeded(4);
    let keys = std::sync::Arc::new(keyset(&[&seeded(3), &pair]));
    let line = pair.sign_cef_line(CEF_UNSIGNED);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let keys = keys.clone();
            let line = &line;
            scope.spawn(move || {
                assert_eq!(keys.verify_line(line.as_bytes(), LineFormat::Cef), Valid)
            });
        }
    });
}
#[test]
fn empty_key_set_is_unverified() {
    let keys = KeySet::from_keys(Vec::new());
    assert!(keys.is_empty());
    let signed = seeded(1).sign_cef_line(CEF_UNSIGNED);
    assert_eq!(
        keys.verify_line(signed.as_bytes(), LineFormat::Cef),
        Unverified
    );
    assert_eq!(
        keys.verify_line(CEF_UNSIGNED.as_bytes(), LineFormat::Cef),
        Missing
    );
    let refs = [
        (signed.as_bytes(), LineFormat::Cef),
        (CEF_UNSIGNED.as_bytes(), LineFormat::Cef),
    ];
    assert_eq!(keys.verify_lines(&refs), [Unverified, Missing]);
}
/// Every prefix of sample lines, and random bytes, in both formats.
#[test]
fn never_panics() {
    let pair = seeded(2);
    let keys = keyset(&[&pair]);
    let mut lines: Vec<Vec<u8>> = vec![
        pair.sign_cef_line(CEF_UNSIGNED).into_bytes(),
        pair.sign_json_line(JSON_UNSIGNED).unwrap().into_bytes(),
        br#"{"a":"\"#.to_vec(),
        b"CEF:0|\\".to_vec(),
        br#"{"sig":"#.to_vec(),
        br#"{"sig""#.to_vec(),
    ];
    if let Some(c) = corpus() {
        lines.extend(c.cef.into_iter().take(3));
        lines.extend(c.json.into_iter().take(3));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    for _ in 0..300 {
        let len = rng.gen_range(0..120);
        let alphabet = b"{}[]\",:\\ |=sigCEF:0AQ_-\r\n";
        lines.push(
            (0..len)
                .map(|_| {
                    if rng.gen_bool(0.8) {
                        alphabet[rng.gen_range(0..alphabet.len())]
                    } else {
                        rng.gen()
                    }
                })
                .collect(),
        );
    }
    for line in &lines {
        for end in 0..=line.len() {
            let prefix = &line[..end];
            for format in [LineFormat::Cef, LineFormat::Json] {
                if let Some(s) = signed_payload(prefix, format) {
                    assert!(s.payload.len() + s.sig.len() <= prefix.len());
                }
                let _ = keys.verify_line(prefix, format);
            }
        }
        let prefixes: Vec<(&[u8], LineFormat)> = (0..=line.len())
            .flat_map(|e| {
                [
                    (&line[..e], LineFormat::Cef),
                    (&line[..e], LineFormat::Json),
                ]
            })
            .collect();
        let single: Vec<_> = prefixes
            .iter()
            .map(|&(l, f)| keys.verify_line(l, f))
            .collect();
        assert_eq!(keys.verify_lines(&prefixes), single);
    }
}
