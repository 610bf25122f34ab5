//! Bearer tokens: the API-key shape check and JWT verification (HS256 secret).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| accord::fuzzing::credentials(data));
