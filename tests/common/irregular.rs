//! A file with every kind of irregular line the parser knows: each lenient
//! reading (warning) and each reason a line fails, plus terminators and
//! blank lines around them. Tests that compare two readings of the same
//! input use it.

/// Every warning kind and failure reason, one line or more each, with CRLF
/// and LF terminators, blank and whitespace-only lines (not lines), and a
/// last line without a terminator.
pub fn every_kind_of_irregular_line() -> Vec<u8> {
    let lines: &[&[u8]] = &[
        // Clean, for reference.
        b"Apr 14 05:39:08 konghq.com CEF:0|KongInc|Konnect|1.0|konnect|Authz.usage|1|rt=1681450748406 src=127.0.0.6 granted=true sig=abc",
        br#"{"cef_version":0,"event_vendor":"KongInc","name":"n","rt":"1681450748406","trace_id":3895213347334635099,"sig":"x"}"#,
        // Lenient: each warning.
        b"garbage CEF:0|V|P|1|c|n|1|a=1",
        b"Apr 14 05:39:08 host extra words CEF:0|V|P|1|c|n|1|a=1",
        b"CEF:7|V|P|1|c|n|1|a=1",
        b"CEF:0|V|P|1|c|n|",
        b"CEF:0|V|P|1|c|n| x=1",
        b"CEF:0|V|P|1|c|n|7 rt=1",
        b"CEF:0|V|P|1|c|n|a b=1",
        b"CEF:0|V|P|1|c|n|1|a=1 a=2 sig=x sig=y",
        b"CEF:0|V|P|1|c|n|1|b=1 b=2",
        br#"{"cef_version":"x","name":"n"}"#,
        br#"{"cef_version":1.5,"name":"n"}"#,
        br#"{"event_vendor":["x"],"event_product":{"a":1}}"#,
        // Failed: each reason.
        b"\xff\xfe CEF:0|V|P|1|c|n|1|a=1",
        b"CEF:0|V|P|1|c|n|1|a=\xc3",
        b"not an event",
        b"CEF:0|V|P|1|c|n",
        b"CEF:0|V|P",
        b"CEF:x|V|P|1|c|n|1|a=1",
        b"CEF:0 V|P|1|c|n|1|a=1",
        b"CEF:0|V|P|1|c|n|1 2 x=1",
        b"CEF:0|V|P|1|c|n|1|text before a=1",
        b"CEF:0|V|P|1|c|n|1|just text",
        b"CEF:0|V|P|1|c|n|=1",
        br#"{"a":1,}"#,
        br#"{"a":"#,
        br#"{"a":1} trailing"#,
        b"{",
        br#"{"a":"\x"}"#,
    ];
    let mut file = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        file.extend_from_slice(line);
        file.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        if i % 5 == 0 {
            file.extend_from_slice(b"\n   \t\n");
        }
    }
    file.extend_from_slice(b"CEF:0|V|P|1|c|n|1|last=no terminator");
    file
}
