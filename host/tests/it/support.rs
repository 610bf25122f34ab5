//! Test helpers: an in-process server on 127.0.0.1:0 with a temp database, and the CLI.
//!
//! The database is a SQLite file, or with `ACCORD_TEST_BACKEND=postgres` a fresh
//! database in a throwaway PostgreSQL cluster (see [`pg`]).

pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use accord::config::Config;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use tokio::sync::oneshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_accord");

/// A running server; dropping it shuts it down and deletes its files.
pub struct TestServer {
    pub base: String,
    pub client: Client,
    /// Holds the temporary database folder until the server is dropped.
    pub _dir: tempfile::TempDir,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Where the tests keep their data, from `ACCORD_TEST_BACKEND` (`sqlite`, the default, or `postgres`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    *BACKEND.get_or_init(|| match std::env::var("ACCORD_TEST_BACKEND").unwrap_or_default().as_str() {
        "" | "sqlite" => Backend::Sqlite,
        "postgres" | "postgresql" => Backend::Postgres,
        other => panic!("ACCORD_TEST_BACKEND={other:?}: expected `sqlite` or `postgres`"),
    })
}

/// For a test about the SQLite file itself: on PostgreSQL, says why it does
/// not apply and returns true (the test then returns).
pub fn sqlite_only(why: &str) -> bool {
    let skip = backend() == Backend::Postgres;
    if skip {
        println!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// For a test that needs PostgreSQL (several hosts on one database, the
/// change listener): on SQLite, says so and returns true (the test then returns).
pub fn postgres_only(why: &str) -> bool {
    let skip = backend() == Backend::Sqlite;
    if skip {
        println!("skipped on SQLite: needs PostgreSQL (ACCORD_TEST_BACKEND=postgres): {why}");
    }
    skip
}

/// The variable a CLI child or a `serve` process needs to reach a database:
/// `ACCORD_DATABASE__URL` on PostgreSQL, else `ACCORD_DATABASE__PATH`.
pub struct DbEnv {
    pub name: &'static str,
    pub value: String,
}

impl DbEnv {
    /// The database `config` uses.
    pub fn of(config: &Config) -> DbEnv {
        match &config.database.url {
            Some(url) => DbEnv { name: "ACCORD_DATABASE__URL", value: url.clone() },
            None => DbEnv {
                name: "ACCORD_DATABASE__PATH",
                value: config.database.path.to_str().expect("utf-8 path").to_string(),
            },
        }
    }

    pub fn pair(&self) -> (&str, &str) {
        (self.name, &self.value)
    }

    /// The same as a line of the `[database]` table of a config file.
    pub fn toml(&self) -> String {
        let key = if self.name.ends_with("URL") { "url" } else { "path" };
        format!("{key} = {:?}", self.value)
    }
}

/// A database of its own for a test: on SQLite the file `sqlite_path`, on
/// PostgreSQL a new, empty database.
pub fn fresh_database(sqlite_path: &Path) -> DbEnv {
    let mut config = Config::default();
    use_fresh_database(&mut config, sqlite_path);
    DbEnv::of(&config)
}

/// Points `config` at a fresh database: the SQLite file `sqlite_path`, and on
/// PostgreSQL a new database (`database.url`).
pub fn use_fresh_database(config: &mut Config, sqlite_path: &Path) {
    config.database.path = sqlite_path.to_path_buf();
    config.database.url = match backend() {
        Backend::Sqlite => None,
        Backend::Postgres => Some(pg::cluster().create_database()),
    };
}

/// Runs `sql` on the PostgreSQL database of `config` and returns the rows (see [`pg::Cluster::psql`]).
pub fn pg_query(config: &Config, sql: &str) -> String {
    pg::cluster().psql(config.database.url.as_deref().expect("a PostgreSQL database"), sql)
}

pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::default();
    use_fresh_database(&mut config, &dir.join("accord.db"));
    config.blobs.dir = dir.join("blobs");
    // Tests do not need power-loss durability; a crash test that does sets FULL itself.
    config.database.synchronous = accord::config::Synchronous::Normal;
    // Share compiled policy components between test servers (wasmtime's disk cache).
    config.policies.cache_dir = Some(std::env::temp_dir().join("accord-test-policy-cache"));
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    /// Serves `config`; on PostgreSQL, a config without `database.url` gets a fresh database.
    pub async fn start_in(dir: tempfile::TempDir, mut config: Config) -> TestServer {
        if backend() == Backend::Postgres && config.database.url.is_none() {
            config.database.url = Some(pg::cluster().create_database());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let store = accord::server::open_store(&config).await.expect("open store");
        if backend() == Backend::Postgres {
            let file = &config.database.path;
            assert!(!file.exists(), "database.url is set, yet the store opened the SQLite file {}", file.display());
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let served = config.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            accord::server::serve_on(served, store, listener, shutdown).await.expect("server ran");
        });
        TestServer {
            base: format!("http://{addr}"),
            client: Client::new(),
            _dir: dir,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The SQLite file (unused on PostgreSQL).
    pub fn db_path(&self) -> PathBuf {
        self.config.database.path.clone()
    }

    /// What a CLI child needs to reach this server's database.
    pub fn db_env(&self) -> DbEnv {
        DbEnv::of(&self.config)
    }

    pub fn get(&self, path: &str, key: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    pub fn post(&self, path: &str, key: &str, body: &Value) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(key).json(body)
    }

    pub fn delete(&self, path: &str, key: &str) -> RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(key)
    }

    /// Creates a key with the CLI against this server's database and returns it.
    pub fn cli_key(&self, user: &str, scopes: &[&str]) -> String {
        let db = self.db_env();
        let mut args = vec!["keys", "create", "--user", user, "--name", "test"];
        for s in scopes {
            args.extend(["--scope", s]);
        }
        let out = cli(&args, &[db.pair()], None);
        assert!(out.status.success(), "keys create failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
        let key = stdout.trim().to_string();
        assert_eq!(stdout.lines().count(), 1, "stdout must hold only the key: {stdout:?}");
        key
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs the `accord` binary with only the given ACCORD_* variables set.
pub fn cli(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ACCORD_") {
            cmd.env_remove(k);
        }
    }
    // Compiled policies go to a shared temporary cache, never into the source tree.
    cmd.env("ACCORD_POLICIES__CACHE_DIR", std::env::temp_dir().join("accord-test-policy-cache"));
    cmd.envs(env.iter().copied());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output().expect("run accord binary")
}

/// Asserts a response is an RFC 9457 problem with `status`, and returns its body.
pub async fn expect_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status for {}", response.url());
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks `{field}`: {body}");
    }
    body
}

/// POSTs a push and returns (status, body as JSON).
pub async fn push(server: &TestServer, key: &str, body: &Value) -> (u16, Value) {
    let r = server.post("/api/sync/push", key, body).send().await.expect("push request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("push response is JSON"))
}

/// Pushes and asserts a 200.
pub async fn push_ok(server: &TestServer, key: &str, body: &Value) -> Value {
    let (status, body) = push(server, key, body).await;
    assert_eq!(status, 200, "push failed: {body}");
    body
}

/// One pull page.
pub async fn pull(server: &TestServer, key: &str, query: &str) -> Value {
    let r = server.get(&format!("/api/sync/pull{query}"), key).send().await.expect("pull request");
    assert_eq!(r.status(), 200, "pull failed");
    r.json().await.expect("pull response is JSON")
}

/// Pulls every page from the beginning; returns all records as (type, record).
pub async fn pull_all(server: &TestServer, key: &str) -> Vec<(String, Value)> {
    RemoteServer::new(server.base.trim_start_matches("http://")).pull_all(key).await
}

/// The result entries of a push response for one type.
pub fn results<'a>(response: &'a Value, ty: &str) -> &'a Vec<Value> {
    response["results"][ty].as_array().unwrap_or_else(|| panic!("no results for {ty}: {response}"))
}

/// A `serve` child process whose listening address is read from its log.
pub struct Served {
    pub child: Child,
    pub addr: String,
    /// Every line the server has logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn spawn_serve(dir: &std::path::Path, env: &[(&str, &str)]) -> Served {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").current_dir(dir).stderr(Stdio::piped()).stdout(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ACCORD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn accord serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("addr=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("server logged its address");
    Served { child, addr, log }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server in another process, reached by address.
pub struct RemoteServer {
    base: String,
    client: Client,
}

impl RemoteServer {
    pub fn new(addr: &str) -> RemoteServer {
        RemoteServer { base: format!("http://{addr}"), client: Client::new() }
    }

    pub async fn pull_all(&self, key: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let url = format!("{}/api/sync/pull?since={cursor}&limit=1000", self.base);
            let page: Value =
                self.client.get(url).bearer_auth(key).send().await.expect("pull").json().await.expect("json");
            for (ty, records) in page["changes"].as_object().expect("changes") {
                for r in records.as_array().expect("array") {
                    out.push((ty.clone(), r.clone()));
                }
            }
            cursor = page["cursor"].as_str().expect("cursor").to_string();
            if page["hasMore"] == false {
                return out;
            }
        }
        panic!("pull never finished");
    }
}

/// True when a response stream (e.g. SSE) ends within `secs` seconds.
pub async fn ends_within(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    secs: u64,
) -> bool {
    use futures_util::StreamExt as _;
    tokio::time::timeout(Duration::from_secs(secs), async { while let Some(Ok(_)) = stream.next().await {} })
        .await
        .is_ok()
}

/// Runs `cmd` in `dir`, killing it after `limit`; returns whether it succeeded and its output.
pub fn run_bounded(mut cmd: Command, dir: &Path, limit: Duration) -> (bool, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!("{}\n{}", out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("{what} did not finish within {limit:?}\n{output}")),
    }
}
