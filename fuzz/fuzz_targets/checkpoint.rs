//! Input: a pipeline checkpoint (`format/checkpoint.md`). Whatever decodes must re-encode to the same
//! bytes; window states in it must restore or be refused, never panic. See `silt::fuzzing::check_checkpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_checkpoint(data));
