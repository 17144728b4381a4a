//! `parse_line` returns `Ok` or `Err` on any input, never panics: every
//! prefix of the sample lines and every single-byte mutation of them, in all
//! three formats. Deterministic, no extra dependencies (fuzzing comes later).

use std::path::PathBuf;

use auditsink_parser::{cef, lines, parse_line, Format, ParseOptions};

/// Lines that exercise every branch of the grammar, plus the corpus when present.
fn sample_lines() -> Vec<Vec<u8>> {
    let mut samples: Vec<Vec<u8>> = [
        "Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6 granted=true trace_id=3895213347334635099 user_agent=grpc-node/1.24.11 (linux; chttp2) sig=fnjO",
        "<165>1 2023-05-19T02:03:39.123+02:00 host app 1 ID - CEF:1|V\\|x|P\\\\|1|c|n|very-high|a=x\\=y\\\\z\\n b= c=\\| d=é€😀 e=",
        "CEF:0|V|P|1|c|n|rt=1 cs6=a | b",
        "CEF:0|V|P|1|c|n|7 rt=1",
        r#"{"cef_version":"0","event_ts":"2023-04-28T20:52:09Z","rt":"1682715129807","severity":1,"trace_id":18446744073709551615,"granted":true,"sig":"x"}"#,
        r#"{"a":[1,{"b":null}],"c":"\u00e9\n"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    for name in [
        "konnect-sample.cef",
        "konnect-sample.jsonl",
        "third-party/elastic-beats-cef-samples.log",
    ] {
        // A few lines of each file keep the loop fast; the shapes repeat.
        if let Ok(body) = std::fs::read(dir.join(name)) {
            samples.extend(lines(&body).take(4).map(<[u8]>::to_vec));
        }
    }
    samples
}

fn exercise(line: &[u8]) {
    for format in [Format::Auto, Format::Cef, Format::Json] {
        let _ = parse_line(
            line,
            &ParseOptions {
                format,
                year_hint: 2024,
            },
        );
    }
    if let Ok(text) = std::str::from_utf8(line) {
        let _ = cef::parse_record(text);
    }
}

#[test]
fn every_prefix_of_every_sample() {
    for line in sample_lines() {
        for end in 0..=line.len() {
            exercise(&line[..end]);
            exercise(&line[end..]);
        }
    }
}

#[test]
fn every_byte_replaced() {
    // Bytes that matter to the grammars, plus bytes that break UTF-8.
    const REPLACEMENTS: &[u8] = b"|\\= \t\r\n{}\":,-0<>CEF\x00\x80\xc3\xff";
    for line in sample_lines() {
        let mut mutated = line.clone();
        for i in 0..line.len() {
            for &b in REPLACEMENTS {
                mutated[i] = b;
                exercise(&mutated);
            }
            for mask in [0x01, 0x20, 0x80] {
                mutated[i] = line[i] ^ mask;
                exercise(&mutated);
            }
            mutated[i] = line[i];
        }
    }
}

#[test]
fn every_byte_deleted_or_doubled() {
    for line in sample_lines() {
        for i in 0..line.len() {
            let mut deleted = line.clone();
            deleted.remove(i);
            exercise(&deleted);
            let mut doubled = line.clone();
            doubled.insert(i, line[i]);
            exercise(&doubled);
        }
    }
}

#[test]
fn pathological_inputs() {
    let long = |unit: &str, n: usize| unit.repeat(n);
    for line in [
        long("=", 10_000),
        long("\\", 10_001),
        long("|", 10_000),
        format!("CEF:0|{}", long("|", 10_000)),
        format!("CEF:0|V|P|1|c|n|5|{}", long("a=", 10_000)),
        format!("CEF:0|V|P|1|c|n|5|{}", long(" a=\\", 10_000)),
        format!("CEF:0|V|P|1|c|n|5|{}", long("\\=", 10_000)),
        format!("CEF:{}|", long("9", 10_000)),
        long("CEF:", 10_000),
        format!("{}{}", long("[", 10_000), long("]", 10_000)),
        format!("{}1{}", long("{\"a\":", 1_000), long("}", 1_000)),
        long("<1>", 1_000),
    ] {
        exercise(line.as_bytes());
    }
}
