//! The fuzz targets' seeds and every input a fuzzer ever crashed them with
//! (fuzz/seeds/<target>/, fuzz/regressions/<target>/) still pass through the
//! same entry points (`accord::fuzzing`) on stable, in every test run.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("push_body", accord::fuzzing::push_body),
    ("cursor", accord::fuzzing::cursor),
    ("credentials", accord::fuzzing::credentials),
    ("policy_output", accord::fuzzing::policy_output),
    ("config", accord::fuzzing::config),
];

#[test]
fn seeds_and_past_crashes_pass_every_fuzz_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut ran = 0;
    for (name, target) in TARGETS {
        for folder in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(name)) else { continue };
            for entry in entries.flatten() {
                let input = std::fs::read(entry.path()).unwrap();
                target(&input);
                ran += 1;
            }
        }
    }
    assert!(ran >= 7, "expected the committed seeds, ran {ran} inputs");
}
