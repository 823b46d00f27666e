//! Input: canonical series path bytes, and the same bytes as the text form. Whatever decodes or parses
//! must round-trip; see `silt::fuzzing::check_series_path`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_series_path(data));
