//! The crate's layers import only those below them (docs/DESIGN.md, "Layers"), `keygroup` and
//! `codec` are leaves, `error` names only the error types of the leaves and of `io`, and no two
//! files of one layer import each other, directly or in a circle. This reads the sources, so
//! an import that breaks the order fails `cargo test` with the file that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. `sys` is the platform glue under `io`.
const LAYERS: &[&str] = &["sys", "io", "keygroup", "codec", "format", "store", "checkpoint", "state", "runtime"];
/// Layers that import no other layer.
const LEAVES: &[&str] = &["keygroup", "codec"];
/// What `error` may name.
const ERROR_MAY_NAME: &[&str] = &["io", "keygroup", "codec"];

struct Source {
    /// The layer: the first component below `src/`, or the file stem for `src/x.rs`.
    layer: String,
    /// The file within its layer: `mod` for `src/x/mod.rs` and `src/x.rs`, else the stem.
    unit: String,
    path: PathBuf,
    /// The code without comments.
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel: Vec<String> = path
                .strip_prefix(&root)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let stem = |s: &str| s.trim_end_matches(".rs").to_owned();
            let (layer, unit) = match &rel[..] {
                [file] if file == "lib.rs" || file == "main.rs" => continue,
                [file] => (stem(file), "mod".to_owned()),
                [dir, file] => (dir.clone(), stem(file)),
                [dir, sub, ..] => (dir.clone(), sub.clone()),
                [] => continue,
            };
            if layer == "bin" {
                continue;
            }
            let code = strip_comments(&std::fs::read_to_string(&path).unwrap());
            out.push(Source { layer, unit, path, code });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The text without `//` comments (doc comments included) and without the contents of string
/// literals, which may hold anything.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if in_str {
                if c == '"' && prev != '\\' {
                    in_str = false;
                    kept.push('"');
                }
                prev = if prev == '\\' && c == '\\' { '\0' } else { c };
                i += 1;
                continue;
            }
            if c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\'' {
                in_str = true;
                prev = '\0';
                kept.push('"');
                i += 1;
                continue;
            }
            kept.push(c);
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment of every path that follows `prefix` (`prefix` then `name` or a
/// `{ ... }` group, whose top-level members each give theirs).
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut member = String::new();
            let mut members = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => members.push(std::mem::take(&mut member)),
                    _ if depth == 0 => member.push(c),
                    _ => {}
                }
            }
            members.push(member);
            for m in members {
                let name: String = m.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

#[test]
fn every_layer_imports_only_the_layers_below_it() {
    let mut wrong = Vec::new();
    for s in sources() {
        if s.layer == "error" {
            for name in names_after(&s.code, "crate::") {
                if rank(&name).is_some() && !ERROR_MAY_NAME.contains(&name.as_str()) {
                    wrong.push(format!("{}: `error` names `{name}`", s.path.display()));
                }
            }
            continue;
        }
        let Some(own) = rank(&s.layer) else {
            wrong.push(format!("{}: the layer `{}` has no place in LAYERS", s.path.display(), s.layer));
            continue;
        };
        for name in names_after(&s.code, "crate::") {
            let Some(theirs) = rank(&name) else { continue };
            if name == s.layer {
                continue;
            }
            if LEAVES.contains(&s.layer.as_str()) {
                wrong.push(format!("{}: the leaf `{}` imports `{name}`", s.path.display(), s.layer));
            } else if theirs > own {
                wrong.push(format!("{}: `{}` imports `{name}`, a layer above it", s.path.display(), s.layer));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layer order:\n{}", wrong.join("\n"));
}

/// The file of `layer` that an item named `name`, reached through the layer's root, lives in:
/// a file of that name, or the file the root re-exports it from.
fn resolve(name: &str, units: &BTreeSet<String>, reexports: &BTreeMap<String, String>) -> Option<String> {
    if units.contains(name) && name != "mod" {
        return Some(name.to_owned());
    }
    reexports.get(name).cloned()
}

/// `item -> file` for what a layer's root file re-exports from its own files.
fn reexports_of(root: &str, units: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in root.split(';') {
        let Some(at) = stmt.find("use ") else { continue };
        let path = stmt[at + 4..].trim().trim_start_matches("self::");
        let Some((unit, rest)) = path.split_once("::") else { continue };
        if !units.contains(unit) {
            continue;
        }
        let items = rest.trim().trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            let name = item.rsplit(" as ").next().unwrap_or(item).rsplit("::").next().unwrap_or(item).trim();
            if !name.is_empty() && name != "*" {
                out.insert(name.to_owned(), unit.to_owned());
            }
        }
    }
    out
}

#[test]
fn no_two_files_of_a_layer_import_each_other() {
    let all = sources();
    let mut layers: BTreeMap<&str, Vec<&Source>> = BTreeMap::new();
    for s in &all {
        layers.entry(&s.layer).or_default().push(s);
    }
    let mut cycles = Vec::new();
    for (layer, files) in layers {
        let units: BTreeSet<String> = files.iter().map(|s| s.unit.clone()).collect();
        let root = files.iter().find(|s| s.unit == "mod").map_or("", |s| s.code.as_str());
        let reexports = reexports_of(root, &units);
        // The root is the layer's facade and top: its edges are not counted.
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in files.iter().filter(|s| s.unit != "mod") {
            let mut names = names_after(&s.code, "super::");
            names.extend(names_after(&s.code, &format!("crate::{layer}::")));
            for name in names {
                if let Some(to) = resolve(&name, &units, &reexports) {
                    if to != s.unit {
                        edges.entry(s.unit.clone()).or_default().insert(to);
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            cycles.push(format!("src/{layer}: {}", cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "files that import each other:\n{}", cycles.join("\n"));
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_owned());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|start| visit(start, edges, &mut done, &mut Vec::new()))
}

/// The checks catch what they are for: an upward import, a leaf's import, and a circle.
#[test]
fn the_checks_find_what_they_look_for() {
    let code = strip_comments("use crate::state::X; // crate::io\nlet s = \"crate::store\";\n");
    assert_eq!(names_after(&code, "crate::"), ["state"]);
    assert_eq!(names_after("use super::{a::X, b, c::{d, e}};", "super::"), ["a", "b", "c"]);
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["c".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(find_cycle(&edges).map(|c| c.len()), Some(4));
    let units: BTreeSet<String> = ["mod", "keyed", "ttl"].map(String::from).into();
    let re = reexports_of("pub use keyed::{ValueState, MapState};\npub(crate) use self::ttl::Filter;", &units);
    assert_eq!(re.get("MapState").map(String::as_str), Some("keyed"));
    assert_eq!(re.get("Filter").map(String::as_str), Some("ttl"));
}
