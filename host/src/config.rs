//! Configuration: built-in defaults < `config.toml` < `ACCORD_<SECTION>__<KEY>` environment.
//!
//! Every key has a default, so a missing file is fine; an unknown key or a bad
//! value is an error that names the key and where it came from. Config is
//! passed explicitly to whoever needs it, never read from a global.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration, one field per `config.toml` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub sync: SyncConfig,
    pub quotas: QuotaConfig,
    pub blobs: BlobsConfig,
    pub policies: PoliciesConfig,
    /// Entity types by name. Empty (no `[entities]` anywhere) means the notes
    /// app's eight types, see [`default_entities`].
    pub entities: BTreeMap<String, EntityConfig>,
    /// The file this configuration was read from, if any (for reloads).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// `[auth]`: the failed-authentication limit, and `[auth.jwt]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed authentications one client address may make per minute (a
    /// bucket of this many, refilled at this rate); beyond it, `429`. 0 disables.
    pub failed_per_minute: u32,
    /// Keys one user may hold that are not revoked; a user may hold ten times
    /// as many in all (revoked ones stay listed). Beyond: `409`.
    pub max_keys_per_user: usize,
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { failed_per_minute: 20, max_keys_per_user: 100, jwt: JwtConfig::default() }
    }
}

/// `[auth.jwt]`: JWT is on when exactly one key source is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Accepted `alg` values; anything else (and `none`) is refused.
    pub algorithms: Vec<String>,
    /// HMAC secret for HS256/384/512.
    pub secret: Option<Secret>,
    /// PEM file of the IdP's public key (RSA, EC or Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// JWKS file; re-read when a token names an unknown `kid`.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (e.g. the IdP's `jwks_uri`); fetched at startup and on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    pub audience: Option<String>,
    /// Clock skew allowed for `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// The claim holding the user id: `sub`, or `oid` for Azure AD.
    pub user_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into(), "HS256".into()],
            secret: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_secs: 60,
            user_claim: "sub".into(),
        }
    }
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Folder of `<name>.wasm` policy components; a file here overrides the built-in of that name.
    pub dir: PathBuf,
    /// Where compiled components are cached; default `<database folder>/policy-cache`.
    /// Artifacts there are loaded as trusted machine code: keep it private to Accord.
    pub cache_dir: Option<PathBuf>,
    /// CPU time one policy call may take, in milliseconds (checked against
    /// the calling thread's CPU clock once as much wall time has passed).
    pub cpu_ms: u64,
    /// Memory one policy instance may use, in MiB.
    pub memory_mib: usize,
    /// WebAssembly stack of one call, in KiB.
    pub stack_kib: usize,
    /// Reload policies when a `.wasm` in `dir` or the config file changes.
    pub watch: bool,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        // 50 ms: a field merge of a 1 KB record takes ~20 µs, so this only ever
        // stops a runaway policy, while bounding how long one bad record can
        // hold the writer. 16 MiB: a few copies of the largest record plus the
        // guest's heap. 512 KiB of stack: deep enough for recursive JSON code.
        Self {
            dir: PathBuf::from("./policies"),
            cache_dir: None,
            cpu_ms: 50,
            memory_mib: 16,
            stack_kib: 512,
            watch: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            sync: SyncConfig::default(),
            quotas: QuotaConfig::default(),
            blobs: BlobsConfig::default(),
            policies: PoliciesConfig::default(),
            entities: default_entities(),
            file: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// More records than this in one push is a 413.
    pub max_records_per_push: usize,
    /// Largest `data` of one record, in bytes of JSON text (422 above it).
    pub max_record_bytes: usize,
    /// Deepest nesting allowed inside a record's `data` (the object itself is depth 1).
    pub max_json_depth: usize,
    /// Pull page size when the client gives no `limit`.
    pub default_pull_limit: usize,
    /// Largest `limit` a client may ask for; larger values are capped.
    pub max_pull_limit: usize,
    /// A pull page stops after about this many bytes of record data.
    pub max_page_bytes: usize,
    /// Earlier versions kept per record (for three-way merges), unless the type says otherwise.
    pub history: u32,
    /// How long a `pushId` and its response are kept for safe retries, in hours.
    pub push_retention_hours: u64,
    /// How long a resolved conflict stays listed before it is deleted, in days.
    pub conflict_retention_days: u64,
    /// Tombstones older than this many days are purged with their history;
    /// a cursor from before the purge gets 410. 0 keeps tombstones forever.
    pub tombstone_retention_days: u64,
    /// Longest `wait` a long-polling pull may ask for, in seconds.
    pub max_wait_secs: u64,
    /// Interval of SSE heartbeat comments on `/api/sync/events`, in seconds.
    pub heartbeat_secs: u64,
    /// Event streams (`/api/sync/events`) one user may hold open at once (429 beyond).
    pub max_streams_per_user: usize,
    /// Long polls (`/api/sync/pull?wait=N`) one user may have waiting at once (429 beyond).
    pub max_long_polls_per_user: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            max_records_per_push: 10_000,
            max_record_bytes: 1024 * 1024,
            max_json_depth: 64,
            default_pull_limit: 1000,
            max_pull_limit: 10_000,
            max_page_bytes: 4 * 1024 * 1024,
            history: 20,
            push_retention_hours: 24,
            conflict_retention_days: 30,
            tombstone_retention_days: 90,
            max_wait_secs: 30,
            heartbeat_secs: 15,
            max_streams_per_user: 16,
            max_long_polls_per_user: 16,
        }
    }
}

/// `[quotas]`: what one user may store; 0 means unlimited. A push or a
/// resolution that would take a user past one is refused whole with `507`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Current records, tombstones included.
    pub records: u64,
    /// Bytes of JSON text: current records, open conflicts, stored pushId responses.
    pub bytes: u64,
    /// Conflicts not yet resolved.
    pub open_conflicts: u64,
    /// Bytes of attachments (blobs) the user has uploaded; an upload past it is a 507.
    pub blob_bytes: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            records: 1_000_000,
            bytes: 1024 * 1024 * 1024,
            open_conflicts: 10_000,
            blob_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

/// `[blobs]`: attachments, stored outside the database by content hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    /// The folder blobs are kept in; empty means `blobs/` beside the SQLite
    /// database (`./data/blobs` by default). Relative paths are relative to
    /// the working directory, like `database.path`.
    pub dir: PathBuf,
    /// An S3-compatible bucket instead of `dir`, e.g. `s3://bucket/prefix`
    /// (credentials and endpoint from the standard `AWS_*` environment variables).
    pub url: Option<String>,
    /// Largest blob, in bytes (413 above it).
    pub max_bytes: u64,
    /// Uploads in progress at once, server-wide (503 with Retry-After beyond).
    pub max_uploads: usize,
    /// Uploads one user may have in progress at once (429 beyond).
    pub max_uploads_per_user: usize,
    /// An upload's body must arrive within this many seconds (408 beyond).
    pub upload_timeout_secs: u64,
    /// A blob no record names is deleted this many hours after it was
    /// uploaded or last named.
    pub gc_grace_hours: u64,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            url: None,
            max_bytes: 32 * 1024 * 1024,
            max_uploads: 16,
            max_uploads_per_user: 4,
            upload_timeout_secs: 600,
            gc_grace_hours: 24,
        }
    }
}

impl BlobsConfig {
    /// The folder blobs are kept in when no `url` is set.
    pub fn folder(&self, database: &DatabaseConfig) -> PathBuf {
        if !self.dir.as_os_str().is_empty() {
            return self.dir.clone();
        }
        match database.path.parent() {
            Some(parent) if database.url.is_none() => parent.join("blobs"),
            _ => PathBuf::from("data/blobs"),
        }
    }
}

/// One `[entities.<name>]` table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityConfig {
    /// Reference fields in `data`: field name → the entity type it names.
    pub refs: BTreeMap<String, String>,
    /// Earlier versions kept per record; default `sync.history`.
    pub history: Option<u32>,
    /// The merge policy: a `<name>.wasm` in `policies.dir` or a built-in (default `field-merge`).
    pub policy: Option<String>,
    /// Settings handed to the policy as a JSON object.
    pub policy_settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// A second policy (same settings) that decides beside the live one on
    /// every call, only to count agreement (`GET /api/admin/policies`).
    pub shadow_policy: Option<String>,
    /// Fields of `data` that hold a blob's SHA-256 (lowercase hex): a record
    /// may name only blobs its user has uploaded, and keeps them alive.
    pub blobs: Vec<String>,
}

impl EntityConfig {
    /// `policy_settings` as JSON object text (`{}` when absent).
    pub fn settings_json(&self) -> String {
        self.policy_settings
            .as_ref()
            .map_or_else(|| "{}".to_string(), |m| serde_json::Value::Object(m.clone()).to_string())
    }
}

/// The policy of an entity type that names none.
pub const DEFAULT_POLICY: &str = "field-merge";

/// The notes app's entity types, used when the configuration declares none.
pub fn default_entities() -> BTreeMap<String, EntityConfig> {
    let entity = |refs: &[(&str, &str)], policy: &str| EntityConfig {
        refs: refs.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect(),
        history: None,
        policy: Some(policy.to_string()),
        policy_settings: None,
        shadow_policy: None,
        blobs: Vec::new(),
    };
    let blobs = |fields: &[&str], entity: EntityConfig| EntityConfig {
        blobs: fields.iter().map(|f| f.to_string()).collect(),
        ..entity
    };
    BTreeMap::from([
        ("contexts".to_string(), entity(&[], "field-merge")),
        ("topics".to_string(), entity(&[("contextId", "contexts")], "field-merge")),
        ("historyEntries".to_string(), entity(&[("topicId", "topics")], "append-only")),
        ("ratings".to_string(), entity(&[("topicId", "topics")], "version-wins")),
        ("imageBlobs".to_string(), blobs(&["sha256"], entity(&[], "append-only"))),
        ("pages".to_string(), entity(&[], "field-merge")),
        ("notebooks".to_string(), entity(&[], "field-merge")),
        ("pageNotebooks".to_string(), entity(&[("pageId", "pages"), ("notebookId", "notebooks")], "tombstone-wins")),
    ])
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP listener binds to.
    pub bind: SocketAddr,
    /// Largest accepted request body (after decompression), in bytes.
    pub max_body_bytes: usize,
    /// Bytes of push bodies held and parsed at once, server-wide; beyond: `503`.
    pub max_parsing_bytes: usize,
    /// Origins allowed by CORS; empty disables CORS, `"*"` allows any origin.
    pub cors_origins: Vec<String>,
    /// How long graceful shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long a client may take to send a request's headers, in seconds
    /// (also how long an idle keep-alive connection stays open); the
    /// connection is closed after it.
    pub header_timeout_secs: u64,
    /// How long a request body may take to arrive in full once the server
    /// starts reading it, in seconds; a body still incomplete then is a 408.
    pub body_timeout_secs: u64,
    /// Connections served at once; further ones wait in the listen backlog
    /// until a served connection closes.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 32 * 1024 * 1024,
            max_parsing_bytes: 64 * 1024 * 1024,
            cors_origins: Vec::new(),
            shutdown_grace_secs: 30,
            header_timeout_secs: 30,
            body_timeout_secs: 60,
            max_connections: 1024,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Path of the SQLite file; its folder is created if missing.
    pub path: PathBuf,
    /// PostgreSQL connection URL (`postgres://user:pass@host:port/db`); when set,
    /// the store uses PostgreSQL and `path` is ignored.
    pub url: Option<String>,
    /// SQLite `synchronous` level. `full` makes an acknowledged write survive power loss.
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock before giving up, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Read connections kept open for queries running beside the writer.
    pub readers: usize,
    /// PostgreSQL connections this host keeps for requests (plus one listener).
    pub pool_size: usize,
    /// Write jobs (pushes, resolutions) that may wait for the writer; one
    /// user may hold an eighth of them. Beyond: `503` with `Retry-After`.
    pub write_queue: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/accord.db"),
            url: None,
            synchronous: Synchronous::Full,
            busy_timeout_ms: 5000,
            readers: 4,
            write_queue: 1024,
            pool_size: 16,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Off,
    Normal,
    Full,
    Extra,
}

impl Synchronous {
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
            Self::Extra => "EXTRA",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `accord=debug,tower_http=info`.
    pub level: String,
    /// `text` for humans, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that could not be loaded; the message names the key and its source.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<figment::Error> for ConfigError {
    fn from(errors: figment::Error) -> Self {
        // figment reports every problem; name the key and the file or env var for each.
        let lines: Vec<String> = errors
            .into_iter()
            .map(|e| {
                let key = if e.path.is_empty() { "(top level)".to_string() } else { e.path.join(".") };
                let source = match &e.metadata {
                    Some(md) if md.name.contains("environment") => {
                        format!(" in environment variable ACCORD_{}", e.path.join("__").to_uppercase())
                    }
                    Some(md) => match &md.source {
                        Some(src) => format!(" in {src}"),
                        None => format!(" in {}", md.name),
                    },
                    None => String::new(),
                };
                format!("config key `{key}`{source}: {}", e.kind)
            })
            .collect();
        ConfigError(lines.join("\n"))
    }
}

impl Config {
    /// Where the config file is: `--config`, else `ACCORD_CONFIG`, else `./config.toml` if present.
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("ACCORD_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let default = PathBuf::from("config.toml");
        default.exists().then_some(default)
    }

    /// Loads defaults, then the file (if any), then `ACCORD_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Entity types are not merged key by key into the defaults: a file that
        // declares any replaces the built-in set (see `default_entities`).
        let mut base = Config::default();
        base.entities.clear();
        let mut figment = Figment::from(Serialized::defaults(base));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // ACCORD_TEST_BACKEND picks the integration tests' database, not a config key.
        figment = figment.merge(Env::prefixed("ACCORD_").split("__").ignore(&["config", "test_backend"]));
        let mut config: Config = figment.extract()?;
        if config.entities.is_empty() {
            config.entities = default_entities();
        }
        config.resolve_paths_from_file(&figment);
        config.file = file.map(Path::to_path_buf);
        config.validate()?;
        Ok(config)
    }

    /// Relative paths set in the config file are relative to that file's
    /// folder (wherever the server is started from); paths from `ACCORD_*`
    /// variables and the defaults stay relative to the working directory.
    fn resolve_paths_from_file(&mut self, figment: &Figment) {
        let from_file = |key: &str| match figment.find_metadata(key).and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(file)) => std::path::absolute(file).ok()?.parent().map(Path::to_path_buf),
            _ => None,
        };
        let jwt = &mut self.auth.jwt;
        let paths: [(&str, Option<&mut PathBuf>); 6] = [
            ("database.path", Some(&mut self.database.path)),
            ("policies.dir", Some(&mut self.policies.dir)),
            ("policies.cache_dir", self.policies.cache_dir.as_mut()),
            ("blobs.dir", Some(&mut self.blobs.dir)),
            ("auth.jwt.public_key_file", jwt.public_key_file.as_mut()),
            ("auth.jwt.jwks_file", jwt.jwks_file.as_mut()),
        ];
        for (key, path) in paths {
            if let (Some(path), Some(dir)) = (path, from_file(key))
                && path.is_relative()
                && !path.as_os_str().is_empty()
            {
                *path = dir.join(&*path);
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("config key `{key}`: {why}")));
        if self.server.max_body_bytes == 0 {
            return bad("server.max_body_bytes", "must be greater than 0");
        }
        if self.server.max_parsing_bytes / 2 < self.server.max_body_bytes {
            return bad("server.max_parsing_bytes", "must be at least twice server.max_body_bytes");
        }
        for (key, value) in [
            ("server.header_timeout_secs", self.server.header_timeout_secs),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.max_connections", self.server.max_connections as u64),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if self.database.path.as_os_str().is_empty() {
            return bad("database.path", "must not be empty");
        }
        if self.database.readers == 0 {
            return bad("database.readers", "must be at least 1");
        }
        if self.auth.max_keys_per_user == 0 {
            return bad("auth.max_keys_per_user", "must be at least 1");
        }
        if self.database.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad("database.url", "must be a postgres:// URL");
        }
        if self.database.write_queue < 8 {
            return bad("database.write_queue", "must be at least 8");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad("log.level", &format!("not a valid filter: {e}"));
        }
        for origin in &self.server.cors_origins {
            // What an HTTP header value may hold (the rule of `http::HeaderValue::from_str`;
            // config does not depend on the HTTP stack): no control characters but tab.
            let header_safe = origin.bytes().all(|b| (b >= 32 && b != 127) || b == b'\t');
            if origin != "*" && !header_safe {
                return bad("server.cors_origins", &format!("`{origin}` is not a valid origin"));
            }
        }
        let s = &self.sync;
        for (key, value) in [
            ("sync.max_records_per_push", s.max_records_per_push),
            ("sync.max_record_bytes", s.max_record_bytes),
            ("sync.max_json_depth", s.max_json_depth),
            ("sync.default_pull_limit", s.default_pull_limit),
            ("sync.max_pull_limit", s.max_pull_limit),
            ("sync.max_page_bytes", s.max_page_bytes),
            ("sync.max_streams_per_user", s.max_streams_per_user),
            ("sync.max_long_polls_per_user", s.max_long_polls_per_user),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if self.policies.cpu_ms == 0 {
            return bad("policies.cpu_ms", "must be greater than 0");
        }
        if self.policies.memory_mib == 0 {
            return bad("policies.memory_mib", "must be greater than 0");
        }
        if self.policies.stack_kib < 64 {
            return bad("policies.stack_kib", "must be at least 64");
        }
        let b = &self.blobs;
        for (key, value) in [
            ("blobs.max_bytes", b.max_bytes),
            ("blobs.max_uploads", b.max_uploads as u64),
            ("blobs.max_uploads_per_user", b.max_uploads_per_user as u64),
            ("blobs.upload_timeout_secs", b.upload_timeout_secs),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if let Some(url) = &self.blobs.url
            && !url.starts_with("s3://")
        {
            return bad("blobs.url", "must be an s3:// URL (or leave it out and set blobs.dir)");
        }
        if s.heartbeat_secs == 0 {
            return bad("sync.heartbeat_secs", "must be greater than 0");
        }
        if s.default_pull_limit > s.max_pull_limit {
            return bad("sync.default_pull_limit", "must not exceed sync.max_pull_limit");
        }
        for (name, entity) in &self.entities {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return bad(&format!("entities.{name}"), "an entity type name is 1-64 letters, digits, `_` or `-`");
            }
            if let Some(policy) = &entity.policy {
                let valid =
                    !policy.is_empty() && policy.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return bad(
                        &format!("entities.{name}.policy"),
                        &format!(
                            "`{policy}` is not a policy name (letters, digits, `_`, `-`; the file is <name>.wasm)"
                        ),
                    );
                }
            }
            for field in &entity.blobs {
                if field.is_empty() || entity.refs.contains_key(field) {
                    return bad(
                        &format!("entities.{name}.blobs"),
                        &format!("`{field}` must be a non-empty field name that is not also a reference"),
                    );
                }
            }
            for (field, target) in &entity.refs {
                if !self.entities.contains_key(target) {
                    return bad(
                        &format!("entities.{name}.refs.{field}"),
                        &format!("names entity type `{target}`, which is not declared"),
                    );
                }
            }
        }
        self.entity_order().map(|_| ())
    }

    /// Entity types in dependency order (a type after every type it refers to;
    /// ties broken by name), or an error naming a reference cycle.
    pub fn entity_order(&self) -> Result<Vec<String>, ConfigError> {
        let mut order: Vec<String> = Vec::with_capacity(self.entities.len());
        let mut placed = std::collections::BTreeSet::new();
        while order.len() < self.entities.len() {
            let ready: Vec<&String> = self
                .entities
                .iter()
                .filter(|(name, e)| {
                    !placed.contains(name.as_str())
                        && e.refs.values().all(|t| t == *name || placed.contains(t.as_str()))
                })
                .map(|(name, _)| name)
                .collect();
            if ready.is_empty() {
                let stuck: Vec<&str> =
                    self.entities.keys().filter(|n| !placed.contains(n.as_str())).map(String::as_str).collect();
                return Err(ConfigError(format!(
                    "config key `entities`: the references among {} form a cycle",
                    stuck.join(", ")
                )));
            }
            for name in ready {
                placed.insert(name.as_str());
                order.push(name.clone());
            }
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn cors_origins_must_be_header_values() {
        let check = |origin: &str| {
            let mut config = Config::default();
            config.server.cors_origins = vec![origin.into()];
            config.validate().is_ok()
        };
        for good in ["*", "https://app.example", "http://localhost:5173", "https://a\tb", "https://bücher.example"] {
            assert!(check(good), "{good:?} must be accepted");
        }
        for bad in ["https://a\nb", "https://a\rb", "https://a\u{0}b", "https://a\u{7f}b"] {
            assert!(!check(bad), "{bad:?} must be refused");
        }
    }
}
