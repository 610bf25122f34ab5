//! Starting and stopping the server: open the store, serve HTTP, shut down in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::auth::UsageRecorder;
use crate::auth::jwt::{JwtSetupError, JwtVerifier};
use crate::auth::limit::FailedAuthLimit;
use crate::config::{Config, ServerConfig};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::model::{DecidedBy, Decision, MergeInput};
use crate::policy::{self, Policies, PolicyError, PolicySet};
use crate::store::{Store, StoreError};
use crate::sync::{ActiveRules, MergeRules, SetupError, SyncCore};

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
    tokio::task::spawn_blocking(move || Store::open(&db))
        .await
        .map_err(|_| StoreError::Other("the store could not be opened".into()))?
}

/// Creates the policy runtime and loads every entity type's policy (compiling
/// off the async runtime; cached compilations make this fast after the first start).
pub async fn load_policies(config: &Config) -> Result<Arc<Policies>, PolicyError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || policy::load_all(&config))
        .await
        .map_err(|e| PolicyError::Runtime(format!("loader task failed: {e}")))?
}

// The wiring between `sync` and `policy`, which do not know each other: sync
// decides through its own `MergeRules` interface, and here the policy set is
// what implements it (see ARCHITECTURE.md, the dependency rule).

impl MergeRules for PolicySet {
    fn decide(&self, type_index: usize, input: &MergeInput<'_>) -> Decision {
        PolicySet::decide(self, type_index, input)
    }

    fn decided_by(&self, type_index: usize) -> Option<DecidedBy> {
        let (_, b) = self.bindings.get(type_index)?;
        Some(DecidedBy { policy: b.policy.name.clone(), sha256: b.policy.sha256().to_string() })
    }
}

impl ActiveRules for Policies {
    fn current(&self) -> Arc<dyn MergeRules> {
        Policies::current(self)
    }
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
    let rules: Arc<dyn ActiveRules> = policies.clone();
    let sync = SyncCore::new(store.clone(), &config, rules, metrics.clone(), shutdown_rx.clone()).await?;
    let janitor = tokio::spawn(housekeeping(sync.clone()));
    let server_config = config.server.clone();
    let config = Arc::new(config);
    policy::reload::spawn_reloaders(policies.clone(), config.clone(), shutdown_rx.clone());
    let jwt = JwtVerifier::from_config(&config.auth.jwt).await?.map(Arc::new);
    let auth_limit = Arc::new(FailedAuthLimit::new(config.auth.failed_per_minute));
    let limits = Arc::new(http::UserLimits::new(&config));
    let state = AppState::new(http::Shared {
        config,
        store: store.clone(),
        usage,
        sync,
        policies,
        metrics,
        jwt,
        auth_limit,
        shutdown: shutdown_rx,
        limits,
    });
    let router = http::app(state);
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, db = %store.describe(), "accord listening");

    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = shutdown_tx.send(true);
    };
    let outcome = serve_connections(listener, router, &server_config, grace, shutdown).await;
    janitor.abort();
    usage_task.finish().await;
    store.close().await;
    tracing::info!("database closed; bye");
    outcome.map_err(ServeError::Io)
}

/// The accept loop: at most `server.max_connections` connections are served at
/// once (a further one is not accepted, so it waits in the listen backlog until
/// a served connection closes); each is HTTP/1.1 with `server.header_timeout_secs`
/// to send its headers. Every request carries the peer address as
/// `ConnectInfo<SocketAddr>`. When `shutdown` resolves the listener closes,
/// idle connections close, in-flight requests get `grace` to finish, and any
/// connection still open after that is closed.
async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    config: &ServerConfig,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(config.header_timeout_secs));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A permit first, then accept: beyond the cap the kernel holds new connections.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (socket, peer) = loop {
            tokio::select! {
                () = &mut shutdown => {
                    drop(listener);
                    return finish(graceful, connections, grace).await;
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => break accepted,
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // e.g. out of file descriptors: wait instead of spinning.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        };
        let service = TowerToHyperService::new(router.clone().map_request(move |request: Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        }));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(socket), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    finish(graceful, connections, grace).await
}

/// Shutdown of the served connections: graceful first, closed after `grace`.
async fn finish(
    graceful: GracefulShutdown,
    mut connections: JoinSet<()>,
    grace: Duration,
) -> Result<(), std::io::Error> {
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; closing anyway");
    }
    connections.shutdown().await;
    Ok(())
}

/// Errors of one incoming connection (it went away before it was accepted),
/// as opposed to errors of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// At startup and then hourly: forgets expired pushIds, deletes old resolved
/// conflicts and purges old tombstones (see `SyncCore::housekeeping`).
async fn housekeeping(sync: SyncCore) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match sync.housekeeping().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "forgot expired pushIds"),
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; retrying in an hour"),
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
