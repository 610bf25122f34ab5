//! A throwaway PostgreSQL cluster for `ACCORD_TEST_BACKEND=postgres`.
//!
//! Started once per test process (the first server that needs it): `initdb`
//! into a new temporary folder, then `pg_ctl start` listening on 127.0.0.1 on a
//! free port with trust authentication, `fsync=off` (tests only: nothing here
//! must survive a power cut). Every test server gets a database of its own,
//! `accord_test_<n>`. As root the cluster runs as Debian's `postgres` user
//! (PostgreSQL refuses root). A watchdog process holds one end of a pipe to
//! this process; when the process exits, however it exits, the pipe closes
//! and the watchdog stops the cluster (`-m immediate`) and deletes its folder.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Lines, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Cluster {
    pub port: u16,
    /// The folder holding `initdb`, `pg_ctl`, `psql` and `pg_dump`.
    bin: PathBuf,
    /// The temporary folder: `data/`, the socket, `postgres.log`.
    pub root: PathBuf,
    next: AtomicU32,
    /// The write end of the watchdog's stdin; never written, closed at exit.
    _watchdog: Mutex<ChildStdin>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("the test PostgreSQL cluster did not start: {e}"),
    }
}

/// Where `initdb` is: on PATH, else the newest `/usr/lib/postgresql/<version>/bin`.
fn find_bin() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("initdb")).find(|f| f.is_file()))
        .unwrap_or_default();
    if let Some(initdb) = on_path {
        // Debian's /usr/bin has no initdb; a symlink elsewhere leads to the real folder.
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return Ok(real.parent().expect("initdb has a folder").to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no initdb on PATH or in /usr/lib/postgresql/*/bin; install PostgreSQL (Debian: apt-get install postgresql)"
            .to_string()
    })
}

fn euid_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let bin = find_bin()?;
        let as_postgres = euid_is_root();
        let root = tempfile::Builder::new()
            .prefix("accord-pg-")
            .tempdir()
            .map_err(|e| format!("temporary folder: {e}"))?
            .keep();
        let data = root.join("data");
        // A server program run as the cluster's owner: `postgres` when we are root.
        let server_cmd = |tool: &str| -> Vec<OsString> {
            let mut argv: Vec<OsString> = Vec::new();
            if as_postgres {
                argv.extend(["runuser", "-u", "postgres", "--"].map(OsString::from));
            }
            argv.push(bin.join(tool).into());
            argv
        };
        let run = |argv: Vec<OsString>| -> Command {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]).current_dir(&root).stdin(Stdio::null());
            cmd
        };

        // The watchdog first, so that nothing started below outlives this process.
        let mut stop = server_cmd("pg_ctl");
        stop.extend(["-D".into(), data.clone().into(), "stop".into(), "-m".into(), "immediate".into()]);
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"trap '' INT HUP; root=$1; shift; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$root""#)
            .arg("accord-pg-watchdog")
            .arg(&root)
            .args(&stop)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C to the tests does not skip the clean-up.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn the watchdog: {e}"))?;
        let watchdog = watchdog.stdin.take().expect("piped stdin");

        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&root)
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            if !out.status.success() {
                return Err(describe("chown to the postgres user (does it exist?)", &out));
            }
        }
        let mut initdb = server_cmd("initdb");
        initdb.extend(["-D".into(), data.clone().into()]);
        initdb.extend(
            ["--auth=trust", "--username=postgres", "--encoding=UTF8", "--locale=C", "--no-sync"].map(OsString::from),
        );
        let out = run(initdb).output().map_err(|e| format!("run initdb: {e}"))?;
        if !out.status.success() {
            return Err(describe("initdb", &out));
        }

        // A free port may be taken between our probe and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("probe a free port: {e}"))?
                .port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}' \
                 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                root.display()
            );
            let mut start = server_cmd("pg_ctl");
            start.extend(["-D".into(), data.clone().into(), "-l".into(), root.join("postgres.log").into()]);
            start.extend(["-w", "-t", "60", "-o"].map(OsString::from));
            start.extend([options.into(), "start".into()]);
            // pg_ctl's postmaster keeps pg_ctl's stdout; a pipe would never reach EOF.
            let status = run(start)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("run pg_ctl: {e}"))?;
            if status.success() {
                return Ok(Cluster { port, bin, root, next: AtomicU32::new(0), _watchdog: Mutex::new(watchdog) });
            }
            last = std::fs::read_to_string(root.join("postgres.log")).unwrap_or_default();
        }
        Err(format!("pg_ctl start failed; postgres.log:\n{last}"))
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!("accord_test_{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.psql(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        // Only the URL decides where a client connects.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("PG")) {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `sql` (one or more statements, in one transaction) on the database at
    /// `url`; returns the rows, unaligned with `|` between columns. Panics on an error.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = self
            .tool("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "{}", describe(&format!("psql {sql:?}"), &out));
        String::from_utf8(out.stdout).expect("utf-8 rows").trim_end().to_string()
    }

    /// `pg_dump` of the database at `url`: schema and data, as SQL text.
    pub fn dump(&self, url: &str) -> Vec<u8> {
        let out = self.tool("pg_dump").args(["--no-owner", "-d", url]).output().expect("run pg_dump");
        assert!(out.status.success(), "{}", describe("pg_dump", &out));
        out.stdout
    }

    /// An open `psql` session on `url`, to hold a transaction (and its locks) open.
    pub fn session(&self, url: &str) -> Session {
        let mut child = self
            .tool("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Session { child, stdin: Some(stdin), lines }
    }
}

/// A `psql` child reading statements from a pipe.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Session {
    /// Runs `sql` (statements; the last `;` may be left out) and waits until it
    /// has finished; returns its rows.
    pub fn run(&mut self, sql: &str) -> String {
        const DONE: &str = "--accord-session-done--";
        let sql = sql.trim_end().trim_end_matches(';');
        let stdin = self.stdin.as_mut().expect("session open");
        writeln!(stdin, "{sql};\n\\echo {DONE}").and_then(|()| stdin.flush()).expect("write to psql");
        let mut rows = Vec::new();
        loop {
            match self.lines.next() {
                Some(Ok(line)) if line == DONE => return rows.join("\n"),
                Some(Ok(line)) => rows.push(line),
                _ => panic!("psql ended while running {sql:?} (see its stderr)"),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // End of input: psql ends the session, and the server rolls back what is open.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::{Backend, backend};

    /// The harness itself: the cluster starts, databases are separate, URLs connect.
    #[test]
    fn cluster_starts_and_databases_are_separate() {
        if backend() != Backend::Postgres {
            println!("skipped: ACCORD_TEST_BACKEND is not postgres");
            return;
        }
        let cluster = cluster();
        let (a, b) = (cluster.create_database(), cluster.create_database());
        println!("PostgreSQL test cluster at {} in {}; databases {a} and {b}", cluster.url(""), cluster.root.display());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("postgres://postgres@127.0.0.1:{}/accord_test_", cluster.port)), "{a}");
        let version = cluster.psql(&a, "SHOW server_version");
        println!("server_version {version}");
        assert_eq!(cluster.psql(&a, "SHOW fsync"), "off");
        assert_eq!(cluster.psql(&a, "SELECT current_database()"), a.rsplit('/').next().unwrap());
        // Tables and rows of one database are invisible from the other.
        cluster.psql(&a, "CREATE TABLE t (v text); INSERT INTO t VALUES ('in a')");
        assert_eq!(cluster.psql(&b, "SELECT to_regclass('t') IS NULL"), "t");
        cluster.psql(&b, "CREATE TABLE t (v text); INSERT INTO t VALUES ('in b'), ('b again')");
        assert_eq!(cluster.psql(&a, "SELECT string_agg(v, ',') FROM t"), "in a");
        assert_eq!(cluster.psql(&b, "SELECT count(*) FROM t"), "2");
        // A plain TCP client reaches it on 127.0.0.1.
        std::net::TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
        // A session holds a transaction open; others see its work only once committed.
        let mut session = cluster.session(&a);
        session.run("BEGIN; INSERT INTO t VALUES ('pending')");
        assert_eq!(cluster.psql(&a, "SELECT count(*) FROM t"), "1");
        assert_eq!(session.run("SELECT count(*) FROM t"), "2");
        session.run("COMMIT");
        drop(session);
        assert_eq!(cluster.psql(&a, "SELECT count(*) FROM t"), "2");
        // A test server's config points at a database of its own.
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (crate::support::test_config(dir.path()), crate::support::test_config(dir.path()));
        let (one, two) = (one.database.url.unwrap(), two.database.url.unwrap());
        assert_ne!(one, two);
        assert_eq!(cluster.psql(&one, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
        assert!(cluster.root.join("data/PG_VERSION").exists(), "the cluster lives in its temporary folder");
    }
}
