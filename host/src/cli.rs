//! The `accord` command line: serve, migrate, migrate-store, check-config, keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::{Scope, apikey};
use crate::config::{Config, LogFormat};
use crate::http::keys::parse_scopes;
use crate::policy;
use crate::server;
use crate::store::{self, now_ms};
use std::sync::Arc;

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(name = "accord", version, about = "Accord: a self-hostable sync server for offline-first apps")]
pub struct Cli {
    /// Config file. Default: $ACCORD_CONFIG, else ./config.toml if present, else built-in defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending migrations first). Stops cleanly on SIGTERM or Ctrl-C.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print the result and exit (exit code 2 if invalid).
    CheckConfig,
    /// Invalidate every client's pull cursor (they get 410 and pull from the beginning).
    /// Run it, with the server stopped, after restoring a database backup.
    ResetCursors,
    /// Copy the SQLite database of a running server into a new file (a consistent
    /// snapshot; pushes go on meanwhile) and check the copy with PRAGMA integrity_check.
    Backup {
        /// The backup file to create (must not exist).
        dest: PathBuf,
    },
    /// Put a backup in place of the SQLite database (stop the server first), then
    /// give it a new epoch so every client pulls again instead of skipping changes.
    Restore {
        /// The backup file, as made by `accord backup`.
        file: PathBuf,
    },
    /// Copy a SQLite database into an empty PostgreSQL database (users, keys, records,
    /// history, conflicts, pushIds and the cursor epoch), so clients carry on unchanged.
    /// Stop the servers first; then point `database.url` at the target.
    MigrateStore {
        /// The SQLite database file to copy (migrated to this binary's schema first).
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The PostgreSQL database to fill: postgres://user[:password]@host[:port]/name. It must be empty.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Manage API keys directly in the database (works while the server runs).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check and try out merge-policy components before deploying them.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Write a new policy crate NAME/ (Rust) that builds as it is: the template's rule and cases,
    /// a copy of the SDK and the WIT contract, and a lockfile.
    New {
        /// The policy's name: lowercase letters, digits and `-` (it names the crate and the .wasm).
        name: String,
        /// The folder to create NAME/ in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Replay the conflicts recorded on an entity type through a candidate policy (nothing is
    /// written): how many it would have accepted, merged, left in conflict or rejected, with samples.
    Replay {
        /// The candidate policy component (.wasm).
        file: PathBuf,
        /// The entity type whose conflicts to replay (its policy_settings are used).
        #[arg(long)]
        entity: String,
        /// Only conflicts recorded within this long: a number with s, m, h or d (e.g. 7d). Default: all.
        #[arg(long, value_name = "DURATION", value_parser = crate::model::parse_duration_ms)]
        since: Option<i64>,
        /// At most this many conflicts, oldest first.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Validate a component against the accord:merge/policy WIT world (exit 2 if it does not load).
    Check {
        /// The policy component (.wasm).
        file: PathBuf,
    },
    /// Run a component on recorded cases and show each decision; exit 1 if any expectation fails.
    ///
    /// The cases file is a JSON array of {"name", "server"?, "base"?, "incoming",
    /// "settings"?, "entityType"?, "expect"?}; records are {"id", "version",
    /// "baseVersion"?, "deleted"?, "data"}; expect is "accept", "merged",
    /// "conflict", "reject", {"merged": <data>} or {"conflict"|"reject": "<text in reason>"}.
    Test {
        /// The policy component (.wasm).
        file: PathBuf,
        /// The cases (.json).
        cases: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it alone on stdout. It is shown once and cannot be recovered.
    Create(CreateArgs),
    /// List a user's keys (never the keys themselves).
    List {
        /// The user whose keys to list.
        #[arg(long)]
        user: String,
    },
    /// Revoke a key by id; it stops working on the next request.
    Revoke {
        /// The key id (as shown by `keys list`).
        id: String,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// The user the key acts as (created if new).
    #[arg(long)]
    user: String,
    /// A name to recognise the key by.
    #[arg(long)]
    name: String,
    /// A scope to grant (repeatable): sync:read, sync:write, keys:manage, admin.
    /// Default: sync:read, sync:write and keys:manage.
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// Make the key stop working after this long: a number with s, m, h or d
    /// (e.g. 90m, 12h, 30d). Default: the key does not expire.
    #[arg(long, value_name = "DURATION", value_parser = crate::model::parse_duration_ms)]
    expires_in: Option<i64>,
}

/// Scopes of a CLI-created key when none are named: enough to sync and to manage one's keys over HTTP.
const DEFAULT_CLI_SCOPES: [Scope; 3] = [Scope::SyncRead, Scope::SyncWrite, Scope::KeysManage];

/// Parses arguments, loads configuration and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = Config::locate(cli.config.as_deref());
    let config = match Config::load(file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let source = file.map_or("built-in defaults and environment".to_string(), |f| f.display().to_string());
            eprintln!("accord: invalid configuration ({source}):\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    if let Some(f) = &file {
        tracing::debug!(file = %f.display(), "configuration loaded");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("accord: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config, file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("accord: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Other(message)) => {
            eprintln!("accord: {message}");
            ExitCode::FAILURE
        }
    }
}

/// How a command failed: configuration problems exit with code 2.
enum Failure {
    Config(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Other(message)
    }
}

async fn run(command: Command, config: Config, file: Option<PathBuf>) -> Result<(), Failure> {
    match command {
        Command::Serve => server::serve(config, server::shutdown_signal()).await.map_err(|e| match e {
            server::ServeError::Policy(_) | server::ServeError::Jwt(_) => Failure::Config(e.to_string()),
            other => Failure::Other(other.to_string()),
        }),
        Command::Migrate => {
            let store = server::open_store(&config).await.map_err(|e| e.to_string())?;
            println!("database {} is at schema version {}", store.describe(), store::latest_version());
            store.close().await;
            Ok(())
        }
        Command::ResetCursors => {
            let store = server::open_store(&config).await.map_err(|e| e.to_string())?;
            let epoch = store.write(|tx| tx.new_epoch()).await.map_err(|e| e.to_string());
            store.close().await;
            println!("new database epoch {}: clients will pull again from the beginning", epoch?);
            Ok(())
        }
        Command::Backup { dest } => {
            if config.database.url.is_some() {
                return Err(Failure::Config(
                    "database.url is set: back PostgreSQL up with its own tools (pg_dump, or base backups \
                     with WAL archiving); see docs/operations.md"
                        .into(),
                ));
            }
            let (db, busy) = (config.database.path.clone(), config.database.busy_timeout_ms);
            let blobs = config.blobs.url.is_none().then(|| config.blobs.folder(&config.database));
            let report = tokio::task::spawn_blocking(move || store::backup(&db, &dest, busy, blobs.as_deref()))
                .await
                .map_err(|e| Failure::Other(format!("the backup failed: {e}")))?
                .map_err(|e| format!("backup: {e}"))?;
            println!("backed up to {} ({} bytes; integrity check ok)", report.path.display(), report.bytes);
            match &config.blobs.url {
                Some(url) => println!(
                    "blobs are kept in {url}, not in this backup: back the bucket up with its own tools (versioning)"
                ),
                None => println!(
                    "copied {} blob objects to {}{}",
                    report.blobs,
                    store::blobs_beside(&report.path).display(),
                    match report.missing_blobs {
                        0 => String::new(),
                        n => format!(
                            " ({n} named by the snapshot were already collected; their records' blobs are gone)"
                        ),
                    }
                ),
            }
            Ok(())
        }
        Command::Restore { file } => {
            if config.database.url.is_some() {
                return Err(Failure::Config("database.url is set: restore PostgreSQL with its own tools".into()));
            }
            let db = config.database.path.clone();
            let blobs = config.blobs.url.is_none().then(|| config.blobs.folder(&config.database));
            let report = tokio::task::spawn_blocking(move || store::restore(&file, &db, blobs.as_deref()))
                .await
                .map_err(|e| Failure::Other(format!("the restore failed: {e}")))?
                .map_err(|e| format!("restore: {e}"))?;
            let store = server::open_store(&config).await.map_err(|e| e.to_string())?;
            let epoch = store.write(|tx| tx.new_epoch()).await.map_err(|e| e.to_string());
            store.close().await;
            println!(
                "restored {} ({} bytes, {} blob objects); new database epoch {}: clients will pull again from the beginning",
                report.path.display(),
                report.bytes,
                report.blobs,
                epoch?
            );
            Ok(())
        }
        Command::MigrateStore { from, to } => {
            if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
                return Err(Failure::Config(format!("--to {to:?}: expected a postgres:// URL")));
            }
            let source = from.display().to_string();
            let copied = tokio::task::spawn_blocking(move || store::sqlite_to_postgres(&from, &to))
                .await
                .map_err(|e| Failure::Other(format!("the copy failed: {e}")))?
                .map_err(|e| format!("migrate-store: {e}"))?;
            println!("copied {source} into {}:", copied.target);
            for (table, rows) in &copied.tables {
                println!("  {table:<16} {rows:>10} rows");
            }
            println!("  epoch {} kept: clients' cursors stay valid", copied.epoch);
            println!("next: set database.url to this database and start the servers");
            Ok(())
        }
        Command::CheckConfig => {
            let source = file.map_or("built-in defaults".to_string(), |f| f.display().to_string());
            println!("configuration OK ({source})");
            println!("  server.bind = {}", config.server.bind);
            println!("  database.path = {}", config.database.path.display());
            let order = config.entity_order().map_err(|e| Failure::Config(e.to_string()))?;
            println!("  entities = {}", order.join(", "));
            let jwt = crate::auth::jwt::JwtVerifier::from_config(&config.auth.jwt)
                .await
                .map_err(|e| Failure::Config(e.to_string()))?;
            println!("  auth.jwt = {}", if jwt.is_some() { "on" } else { "off (API keys only)" });
            let policies = server::load_policies(&config).await.map_err(|e| Failure::Config(e.to_string()))?;
            for (entity, binding) in &policies.current().bindings {
                println!("  {entity}: {} ({})", binding.policy.name, binding.policy.source);
            }
            Ok(())
        }
        Command::Keys(cmd) => Ok(keys(cmd, config).await?),
        Command::Policy(PolicyCommand::Replay { file, entity, since, limit }) => {
            replay(config, &file, entity, since, limit).await
        }
        Command::Policy(cmd) => tokio::task::spawn_blocking(move || policy_command(cmd, &config))
            .await
            .map_err(|e| Failure::Other(e.to_string()))?,
    }
}

async fn keys(cmd: KeysCommand, config: Config) -> Result<(), String> {
    // Said every time: a key made in another database than the server's does not work there.
    match &config.database.url {
        Some(_) => eprintln!("database: PostgreSQL (database.url)"),
        None => {
            let path = std::path::absolute(&config.database.path).unwrap_or_else(|_| config.database.path.clone());
            let from =
                config.file.as_ref().map_or("no config file: the default".to_string(), |f| f.display().to_string());
            eprintln!("database: {} ({from})", path.display());
        }
    }
    let store = server::open_store(&config).await.map_err(|e| e.to_string())?;
    let result = keys_on(&store, cmd).await;
    store.close().await;
    result
}

async fn keys_on(store: &store::Store, cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::Create(args) => {
            let user = args.user.trim().to_string();
            if user.is_empty() {
                return Err("--user must not be empty".into());
            }
            let scopes = if args.scopes.is_empty() { DEFAULT_CLI_SCOPES.to_vec() } else { parse_scopes(&args.scopes)? };
            let expires_at = args.expires_in.map(|ms| now_ms().saturating_add(ms));
            let (row, raw) =
                apikey::issue(store, &user, &args.name, &scopes, expires_at).await.map_err(|e| e.to_string())?;
            let expiry = row.expires_at.map_or_else(|| "does not expire".to_string(), |t| format!("expires at {t}"));
            eprintln!(
                "created key {} ({}) for user {} with scopes {}; {expiry}",
                row.id,
                row.prefix,
                row.user_id,
                row.scopes.join(" ")
            );
            eprintln!("store it now: it is shown only once");
            println!("{raw}");
            Ok(())
        }
        // Times are unix milliseconds, like the HTTP API's.
        KeysCommand::List { user } => {
            let rows = store.read(move |c| c.api_keys_of(&user)).await.map_err(|e| e.to_string())?;
            println!(
                "{:<20} {:<12} {:<20} {:<14} {:<14} {:<14} {:<14} scopes",
                "id", "prefix", "name", "created", "last used", "revoked", "expires"
            );
            let ms = |t: Option<i64>| t.map_or("-".to_string(), |t| t.to_string());
            for r in rows {
                println!(
                    "{:<20} {:<12} {:<20} {:<14} {:<14} {:<14} {:<14} {}",
                    r.id,
                    r.prefix,
                    r.name,
                    r.created_at,
                    ms(r.last_used_at),
                    ms(r.revoked_at),
                    ms(r.expires_at),
                    r.scopes.join(" ")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            let row = store.write(move |c| c.revoke_api_key(None, &id, now_ms())).await.map_err(|e| match e {
                store::StoreError::NotFound => "no API key with this id".to_string(),
                other => other.to_string(),
            })?;
            println!("revoked key {} of user {}", row.id, row.user_id);
            Ok(())
        }
    }
}

fn policy_command(cmd: PolicyCommand, config: &Config) -> Result<(), Failure> {
    let (file, cases) = match cmd {
        PolicyCommand::New { name, dir } => return new_policy(&dir, &name),
        PolicyCommand::Replay { .. } => return Err(Failure::Other("replay runs in `run`".into())),
        PolicyCommand::Check { file } => (file, None),
        PolicyCommand::Test { file, cases } => (file, Some(cases)),
    };
    let runtime = policy::Runtime::new(&config.policies, &author_cache_dir(config), config.sync.max_record_bytes)
        .map_err(|e| Failure::Other(e.to_string()))?;
    let bytes = std::fs::read(&file).map_err(|e| Failure::Config(format!("cannot read {}: {e}", file.display())))?;
    let name = file.file_stem().map_or("policy".into(), |s| s.to_string_lossy().into_owned());
    let loaded = runtime
        .load(&name, &bytes, &file.display().to_string(), "policy")
        .map_err(|e| Failure::Config(e.to_string()))?;
    match cases {
        None => {
            println!("{}: OK, implements {} (sha256 {})", file.display(), loaded.world(), loaded.sha256());
            Ok(())
        }
        Some(cases) => {
            let text = std::fs::read_to_string(&cases)
                .map_err(|e| Failure::Config(format!("cannot read {}: {e}", cases.display())))?;
            let cases: Vec<policy::cases::Case> = serde_json::from_str(&text)
                .map_err(|e| Failure::Config(format!("{} is not a valid cases file: {e}", cases.display())))?;
            let outcomes = policy::cases::run(&loaded, &cases);
            let mut failed = 0;
            for o in &outcomes {
                let mark = match o.passed {
                    Some(true) => "PASS",
                    Some(false) => {
                        failed += 1;
                        "FAIL"
                    }
                    None => "    ",
                };
                let why = if o.why.is_empty() { String::new() } else { format!("  ({})", o.why) };
                println!("{mark}  {}: {}{why}", o.name, o.decision);
            }
            println!("{} cases, {} failed", outcomes.len(), failed);
            if failed > 0 { Err(Failure::Other(format!("{failed} case(s) failed"))) } else { Ok(()) }
        }
    }
}

/// `accord policy replay`: the candidate's decisions on recorded conflicts, printed.
async fn replay(
    config: Config,
    file: &std::path::Path,
    entity: String,
    since: Option<i64>,
    limit: usize,
) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| Failure::Config(format!("cannot read {}: {e}", file.display())))?;
    let settings = config
        .entities
        .get(&entity)
        .ok_or_else(|| Failure::Config(format!("no entity type `{entity}` in the configuration")))?
        .settings_json();
    let runtime = policy::Runtime::new(&config.policies, &author_cache_dir(&config), config.sync.max_record_bytes)
        .map_err(|e| Failure::Other(e.to_string()))?;
    let name = file.file_stem().map_or("candidate".into(), |s| s.to_string_lossy().into_owned());
    let candidate = runtime
        .load(&name, &bytes, &file.display().to_string(), "candidate")
        .map_err(|e| Failure::Config(e.to_string()))?;
    let entities = Arc::new(crate::sync::Entities::from_config(&config).map_err(|e| Failure::Config(e.to_string()))?);
    let store = server::open_store(&config).await.map_err(|e| Failure::Other(e.to_string()))?;
    let scope = crate::sync::rehearse::Scope {
        entity,
        since: since.map_or(0, |ms| now_ms().saturating_sub(ms)),
        limit,
        budget: std::time::Duration::from_secs(3600),
    };
    let decide = move |input: &crate::model::MergeInput<'_>| {
        candidate.decide_or_conflict(input, &settings, crate::policy::Mode::Replay)
    };
    let report =
        crate::sync::rehearse::replay_stored(&store, entities, Arc::new(config.sync.clone()), scope, decide).await;
    store.close().await;
    let report = report.map_err(|e| Failure::Other(e.to_string()))?;
    print!("{}", crate::sync::rehearse::render_text(&report, &name));
    Ok(())
}

/// Where `policy check|test` cache compiled components: `policies.cache_dir` if
/// set, else the user's cache folder (never a `data/` in the author's crate).
fn author_cache_dir(config: &Config) -> PathBuf {
    if config.policies.cache_dir.is_some() {
        return policy::cache_dir(config);
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache"));
    let cache = std::env::var_os("XDG_CACHE_HOME").filter(|c| !c.is_empty()).map(PathBuf::from).or(home);
    cache.unwrap_or_else(std::env::temp_dir).join("accord").join("policy-cache")
}

fn new_policy(dir: &std::path::Path, name: &str) -> Result<(), Failure> {
    let root = crate::scaffold::new_policy(dir, name).map_err(|e| Failure::Other(e.to_string()))?;
    let file = name.replace('-', "_");
    println!("wrote {}; next:", root.display());
    println!("  cd {}", root.display());
    println!("  cargo build --release --target wasm32-wasip2     # rustup target add wasm32-wasip2, once");
    println!("  accord policy test target/wasm32-wasip2/release/{file}.wasm cases.json");
    println!("then copy the .wasm into the server's policies.dir as {name}.wasm (README.md has the steps)");
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
