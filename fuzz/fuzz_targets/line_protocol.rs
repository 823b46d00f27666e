//! Input: an InfluxDB line-protocol request body. Decoding never panics, and every line that parses
//! round-trips through its canonical text; see `silt::fuzzing::check_line_protocol`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_line_protocol(data));
