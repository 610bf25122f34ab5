//! The server under test: an `accord serve` child process on its own
//! 127.0.0.1 port and data folder, killed and restarted at will.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use tokio::process::{Child, Command};

use crate::Outcome;

/// The HS256 secret the spawned server accepts JWTs for; the tool mints one
/// token per simulated user, so any number of users costs nothing.
pub const JWT_SECRET: &str = "accord-torture-only-not-a-secret";

/// How to start the server.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    /// The `accord` binary.
    pub bin: PathBuf,
    /// A `postgres://` URL instead of a SQLite file in the data folder.
    pub database_url: Option<String>,
    /// Extra `ACCORD_…` settings.
    pub env: Vec<(String, String)>,
}

impl ServerOpts {
    pub fn new(bin: PathBuf, database_url: Option<String>) -> ServerOpts {
        ServerOpts { bin, database_url, env: Vec::new() }
    }

    pub fn with_env(mut self, key: &str, value: &str) -> ServerOpts {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// `ACCORD_BIN` if set, else the release (then debug) `accord` in
/// `CARGO_TARGET_DIR` (or `./target`).
pub fn default_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ACCORD_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let release = target.join("release").join("accord");
    if release.exists() { release } else { target.join("debug").join("accord") }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Outcome<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("local_addr: {e}"))
}

/// A scratch folder removed on drop unless `keep` was called.
pub struct Scratch {
    pub path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(tag: &str) -> Outcome<Scratch> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("accord-torture-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(Scratch { path, keep: false })
    }

    /// Keeps the folder (for a failed run's logs and database).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running (or killed) server.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub opts: ServerOpts,
    pub scratch: Scratch,
    pub starts: u32,
}

impl Server {
    /// Starts a server on a fresh data folder and waits until `/readyz` answers 200.
    pub async fn start(opts: ServerOpts) -> Outcome<Server> {
        let scratch = Scratch::new("server")?;
        let port = free_port()?;
        let mut server =
            Server { child: None, port, base: format!("http://127.0.0.1:{port}"), opts, scratch, starts: 0 };
        server.spawn()?;
        server.wait_ready(Duration::from_secs(180)).await?;
        Ok(server)
    }

    /// The SQLite file (when not on PostgreSQL).
    pub fn db_path(&self) -> PathBuf {
        self.scratch.path.join("data").join("accord.db")
    }

    pub fn log_path(&self) -> PathBuf {
        self.scratch.path.join("server.log")
    }

    /// Starts the process (on the same port and database as before) without waiting.
    pub fn spawn(&mut self) -> Outcome<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open server log: {e}"))?;
        let mut cmd = Command::new(&self.opts.bin);
        cmd.arg("serve")
            // No config.toml in this folder: the built-in defaults, which equal the shipped file.
            .current_dir(&self.scratch.path)
            .env("ACCORD_SERVER__BIND", format!("127.0.0.1:{}", self.port))
            .env("ACCORD_DATABASE__PATH", self.db_path())
            .env("ACCORD_POLICIES__DIR", self.scratch.path.join("policies"))
            .env("ACCORD_AUTH__JWT__SECRET", JWT_SECRET)
            .env("ACCORD_LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(url) = &self.opts.database_url {
            cmd.env("ACCORD_DATABASE__URL", url);
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("start {}: {e}", self.opts.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> Outcome<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("server exited during startup ({status}); log:\n{}", self.log_tail()));
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        Err(format!("server not ready after {limit:?}; log:\n{}", self.log_tail()))
    }

    /// SIGKILL, then reap.
    pub async fn kill(&mut self) -> Outcome<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            child.wait().await.map_err(|e| format!("wait for killed server: {e}"))?;
        }
        Ok(())
    }

    /// Whether the process has exited on its own (a crash).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The server's resident set size in KiB (VmRSS), if it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path(), 30)
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// An HS256 JWT naming `user`, valid for a day.
pub fn token(user: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::json!({"sub": user, "exp": now + 86_400}).to_string());
    let signing = format!("{header}.{claims}");
    // HMAC accepts a key of any length: this cannot fail.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}
