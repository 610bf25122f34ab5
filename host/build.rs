//! Embeds `migrations/NNNN_name.sql` into the binary, in numeric order.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../migrations");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut found: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("migrations/ folder exists") {
        let path = entry.expect("readable migrations/ entry").path();
        println!("cargo::rerun-if-changed={}", path.display());
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = file.strip_suffix(".sql") else { continue };
        let (num, name) = stem.split_once('_').unwrap_or_else(|| panic!("migration {file}: expected NNNN_name.sql"));
        let version: u32 = num.parse().unwrap_or_else(|_| panic!("migration {file}: {num} is not a number"));
        found.push((version, name.to_string(), path.canonicalize().expect("canonical migration path")));
    }
    found.sort();
    for pair in found.windows(2) {
        assert!(pair[0].0 != pair[1].0, "two migrations share number {}", pair[0].0);
    }
    let mut out = String::from("pub(crate) const MIGRATIONS: &[Migration] = &[\n");
    for (version, name, path) in &found {
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({:?}) }},",
            path.display().to_string()
        )
        .expect("write to String");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(dest, out).expect("write migrations.rs");
}
