//! Config loading: any file gives a config or an error naming the key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| accord::fuzzing::config(data));
