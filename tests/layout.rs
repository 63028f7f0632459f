//! The layout docs/architecture.md draws, held to the code: its table names every source file,
//! bottom up; no file reaches an import back to itself (a `mod.rs` that re-exports a child
//! counts as importing it); no file imports one the table puts above it; no source file is
//! over 700 lines. Imports are read from each file's `crate::` and `super::` paths and, in a
//! `mod.rs`, its children's names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`, as paths relative to the package (`src/model/mod.rs`).
fn sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_str().unwrap().replace('\\', "/"));
        }
    }
}

/// `src/gpu/models/epoch.rs` → `[gpu, models, epoch]`; a `mod.rs`, `lib.rs` or `main.rs` is its
/// directory's module.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file["src/".len()..file.len() - 3]
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths written after each `crate::` and `super::` in `code`: `crate::a::b` gives
/// `[crate, a, b]`; a group `crate::a::{b, c::d}` gives `[crate, a, b]` and `[crate, a, c]`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for root in ["crate::", "super::"] {
        for (at, _) in code.match_indices(root) {
            if code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| ident(c) || c == ':')
            {
                continue;
            }
            let mut path = vec![root.trim_end_matches(':').to_string()];
            let mut rest = &code[at + root.len()..];
            loop {
                let name: String = rest.chars().take_while(|&c| ident(c)).collect();
                if name.is_empty() {
                    break;
                }
                if name == "super" {
                    path.push(name.clone());
                }
                rest = &rest[name.len()..];
                if name != "super" {
                    path.push(name);
                }
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            // A group names its items' modules, not the one it opens (`super::{a, b}`).
            match rest.strip_prefix('{') {
                Some(group) => {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let head: String = item.trim().chars().take_while(|&c| ident(c)).collect();
                        match head.as_str() {
                            "" => {}
                            "self" => found.push(path.clone()),
                            _ => found.push([path.clone(), vec![head]].concat()),
                        }
                    }
                }
                None => found.push(path),
            }
        }
    }
    found
}

/// Each file's imports: the files its paths and child names resolve to.
fn import_graph(files: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let resolve = |parts: &[String]| {
        (1..=parts.len())
            .rev()
            .find_map(|n| modules.get(&parts[..n]))
    };
    let mut graph = BTreeMap::new();
    for file in files {
        let code = code(&std::fs::read_to_string(file).unwrap());
        let me = module_of(file);
        let mut imports = BTreeSet::new();
        for path in paths(&code) {
            let (mut at, mut rest) = (me.clone(), &path[..]);
            if rest[0] == "crate" {
                at.clear();
                rest = &rest[1..];
            }
            // `super` is the parent module, for a mod.rs as for any other file.
            while rest.first().is_some_and(|p| p == "super") {
                at.pop();
                rest = &rest[1..];
            }
            if let Some(target) = resolve(&[at, rest.to_vec()].concat()) {
                imports.insert(target.clone());
            }
        }
        let is_module_file = ["mod.rs", "lib.rs", "main.rs"]
            .iter()
            .any(|m| file.ends_with(m));
        if is_module_file {
            for line in code.lines() {
                let Some(child) = line
                    .trim()
                    .split("mod ")
                    .nth(1)
                    .and_then(|r| r.strip_suffix(';'))
                else {
                    continue;
                };
                let used = code.match_indices(&format!("{child}::")).any(|(at, _)| {
                    !code[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| ident(c) || c == ':')
                });
                if let Some(target) = modules.get(&[me.clone(), vec![child.to_string()]].concat())
                    && used
                {
                    imports.insert(target.clone());
                }
            }
        }
        imports.remove(file);
        graph.insert(file.clone(), imports);
    }
    graph
}

/// The files docs/architecture.md's table names, each with its row (bottom up).
fn table_rows() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string("docs/architecture.md").unwrap();
    let table = &doc[doc.find("## Every source file").expect("the file table")..];
    let mut rows = BTreeMap::new();
    for (row, line) in table.lines().filter(|l| l.starts_with("| `")).enumerate() {
        let cell = line.split('|').nth(1).unwrap();
        for name in cell.split('`').skip(1).step_by(2) {
            let names: Vec<String> = match name.split_once('{') {
                Some((dir, list)) => (list.trim_end_matches("}.rs").split(','))
                    .map(|n| format!("{dir}{n}.rs"))
                    .collect(),
                None => vec![name.to_string()],
            };
            for n in names.into_iter().filter(|n| n.ends_with(".rs")) {
                rows.insert(format!("src/{n}"), row);
            }
        }
    }
    rows
}

#[test]
fn the_architecture_table_names_every_source_file_and_imports_only_go_down_it() {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    files.sort();
    let rows = table_rows();
    let unnamed: Vec<&String> = files.iter().filter(|f| !rows.contains_key(*f)).collect();
    assert!(
        unnamed.is_empty(),
        "docs/architecture.md's table lacks {unnamed:?}"
    );
    let graph = import_graph(&files);
    let upward: Vec<String> = (graph.iter())
        .flat_map(|(f, imports)| imports.iter().map(move |t| (f, t)))
        .filter(|(f, t)| rows[*t] > rows[*f])
        .map(|(f, t)| format!("{f} → {t}"))
        .collect();
    assert!(upward.is_empty(), "imports up the table: {upward:#?}");
    // Every import goes to an earlier row or the same one; within a row, a chain that came
    // back would be a cycle: follow every file's imports and look for itself.
    for start in &files {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = graph[start].iter().collect();
        while let Some(f) = todo.pop() {
            assert_ne!(
                f, start,
                "{start} imports itself through a chain of imports"
            );
            if seen.insert(f) {
                todo.extend(graph[f].iter());
            }
        }
    }
}

#[test]
fn no_source_file_is_over_700_lines() {
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let long: Vec<(String, usize)> = (files.into_iter())
        .map(|f| {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            (f, lines)
        })
        .filter(|&(_, n)| n > 700)
        .collect();
    assert!(long.is_empty(), "over 700 lines: {long:?}");
}

/// The import reader itself: a path, a group and a `super` chain each resolve.
#[test]
fn imports_are_read_from_paths_groups_and_super_chains() {
    let found = paths("use crate::a::{b, c::d};\nlet x = super::super::e::f();");
    let text: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    for want in ["crate::a::b", "crate::a::c", "super::super::e::f"] {
        assert!(text.contains(&want.to_string()), "{want} not in {text:?}");
    }
    // A group's opening path is not itself an import.
    assert!(!text.contains(&"crate::a".to_string()), "{text:?}");
}
