//! Starting and stopping the server: open the store, serve HTTP, shut down in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::UsageRecorder;
use crate::auth::jwt::{JwtSetupError, JwtVerifier};
use crate::auth::limit::FailedAuthLimit;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::policy::{self, Policies, PolicyError};
use crate::store::{Store, StoreError};
use crate::sync::{SetupError, SyncCore};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Jwt(#[from] JwtSetupError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the database (running migrations) off the async runtime.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let db = config.database.clone();
    tokio::task::spawn_blocking(move || Store::open(&db)).await.map_err(|_| StoreError::Closed)?
}

/// Creates the policy runtime and loads every entity type's policy (compiling
/// off the async runtime; cached compilations make this fast after the first start).
pub async fn load_policies(config: &Config) -> Result<Arc<Policies>, PolicyError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || policy::load_all(&config))
        .await
        .map_err(|e| PolicyError::Runtime(format!("loader task failed: {e}")))?
}

/// Binds `server.bind` and serves until `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let store = open_store(&config).await?;
    let addr = config.server.bind;
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(config, store, listener, shutdown).await
}

/// Serves on an already-bound listener: stops accepting when `shutdown`
/// resolves, lets in-flight requests finish (up to `server.shutdown_grace_secs`),
/// flushes key usage and closes the database.
pub async fn serve_on(
    config: Config,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let policies = load_policies(&config).await?;
    let (usage, usage_task) = UsageRecorder::start(store.clone());
    let metrics = Arc::new(Metrics::default());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let sync = SyncCore::new(store.clone(), &config, policies.clone(), metrics.clone(), shutdown_rx.clone()).await?;
    let janitor = tokio::spawn(expire_pushes(sync.clone()));
    let config = Arc::new(config);
    policy::reload::spawn_reloaders(policies, config.clone(), shutdown_rx.clone());
    let jwt = JwtVerifier::from_config(&config.auth.jwt).await?.map(Arc::new);
    let auth_limit = Arc::new(FailedAuthLimit::new(config.auth.failed_per_minute));
    let state = AppState { config, store: store.clone(), usage, sync, metrics, jwt, auth_limit, shutdown: shutdown_rx };
    let router = http::app(state);
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, db = %store.path().display(), "accord listening");

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = shutdown_tx.send(true);
        let _ = stopping_tx.send(());
    };
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(graceful);
    let server = tokio::spawn(async move { server.await });
    // Once shutdown has begun, in-flight requests get `grace` to finish.
    let outcome = tokio::select! {
        joined = server => joined.map_err(|e| std::io::Error::other(e.to_string())).and_then(|r| r),
        () = async { if stopping_rx.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending().await } } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; closing anyway");
            Ok(())
        }
    };
    janitor.abort();
    usage_task.finish().await;
    store.close().await;
    tracing::info!("database closed; bye");
    outcome.map_err(ServeError::Io)
}

/// Forgets expired idempotency records at startup and then hourly.
async fn expire_pushes(sync: SyncCore) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match sync.expire_pushes().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "forgot expired pushIds"),
            Err(e) => tracing::warn!(error = %e, "could not expire pushIds"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
