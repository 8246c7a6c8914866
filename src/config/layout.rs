//! Finding the documents of a configuration: the TOML directory, the original YAML layout and
//! JSON trees (Python dicts) all become one [`RawTree`] of JSON documents, each remembering
//! where it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::reader::{did_you_mean, show, type_name, Loc, Sink, Tbl};
use super::source::{deep_merge, interpolate, parse_file, EnvLookup, Format};

/// One document: a provider file, a group, a pool or a global file.
#[derive(Clone, Debug)]
pub(crate) struct Doc {
    pub loc: Loc,
    /// The name it is registered under (registry key, `name` key, file stem or dict key).
    pub name: String,
    pub value: Value,
}

/// A provider: its defaults (`common`) and its model documents.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProviderDocs {
    pub name: String,
    pub common: Option<Doc>,
    pub models: Vec<Doc>,
    /// Parameters taken out of a document's `parameters` before the strict reader sees them,
    /// by [`loc_key`] of the document: they go to the model's `Params.extra` unchanged.
    pub extra_params: HashMap<String, Map<String, Value>>,
}

/// A model the original layout defines but the engine cannot call (its provider's type).
#[derive(Clone, Debug)]
pub(crate) struct Unavailable {
    pub model: String,
    pub provider: String,
    pub kind: String,
}

impl Unavailable {
    /// Why a call to this model cannot be made.
    pub(crate) fn reason(&self) -> String {
        format!("its provider `{}` is of type `{}`, which the engine cannot call", self.provider, self.kind)
    }
}

/// Identifies a document (its file and key path).
pub(crate) fn loc_key(loc: &Loc) -> String {
    format!("{}|{}", loc.file.as_deref().map(|f| f.display().to_string()).unwrap_or_default(), loc.path)
}

/// Provider types of the original that the engine cannot call (a person relays the prompt).
pub(crate) const UNCALLABLE_TYPES: [&str; 1] = ["human_relay"];

/// Generation parameters the strict reader checks (`providers::read_params`); any other
/// parameter passes through to the provider unless it looks like a typo of one of these.
pub(crate) const KNOWN_PARAMS: [&str; 9] = ["temperature", "max_tokens", "top_p", "stop", "timeout", "max_retries", "tool_choice", "response_format", "tools"];

/// Provider-native parameters whose names are close to a known one (`top_k` ~ `top_p`,
/// `stop_sequences` / `store` ~ `stop`): not typos, passed through to the provider in every
/// layout. The provider decides what it does with them.
pub(crate) const NATIVE_PARAMS: [&str; 3] = ["top_k", "stop_sequences", "store"];

/// Which global file a document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GlobalKind {
    /// `global.toml` / the `global` dict key.
    Global,
    /// `global_fallback.yaml`.
    Fallback,
    /// `concurrency_control.yaml`.
    Concurrency,
    /// `rate_limiting.yaml`.
    RateLimiting,
}

/// Every document of one configuration, before interpretation.
#[derive(Debug, Default)]
pub(crate) struct RawTree {
    pub providers: Vec<ProviderDocs>,
    /// Logical models given directly (dict input `models`).
    pub models: Vec<Doc>,
    pub groups: Vec<Doc>,
    pub pools: Vec<Doc>,
    /// Named wrappers (`wrappers/<name>.toml`, dict key `wrappers`).
    pub wrappers: Vec<Doc>,
    pub globals: Vec<(GlobalKind, Doc)>,
    pub root: Option<PathBuf>,
    /// Models of providers the engine cannot call (skipped, original layout only).
    pub unavailable: Vec<Unavailable>,
}

const FILE_EXTS: [&str; 3] = ["toml", "yaml", "yml"];

/// Files that only hold global settings; `inherits_from` pointing at them is accepted and
/// ignored (global settings apply to everything anyway).
fn is_global_file(p: &Path) -> bool {
    matches!(p.file_stem().and_then(|s| s.to_str()), Some("global") | Some("global_fallback"))
}

/// Parses files once (interpolated), and resolves `inherits_from` chains.
pub(crate) struct FileLoader<'a> {
    sink: &'a Sink,
    warn: &'a Sink,
    env: EnvLookup<'a>,
    llms: PathBuf,
    cache: HashMap<PathBuf, Option<Value>>,
}

impl<'a> FileLoader<'a> {
    fn new(sink: &'a Sink, warn: &'a Sink, env: EnvLookup<'a>, llms: PathBuf) -> Self {
        Self { sink, warn, env, llms, cache: HashMap::new() }
    }

    /// The parsed, interpolated file (cached).
    fn load(&mut self, path: &Path) -> Option<Value> {
        if let Some(v) = self.cache.get(path) {
            return v.clone();
        }
        let v = parse_file(path, self.sink).map(|mut v| {
            interpolate(&mut v, self.env, Some(path), "", self.warn);
            v
        });
        if let Some(other) = &v {
            if !other.is_object() {
                self.sink.push(Some(path), "", Some(show(other)), format!("expected a table at the top of the file, found {}", type_name(other)));
            }
        }
        let v = v.filter(Value::is_object);
        self.cache.insert(path.to_path_buf(), v.clone());
        v
    }

    /// The file with its `inherits_from` chain merged in. `implicit` is a file already layered
    /// under this one by the caller (the provider's common file): inheriting it again is a no-op.
    fn load_inherited(&mut self, path: &Path, implicit: Option<&Path>, stack: &mut Vec<PathBuf>) -> Option<Value> {
        let mut v = self.load(path)?;
        let Some(obj) = v.as_object_mut() else {
            return Some(v);
        };
        let Some(inh) = obj.shift_remove("inherits_from") else {
            return Some(v);
        };
        let target = match &inh {
            Value::String(s) => s.clone(),
            other => {
                self.sink.push(Some(path), "inherits_from", Some(show(other)), format!("expected string, found {}", type_name(other)));
                return Some(v);
            }
        };
        // Generation 1 groups say `inherits_from = "../../global.toml"`: global settings apply
        // to everything anyway, so such a reference is accepted (even where the file is absent).
        if is_global_file(Path::new(&target)) {
            return Some(v);
        }
        let Some(parent_path) = self.find_parent(path, &target) else {
            // The original's provider files say `inherits_from: "../common.yaml"` from inside
            // their provider folder; that provider's common file is layered under every model
            // file anyway.
            let is_common = Path::new(&target).file_stem().and_then(|s| s.to_str()) == Some("common");
            if is_common && implicit.is_some() && self.sink.is_original_file(Some(path)) {
                self.sink.note(Some(path), "inherits_from", Some(show(&inh)), "names no file; this provider's own common file is layered under it anyway");
                return Some(v);
            }
            self.sink.push(Some(path), "inherits_from", Some(show(&inh)), "file not found (looked next to this file and under the llms/ directory)");
            return Some(v);
        };
        if implicit.is_some_and(|i| same_file(i, &parent_path)) {
            return Some(v);
        }
        if stack.iter().any(|p| same_file(p, &parent_path)) || stack.len() > 16 {
            self.sink.push(Some(path), "inherits_from", Some(show(&inh)), "inheritance cycle");
            return Some(v);
        }
        stack.push(path.to_path_buf());
        let parent = self.load_inherited(&parent_path, implicit, stack);
        stack.pop();
        match parent {
            Some(p) => Some(deep_merge(p, v)),
            None => Some(v),
        }
    }

    fn find_parent(&self, from: &Path, target: &str) -> Option<PathBuf> {
        let dir = from.parent().unwrap_or(Path::new("."));
        for base in [dir, self.llms.as_path()] {
            let p = base.join(target);
            if p.is_file() {
                return Some(p);
            }
            for ext in FILE_EXTS {
                let q = base.join(format!("{target}.{ext}"));
                if q.is_file() {
                    return Some(q);
                }
            }
        }
        None
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Config files directly in `dir` (sorted, `_`-prefixed files skipped).
fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && Format::of(p).is_some())
            .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('_') || n.starts_with('.')))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn stem(p: &Path) -> String {
    p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
}

/// The first existing `<dir>/<name>.{toml,yaml,yml}`.
fn find_with_ext(dir: &Path, name: &str) -> Option<PathBuf> {
    FILE_EXTS.iter().map(|e| dir.join(format!("{name}.{e}"))).find(|p| p.is_file())
}

/// The `llms/` directory of a config root: `<root>/llms`, or `<root>` itself when it already
/// looks like one.
pub(crate) fn llms_dir(root: &Path) -> Option<PathBuf> {
    let nested = root.join("llms");
    if nested.is_dir() {
        return Some(nested);
    }
    let looks_like =
        ["groups", "provider", "polling_pools", "pools", "task_groups"].iter().any(|d| root.join(d).is_dir()) || find_with_ext(root, "global").is_some();
    looks_like.then(|| root.to_path_buf())
}

/// Read every document of a configuration directory.
pub(crate) fn read_dir_tree(root: &Path, env: EnvLookup<'_>, sink: &Sink, warn: &Sink) -> RawTree {
    let mut tree = RawTree { root: Some(root.to_path_buf()), ..Default::default() };
    if !root.is_dir() {
        sink.push(Some(root), "", None, "config directory not found");
        return tree;
    }
    let Some(llms) = llms_dir(root) else {
        sink.push(Some(root), "", None, "no llms/ directory here (expected <root>/llms/{provider,groups,polling_pools}/ or those directories directly)");
        return tree;
    };
    let mut fl = FileLoader::new(sink, warn, env, llms.clone());

    // Providers: one directory each, `common.*` plus model files (sub-directories included).
    for pdir in subdirs(&llms.join("provider")) {
        let pname = stem(&pdir);
        let common_path = find_with_ext(&pdir, "common");
        let mut pd = ProviderDocs { name: pname.clone(), ..Default::default() };
        if let Some(cp) = &common_path {
            if let Some(v) = fl.load_inherited(cp, None, &mut Vec::new()) {
                pd.common = Some(Doc { loc: Loc::new(Some(cp.clone()), ""), name: pname.clone(), value: v });
            }
        }
        let mut files = Vec::new();
        let mut stack = vec![pdir.clone()];
        while let Some(d) = stack.pop() {
            files.extend(config_files(&d).into_iter().filter(|p| stem(p) != "common"));
            stack.extend(subdirs(&d));
        }
        files.sort();
        for f in files {
            if let Some(v) = fl.load_inherited(&f, common_path.as_deref(), &mut Vec::new()) {
                pd.models.push(Doc { loc: Loc::new(Some(f.clone()), ""), name: stem(&f), value: v });
            }
        }
        if prepare_provider(&mut pd, sink, &mut tree.unavailable) {
            tree.providers.push(pd);
        }
    }

    // Groups and pools: the registry (YAML layout) or every file of the directories.
    let registry = find_with_ext(&llms.join("groups"), "_task_groups");
    let mut reg_groups = Vec::new();
    let mut reg_pools = Vec::new();
    let mut reg_globals = Vec::new();
    let have_registry = registry.is_some();
    if let Some(rp) = &registry {
        if let Some(v) = fl.load(rp) {
            read_registry(rp, &v, &llms, sink, &mut reg_groups, &mut reg_pools, &mut reg_globals);
        }
    }
    let registered = |p: &Path| have_registry && Format::of(p) == Some(Format::Yaml);
    for (name, path) in reg_groups {
        if let Some(v) = fl.load_inherited(&path, None, &mut Vec::new()) {
            warn_name_mismatch(&path, &name, &v);
            tree.groups.push(Doc { loc: Loc::new(Some(path), ""), name, value: v });
        }
    }
    for dir in ["groups", "task_groups"] {
        for f in config_files(&llms.join(dir)).into_iter().filter(|p| !registered(p)) {
            if let Some(v) = fl.load_inherited(&f, None, &mut Vec::new()) {
                let name = name_of(&v, &f);
                tree.groups.push(Doc { loc: Loc::new(Some(f), ""), name, value: v });
            }
        }
    }
    for (name, path) in reg_pools {
        if let Some(v) = fl.load_inherited(&path, None, &mut Vec::new()) {
            warn_name_mismatch(&path, &name, &v);
            tree.pools.push(Doc { loc: Loc::new(Some(path), ""), name, value: v });
        }
    }
    for dir in ["polling_pools", "pools"] {
        for f in config_files(&llms.join(dir)).into_iter().filter(|p| !registered(p)) {
            if let Some(v) = fl.load_inherited(&f, None, &mut Vec::new()) {
                let name = name_of(&v, &f);
                tree.pools.push(Doc { loc: Loc::new(Some(f), ""), name, value: v });
            }
        }
    }
    for f in config_files(&llms.join("wrappers")) {
        if let Some(v) = fl.load(&f) {
            let name = name_of(&v, &f);
            tree.wrappers.push(Doc { loc: Loc::new(Some(f), ""), name, value: v });
        }
    }
    // Generation-2 combined files: `[task_groups.<name>]` / `[pools.<name>]`.
    for (file, key, is_group) in [("task_groups", "task_groups", true), ("pools", "pools", false)] {
        if let Some(p) = find_with_ext(&llms, file) {
            if let Some(v) = fl.load(&p) {
                let docs = combined_docs(&p, key, &v, sink);
                if is_group {
                    tree.groups.extend(docs);
                } else {
                    tree.pools.extend(docs);
                }
            }
        }
    }

    // Global files.
    if let Some(p) = find_with_ext(&llms, "global") {
        if let Some(v) = fl.load(&p) {
            tree.globals.push((GlobalKind::Global, Doc { loc: Loc::new(Some(p), ""), name: "global".into(), value: v }));
        }
    }
    let mut seen_globals: Vec<GlobalKind> = Vec::new();
    for (kind, path) in reg_globals {
        if let Some(v) = fl.load(&path) {
            seen_globals.push(kind);
            tree.globals.push((kind, Doc { loc: Loc::new(Some(path), ""), name: "global".into(), value: v }));
        }
    }
    if !have_registry {
        for (kind, name) in
            [(GlobalKind::Fallback, "global_fallback"), (GlobalKind::Concurrency, "concurrency_control"), (GlobalKind::RateLimiting, "rate_limiting")]
        {
            if seen_globals.contains(&kind) {
                continue;
            }
            if let Some(p) = find_with_ext(&llms, name) {
                if let Some(v) = fl.load(&p) {
                    tree.globals.push((kind, Doc { loc: Loc::new(Some(p), ""), name: "global".into(), value: v }));
                }
            }
        }
    }
    tree
}

fn combined_docs(file: &Path, key: &str, v: &Value, sink: &Sink) -> Vec<Doc> {
    let Some(obj) = v.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, val) in obj {
        if k != key {
            sink.push(Some(file), k, Some(show(val)), format!("unknown key `{k}`{}", did_you_mean(k, [key])));
            continue;
        }
        match val.as_object() {
            Some(m) => {
                for (name, doc) in m {
                    out.push(Doc { loc: Loc::new(Some(file.to_path_buf()), format!("{key}.{name}")), name: name.clone(), value: doc.clone() });
                }
            }
            None => sink.push(Some(file), k, Some(show(val)), format!("expected table, found {}", type_name(val))),
        }
    }
    out
}

fn name_of(v: &Value, path: &Path) -> String {
    match v.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => stem(path),
    }
}

fn warn_name_mismatch(path: &Path, registry_name: &str, v: &Value) {
    if let Some(Value::String(n)) = v.get("name") {
        if n != registry_name {
            log::warn!("{}: name `{n}` differs from the registry name `{registry_name}`; the registry name is used", path.display());
        }
    }
}

/// The YAML registry `groups/_task_groups.yaml`.
fn read_registry(
    rp: &Path,
    v: &Value,
    llms: &Path,
    sink: &Sink,
    groups: &mut Vec<(String, PathBuf)>,
    pools: &mut Vec<(String, PathBuf)>,
    globals: &mut Vec<(GlobalKind, PathBuf)>,
) {
    let Some(mut t) = Tbl::of(sink, Loc::new(Some(rp.to_path_buf()), ""), v) else {
        return;
    };
    t.ignore(&["loading_options", "description", "version", "name"]);
    for (section, out) in [("task_groups", &mut *groups), ("polling_pools", &mut *pools)] {
        let Some(sec) = t.table(if section == "task_groups" { "task_groups" } else { "polling_pools" }) else {
            continue;
        };
        for (name, entry) in sec.map() {
            if let Some((file, enabled)) = registry_entry(&sec.loc.child(name), entry, sink) {
                if !enabled {
                    continue;
                }
                let path = llms.join(&file);
                if path.is_file() {
                    out.push((name.clone(), path));
                } else if sink.is_original_file(Some(rp)) {
                    // The original skipped a registered file it could not load.
                    sink.note(
                        Some(rp),
                        &sec.loc.child(name).key("file"),
                        Some(format!("\"{file}\"")),
                        format!("file not found: {}; `{name}` is skipped", path.display()),
                    );
                } else {
                    sink.push(Some(rp), &sec.loc.child(name).key("file"), Some(format!("\"{file}\"")), format!("file not found: {}", path.display()));
                }
            }
        }
    }
    if let Some(sec) = t.table("global_configs") {
        let mut sec = sec;
        for (key, kind) in
            [("global_fallback", GlobalKind::Fallback), ("concurrency_control", GlobalKind::Concurrency), ("rate_limiting", GlobalKind::RateLimiting)]
        {
            let Some(entry) = sec.get(key) else { continue };
            if let Some((file, enabled)) = registry_entry(&sec.loc.child(key), entry, sink) {
                if !enabled {
                    continue;
                }
                let path = llms.join(&file);
                if path.is_file() {
                    globals.push((kind, path));
                } else if let Some(p) = find_with_ext(llms, key) {
                    globals.push((kind, p));
                } else {
                    sink.push(Some(rp), &sec.loc.child(key).key("file"), Some(format!("\"{file}\"")), format!("file not found: {}", path.display()));
                }
            }
        }
        sec.done();
    }
    t.done();
}

fn registry_entry(loc: &Loc, v: &Value, sink: &Sink) -> Option<(String, bool)> {
    let mut e = Tbl::of(sink, loc.clone(), v)?;
    e.ignore(&["description"]);
    let enabled = e.bool("enabled").unwrap_or(true);
    let file = e.str("file");
    if file.is_none() && !e.has("file") {
        e.err("file", None, "missing required key `file`");
    }
    e.done();
    Some((file?, enabled))
}

/// Read a JSON tree (a Python dict) shaped like the directory.
pub(crate) fn read_json_tree(input: &Value, env: EnvLookup<'_>, sink: &Sink, warn: &Sink) -> RawTree {
    let mut tree = RawTree::default();
    let mut v = input.clone();
    // `{"llms": {...}}` is the same tree one level down.
    if let Some(inner) = v.as_object().and_then(|m| if m.len() == 1 { m.get("llms").cloned() } else { None }) {
        v = inner;
    }
    interpolate(&mut v, env, None, "", warn);
    let Some(mut t) = Tbl::of(sink, Loc::new(None, ""), &v) else {
        return tree;
    };
    // `layout = "original"`: the tree holds the original YAML layout's documents (what
    // `echelon.compat` builds from them), read as leniently as the YAML files themselves.
    if let Some(l) = t.choice("layout", &["original", "echelon"]) {
        sink.set_original_dicts(l == "original");
    }

    if let Some(pt) = t.table("providers") {
        for (pname, pv) in pt.map() {
            let ploc = pt.loc.child(pname);
            let Some(pm) = pv.as_object() else {
                sink.push(None, &ploc.path, Some(show(pv)), format!("expected table, found {}", type_name(pv)));
                continue;
            };
            let mut pd = ProviderDocs { name: pname.clone(), ..Default::default() };
            // A provider given as one flat table is its common defaults.
            let flat = ["type", "base_url", "api_key", "model_type", "provider_type", "headers", "timeout"]
                .iter()
                .any(|k| pm.get(*k).is_some_and(|x| !x.is_object() || *k == "headers"));
            if flat {
                pd.common = Some(Doc { loc: ploc.clone(), name: pname.clone(), value: pv.clone() });
            } else {
                for (mname, mv) in pm {
                    let mloc = ploc.child(mname);
                    if !mv.is_object() {
                        sink.push(None, &mloc.path, Some(show(mv)), format!("expected table, found {}", type_name(mv)));
                        continue;
                    }
                    let value = json_inherit(mv, pm, &mloc, sink, 0);
                    let doc = Doc { loc: mloc, name: mname.clone(), value };
                    if mname == "common" {
                        pd.common = Some(doc);
                    } else {
                        pd.models.push(doc);
                    }
                }
            }
            if prepare_provider(&mut pd, sink, &mut tree.unavailable) {
                tree.providers.push(pd);
            }
        }
    }
    if let Some(mt) = t.table("models") {
        for (name, mv) in mt.map() {
            let loc = mt.loc.child(name);
            let value = json_inherit(mv, mt.map(), &loc, sink, 0);
            tree.models.push(Doc { loc, name: name.clone(), value });
        }
    }
    for (keys, is_group) in [(&["groups", "task_groups"][..], true), (&["pools", "polling_pools"][..], false)] {
        for k in keys {
            if let Some(gt) = t.table(k) {
                for (name, gv) in gt.map() {
                    let loc = gt.loc.child(name);
                    let value = json_inherit(gv, gt.map(), &loc, sink, 0);
                    let doc = Doc { loc, name: name.clone(), value };
                    if is_group {
                        tree.groups.push(doc);
                    } else {
                        tree.pools.push(doc);
                    }
                }
            }
        }
    }
    if let Some(wt) = t.table("wrappers") {
        for (name, wv) in wt.map() {
            tree.wrappers.push(Doc { loc: wt.loc.child(name), name: name.clone(), value: wv.clone() });
        }
    }
    for (key, kind) in [
        ("global", GlobalKind::Global),
        ("global_fallback", GlobalKind::Fallback),
        ("concurrency_control", GlobalKind::Concurrency),
        ("rate_limiting", GlobalKind::RateLimiting),
    ] {
        if let Some(gv) = t.get(key) {
            tree.globals.push((kind, Doc { loc: Loc::new(None, key), name: key.into(), value: gv.clone() }));
        }
    }
    t.done();
    tree
}

/// `inherits_from` inside a dict tree names a sibling entry (extension and directories
/// ignored); `common` is layered implicitly and global files are ignored.
fn json_inherit(v: &Value, siblings: &Map<String, Value>, loc: &Loc, sink: &Sink, depth: usize) -> Value {
    let Some(obj) = v.as_object() else {
        return v.clone();
    };
    let Some(inh) = obj.get("inherits_from") else {
        return v.clone();
    };
    let mut own = obj.clone();
    own.shift_remove("inherits_from");
    let Some(target) = inh.as_str() else {
        sink.push(None, &loc.key("inherits_from"), Some(show(inh)), format!("expected string, found {}", type_name(inh)));
        return Value::Object(own);
    };
    let name = Path::new(target).file_stem().and_then(|s| s.to_str()).unwrap_or(target);
    if name == "common" || name == "global" || name == "global_fallback" {
        return Value::Object(own);
    }
    match siblings.get(name) {
        Some(parent) if depth < 16 => {
            let p = json_inherit(parent, siblings, loc, sink, depth + 1);
            deep_merge(p, Value::Object(own))
        }
        Some(_) => {
            sink.push(None, &loc.key("inherits_from"), Some(show(inh)), "inheritance cycle");
            Value::Object(own)
        }
        None => {
            let hint = did_you_mean(name, siblings.keys().map(String::as_str));
            sink.push(None, &loc.key("inherits_from"), Some(show(inh)), format!("no entry `{name}` to inherit from{hint}"));
            Value::Object(own)
        }
    }
}

/// The type a provider document declares (`type`, `model_type` or `provider_type`).
fn declared_type(v: &Value) -> Option<&str> {
    ["type", "model_type", "provider_type"].iter().find_map(|k| v.get(*k).and_then(Value::as_str))
}

/// Get a provider's documents ready for the strict reader: parameters that pass through are
/// set aside ([`ProviderDocs::extra_params`]); in the original layout, null parameters are
/// dropped (null means "not set") and a provider of a type the engine cannot call is skipped
/// with a warning. Returns whether the provider is kept.
fn prepare_provider(pd: &mut ProviderDocs, sink: &Sink, unavailable: &mut Vec<Unavailable>) -> bool {
    let docs: Vec<&Doc> = pd.common.iter().chain(pd.models.iter()).collect();
    let original = docs.iter().any(|d| sink.is_original(&d.loc));
    if original {
        if let Some((doc, kind)) = docs.iter().find_map(|d| declared_type(&d.value).filter(|k| UNCALLABLE_TYPES.contains(k)).map(|k| (*d, k.to_string()))) {
            let names: Vec<String> = pd.models.iter().map(model_name_of).collect();
            sink.note(
                doc.loc.file.as_deref(),
                &doc.loc.key("model_type"),
                Some(format!("\"{kind}\"")),
                format!(
                    "provider `{}` is of type `{kind}`, which the engine cannot call (a person relays the prompt): not loaded{}; a call routed to one fails",
                    pd.name,
                    if names.is_empty() { String::new() } else { format!(" (its models: {})", names.join(", ")) }
                ),
            );
            for model in names {
                unavailable.push(Unavailable { model, provider: pd.name.clone(), kind: kind.clone() });
            }
            return false;
        }
    }
    let mut extras = HashMap::new();
    if let Some(c) = pd.common.as_mut() {
        let e = take_extra_params(c, sink);
        if !e.is_empty() {
            extras.insert(loc_key(&c.loc), e);
        }
    }
    for d in pd.models.iter_mut() {
        let e = take_extra_params(d, sink);
        if !e.is_empty() {
            extras.insert(loc_key(&d.loc), e);
        }
    }
    pd.extra_params = extras;
    true
}

/// The logical model name a provider model document defines (its `name`, else the file stem
/// or dict key).
fn model_name_of(d: &Doc) -> String {
    match d.value.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        _ => d.name.clone(),
    }
}

/// Take the pass-through parameters out of a document's `parameters` (or, when it has none,
/// `default_parameters`, the table the strict reader reads). Provider-native names
/// ([`NATIVE_PARAMS`]) are taken in every layout; in the original layout null values are
/// dropped and names close to a known parameter are passed through with a warning.
fn take_extra_params(doc: &mut Doc, sink: &Sink) -> Map<String, Value> {
    let original = sink.is_original(&doc.loc);
    let mut out = Map::new();
    let key = match doc.value.get("parameters") {
        Some(v) if !v.is_null() => "parameters",
        _ => "default_parameters",
    };
    let loc = doc.loc.child(key);
    let Some(Value::Object(p)) = doc.value.get_mut(key) else {
        return out;
    };
    if original {
        p.retain(|_, v| !v.is_null());
    }
    let moved: Vec<String> = p
        .keys()
        .filter(|k| !KNOWN_PARAMS.contains(&k.as_str()))
        .filter(|k| NATIVE_PARAMS.contains(&k.as_str()) || (original && !did_you_mean(k, KNOWN_PARAMS).is_empty()))
        .cloned()
        .collect();
    for k in moved {
        let Some(v) = p.shift_remove(&k) else { continue };
        if !NATIVE_PARAMS.contains(&k.as_str()) {
            sink.note(
                loc.file.as_deref(),
                &loc.key(&k),
                Some(show(&v)),
                format!("parameter `{k}` is passed to the provider unchanged (not a parameter the engine knows{})", did_you_mean(&k, KNOWN_PARAMS)),
            );
        }
        out.insert(k, v);
    }
    out
}
