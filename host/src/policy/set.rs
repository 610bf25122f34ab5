//! Which policy each entity type uses: loading a set from config, and the
//! atomically swapped active set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::shadow::Shadow;
use super::{Policy, PolicyError, Runtime, builtin};
use crate::config::Config;
use crate::model::{Decision, MergeInput};

/// The policy of one entity type, with its settings.
#[derive(Clone)]
pub struct Binding {
    pub policy: Arc<Policy>,
    /// `policy_settings` as JSON object text.
    pub settings: String,
    /// `shadow_policy`, run beside `policy` and only counted.
    pub shadow: Option<Arc<Shadow>>,
}

/// Policies for every entity type (by the type's index in `sync::Entities`).
pub struct PolicySet {
    pub bindings: Vec<(String, Binding)>,
}

impl PolicySet {
    /// Decides one record; a failed call is a conflict, never an error of the push.
    pub fn decide(&self, type_index: usize, input: &MergeInput<'_>) -> Decision {
        let Some((_, binding)) = self.bindings.get(type_index) else {
            return Decision::Conflict("policy failed: no policy is bound to this entity type".into());
        };
        // Every built-in policy's first rule accepts a record the server does
        // not have yet (pinned by a test below): that decision needs no call.
        let decision = if input.server.is_none() && binding.policy.source == builtin::SOURCE {
            binding.policy.count_call();
            Decision::Accept
        } else {
            binding.policy.decide_or_conflict(input, &binding.settings, super::Mode::Live)
        };
        if let Some(shadow) = &binding.shadow {
            shadow.observe(input, &binding.settings, &decision);
        }
        decision
    }

    /// Loads the policy of each entity type in `order` as `config` names it.
    /// A policy used by several types is loaded once.
    pub fn load(runtime: &Arc<Runtime>, config: &Config, order: &[String]) -> Result<PolicySet, PolicyError> {
        let mut loaded: HashMap<String, Arc<Policy>> = HashMap::new();
        let mut bindings = Vec::with_capacity(order.len());
        for entity in order {
            let e = config.entities.get(entity);
            let name = e.and_then(|e| e.policy.clone()).unwrap_or_else(|| crate::config::DEFAULT_POLICY.into());
            let settings = e.map_or_else(|| "{}".to_string(), |e| e.settings_json());
            let what = format!("entities.{entity}.policy");
            let mut load = |name: &str, what: &str| -> Result<Arc<Policy>, PolicyError> {
                if let Some(p) = loaded.get(name) {
                    return Ok(p.clone());
                }
                let p = load_named(runtime, &config.policies.dir, name, what)?;
                loaded.insert(name.to_string(), p.clone());
                Ok(p)
            };
            let policy = load(&name, &what)?;
            let shadow = match e.and_then(|e| e.shadow_policy.as_deref()) {
                Some(shadow) => Some(Arc::new(Shadow::new(load(shadow, &format!("entities.{entity}.shadow_policy"))?))),
                None => None,
            };
            tracing::debug!(entity = %entity, policy = %name, source = %policy.source, "policy bound");
            bindings.push((entity.clone(), Binding { policy, settings, shadow }));
        }
        Ok(PolicySet { bindings })
    }
}

/// `<dir>/<name>.wasm` if present, else the built-in of that name.
pub fn load_named(runtime: &Arc<Runtime>, dir: &Path, name: &str, what: &str) -> Result<Arc<Policy>, PolicyError> {
    let path = dir.join(format!("{name}.wasm"));
    if path.is_file() {
        let bytes = std::fs::read(&path).map_err(|source| PolicyError::Read {
            what: what.into(),
            path: path.clone(),
            source,
        })?;
        return runtime.load(name, &bytes, &path.display().to_string(), what);
    }
    match builtin::bytes(name) {
        Some(bytes) => runtime.load(name, bytes, builtin::SOURCE, what),
        None => Err(PolicyError::Unknown {
            what: what.into(),
            name: name.into(),
            // In full: a relative policies.dir is where the mistakes hide.
            path: std::path::absolute(&path).unwrap_or(path),
            builtins: builtin::NAMES.join(", "),
        }),
    }
}

/// The active policy set, swapped atomically on reload. Pushes take a
/// snapshot (`current`) and finish on it even if a reload happens meanwhile.
pub struct Policies {
    runtime: Arc<Runtime>,
    current: RwLock<Arc<PolicySet>>,
}

impl Policies {
    pub fn new(runtime: Arc<Runtime>, set: PolicySet) -> Policies {
        Policies { runtime, current: RwLock::new(Arc::new(set)) }
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Builds a new set; switches to it only if every policy loads.
    pub fn reload(&self, config: &Config, order: &[String]) -> Result<(), PolicyError> {
        let set = PolicySet::load(&self.runtime, config, order)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(())
    }
}

/// Where compiled components are cached: `policies.cache_dir`, else beside
/// the database. Absolute, as wasmtime's cache requires.
pub fn cache_dir(config: &Config) -> PathBuf {
    let dir = match &config.policies.cache_dir {
        Some(dir) => dir.clone(),
        None => {
            config.database.path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf).join("policy-cache")
        }
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Creates the runtime and loads the configured set (blocking: compiles).
pub fn load_all(config: &Config) -> Result<Arc<Policies>, PolicyError> {
    let order = config.entity_order().map_err(|e| PolicyError::Runtime(e.to_string()))?;
    let runtime = Runtime::new(&config.policies, &cache_dir(config), config.sync.max_record_bytes)?;
    let set = PolicySet::load(&runtime, config, &order)?;
    Ok(Arc::new(Policies::new(runtime, set)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Incoming, MergeInput};

    /// What lets `PolicySet::decide` skip the call for a new record: every
    /// built-in component, called, accepts one (live, with or without a
    /// base version, tombstone or not, whatever the settings).
    #[test]
    fn every_builtin_accepts_a_new_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime =
            Runtime::new(&crate::config::PoliciesConfig::default(), dir.path(), 1 << 20).expect("policy runtime");
        for name in builtin::NAMES {
            let bytes = builtin::bytes(name).expect("embedded");
            let policy = runtime.load(name, bytes, builtin::SOURCE, "test").expect("loads");
            for (base_version, deleted, settings) in
                [(0, false, "{}"), (3, false, "{}"), (0, true, "{}"), (2, false, r#"{"field":"n","fields":["t"]}"#)]
            {
                let incoming = Incoming {
                    id: "a".into(),
                    version: 4,
                    base_version,
                    deleted,
                    data: r#"{"n":1,"t":"x"}"#.into(),
                    refs: Vec::new(),
                    blobs: Vec::new(),
                };
                let input = MergeInput { entity: "pages", user: "u", server: None, base: None, incoming: &incoming };
                let decision = policy.decide(&input, settings, super::super::Mode::Live).expect("runs");
                assert_eq!(decision, Decision::Accept, "{name} with baseVersion {base_version}, deleted {deleted}");
            }
        }
    }
}
