//! Push body decoding: any bytes give a typed push or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| accord::fuzzing::push_body(data));
