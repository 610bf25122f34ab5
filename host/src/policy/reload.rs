//! Hot swap: reload the policy set on a file change (`.wasm` in the policy dir
//! or the config file), on SIGHUP, or when the admin endpoint asks. A new set
//! replaces the old one only if every policy in it loads; otherwise the old
//! one stays active and the error is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

use super::{Policies, PolicyError};
use crate::config::{Config, ConfigError};

/// Changes within this window are taken as one.
const DEBOUNCE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Re-reads the config file (if the server was started with one) and swaps in
/// the policies it names, loading their components anew. Entity types
/// and references stay as the server started with them (those need a restart);
/// `policy` and `policy_settings` of each type take effect.
pub fn reload(policies: &Policies, running: &Config) -> Result<(), ReloadError> {
    // Without a config file there is nothing to re-read: reload the components only.
    let fresh = match &running.file {
        Some(file) => Config::load(Some(file))?,
        None => running.clone(),
    };
    let mut next = running.clone();
    next.policies.dir = fresh.policies.dir.clone();
    for (name, entity) in next.entities.iter_mut() {
        match fresh.entities.get(name) {
            Some(f) => {
                entity.policy = f.policy.clone();
                entity.policy_settings = f.policy_settings.clone();
            }
            None => tracing::warn!(entity = %name, "entity type removed from the config; it stays until a restart"),
        }
    }
    if fresh.entities.keys().any(|k| !running.entities.contains_key(k)) {
        tracing::warn!("new entity types in the config take effect after a restart");
    }
    let order = next.entity_order()?;
    policies.reload(&next, &order)?;
    Ok(())
}

/// Reloads off the async runtime (compiling may take a while) and logs the outcome.
pub async fn reload_logged(policies: Arc<Policies>, running: Arc<Config>, why: &'static str) -> Result<(), String> {
    let result = tokio::task::spawn_blocking(move || reload(&policies, &running))
        .await
        .map_err(|e| format!("reload task failed: {e}"))?;
    match result {
        Ok(()) => {
            tracing::info!(trigger = why, "policies reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "policy reload refused; the previous policies stay active");
            Err(e.to_string())
        }
    }
}

/// Starts the file watcher (if `policies.watch`) and the SIGHUP handler; both
/// stop when `shutdown` turns true.
pub fn spawn_reloaders(policies: Arc<Policies>, config: Arc<Config>, shutdown: watch::Receiver<bool>) {
    let (tx, rx) = mpsc::unbounded_channel::<&'static str>();
    if config.policies.watch {
        match start_watcher(&config, tx.clone()) {
            Ok(watcher) => {
                let mut stop = shutdown.clone();
                tokio::spawn(async move {
                    let _ = stop.wait_for(|s| *s).await;
                    drop(watcher);
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch policy files; use SIGHUP or /api/admin/reload"),
        }
    }
    #[cfg(unix)]
    {
        let tx = tx.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            loop {
                tokio::select! {
                    _ = hup.recv() => { let _ = tx.send("SIGHUP"); }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
    tokio::spawn(debounced(rx, policies, config, shutdown));
}

async fn debounced(
    mut rx: mpsc::UnboundedReceiver<&'static str>,
    policies: Arc<Policies>,
    config: Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let why = tokio::select! {
            why = rx.recv() => match why { Some(w) => w, None => return },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        let _ = reload_logged(policies.clone(), config.clone(), why).await;
    }
}

fn start_watcher(
    config: &Config,
    tx: mpsc::UnboundedSender<&'static str>,
) -> notify::Result<notify::RecommendedWatcher> {
    let dir = config.policies.dir.clone();
    let file: Option<PathBuf> = config.file.clone();
    let (dir_c, file_c) = (dir.clone(), file.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            let is_wasm = p.extension().is_some_and(|e| e == "wasm") && p.parent().is_some_and(|d| same_dir(d, &dir_c));
            let is_config = file_c.as_ref().is_some_and(|f| p.file_name() == f.file_name());
            is_wasm || is_config
        });
        if relevant {
            let _ = tx.send("file change");
        }
    })?;
    if dir.is_dir() {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    if let Some(parent) = file.as_ref().and_then(|f| f.parent()) {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        watcher.watch(parent, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
