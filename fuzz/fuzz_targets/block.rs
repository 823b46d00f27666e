//! Input: a block file. Opening and decoding never panic; whatever decodes must survive a re-encode;
//! see `silt::fuzzing::check_block`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_block(data));
