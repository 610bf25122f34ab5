//! Configuration: built-in defaults < `config.toml` < `ACCORD_<SECTION>__<KEY>` environment.
//!
//! Every key has a default, so a missing file is fine; an unknown key or a bad
//! value is an error that names the key and where it came from. Config is
//! passed explicitly to whoever needs it, never read from a global.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration, one field per `config.toml` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP listener binds to.
    pub bind: SocketAddr,
    /// Largest accepted request body (after decompression), in bytes.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; empty disables CORS, `"*"` allows any origin.
    pub cors_origins: Vec<String>,
    /// How long graceful shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 32 * 1024 * 1024,
            cors_origins: Vec::new(),
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Path of the SQLite file; its folder is created if missing.
    pub path: PathBuf,
    /// SQLite `synchronous` level. `full` makes an acknowledged write survive power loss.
    pub synchronous: Synchronous,
    /// How long a connection waits for a lock before giving up, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Read connections kept open for queries running beside the writer.
    pub readers: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/accord.db"),
            synchronous: Synchronous::Full,
            busy_timeout_ms: 5000,
            readers: 4,
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
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("ACCORD_").split("__").ignore(&["config"]));
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("config key `{key}`: {why}")));
        if self.server.max_body_bytes == 0 {
            return bad("server.max_body_bytes", "must be greater than 0");
        }
        if self.database.path.as_os_str().is_empty() {
            return bad("database.path", "must not be empty");
        }
        if self.database.readers == 0 {
            return bad("database.readers", "must be at least 1");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad("log.level", &format!("not a valid filter: {e}"));
        }
        Ok(())
    }
}
