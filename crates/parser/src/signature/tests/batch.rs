//! [`KeySet::verify_lines`] against [`KeySet::verify_line`], and the byte
//! screening that keeps them equal.

use super::*;

#[test]
fn batch_equals_single_on_a_mixed_batch() {
    let Some(c) = corpus() else { return };
    let other = seeded(7);
    let mut lines: Vec<(Vec<u8>, LineFormat)> = Vec::new();
    for i in 0..10 {
        lines.push((c.cef[i].clone(), LineFormat::Cef));
        lines.push((c.json[i].clone(), LineFormat::Json));
    }
    let mut tampered = c.cef[11].clone();
    let at = tampered.windows(7).position(|w| w == b"org_id=").unwrap() + 7;
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    lines.insert(5, (tampered, LineFormat::Cef));
    let mut tampered = c.json[11].clone();
    let len = tampered.len();
    tampered[len - 10] = if tampered[len - 10] == b'A' {
        b'B'
    } else {
        b'A'
    };
    lines.insert(9, (tampered, LineFormat::Json));
    lines.push((CEF_UNSIGNED.as_bytes().to_vec(), LineFormat::Cef));
    lines.push((
        other.sign_cef_line(CEF_UNSIGNED).into_bytes(),
        LineFormat::Cef,
    ));
    lines.push((
        format!("{CEF_UNSIGNED} sig=not-base64!").into_bytes(),
        LineFormat::Cef,
    ));
    lines.push((
        format!("{CEF_UNSIGNED} sig=QUJD").into_bytes(),
        LineFormat::Cef,
    ));
    let refs: Vec<(&[u8], LineFormat)> = lines.iter().map(|(l, f)| (l.as_slice(), *f)).collect();

    let single: Vec<_> = refs
        .iter()
        .map(|&(l, f)| c.keys.verify_line(l, f))
        .collect();
    assert_eq!(c.keys.verify_lines(&refs), single);
    assert_eq!(single.iter().filter(|&&s| s == Valid).count(), 20);
    assert_eq!(single.iter().filter(|&&s| s == Invalid).count(), 5);
    assert_eq!(single.iter().filter(|&&s| s == Missing).count(), 1);

    // The same with the other key known too: its line becomes valid.
    let both = KeySet::from_keys(vec![
        ("konnect".into(), c.keys.keys[0].key),
        (other.kid().into(), other.verifying_key()),
    ]);
    let single: Vec<_> = refs.iter().map(|&(l, f)| both.verify_line(l, f)).collect();
    assert_eq!(single.iter().filter(|&&s| s == Valid).count(), 21);
    for hint in [0, 1] {
        both.last_good.store(hint, Ordering::Relaxed);
        assert_eq!(both.verify_lines(&refs), single);
    }
    assert!(both.verify_lines(&[]).is_empty());
}
#[test]
fn a_failed_batch_is_retried_in_chunks_with_the_same_outcome() {
    let (a, b) = (seeded(11), seeded(12));
    let line = |n: usize| format!("{CEF_UNSIGNED} n={n}");
    // 300 lines: signed by a, one forged in the third chunk, one
    // unsigned, then 100 signed by b (a key rotation mid-request).
    let mut lines: Vec<Vec<u8>> = (0..200)
        .map(|n| a.sign_cef_line(&line(n)).into_bytes())
        .chain((200..300).map(|n| b.sign_cef_line(&line(n)).into_bytes()))
        .collect();
    let forged = a.sign_cef_line(&line(150)).replace("n=150", "n=151");
    lines[150] = forged.into_bytes();
    lines[20] = line(20).into_bytes();
    let refs: Vec<(&[u8], LineFormat)> = lines
        .iter()
        .map(|l| (l.as_slice(), LineFormat::Cef))
        .collect();
    for keys in [keyset(&[&a]), keyset(&[&a, &b]), keyset(&[&b, &a])] {
        for hint in 0..keys.keys.len() {
            keys.last_good.store(hint, Ordering::Relaxed);
            let single: Vec<_> = refs.iter().map(|&(l, f)| keys.verify_line(l, f)).collect();
            keys.last_good.store(hint, Ordering::Relaxed);
            assert_eq!(keys.verify_lines(&refs), single, "hint {hint}");
            assert_eq!(single[150], Invalid);
            assert_eq!(single[20], Missing);
            let valid = single.iter().filter(|&&s| s == Valid).count();
            assert_eq!(valid, if keys.keys.len() == 2 { 298 } else { 198 });
        }
    }
}
#[test]
fn batch_equals_single_on_crafted_signatures() {
    let pair = seeded(1);
    let keys = keyset(&[&pair]);
    let good = pair.sign_cef_line(CEF_UNSIGNED);
    let sig = decode_signature(
        signed_payload(good.as_bytes(), LineFormat::Cef)
            .unwrap()
            .sig,
    )
    .unwrap();
    let mut crafted = Vec::new();
    // Small-order R (the identity) with S = 0; S + ℓ (non-canonical S).
    let mut identity = [0u8; 64];
    identity[0] = 1;
    crafted.push(identity);
    let mut big_s = sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(big_s[32 + i]) + u16::from(ELL[i]) + carry;
        big_s[32 + i] = v as u8;
        carry = v >> 8;
    }
    crafted.push(big_s);
    // y = p + k (k < 19) is a non-canonical encoding of y = k; find one
    // that is a point of large order.
    let noncanonical = (2u8..19)
        .map(|k| {
            let mut y = [0xffu8; 32];
            y[0] = 0xed + k;
            y[31] = 0x7f;
            y
        })
        .find(|y| VerifyingKey::from_bytes(y).is_ok_and(|p| !p.is_weak()))
        .unwrap();
    let mut noncanonical_r = sig;
    noncanonical_r[..32].copy_from_slice(&noncanonical);
    crafted.push(noncanonical_r);
    // R of order 8, S = 0.
    let mut order8 = [0u8; 64];
    order8[..32].copy_from_slice(&SMALL_ORDER_Y[3]);
    crafted.push(order8);
    let mut lines: Vec<String> = crafted
        .iter()
        .map(|s| format!("{CEF_UNSIGNED} sig={}", B64URL.encode(s)))
        .collect();
    lines.push(good.clone());
    lines.push(pair.sign_cef_line("CEF:0|a|b|c|d|e|f|x=1"));
    let refs: Vec<(&[u8], LineFormat)> = lines
        .iter()
        .map(|l| (l.as_bytes(), LineFormat::Cef))
        .collect();
    let single: Vec<_> = refs.iter().map(|&(l, f)| keys.verify_line(l, f)).collect();
    assert_eq!(single, [Invalid, Invalid, Invalid, Invalid, Valid, Valid]);
    assert_eq!(keys.verify_lines(&refs), single);
    assert!(!batch_safe(&Signature::from_bytes(&crafted[0])));
    assert!(!batch_safe(&Signature::from_bytes(&crafted[1])));
    assert!(!batch_safe(&Signature::from_bytes(&crafted[2])));
    assert!(!batch_safe(&Signature::from_bytes(&crafted[3])));
    assert!(batch_safe(&Signature::from_bytes(&sig)));
}
/// The small-order table is exactly the eight points of order dividing 8.
#[test]
fn small_order_table() {
    let order8 = VerifyingKey::from_bytes(&SMALL_ORDER_Y[3])
        .unwrap()
        .to_edwards();
    let mut point = order8;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let encoding = point.compress().to_bytes();
        seen.insert(encoding);
        let sig = Signature::from_bytes(&[encoding, [0u8; 32]].concat().try_into().unwrap());
        assert!(!batch_safe(&sig), "{encoding:02x?}");
        let mut flipped = encoding;
        flipped[31] ^= 0x80;
        assert!(!batch_safe(&Signature::from_bytes(
            &[flipped, [0u8; 32]].concat().try_into().unwrap()
        )));
        point += order8;
    }
    assert_eq!(seen.len(), 8, "not a generator of the 8-torsion");
    for y in SMALL_ORDER_Y {
        assert!(VerifyingKey::from_bytes(&y).unwrap().is_weak());
    }
    // Non-canonical y: p, p+1, … p+18.
    for k in 0..19u8 {
        let mut y = P;
        y[0] += k;
        assert!(!less_than(&y, &P, true));
    }
    assert!(less_than(&SMALL_ORDER_Y[2], &P, true));
    // ℓ itself is not a canonical S; ℓ − 1 is.
    assert!(!less_than(&ELL, &ELL, false));
    let mut below = ELL;
    below[0] -= 1;
    assert!(less_than(&below, &ELL, false));
}
