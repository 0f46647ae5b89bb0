//! The module tree stays a tree of layers: no top-level module of either
//! crate reaches, through `crate::…` paths, a module that reaches back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// Each top-level module of the crate at `src`, and the top-level modules
/// its files name through `crate::…` (comments left out).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let path = Regex::new(r"\bcrate::(\w+)").expect("regex");
    let group = Regex::new(r"\bcrate::\{([^}]*)\}").expect("regex");
    let comment = Regex::new(r"//.*").expect("regex");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("below src");
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let text = comment.replace_all(&text, "");
        let mut names: BTreeSet<String> =
            path.captures_iter(&text).map(|c| c[1].to_owned()).collect();
        for list in group.captures_iter(&text) {
            names.extend(
                list[1]
                    .split(',')
                    .filter_map(|p| p.split("::").next())
                    .map(|p| p.trim().to_owned()),
            );
        }
        names.remove(&module);
        graph.entry(module).or_default().extend(names);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A path `from` → … → `from`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty");
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

fn cycles(src: &str) -> Vec<String> {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join(src));
    graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" → "))
        .collect()
}

#[test]
fn the_collectors_modules_import_no_cycle() {
    assert_eq!(cycles("src"), Vec::<String>::new());
}

#[test]
fn the_doubles_modules_import_no_cycle() {
    assert_eq!(cycles("crates/openmeter-double/src"), Vec::<String>::new());
}
