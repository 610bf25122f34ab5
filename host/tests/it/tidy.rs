//! Tidy: every dependency inside host/src points one way (ARCHITECTURE.md,
//! "Dependency rule"). Reads the source, not the compiled crate, so it also
//! catches imports in code behind `#[cfg(...)]`.
//!
//! Checked: `crate::…` paths (in `use` lines and inline, grouped or not),
//! `super::…` paths that climb out to the crate root, and paths that start
//! with an external crate that belongs to one module only. Comments and
//! string literals are skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom first: each module and the crate modules it may
/// import. A module may import only modules listed before it, so the
/// graph has no cycles (checked by `the_layer_table_is_acyclic`).
/// A new module under host/src must be added here and to ARCHITECTURE.md.
const LAYERS: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &[]),
    ("metrics", &[]),
    ("scaffold", &[]),
    ("store", &["model", "config"]),
    ("policy", &["model", "config"]),
    ("auth", &["model", "config", "store"]),
    ("sync", &["model", "config", "metrics", "store"]),
    ("http", &["model", "config", "metrics", "store", "policy", "auth", "sync"]),
    ("fuzzing", &["model", "config", "policy", "auth", "sync"]),
    ("server", &["model", "config", "metrics", "store", "policy", "auth", "sync", "http"]),
    ("cli", &["model", "config", "metrics", "store", "policy", "auth", "sync", "http", "server", "scaffold"]),
];

/// Crate roots: `lib.rs` only declares the modules; `main.rs` is the binary,
/// which sees the library from outside (`accord::…`).
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

/// External crates that belong to some modules only: (crates, the modules
/// that may use them, why).
const CRATE_RULES: &[(&[&str], &[&str], &str)] = &[
    (
        &[
            "rusqlite",
            "libsqlite3_sys",
            "postgres",
            "postgres_types",
            "tokio_postgres",
            "deadpool_postgres",
            "r2d2",
            "r2d2_sqlite",
            "r2d2_postgres",
            "sqlx",
        ],
        &["store"],
        "only store/ talks to a database",
    ),
    (&["object_store"], &["store"], "only store/ keeps bytes (blobs go through store::Objects)"),
    (
        &["axum", "axum_extra", "hyper", "hyper_util", "tower", "tower_http", "http_body", "http_body_util"],
        &["http", "server"],
        "only http/ (and server.rs, which serves it) knows HTTP",
    ),
    (&["wasmtime", "wasmtime_wasi", "wit_bindgen"], &["policy"], "only policy/ runs WebAssembly"),
    (&["utoipa", "utoipa_axum"], &["http"], "only http/ describes the API (the OpenAPI document)"),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`, or one punctuation character.
    Punct(&'static str),
    Other(char),
}

/// Tokens with their 1-based line numbers; comments, strings, char
/// literals and lifetimes dropped.
fn lex(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut out) = (0usize, 1usize, Vec::new());
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    // Skips a "…" string body starting after the opening quote; returns the index after the closing one.
    let skip_str = |mut i: usize, line: &mut usize| {
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_str(i + 1, &mut line);
        } else if (ch == 'r' || (ch == 'b' && at(i + 1) == 'r')) && {
            let j = if ch == 'b' { i + 2 } else { i + 1 };
            let mut k = j;
            while at(k) == '#' {
                k += 1;
            }
            at(k) == '"' && (k > j || at(j) == '"')
        } {
            // Raw string: r"…", r#"…"#, br##"…"##.
            let mut j = if ch == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '\n' {
                    line += 1;
                }
                if c[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
        } else if ch == 'b' && at(i + 1) == '"' {
            i = skip_str(i + 2, &mut line);
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let j = if ch == 'b' { i + 1 } else { i };
            if at(j + 1) == '\\' {
                // '\n', '\'', '\u{…}'
                let mut k = j + 2;
                while k < c.len() && c[k] != '\'' {
                    k += 1;
                }
                i = k + 1;
            } else if at(j + 2) == '\'' {
                i = j + 3; // 'x'
            } else {
                i = j + 1; // a lifetime: its name lexes as an identifier
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::Punct("::"), line));
            i += 2;
        } else {
            out.push((
                match ch {
                    '{' => Tok::Punct("{"),
                    '}' => Tok::Punct("}"),
                    ',' => Tok::Punct(","),
                    _ => Tok::Other(ch),
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

fn is_ident(t: Option<&(Tok, usize)>, word: &str) -> bool {
    matches!(t, Some((Tok::Ident(w), _)) if w == word)
}

fn is_punct(t: Option<&(Tok, usize)>, p: &str) -> bool {
    matches!(t, Some((Tok::Punct(q), _)) if *q == p)
}

/// The top-level module names a path names right after `i` (which points
/// just past `crate::` or the last `super::`): one name, or each first name
/// of a `{…}` group. With line numbers.
fn heads(toks: &[(Tok, usize)], i: usize) -> Vec<(String, usize)> {
    match toks.get(i) {
        Some((Tok::Ident(m), line)) => vec![(m.clone(), *line)],
        Some((Tok::Punct("{"), _)) => {
            let (mut out, mut depth, mut expect) = (Vec::new(), 0, true);
            for (t, line) in &toks[i..] {
                match t {
                    Tok::Punct("{") => {
                        depth += 1;
                        if depth > 1 {
                            expect = false;
                        }
                    }
                    Tok::Punct("}") => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Punct(",") if depth == 1 => expect = true,
                    Tok::Ident(m) if depth == 1 && expect => {
                        out.push((m.clone(), *line));
                        expect = false;
                    }
                    _ if depth == 1 => expect = false,
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// What one file uses: (crate module, line) and (external crate, line).
#[derive(Debug, Default, PartialEq)]
struct Uses {
    modules: Vec<(String, usize)>,
    crates: Vec<(String, usize)>,
}

/// Scans one file whose module path is `depth` deep (`server.rs` 1,
/// `sync/mod.rs` 1, `sync/push.rs` 2).
fn scan(src: &str, depth: usize, watched_crates: &[&str]) -> Uses {
    let toks = lex(src);
    let mut uses = Uses::default();
    // Brace depths at which inline `mod x { … }` blocks opened.
    let (mut braces, mut inline_mods) = (0usize, Vec::<usize>::new());
    for i in 0..toks.len() {
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        match &toks[i].0 {
            Tok::Punct("{") => {
                braces += 1;
                if i >= 2 && is_ident(toks.get(i - 2), "mod") && matches!(toks[i - 1].0, Tok::Ident(_)) {
                    inline_mods.push(braces);
                }
            }
            Tok::Punct("}") => {
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
                braces = braces.saturating_sub(1);
            }
            Tok::Ident(w) if w == "crate" && is_punct(toks.get(i + 1), "::") && !is_punct(prev, "::") => {
                uses.modules.extend(heads(&toks, i + 2));
            }
            Tok::Ident(w) if w == "super" && !is_punct(prev, "::") => {
                let mut j = i;
                let mut climbs = 0;
                while is_ident(toks.get(j), "super") && is_punct(toks.get(j + 1), "::") {
                    climbs += 1;
                    j += 2;
                }
                if climbs >= depth + inline_mods.len() {
                    uses.modules.extend(heads(&toks, j));
                }
            }
            Tok::Ident(w) if watched_crates.contains(&w.as_str()) => {
                // A path that starts with the crate (`x::…`, `::x::…`), or `use x;` / `extern crate x`.
                let starts_path = is_punct(toks.get(i + 1), "::")
                    && match prev {
                        Some((Tok::Punct("::"), _)) => !matches!(
                            i.checked_sub(2).and_then(|p| toks.get(p)),
                            Some((Tok::Ident(_), _)) | Some((Tok::Other('>'), _))
                        ),
                        Some((Tok::Other('.'), _)) => false,
                        _ => true,
                    };
                let imported = is_ident(prev, "use")
                    || (is_ident(prev, "crate") && is_ident(i.checked_sub(2).and_then(|p| toks.get(p)), "extern"));
                if starts_path || imported {
                    uses.crates.push((w.clone(), toks[i].1));
                }
            }
            _ => {}
        }
    }
    uses
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).expect("read host/src").map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (top-level module, depth of the file's module path) for a path relative to src/.
fn module_of(rel: &Path) -> (String, usize) {
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let top = parts[0].trim_end_matches(".rs").to_string();
    let last = parts.last().map(String::as_str);
    let depth = if last == Some("mod.rs") { parts.len() - 1 } else { parts.len() };
    (top, depth)
}

/// Every violation of the dependency rule in `files` (relative path, text).
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let watched: Vec<&str> = CRATE_RULES.iter().flat_map(|(crates, _, _)| crates.iter().copied()).collect();
    let known: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut found = Vec::new();
    for (rel, src) in files {
        let shown = Path::new("host/src").join(rel).display().to_string();
        if rel.components().count() == 1 && ROOTS.contains(&rel.to_string_lossy().as_ref()) {
            continue;
        }
        let (module, depth) = module_of(rel);
        let Some((_, allowed)) = LAYERS.iter().find(|(m, _)| *m == module) else {
            found.push(format!(
                "{shown}: module `{module}` is not in the layer table; add it to LAYERS in host/tests/it/tidy.rs \
                 (and to ARCHITECTURE.md) at the level it belongs"
            ));
            continue;
        };
        let uses = scan(src, depth, &watched);
        for (target, line) in uses.modules {
            if target == module || target == "self" {
                continue;
            }
            if !known.contains(target.as_str()) {
                // `crate::SomeItem` at the root, or a module missing from the table.
                found.push(format!(
                    "{shown}:{line}: `{module}` names `crate::{target}`, which is not a module in the layer table"
                ));
            } else if !allowed.contains(&target.as_str()) {
                let may = if allowed.is_empty() { "nothing of the crate".to_string() } else { allowed.join(", ") };
                found.push(format!(
                    "{shown}:{line}: `{module}` imports `crate::{target}`, which is not below it \
                     (`{module}` may import: {may})"
                ));
            }
        }
        for (name, line) in uses.crates {
            let Some((_, owners, why)) = CRATE_RULES.iter().find(|(crates, _, _)| crates.contains(&name.as_str()))
            else {
                continue;
            };
            if !owners.contains(&module.as_str()) {
                found.push(format!("{shown}:{line}: `{module}` uses the `{name}` crate; {why}"));
            }
        }
    }
    found
}

#[test]
fn dependencies_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    assert!(paths.len() > 20, "found only {} files under {}", paths.len(), src.display());
    let files: Vec<(PathBuf, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src").to_path_buf();
            (rel, std::fs::read_to_string(p).expect("read source"))
        })
        .collect();
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "{} dependency violation(s) in host/src (the rule: ARCHITECTURE.md, \"Dependency rule\"; \
         the allowed edges: LAYERS in host/tests/it/tidy.rs):\n  {}\n",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn the_layer_table_is_acyclic() {
    for (i, (module, allowed)) in LAYERS.iter().enumerate() {
        for target in *allowed {
            assert!(
                LAYERS[..i].iter().any(|(m, _)| m == target),
                "LAYERS: `{module}` may import `{target}`, which is not listed before it"
            );
        }
    }
}

// The checker itself: a tidy test that cannot fail is worthless.

fn check(path: &str, src: &str) -> Vec<String> {
    violations(&[(PathBuf::from(path), src.to_string())])
}

#[test]
fn tidy_catches_upward_imports_in_every_form() {
    let cases = [
        ("metrics.rs", "use crate::policy::PolicySet;\n", "metrics.rs:1: `metrics` imports `crate::policy`"),
        (
            "sync/push.rs",
            "\n\nuse crate::{config::X, policy::{self, Y}};",
            "sync/push.rs:3: `sync` imports `crate::policy`",
        ),
        ("sync/mod.rs", "fn f() { let p = crate::policy::load(); }", "`sync` imports `crate::policy`"),
        ("policy/set.rs", "use super::super::sync::merge::MergeRules;", "`policy` imports `crate::sync`"),
        (
            "policy/mod.rs",
            "mod tests {\n    use super::super::sync::X;\n}",
            "policy/mod.rs:2: `policy` imports `crate::sync`",
        ),
        ("store/mod.rs", "fn f<'a>(s: &'a str) -> char { let _ = \"}\"; 'x' }\nuse crate::sync::X;", "store/mod.rs:2:"),
        ("model.rs", "macro_rules! m { () => { $crate::store::Store } }", "`model` imports `crate::store`"),
        ("http/sync.rs", "use crate::server::serve;", "`http` imports `crate::server`"),
        ("sync/pull.rs", "use rusqlite::Connection;", "sync/pull.rs:1: `sync` uses the `rusqlite` crate"),
        ("auth/mod.rs", "fn f() -> r2d2::Pool<()> { todo!() }", "`auth` uses the `r2d2` crate"),
        ("sync/mod.rs", "fn f(e: ::tokio_postgres::Error) {}", "`sync` uses the `tokio_postgres` crate"),
        ("sync/mod.rs", "#[axum::debug_handler]\nfn f() {}", "sync/mod.rs:1: `sync` uses the `axum` crate"),
        ("cli.rs", "use tower_http::cors::CorsLayer;", "`cli` uses the `tower_http` crate"),
        ("http/ops.rs", "fn f() { wasmtime::Engine::default(); }", "`http` uses the `wasmtime` crate"),
        ("newthing.rs", "", "module `newthing` is not in the layer table"),
    ];
    for (path, src, expected) in cases {
        let found = check(path, src);
        assert!(found.iter().any(|f| f.contains(expected)), "{path}: {src:?}\nexpected {expected:?}, got {found:#?}");
    }
}

#[test]
fn tidy_ignores_what_is_not_an_upward_import() {
    let cases = [
        ("metrics.rs", "// use crate::policy::PolicySet;\n/* crate::sync /* nested */ crate::http */"),
        ("sync/mod.rs", "const A: &str = \"crate::policy::X rusqlite::Connection\"; const B: &str = r#\"axum::\"#;"),
        ("sync/mod.rs", "const C: &[u8] = br##\"crate::policy\"##; const D: char = '\\''; use crate::store::Tx;"),
        ("sync/mod.rs", "use tokio::sync::broadcast; use self::wire::X; mod tests { use super::*; }"),
        ("sync/push.rs", "use super::merge::MergeRules; use super::super::store::Tx;"),
        ("server.rs", "use axum::Router; use hyper::body::Incoming; use crate::{http, policy, sync};"),
        ("store/mod.rs", "use rusqlite::Connection; fn f(c: &Config) { c.database.postgres.url(); }"),
        ("policy/mod.rs", "use wasmtime::Engine; use crate::model::{Decision, MergeInput};"),
        ("lib.rs", "pub mod policy; pub mod sync;"),
    ];
    for (path, src) in cases {
        let found = check(path, src);
        assert!(found.is_empty(), "{path}: {src:?}\nexpected nothing, got {found:#?}");
    }
}
