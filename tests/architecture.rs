//! The shape of `src/`, as docs/ARCHITECTURE.md ("Module map") states it: no import cycle
//! between top-level modules, no file over 800 lines, and every document the code cites
//! exists in the repository (with the section it names).
//!
//! An arrow `a → b` is a `crate::b` path anywhere in module `a` (its file or directory),
//! `use crate::{b, …}` groups included; `main.rs` and `lib.rs` are not modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a source text names with `crate::`.
fn arrows_in(text: &str) -> BTreeSet<String> {
    let single = Regex::new(r"crate::(\w+)").expect("regex");
    let group = Regex::new(r"crate::\{([^}]*)\}").expect("regex");
    let head = Regex::new(r"(?:^|[{,])\s*(\w+)").expect("regex");
    let mut names: BTreeSet<String> = single.captures_iter(text).map(|c| c[1].to_owned()).collect();
    for c in group.captures_iter(text) {
        names.extend(head.captures_iter(&c[1]).map(|h| h[1].to_owned()));
    }
    names.retain(|n| n != "self" && n != "super");
    names
}

/// Module → the modules it imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let Some(module) = module_of(&src, &file) else { continue };
        let text = std::fs::read_to_string(&file).expect("read source");
        let arrows = graph.entry(module.clone()).or_default();
        arrows.extend(arrows_in(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

/// The cycles of a graph: its strongly connected components of more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules are in one cycle when each reaches the other.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    for (module, reaches) in &reached {
        let mut component: Vec<String> = reaches
            .iter()
            .filter(|other| reached.get(other).is_some_and(|back| back.contains(*module)))
            .cloned()
            .collect();
        component.sort();
        if component.len() > 1 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".into(), "c".into()]]);
    assert_eq!(
        arrows_in("use crate::{cache, exposition::family::Family};\nuse crate::cgroup::Layout;"),
        BTreeSet::from(["cache".to_owned(), "cgroup".into(), "exposition".into()])
    );
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = import_graph();
    assert!(graph.len() >= 10, "too few modules found: {graph:?}");
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles between top-level modules: {found:?}\ngraph: {graph:#?}"
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let src = root().join("src");
    let long: Vec<(PathBuf, usize)> = rust_files(&src)
        .into_iter()
        .map(|file| {
            let lines = std::fs::read_to_string(&file).expect("read source").lines().count();
            (file, lines)
        })
        .filter(|(_, lines)| *lines > MAX_LINES)
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The probes' sources: C files and headers of `ebpf-probes/`.
fn probe_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("ebpf-probes"))
        .expect("read ebpf-probes/")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "c" || e == "h"))
        .collect();
    files.sort();
    files
}

/// `name.md` citations in `src/` and `ebpf-probes/`, with the section when one is quoted
/// after it (`docs/ARCHITECTURE.md, "Gateway enrichment"`) or given as an anchor
/// (`docs/ARCHITECTURE.md#gateway-enrichment`).
#[test]
fn every_document_the_code_cites_exists_with_its_section() {
    let citation = Regex::new(r#"([\w./-]*\.md)(?:#([\w-]+)|,? "([^"]+)")?"#).expect("regex");
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in rust_files(&root().join("src")).into_iter().chain(probe_files()) {
        let text = std::fs::read_to_string(&file).expect("read source");
        for c in citation.captures_iter(&text) {
            checked += 1;
            let document = root().join(&c[1]);
            let Ok(body) = std::fs::read_to_string(&document) else {
                missing.push(format!("{}: {} does not exist", file.display(), &c[1]));
                continue;
            };
            let headings: Vec<&str> = body
                .lines()
                .filter_map(|l| l.strip_prefix('#'))
                .map(|l| l.trim_start_matches('#').trim())
                .collect();
            let anchor = |heading: &str| {
                heading
                    .to_lowercase()
                    .chars()
                    .filter(|ch| ch.is_alphanumeric() || *ch == ' ' || *ch == '-' || *ch == '_')
                    .map(|ch| if ch == ' ' { '-' } else { ch })
                    .collect::<String>()
            };
            if let Some(wanted) = c.get(2)
                && !headings.iter().any(|h| anchor(h) == wanted.as_str())
            {
                missing.push(format!(
                    "{}: {} has no section #{}",
                    file.display(),
                    &c[1],
                    wanted.as_str()
                ));
            }
            if let Some(wanted) = c.get(3)
                && !headings.iter().any(|h| h.contains(wanted.as_str()))
            {
                missing.push(format!(
                    "{}: {} has no section \"{}\"",
                    file.display(),
                    &c[1],
                    wanted.as_str()
                ));
            }
        }
    }
    assert!(checked > 0, "no citation found: the pattern is wrong");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
