//! The module tree stays a tree of layers: no file of either crate imports
//! a file that imports it back, directly or through others, whether the two
//! sit in one module or in two; so no top-level module reaches a module
//! that reaches back either.
//!
//! A file imports another when a `use` or a path in its code (tests left
//! out) names an item the other defines: `crate::`, `self::`, `super::` and
//! child-module paths are followed through the `use` declarations that
//! re-export the item, to the file that holds it. A `mod.rs` that only
//! declares and re-exports its children imports them, and is imported by
//! nobody.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

#[derive(Default)]
struct Module {
    /// The file that holds the module (an inline `mod` shares its file).
    file: PathBuf,
    /// Names a `use` in the module binds, with the path they name.
    uses: BTreeMap<String, ModPath>,
    /// Paths the module's code names, as written (`use` trees expanded).
    paths: Vec<ModPath>,
}

struct Crate {
    src: PathBuf,
    modules: BTreeMap<ModPath, Module>,
}

/// Whether `attrs` compile the item only for tests.
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|list| {
                list.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|word| word == "test")
            })
    })
}

/// Every path of a `use` tree, and the name each binds (`None`: a glob).
fn use_paths(tree: &syn::UseTree, prefix: &mut ModPath, out: &mut Vec<(Option<String>, ModPath)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) if n.ident == "self" => {
            out.push((prefix.last().cloned(), prefix.clone()));
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            path.push(n.ident.to_string());
            out.push((Some(n.ident.to_string()), path));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push((Some(r.rename.to_string()), path));
        }
        syn::UseTree::Glob(_) => out.push((None, prefix.clone())),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_paths(tree, prefix, out);
            }
        }
    }
}

/// The paths of two segments or more that code names (a single segment
/// never names another module's item).
#[derive(Default)]
struct Paths(Vec<ModPath>);

impl<'ast> Visit<'ast> for Paths {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            self.0
                .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Inline modules are read on their own, with their own scope.
    }

    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {
        // Read on their own, for the names they bind.
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(in crate::a)` names who may see an item, not what it uses.
    }
}

impl Crate {
    fn read(src: &Path) -> Self {
        let mut krate = Crate {
            src: src.to_owned(),
            modules: BTreeMap::new(),
        };
        let root = src.join("lib.rs");
        let file = parse(&root);
        krate.add(Vec::new(), &root, src, &file.items);
        krate
    }

    /// The module at `path`, held by `file`, with `items`; its child files
    /// sit in `dir`.
    fn add(&mut self, path: ModPath, file: &Path, dir: &Path, items: &[syn::Item]) {
        let mut module = Module {
            file: file.to_owned(),
            ..Module::default()
        };
        for item in items {
            match item {
                syn::Item::Mod(m) if test_only(&m.attrs) => {}
                syn::Item::Mod(m) => {
                    let name = m.ident.to_string();
                    let mut child = path.clone();
                    child.push(name.clone());
                    match &m.content {
                        Some((_, inner)) => self.add(child, file, &dir.join(&name), inner),
                        None => {
                            let flat = dir.join(format!("{name}.rs"));
                            let (child_file, child_dir) = if flat.exists() {
                                (flat, dir.join(&name))
                            } else {
                                (dir.join(&name).join("mod.rs"), dir.join(&name))
                            };
                            let parsed = parse(&child_file);
                            self.add(child, &child_file, &child_dir, &parsed.items);
                        }
                    }
                }
                syn::Item::Use(u) if !test_only(&u.attrs) => {
                    let mut found = Vec::new();
                    use_paths(&u.tree, &mut Vec::new(), &mut found);
                    for (name, used) in found {
                        if let Some(name) = name {
                            module.uses.insert(name, used.clone());
                        }
                        module.paths.push(used);
                    }
                }
                other => {
                    if !item_attrs(other).is_some_and(test_only) {
                        let mut paths = Paths::default();
                        paths.visit_item(other);
                        module.paths.extend(paths.0);
                    }
                }
            }
        }
        self.modules.insert(path, module);
    }

    /// `path`, written in module `at`, from the crate root; `None` when it
    /// starts outside the crate (another crate, a local name, `Self`).
    fn absolute(&self, at: &[String], path: &[String]) -> Option<ModPath> {
        let (first, rest) = path.split_first()?;
        let mut base: ModPath = match first.as_str() {
            "crate" => Vec::new(),
            "self" => at.to_vec(),
            "super" => {
                let mut base = at.to_vec();
                base.pop()?;
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                return Some(base);
            }
            _ => {
                let mut child = at.to_vec();
                child.push(first.clone());
                if !self.modules.contains_key(&child) {
                    return None;
                }
                return Some(child.into_iter().chain(rest.iter().cloned()).collect());
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module that defines what the absolute `path` names, following
    /// re-exports.
    fn defining(&self, path: &[String], depth: usize) -> ModPath {
        let mut len = 0;
        while len < path.len() && self.modules.contains_key(&path[..=len]) {
            len += 1;
        }
        let module = path[..len].to_vec();
        if len < path.len() && depth < 16 {
            if let Some(used) = self.modules[&module].uses.get(&path[len]) {
                if let Some(target) = self.absolute(&module, used) {
                    let mut target = target;
                    target.extend(path[len + 1..].iter().cloned());
                    return self.defining(&target, depth + 1);
                }
            }
        }
        module
    }

    /// Each file, and the files it imports (itself left out).
    fn file_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (at, module) in &self.modules {
            let from = self.name(&module.file);
            let targets = graph.entry(from.clone()).or_default();
            for path in &module.paths {
                let Some(absolute) = self.absolute(at, path) else {
                    continue;
                };
                let to = self.name(&self.modules[&self.defining(&absolute, 0)].file);
                if to != from {
                    targets.insert(to);
                }
            }
        }
        graph
    }

    /// Each file, and the names its code (tests left out) reaches in this
    /// crate: every segment of each path it writes, from the crate root.
    fn names_reached(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (at, module) in &self.modules {
            let reached = names.entry(self.name(&module.file)).or_default();
            for path in &module.paths {
                if let Some(absolute) = self.absolute(at, path) {
                    reached.extend(absolute);
                }
            }
        }
        names
    }

    /// Each top-level module, and the top-level modules its files import.
    fn top_level_graph(&self) -> BTreeMap<String, BTreeSet<String>> {
        let top = |file: &str| file.split(['/', '.']).next().unwrap_or_default().to_owned();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, targets) in self.file_graph() {
            if from == "lib.rs" {
                continue;
            }
            let module = top(from.as_str());
            let entry = graph.entry(module.clone()).or_default();
            entry.extend(
                targets
                    .iter()
                    .filter(|t| t.as_str() != "lib.rs")
                    .map(|t| top(t.as_str()))
                    .filter(|t| *t != module),
            );
        }
        graph
    }

    fn name(&self, file: &Path) -> String {
        file.strip_prefix(&self.src)
            .expect("below src")
            .to_string_lossy()
            .into_owned()
    }
}

fn item_attrs(item: &syn::Item) -> Option<&[syn::Attribute]> {
    Some(match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        _ => return None,
    })
}

fn parse(file: &Path) -> syn::File {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()))
}

/// Every cycle of `graph`, one per group of nodes that reach each other,
/// written `a → b → … → a`.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph.get(from).into_iter().flatten().collect();
        while let Some(next) = stack.pop() {
            if seen.insert(next.clone()) {
                stack.extend(graph.get(next).into_iter().flatten());
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if reported.contains(node) || !reached[node].contains(node) {
            continue;
        }
        let group: BTreeSet<&String> = reached[node]
            .iter()
            .filter(|m| reached.get(m).is_some_and(|r| r.contains(node)))
            .collect();
        reported.extend(group.iter().map(|m| (*m).clone()));
        found.push(shortest_cycle(graph, node).join(" → "));
    }
    found
}

/// The shortest path `from` → … → `from`.
fn shortest_cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &String) -> Vec<String> {
    let mut paths = std::collections::VecDeque::from([vec![from.clone()]]);
    let mut seen = BTreeSet::new();
    while let Some(path) = paths.pop_front() {
        for next in graph
            .get(path.last().expect("non-empty"))
            .into_iter()
            .flatten()
        {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == from {
                return longer;
            }
            if seen.insert(next.clone()) {
                paths.push_back(longer);
            }
        }
    }
    Vec::new()
}

fn read(src: &str) -> Crate {
    Crate::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join(src))
}

#[test]
fn no_file_of_the_collector_imports_a_file_that_imports_it_back() {
    let cycles: Vec<String> = cycles(&read("src").file_graph());
    assert_eq!(cycles, Vec::<String>::new());
}

#[test]
fn no_top_level_module_of_the_collector_imports_one_that_imports_it_back() {
    assert_eq!(cycles(&read("src").top_level_graph()), Vec::<String>::new());
}

#[test]
fn no_file_of_the_double_imports_a_file_that_imports_it_back() {
    let double = read("crates/openmeter-double/src");
    assert_eq!(cycles(&double.file_graph()), Vec::<String>::new());
}

#[test]
fn no_top_level_module_of_the_double_imports_one_that_imports_it_back() {
    let double = read("crates/openmeter-double/src");
    assert_eq!(cycles(&double.top_level_graph()), Vec::<String>::new());
}

#[test]
fn a_child_importing_its_parents_own_item_is_a_cycle_and_a_re_export_is_not() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path();
    std::fs::create_dir(src.join("a")).expect("a module directory");
    let write = |file: &str, text: &str| std::fs::write(src.join(file), text).expect("writable");
    write("lib.rs", "mod a;\n");
    write(
        "a/mod.rs",
        "mod b;\nmod c;\nmod d;\npub(crate) use c::C;\npub(crate) struct A;\nfn f() { b::g(); }\n",
    );
    write(
        "a/b.rs",
        "use super::C;\npub(crate) fn g() { let _ = super::A; }\n",
    );
    write("a/c.rs", "pub(crate) struct C;\n");
    write("a/d.rs", "use super::C;\n");
    let graph = Crate::read(src).file_graph();
    assert_eq!(
        graph["a/b.rs"],
        BTreeSet::from(["a/c.rs".to_owned(), "a/mod.rs".to_owned()])
    );
    assert_eq!(graph["a/d.rs"], BTreeSet::from(["a/c.rs".to_owned()]));
    assert_eq!(cycles(&graph), vec!["a/b.rs → a/mod.rs → a/b.rs"]);
}

/// The stages return outcomes; `settle` acts on them. So no stage holds
/// the offset tracker, the dead-letter sink or the settler.
#[test]
fn the_stages_hold_neither_the_offset_tracker_nor_the_dead_letter_sink_nor_the_settler() {
    let stages = ["decode/", "map/", "ensure/", "deliver/"];
    let held = ["OffsetTracker", "DeadLetterSink", "Settler"];
    let mut reached = Vec::new();
    for (file, names) in read("src").names_reached() {
        if stages.iter().any(|stage| file.starts_with(stage)) {
            reached.extend(
                held.iter()
                    .filter(|name| names.contains(**name))
                    .map(|name| format!("{file} → {name}")),
            );
        }
    }
    assert_eq!(reached, Vec::<String>::new());
}

/// ARCHITECTURE.md's module table names each top-level module of
/// `src/lib.rs`, and nothing else.
#[test]
fn architecture_names_every_top_level_module_and_no_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture =
        std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let table = architecture
        .split("## Modules")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a \"## Modules\" section");
    let named: BTreeSet<String> = table
        .lines()
        .filter_map(|row| row.strip_prefix("| `"))
        .filter_map(|row| row.split(" |").next())
        .flat_map(|cell| cell.split(", "))
        .map(|name| name.trim_matches('`').to_owned())
        .collect();
    let declared: BTreeSet<String> = parse(&root.join("src/lib.rs"))
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(named, declared);
}
