//! Input: the text of `silt serve --config`; parsing never panics, and what parses keeps its durations, metrics and pipelines; see `silt::fuzzing::check_config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_config(data));
