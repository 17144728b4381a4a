//! Any bytes as a CEF line: `parse_line`, `parse_borrowed`,
//! `cef::parse_record` and the CEF signature payload never panic and agree.
#![no_main]

use auditsink_parser::{cef, Format, LineFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(data, Format::Cef, LineFormat::Cef);
    common::check(data, Format::Auto, LineFormat::Cef);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(record) = cef::parse_record(text) {
            // Every key is a non-empty slice of the line without ' ', '=', '\'.
            for (key, _) in &record.extensions {
                assert!(!key.is_empty());
                assert!(!key.contains([' ', '=', '\\']));
            }
        }
    }
});
