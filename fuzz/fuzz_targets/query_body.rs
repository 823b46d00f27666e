//! Input: a body of `/api/query`, `/api/free` and `/api/healthcheck`, run through the handlers' own code against an in-memory database; see `silt::fuzzing::check_query_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| silt::fuzzing::check_query_body(data));
