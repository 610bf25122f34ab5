//! What a policy returns: the host's validation of merged data and reasons.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| accord::fuzzing::policy_output(data));
