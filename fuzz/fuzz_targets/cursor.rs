//! Cursor decoding: any text decodes or is refused; what decodes re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| accord::fuzzing::cursor(data));
