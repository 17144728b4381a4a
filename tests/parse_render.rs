//! `auditsink parse` renders from the borrowed event into blocks of output;
//! its JSON must stay byte for byte what the owned `Event` renders through
//! serde (docs/EVENT_SCHEMA.md is a contract), for every input: the shared
//! corpora, simulated Konnect events of every shape, every kind of
//! irregular line, and lines that straddle the reader's blocks or are
//! longer than one.

mod common;

use auditsink_parser::{lines, parse_line, Format, ParseOptions};

/// What `auditsink parse` printed before it rendered from the borrowed
/// event: serde_json of the owned event, or the error object.
fn reference_output(input: &[u8], format: Format) -> String {
    let options = ParseOptions {
        format,
        // What `parse` assumes for an RFC 3164 prefix time: this year.
        year_hint: time::OffsetDateTime::now_utc().year(),
    };
    let mut out = String::new();
    for line in lines(input) {
        let rendered = match parse_line(line, &options) {
            Ok(event) => serde_json::to_string(&event).unwrap(),
            Err(e) => {
                serde_json::json!({ "error": e.to_string(), "raw": String::from_utf8_lossy(line) })
                    .to_string()
            }
        };
        out.push_str(&rendered);
        out.push('\n');
    }
    out
}

fn assert_same_output(name: &str, input: &[u8]) {
    for (flag, format) in [
        ("auto", Format::Auto),
        ("cef", Format::Cef),
        ("json", Format::Json),
    ] {
        let (code, stdout, stderr) = common::run_bin(&["parse", "--format", flag], input);
        assert_eq!(code, 0, "{name} --format {flag}: {stderr}");
        let expected = reference_output(input, format);
        if stdout != expected {
            let at = stdout
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(stdout.lines().count().min(expected.lines().count()));
            panic!(
                "{name} --format {flag}: output line {} differs ({} vs {} lines)\n ours: {:?}\n then: {:?}",
                at + 1,
                stdout.lines().count(),
                expected.lines().count(),
                stdout.lines().nth(at),
                expected.lines().nth(at),
            );
        }
    }
}

#[test]
fn parse_output_is_the_owned_events_rendering_on_the_corpora() {
    for name in [
        "konnect-sample.cef",
        "konnect-sample.jsonl",
        "third-party/elastic-beats-cef-samples.log",
    ] {
        let Some(path) = common::corpus(name) else {
            continue;
        };
        assert_same_output(name, &std::fs::read(path).unwrap());
    }
}

#[test]
fn parse_output_is_the_owned_events_rendering_on_irregular_lines() {
    assert_same_output(
        "every kind of irregular line",
        &common::irregular::every_kind_of_irregular_line(),
    );
}

#[test]
fn parse_output_is_the_owned_events_rendering_across_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // Simulated Konnect events of every shape, more than a few of the
    // reader's blocks of input, so that lines straddle their boundaries.
    let mut input = Vec::new();
    for args in [
        &["-n", "2500", "--format", "mixed", "--seed", "7"][..],
        &["-n", "300", "--portal", "--format", "mixed", "--seed", "8"],
    ] {
        let path = common::simulate_to(dir.path(), "sim.log", args);
        input.extend(std::fs::read(path).unwrap());
    }
    assert!(input.len() > 1 << 20, "{} bytes", input.len());
    // A line longer than a block, with escapes at the block's edge.
    let mut long = b"CEF:0|KongInc|Konnect|1.0|konnect|Long|1|rt=1681450748406 msg=".to_vec();
    long.extend(
        std::iter::repeat(b"ab\\=c\"d\\\\".as_slice())
            .take(300_000)
            .flatten(),
    );
    input.extend_from_slice(&long);
    input.extend_from_slice(b"\r\n");
    input.extend(common::irregular::every_kind_of_irregular_line());
    assert_same_output("simulated, long and irregular lines", &input);
}
