//! Sync semantics — push, pull, conflicts, change notices — independent of HTTP.
//!
//! A push is validated in full before anything is written (`wire`), then
//! applied as one store job (`push`): one transaction, all or nothing, with
//! its idempotency record written in the same transaction.

pub mod blobs;
mod budget;
mod conflicts;
pub mod cursor;
mod json;
pub mod merge;
mod pull;
mod push;
pub mod rehearse;
mod replay;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::config::{Config, ConfigError, QuotaConfig, SyncConfig};
use crate::metrics::Metrics;
use crate::store::{Notice, Objects, Store, StoreError, now_ms};

pub use budget::{BodyBudget, BodyBytes};
pub use conflicts::{ConflictQuery, Resolution};
pub use merge::{ActiveRules, MergeRules};
pub use pull::PullQuery;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Well-formed but invalid input (422).
    #[error("{0}")]
    Invalid(String),
    /// Over a configured size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// Malformed input, e.g. not JSON or a malformed cursor (400).
    #[error("{0}")]
    BadRequest(String),
    /// A cursor this server cannot continue from (410).
    #[error("{0}")]
    CursorGone(String),
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state, e.g. resolving twice (409).
    #[error("{0}")]
    Conflict(String),
    /// A per-user quota would be exceeded; nothing was written (507).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A byte range outside a blob of this many bytes (416).
    #[error("the requested range is outside the blob's {0} bytes")]
    RangeNotSatisfiable(u64),
    /// A server-wide bound is reached for the moment; retry (503).
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why sync could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A reference field of an entity type.
#[derive(Clone, Debug)]
pub struct Reference {
    pub field: String,
    pub target: String,
    pub target_index: usize,
}

/// One declared entity type.
#[derive(Clone, Debug)]
pub struct EntityType {
    pub name: String,
    pub refs: Vec<Reference>,
    /// Fields of `data` naming blobs (`[entities.<type>] blobs`).
    pub blobs: Vec<String>,
    pub history: u32,
}

/// The declared entity types, in dependency order (parents first).
#[derive(Clone, Debug)]
pub struct Entities {
    pub types: Vec<EntityType>,
}

impl Entities {
    pub fn from_config(config: &Config) -> Result<Entities, ConfigError> {
        let order = config.entity_order()?;
        let types = order
            .iter()
            .map(|name| {
                let e = &config.entities[name];
                let refs = e
                    .refs
                    .iter()
                    .map(|(field, target)| Reference {
                        field: field.clone(),
                        target: target.clone(),
                        target_index: order.iter().position(|n| n == target).unwrap_or(usize::MAX),
                    })
                    .collect();
                EntityType {
                    name: name.clone(),
                    refs,
                    blobs: e.blobs.clone(),
                    history: e.history.unwrap_or(config.sync.history),
                }
            })
            .collect();
        Ok(Entities { types })
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }
}

/// Push, pull and conflict operations over a store.
#[derive(Clone)]
pub struct SyncCore {
    store: Store,
    entities: Arc<Entities>,
    limits: Arc<SyncConfig>,
    quotas: Arc<QuotaConfig>,
    /// Bytes of request bodies held and parsed at once, server-wide.
    budget: BodyBudget,
    /// This database's identity, part of every cursor.
    epoch: Arc<str>,
    /// The merge rules (wired in by `server`: the active policy set).
    rules: Arc<dyn ActiveRules>,
    metrics: Arc<Metrics>,
    /// Turns true on shutdown; long polls answer at once then.
    shutdown: tokio::sync::watch::Receiver<bool>,
    blobs: blobs::Blobs,
}

/// Push bodies up to this size are parsed on the async worker that read them.
const INLINE_PARSE_BYTES: usize = 32 * 1024;

/// A random public id (conflicts): 24 lowercase hex digits.
fn new_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        // Uniqueness, not secrecy, is what matters here; fall back to time and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
        bytes[8..].copy_from_slice(&(n as u32).to_le_bytes());
    }
    crate::model::hex(&bytes)
}

impl SyncCore {
    pub async fn new(
        store: Store,
        config: &Config,
        rules: Arc<dyn ActiveRules>,
        metrics: Arc<Metrics>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<SyncCore, SetupError> {
        let entities = Arc::new(Entities::from_config(config)?);
        let epoch = store.read(|tx| tx.epoch()).await?;
        let limits = Arc::new(config.sync.clone());
        let quotas = Arc::new(config.quotas.clone());
        let budget = BodyBudget::new(config.server.max_parsing_bytes);
        let objects = match &config.blobs.url {
            Some(url) => Objects::s3(url)?,
            None => Objects::folder(config.blobs.folder(&config.database))?,
        };
        let blobs = blobs::Blobs::new(store.clone(), objects, config);
        Ok(SyncCore { store, entities, limits, quotas, budget, epoch: epoch.into(), rules, metrics, shutdown, blobs })
    }

    /// Attachments: upload, read, collect.
    pub fn blobs(&self) -> &blobs::Blobs {
        &self.blobs
    }

    /// The cursor that stands for "up to sequence `seq`".
    pub fn cursor_at(&self, seq: i64) -> String {
        cursor::encode(&self.epoch, seq)
    }

    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// The server-wide budget a push body is read into.
    pub fn body_budget(&self) -> &BodyBudget {
        &self.budget
    }

    /// Applies a push body for `user`; returns the response JSON.
    ///
    /// Once the job reaches the writer it runs to completion even if this
    /// future is dropped (client gone): the push commits whole or not at all.
    ///
    /// A body larger than [`INLINE_PARSE_BYTES`] is parsed on a blocking
    /// thread, never on the async workers; a smaller one (tens of
    /// microseconds of work) where it is, saving two thread hand-offs.
    /// The body's budget is held until the push is answered.
    pub async fn push(&self, user: &str, body: BodyBytes) -> Result<String, SyncError> {
        let (entities, limits) = (self.entities.clone(), self.limits.clone());
        let body_bytes = body.bytes().len();
        let parse = move || {
            let parsed = wire::parse_push(body.bytes(), &entities, &limits);
            // The parsed push holds about as much again as the body: keep its budget.
            parsed.map(|request| (request, body.into_budget()))
        };
        let (request, _budget) = if body_bytes <= INLINE_PARSE_BYTES {
            parse()?
        } else {
            tokio::task::spawn_blocking(parse)
                .await
                .map_err(|e| SyncError::Store(StoreError::Other(format!("push parser failed: {e}"))))??
        };
        self.metrics.push_size(request.record_count, body_bytes);
        let (entities, quotas, epoch) = (self.entities.clone(), self.quotas.clone(), self.epoch.clone());
        let metrics = self.metrics.clone();
        // In-flight pushes finish on the rules they started with, whatever a reload does.
        let rules = self.rules.current();
        let weight = request.record_count;
        let owner = user.to_string();
        let applied = self
            .store
            .write_for(user, weight, move |tx| {
                let cx = push::Context {
                    entities: &entities,
                    rules: rules.as_ref(),
                    quotas: &quotas,
                    epoch: &epoch,
                    now: now_ms(),
                    metrics: &metrics,
                };
                let applied = push::apply(tx, &owner, &cx, &request)?;
                let notice = match &applied {
                    push::Applied::Fresh { wrote_up_to: Some(seq), .. } => Some(Notice { user: owner, seq: *seq }),
                    _ => None,
                };
                Ok::<_, SyncError>((applied, notice))
            })
            .await?;
        match applied {
            push::Applied::Fresh { response, counts, .. } => {
                self.metrics.push(&counts);
                Ok(response)
            }
            push::Applied::Replay(response) => {
                self.metrics.push_replayed();
                Ok(response)
            }
            push::Applied::PushIdReused => Err(SyncError::Invalid(
                "this pushId was already used with a different body; use a new pushId for new changes".into(),
            )),
        }
    }

    /// One page of the user's changes (see [`PullQuery`]); waits up to
    /// `query.wait` for a change when there is none.
    pub async fn pull(&self, user: &str, query: PullQuery) -> Result<Vec<u8>, SyncError> {
        let since = pull::since(query.since.as_deref())?;
        let types = pull::types(&query.types, &self.entities)?;
        let limit = pull::query_int("limit", query.limit, 1)?
            .map_or(self.limits.default_pull_limit, |l| usize::try_from(l).unwrap_or(usize::MAX))
            .min(self.limits.max_pull_limit);
        let wait = pull::query_int("wait", query.wait, 0)?.unwrap_or(0).min(self.limits.max_wait_secs);
        let wait = Duration::from_secs(wait);
        let mut notices = (!wait.is_zero()).then(|| self.store.subscribe(user));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let page = self.read_page(user, &since, &types, limit).await?;
            let Some(rx) = notices.as_mut().filter(|_| page.records == 0) else {
                self.metrics.pull(page.records);
                return Ok(page.body);
            };
            if !wait_for_user(rx, user, deadline, self.shutdown.clone()).await {
                self.metrics.pull(0);
                return Ok(page.body);
            }
        }
    }

    async fn read_page(
        &self,
        user: &str,
        since: &Option<(String, i64)>,
        types: &[String],
        limit: usize,
    ) -> Result<pull::Page, SyncError> {
        let (user, since, types) = (user.to_string(), since.clone(), types.to_vec());
        let entities = self.entities.clone();
        let max_bytes = self.limits.max_page_bytes;
        let epoch = self.epoch.clone();
        self.store
            .read(move |tx| {
                let state = tx.user_state(&user)?;
                let at = pull::Snapshot { epoch: &epoch, last_seq: state.last_seq, purged_seq: state.purged_seq };
                Ok(pull::page(tx, &user, &entities, &at, since.as_ref(), &types, limit, max_bytes))
            })
            .await?
    }

    /// Decides the conflicts recorded on `entity` since `since` (unix ms; at
    /// most `limit`, within `budget`) again with `decide`: a candidate rule's
    /// report before it is deployed. Blocking work runs on a reader thread.
    pub async fn replay_policy(
        &self,
        entity: &str,
        since: i64,
        limit: usize,
        budget: Duration,
        mut decide: impl FnMut(&crate::model::MergeInput<'_>) -> crate::model::Decision + Send + 'static,
    ) -> Result<rehearse::ReplayReport, SyncError> {
        let (entities, limits) = (self.entities.clone(), self.limits.clone());
        let scope = rehearse::Scope { entity: entity.to_string(), since, limit, budget };
        rehearse::replay_stored(&self.store, entities, limits, scope, move |input| decide(input)).await
    }

    /// A record's current version and the earlier ones history still holds,
    /// newest first, each with the policy that merged it (`decidedBy`).
    pub async fn history(&self, user: &str, entity: &str, id: &str) -> Result<Vec<u8>, SyncError> {
        if self.entities.index_of(entity).is_none() {
            return Err(SyncError::NotFound(format!("no entity type `{entity}`")));
        }
        let (user, entity, id) = (user.to_string(), entity.to_string(), id.to_string());
        let versions = self.store.read(move |tx| tx.record_versions(&user, &entity, &id)).await?;
        let Some(first) = versions.first() else {
            return Err(SyncError::NotFound("you have no record with this entity type and id".into()));
        };
        let mut out = Vec::with_capacity(versions.iter().map(|v| v.data.len() + 160).sum());
        out.extend_from_slice(b"{\"entity\":");
        json::push_str(&mut out, &first.entity);
        out.extend_from_slice(b",\"id\":");
        json::push_str(&mut out, &first.id);
        out.extend_from_slice(b",\"versions\":[");
        for (i, v) in versions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::push_version(&mut out, v);
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }

    pub async fn conflicts(&self, user: &str, query: ConflictQuery) -> Result<Vec<u8>, SyncError> {
        if let Some(entity) = query.entity.as_deref().filter(|e| self.entities.index_of(e).is_none()) {
            return Err(SyncError::Invalid(format!("`entity` names unknown entity type `{entity}`")));
        }
        conflicts::list(&self.store, user, query, self.limits.max_page_bytes).await
    }

    pub async fn resolve(&self, user: &str, conflict_id: &str, resolution: Resolution) -> Result<String, SyncError> {
        let cx = conflicts::Setting {
            entities: self.entities.clone(),
            limits: self.limits.clone(),
            quotas: self.quotas.clone(),
            epoch: self.epoch.clone(),
        };
        conflicts::resolve(&self.store, cx, user, conflict_id, resolution).await
    }

    /// Notices of `user`'s commits, and resyncs.
    pub fn subscribe(&self, user: &str) -> broadcast::Receiver<Notice> {
        self.store.subscribe(user)
    }

    /// Forgets pushIds and resolved conflicts past their retention windows,
    /// and purges old tombstones; returns how many pushIds.
    pub async fn housekeeping(&self) -> Result<usize, StoreError> {
        let hours = |h: u64| i64::try_from(h.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
        let pushes_before = now_ms().saturating_sub(hours(self.limits.push_retention_hours));
        let conflicts_before = now_ms().saturating_sub(hours(self.limits.conflict_retention_days.saturating_mul(24)));
        let (pushes, conflicts) = self
            .store
            .write(move |tx| Ok((tx.expire_pushes(pushes_before)?, tx.purge_resolved_conflicts(conflicts_before)?)))
            .await?;
        if conflicts > 0 {
            tracing::info!(deleted = conflicts, "deleted resolved conflicts past sync.conflict_retention_days");
        }
        self.compact_tombstones().await?;
        self.blobs.collect().await?;
        Ok(pushes)
    }

    /// Purges tombstones past `sync.tombstone_retention_days`, one user per
    /// write job (so it takes turns with that user's pushes, on any host).
    async fn compact_tombstones(&self) -> Result<(), StoreError> {
        let days = self.limits.tombstone_retention_days;
        if days == 0 {
            return Ok(());
        }
        let before = now_ms().saturating_sub(i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX));
        let (mut users, mut purged) = (0usize, 0usize);
        // Bounded per run; the next run (hourly) continues.
        for user in self.store.read(move |tx| tx.users_with_old_tombstones(before, 10_000)).await? {
            let owner = user.clone();
            purged += self
                .store
                .write_for(&user, 1, move |tx| Ok::<_, StoreError>((tx.purge_tombstones(&owner, before)?, None)))
                .await?;
            users += 1;
        }
        if purged > 0 {
            tracing::info!(purged, users, "purged tombstones past sync.tombstone_retention_days");
        }
        Ok(())
    }
}

/// Waits until a notice for `user` arrives (true), or `deadline` passes or
/// the server starts shutting down (false).
async fn wait_for_user(
    rx: &mut broadcast::Receiver<Notice>,
    user: &str,
    deadline: tokio::time::Instant,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> bool {
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, rx.recv()) => next,
            _ = shutdown.wait_for(|stopping| *stopping) => return false,
        };
        match next {
            Err(_) => return false,
            Ok(Ok(notice)) if notice.user == user || notice.is_resync() => return true,
            Ok(Ok(_)) => {}
            // Missed notices may include ours: look again.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return true,
            Ok(Err(broadcast::error::RecvError::Closed)) => return false,
        }
    }
}
