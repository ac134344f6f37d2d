//! Keeps the crate's layers pointing down. Reads every file under `src/` (code only: comments and
//! `#[cfg(test)] mod tests` blocks left out), collects the `crate::` and `super::` paths it uses,
//! and checks that
//! - a top-level module imports only modules of a lower layer (or a named sibling of its own), so
//!   the top-level import graph has no cycle;
//! - inside a module folder the files form no cycle, except `model/llama ↔ lora` (a `Linear`
//!   carries its adapter).
//!
//! The layers, lowest first, are in [`LAYERS`]; the README's "Layout" section draws the same.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may use any module of a lower layer, and of its own layer only what
/// [`SAME_LAYER`] allows.
const LAYERS: &[&[&str]] = &[
    // Plain types and facts: the job specification, ids, settings, logging, the machine.
    &[
        "spec",
        "ids",
        "config",
        "blob_location",
        "telemetry",
        "machine",
        "devices",
        "allocator",
        "threads",
        "private_files",
        "testing",
    ],
    &["tokenizer"],
    // The network, chat templates and loss masks, dataset validation.
    &["model", "chat", "datasets"],
    // The synchronous trainer; the store of record and the blob store.
    &["train", "store", "blob"],
    // Live updates: store rows fanned out to watchers.
    &["stream"],
    // What jobs, models, cleaning and inference mean to the service (jobs announce through the
    // stream).
    &[
        "jobs",
        "catalog",
        "infer",
        "cleaning",
        "tenants",
        "retention",
    ],
    &["state"],
    // The two front doors: HTTP (the routes and the connection loop) and the worker slots.
    &["error", "auth", "api", "http_server", "worker"],
    // The composition root.
    &["app"],
    &["cli_train", "cli_clean", "cli_export", "cli", "main"],
];

/// Imports allowed between modules of one layer.
const SAME_LAYER: &[(&str, &str)] = &[
    ("api", "auth"),
    ("api", "error"),
    ("auth", "error"),
    ("cli", "cli_train"),
    ("cli", "cli_clean"),
    ("cli", "cli_export"),
    ("config", "blob_location"),
    ("config", "devices"),
    ("spec", "devices"),
    ("devices", "machine"),
];

/// Cycles allowed inside a module folder.
const ALLOWED_CYCLES: &[&[&str]] = &[&["model::llama", "model::lora"]];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of tests/layering.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/train/sft.rs` is `["train", "sft"]`, `src/train/mod.rs` and
/// `src/train.rs` are `["train"]`, `src/lib.rs` is `[]`, `src/main.rs` is `["main"]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file's code without comments and without its unit-test module.
fn code_of(text: &str) -> String {
    // The unit tests sit at the end of a file, after `#[cfg(test)]` and `mod tests` (or
    // `pub(crate) mod tests`).
    let end = text
        .match_indices("#[cfg(test)]")
        .map(|(i, _)| i)
        .find(|&i| {
            text[i + "#[cfg(test)]".len()..]
                .trim_start()
                .lines()
                .next()
                .is_some_and(|l| l.contains("mod tests"))
        })
        .unwrap_or(text.len());
    let text = &text[..end];
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands a `use` tree (`crate::{a::b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    // Renames (`tokenizer as tok`) name the same module: drop `as` and the new name, keeping the
    // punctuation after it.
    let mut words = Vec::new();
    let mut it = tree.split_whitespace();
    while let Some(w) = it.next() {
        if w == "as" {
            let renamed = it.next().unwrap_or_default();
            words.push(renamed.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
        } else {
            words.push(w);
        }
    }
    let tree: String = words.concat();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len() - 1];
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use(&format!("{prefix}{p}")))
        .collect()
}

/// Every path the code names that starts with `crate::` or `super::`.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    // `use` statements, whose braces hide paths from a plain scan.
    while let Some(i) = rest.find("use ") {
        let before_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let after = &rest[i + 4..];
        if let (true, Some(end)) = (before_ok, after.find(';')) {
            out.extend(expand_use(&after[..end]));
        }
        rest = after;
    }
    // Paths written inline.
    for prefix in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(prefix) {
            let start = from + i;
            let end = code[start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| start + e);
            out.push(code[start..end].to_string());
            from = end;
        }
    }
    out.retain(|p| p.starts_with("crate::") || p.starts_with("super::"));
    out
}

/// Resolves `path` as written in module `module` to an absolute path below the crate
/// (`super::job::TrainJob` in `train::sft` is `train::job::TrainJob`).
fn resolve(module: &[String], path: &str) -> Vec<String> {
    let mut segs = path.split("::").filter(|s| !s.is_empty()).peekable();
    let mut base: Vec<String> = module.to_vec();
    if segs.peek() == Some(&"crate") {
        segs.next();
        base.clear();
    }
    while segs.peek() == Some(&"super") {
        segs.next();
        base.pop();
    }
    base.extend(segs.map(str::to_string));
    base
}

struct Graph {
    /// Top-level module -> top-level modules it uses.
    top: BTreeMap<String, BTreeSet<String>>,
    /// `folder::file` -> files of the same folder it uses (`train::sft` -> `train::job`).
    inner: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut inner: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_path(&src, &file);
        // lib.rs only declares the modules.
        let Some(me) = module.first().cloned() else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for p in paths_in(&code) {
            let target = resolve(&module, &p);
            let Some(first) = target.first() else {
                continue;
            };
            // `crate::with_db!` is the store's macro, exported at the crate root.
            let first = if first == "with_db" { "store" } else { first };
            if first != me {
                top.entry(me.clone()).or_default().insert(first.to_string());
            } else if module.len() >= 2 {
                // A file using a sibling file of its folder.
                let depth = module.len() - 1;
                let folder = &module[..depth];
                if target.len() > depth
                    && target[..depth] == *folder
                    && target[depth] != module[depth]
                {
                    let sibling = [folder, &target[depth..=depth]].concat().join("::");
                    inner.entry(module.join("::")).or_default().insert(sibling);
                }
            }
        }
    }
    Graph { top, inner }
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn modules_import_only_layers_below_them() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.top {
        for to in tos {
            let (lf, lt) = (layer_of(from), layer_of(to));
            let allowed =
                lt < lf || (lt == lf && SAME_LAYER.contains(&(from.as_str(), to.as_str())));
            if !allowed {
                wrong.push(format!("{from} (layer {lf}) uses {to} (layer {lt})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    assert!(cycles(&g.top).is_empty(), "{:?}", cycles(&g.top));
}

#[test]
fn files_inside_a_module_form_no_cycle() {
    let g = graph();
    let found: Vec<BTreeSet<String>> = cycles(&g.inner)
        .into_iter()
        .filter(|c| {
            !ALLOWED_CYCLES
                .iter()
                .any(|a| c == &a.iter().map(|s| s.to_string()).collect())
        })
        .collect();
    assert!(found.is_empty(), "cycles between files: {found:?}");
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    // The parser reads grouped and inline paths, and `super` from files and from mod.rs.
    let code = "use crate::{store::{self, Db}, train::job::TrainJob, tokenizer as tok};\nfn f() { crate::blob::keys::file(); }";
    let paths = paths_in(code);
    for want in [
        "crate::store::self",
        "crate::store::Db",
        "crate::train::job::TrainJob",
        "crate::tokenizer",
        "crate::blob::keys::file",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
    let sft = ["train".to_string(), "sft".to_string()];
    assert_eq!(
        resolve(&sft, "super::job::TrainJob"),
        ["train", "job", "TrainJob"]
    );
    assert_eq!(resolve(&["train".into()], "super::spec"), ["spec"]);
    assert_eq!(resolve(&sft, "crate::model::Llama"), ["model", "Llama"]);
    // A two-node cycle is found, a chain is not.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(cycles(&g).is_empty());
    g.entry("c".into()).or_default().insert("b".into());
    assert_eq!(
        cycles(&g),
        vec![BTreeSet::from(["b".to_string(), "c".to_string()])]
    );
    // The real graph has edges (the scan is not silently empty).
    assert!(graph().top.get("api").is_some_and(|t| t.contains("store")));
}
