//! Input: the body of a WAL segment. Walks its frames, re-encodes each record and decodes its payload;
//! see `silt::fuzzing::check_wal_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_wal_record(data));
