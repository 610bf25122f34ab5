//! `accord-torture`: convergence fuzzing, a crash loop, network faults and an
//! open-loop load against a real `accord` server it starts on 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;

use accord_torture::converge::{self, ConvergeOpts};
use accord_torture::crash::{self, CrashOpts};
use accord_torture::load::{self, LoadOpts};
use accord_torture::server::{ServerOpts, default_bin};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Torture tests for the Accord sync server (starts the server itself, on 127.0.0.1)")]
struct Cli {
    /// The accord binary. Default: $ACCORD_BIN, else the release (then debug) build in
    /// $CARGO_TARGET_DIR or ./target.
    #[arg(long, global = true)]
    bin: Option<PathBuf>,
    /// Run the server on this PostgreSQL database (passed as ACCORD_DATABASE__URL) instead of SQLite.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Seeded offline devices edit, push, pull and resolve; then everything must agree.
    Converge {
        /// Seeds to run, `A..B` (B excluded) or one seed.
        #[arg(long, default_value = "0..200")]
        seeds: String,
        /// Devices (clients) per seed, all of one user.
        #[arg(long, default_value_t = 3)]
        clients: usize,
        /// Random actions per seed before the final sync.
        #[arg(long, default_value_t = 40)]
        ops: usize,
        /// Seeds run at once (each as its own user).
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Put the fault-injecting proxy between the devices and the server.
        #[arg(long)]
        faults: bool,
        /// Stop starting seeds after this many seconds.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
        /// Stop after this many failing seeds.
        #[arg(long, default_value_t = 10)]
        max_failures: usize,
    },
    /// Devices push while the server is SIGKILLed and restarted on the same database.
    Crash {
        #[arg(long, default_value_t = 20)]
        cycles: u64,
        #[arg(long, default_value_t = 3)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Longest time the server runs between kills, in ms.
        #[arg(long, default_value_t = 400)]
        max_uptime_ms: u64,
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// Converge through the fault-injecting proxy (same as `converge --faults`).
    Faults {
        #[arg(long, default_value = "0..100")]
        seeds: String,
        #[arg(long, default_value_t = 3)]
        clients: usize,
        #[arg(long, default_value_t = 30)]
        ops: usize,
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// Open-loop load: a fixed rate of mixed push, pull and event-stream requests.
    Load {
        /// Requests per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 60)]
        secs: u64,
        #[arg(long, default_value_t = 50)]
        users: usize,
        /// Event streams held open for the whole run.
        #[arg(long, default_value_t = 32)]
        streams: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("--seeds: expected A..B or a number, not `{s}`");
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b.trim().parse().map_err(|_| bad())?;
            Ok(a..b)
        }
        None => {
            let a: u64 = s.trim().parse().map_err(|_| bad())?;
            Ok(a..a + 1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bin = cli.bin.clone().unwrap_or_else(default_bin);
    if !bin.exists() {
        eprintln!("no accord binary at {} (build it, or pass --bin / ACCORD_BIN)", bin.display());
        return ExitCode::from(2);
    }
    let server = ServerOpts::new(bin.clone(), cli.database_url.clone());
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bin_text = bin.display().to_string();
    let result: Result<bool, String> = rt.block_on(async move {
        match cli.command {
            Command::Converge { seeds, clients, ops, jobs, faults, max_secs, max_failures } => {
                let opts = ConvergeOpts {
                    seeds: parse_seeds(&seeds)?,
                    devices: clients,
                    ops,
                    jobs,
                    faults,
                    max_secs,
                    max_failures,
                };
                let report = converge::run(server, opts.clone()).await?;
                report.print(&opts, &bin_text);
                Ok(report.failures.is_empty())
            }
            Command::Faults { seeds, clients, ops, jobs, max_secs } => {
                let opts = ConvergeOpts {
                    seeds: parse_seeds(&seeds)?,
                    devices: clients,
                    ops,
                    jobs,
                    faults: true,
                    max_secs,
                    max_failures: 10,
                };
                let report = converge::run(server, opts.clone()).await?;
                report.print(&opts, &bin_text);
                Ok(report.failures.is_empty())
            }
            Command::Crash { cycles, clients, seed, max_uptime_ms, max_secs } => {
                let opts = CrashOpts { cycles, clients, seed, max_uptime_ms, max_secs };
                let report = crash::run(server, opts.clone()).await?;
                report.print(&opts);
                Ok(true)
            }
            Command::Load { rate, secs, users, streams, seed } => {
                let report = load::run(server, LoadOpts { rate, secs, users, streams, seed }).await?;
                for line in &report.lines {
                    println!("{line}");
                }
                Ok(report.server_errors == 0 && report.failures == 0)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
