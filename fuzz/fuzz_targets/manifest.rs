//! Input: a MANIFEST file. Whatever decodes must survive an encode/decode round trip;
//! see `silt::fuzzing::check_manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_manifest(data));
