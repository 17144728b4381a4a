//! Any bytes as a JSON line: `parse_line`, `parse_borrowed` and the JSON
//! signature payload never panic and agree.
#![no_main]

use auditsink_parser::{Format, LineFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::check(data, Format::Json, LineFormat::Json);
    common::check(data, Format::Auto, LineFormat::Json);
});
