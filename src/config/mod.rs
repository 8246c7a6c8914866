//! Configuration: the resolved model ([`model`]) and the loaders that produce it.
//!
//! Three inputs give the same [`Config`]:
//! - a TOML directory (`<root>/llms/{provider,groups,polling_pools}/…`, `global.toml`): [`load_dir`];
//! - the original YAML layout (`groups/_task_groups.yaml` registry, one YAML per group/pool,
//!   `global_fallback.yaml`, …), in the same directory tree: also [`load_dir`];
//! - a JSON tree shaped like the directory (what Python dicts become): [`from_json`].
//!
//! Loading is strict and reports every problem at once ([`ConfigError::issues`]): unknown keys
//! (with "did you mean"), wrong types, out-of-range numbers, invalid enum values, unknown
//! model/group references, fallback cycles, empty groups/echelons, duplicate names, syntax
//! errors with line numbers. Unset `${VAR}`s are not errors; [`warnings`] lists them.
//!
//! The original YAML layout (YAML files, or a dict tree with `layout = "original"`) loads as
//! it is: keys the engine does not know, a model name no provider defines, a provider the
//! engine cannot call (`human_relay`), an `inherits_from` of the provider's own common file
//! and a registered file that is missing are warnings, never fatal; an unresolvable model is
//! left out of its echelon (a call to an echelon left empty fails naming the missing models);
//! `retry_delay` is loaded as 0 (the original never waited between fallback targets). Wrong
//! types, out-of-range numbers and invalid values stay errors. The TOML layout is strict.
//!
//! Pipeline: files → JSON values ([`source`]: parse, interpolate, `inherits_from`) → documents
//! ([`layout`]) → typed configs ([`providers`], [`groups`], via the strict [`reader`]) →
//! cross-reference checks ([`validate`]).

mod check;
mod convert;
mod gateway;
mod groups;
mod layout;
pub mod model;
mod providers;
mod reader;
mod source;
mod validate;
mod wrappers;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

pub use check::render_check;
pub use convert::{convert_todo, to_toml_layout};
pub use gateway::{key_digest, resolve_route, route_allowed, route_names};
pub use model::*;
pub use source::{process_env, EnvLookup};

use crate::error::{ConfigError, ConfigIssue};
use layout::{GlobalKind, RawTree};
use reader::Sink;

/// Load a configuration directory: `<root>` holding `llms/`, or the `llms/` directory itself.
/// TOML and the original YAML layout are both read. `${VAR}`s come from the process
/// environment.
pub fn load_dir(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    load_dir_with_env(path, &process_env)
}

/// [`load_dir`] with an explicit environment lookup (tests, embedding).
pub fn load_dir_with_env(path: impl AsRef<Path>, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let sink = Sink::default();
    let warn = Sink::default();
    let tree = layout::read_dir_tree(path.as_ref(), env, &sink, &warn);
    build(tree, env, sink, warn)
}

/// Build a configuration from a JSON tree shaped like the directory:
/// `{"providers": {"openai": {"common": {...}, "gpt4o": {...}}}, "models": {...},
/// "groups": {...}, "pools": {...}, "global": {...}}` (`task_groups`, `polling_pools`,
/// `global_fallback`, `concurrency_control`, `rate_limiting` are accepted too). Issues carry
/// the dotted path from the root (`groups.fast.echelon1.models[0]`) and no file.
pub fn from_json(value: &Value) -> Result<Config, ConfigError> {
    from_json_with_env(value, &process_env)
}

/// [`from_json`] with an explicit environment lookup.
pub fn from_json_with_env(value: &Value, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let sink = Sink::default();
    let warn = Sink::default();
    let tree = layout::read_json_tree(value, env, &sink, &warn);
    build(tree, env, sink, warn)
}

/// Everything worth telling the user that does not stop a load: `${VAR}`s that were unset
/// (API keys included, named with the models that need them) and models without a key.
pub fn warnings(cfg: &Config) -> Vec<ConfigIssue> {
    validate::collect_warnings(cfg)
}

fn build(tree: RawTree, env: EnvLookup<'_>, sink: Sink, warn: Sink) -> Result<Config, ConfigError> {
    let mut cfg = Config { root: tree.root.clone(), ..Default::default() };
    let mut model_origin: HashMap<String, String> = HashMap::new();
    let origin = |loc: &reader::Loc| match &loc.file {
        Some(f) => f.display().to_string(),
        None => loc.path.clone(),
    };

    for pd in &tree.providers {
        let out = providers::resolve_provider(pd, env, &sink);
        // Pass-through parameters set aside by the layout: the common file's, then the model
        // file's (which wins), as the strict reader layers the rest.
        let common_extra = pd.common.as_ref().and_then(|c| pd.extra_params.get(&layout::loc_key(&c.loc)));
        let add_extra = |params: &mut crate::types::Params, own: Option<&serde_json::Map<String, serde_json::Value>>| {
            for src in [common_extra, own].into_iter().flatten() {
                for (k, v) in src {
                    params.extra.insert(k.clone(), v.clone());
                }
            }
        };
        if let Some(mut p) = out.provider {
            add_extra(&mut p.defaults.parameters, None);
            cfg.providers.insert(p.name.clone(), p);
        }
        for (mut m, doc) in out.models {
            let own = pd.extra_params.get(&layout::loc_key(&doc.loc));
            add_extra(&mut m.parameters, own);
            add_model(&mut cfg, &mut model_origin, m, &doc.loc, origin(&doc.loc), &sink);
        }
    }
    for doc in &tree.models {
        if let Some(m) = providers::resolve_flat_model(doc, &cfg.providers, env, &sink) {
            add_model(&mut cfg, &mut model_origin, m, &doc.loc, origin(&doc.loc), &sink);
        }
    }

    let mut group_srcs: HashMap<String, groups::GroupSrc> = HashMap::new();
    for doc in &tree.groups {
        let Some((g, src)) = groups::read_group(doc, &sink) else { continue };
        if let Some(prev) = group_srcs.get(&g.name) {
            sink.push(
                doc.loc.file.as_deref(),
                &doc.loc.key("name"),
                Some(format!("\"{}\"", g.name)),
                format!("duplicate group `{}` (also defined in {})", g.name, origin(&prev.loc)),
            );
            continue;
        }
        group_srcs.insert(g.name.clone(), src);
        cfg.groups.insert(g.name.clone(), g);
    }
    let mut pool_locs: HashMap<String, reader::Loc> = HashMap::new();
    for doc in &tree.pools {
        let Some(p) = groups::read_pool(doc, &sink) else { continue };
        if let Some(prev) = pool_locs.get(&p.name) {
            sink.push(
                doc.loc.file.as_deref(),
                &doc.loc.key("name"),
                Some(format!("\"{}\"", p.name)),
                format!("duplicate pool `{}` (also defined in {})", p.name, origin(prev)),
            );
            continue;
        }
        pool_locs.insert(p.name.clone(), doc.loc.clone());
        cfg.pools.insert(p.name.clone(), p);
    }
    let mut wrapper_locs: HashMap<String, reader::Loc> = HashMap::new();
    for doc in &tree.wrappers {
        let Some(w) = wrappers::read_wrapper(doc, &sink) else { continue };
        if let Some(prev) = wrapper_locs.get(&w.name) {
            sink.push(
                doc.loc.file.as_deref(),
                &doc.loc.key("name"),
                Some(format!("\"{}\"", w.name)),
                format!("duplicate wrapper `{}` (also defined in {})", w.name, origin(prev)),
            );
            continue;
        }
        wrapper_locs.insert(w.name.clone(), doc.loc.clone());
        cfg.wrappers.insert(w.name.clone(), w);
    }
    let mut global_loc = None;
    for (kind, doc) in &tree.globals {
        groups::read_global(*kind, doc, &mut cfg.global, env, &sink);
        if *kind == GlobalKind::Global {
            global_loc = Some(doc.loc.clone());
        }
    }

    validate::check_references(&cfg, &group_srcs, &pool_locs, global_loc.as_ref(), &tree.unavailable, &sink);
    for u in &tree.unavailable {
        cfg.uncallable_models.insert(u.model.clone(), u.reason());
    }
    wrappers::check(&cfg, &wrapper_locs, global_loc.as_ref(), &sink);
    gateway::canonicalize(&mut cfg, global_loc.as_ref(), &sink);

    if !sink.is_empty() {
        let mut issues = sink.take();
        // Stable: per file, in the order found (syntax, keys, then references).
        issues.sort_by(|a, b| a.file.cmp(&b.file));
        return Err(ConfigError { issues });
    }
    let mut notes = sink.take_notes();
    notes.sort_by(|a, b| a.file.cmp(&b.file));
    cfg.load_warnings = warn.take();
    cfg.load_warnings.extend(notes);
    for w in &cfg.load_warnings {
        log::warn!("config: {w}");
    }
    Ok(cfg)
}

fn add_model(cfg: &mut Config, origin: &mut HashMap<String, String>, m: ModelConfig, loc: &reader::Loc, from: String, sink: &Sink) {
    if let Some(prev) = origin.get(&m.name) {
        sink.push(loc.file.as_deref(), &loc.key("name"), Some(format!("\"{}\"", m.name)), format!("duplicate model `{}` (also defined in {prev})", m.name));
        return;
    }
    origin.insert(m.name.clone(), from);
    cfg.models.insert(m.name.clone(), m);
}
