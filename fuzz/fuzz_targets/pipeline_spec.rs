//! Input: a pipeline spec; parsing never panics, what parses round-trips, builds and runs its operators on a few rows; see `silt::fuzzing::check_pipeline_spec`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_pipeline_spec(data));
