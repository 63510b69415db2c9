//! The module graph has layers (issue 17): the crate docs of `src/lib.rs` list the top-level modules
//! from the top of the graph to its bottom, one layer per numbered item. This test reads every
//! `src/**/*.rs`, assigns each file to its top-level module by walking the module tree from
//! `src/lib.rs` (`mod x;`, `#[path]` included; `src/bin/*` is the module `bin`), collects the
//! `crate::x` paths (`use crate::{x, y::z}` groups, `super::` paths that leave the top-level module,
//! root re-exports such as `crate::Config`, and `xsmom::x` in the binaries), and fails on
//!
//! - a cycle between top-level modules,
//! - a module that uses a module of its own layer or of a layer above it,
//! - a top-level module missing from the list, or a listed name that is no module.
//!
//! Comments and string literals are not read: a doc link upward is no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// A dependency between top-level modules: (user, used).
type Edge = (String, String);

/// Where each dependency comes from: `file:line`s.
type Sites = BTreeMap<Edge, Vec<String>>;

/// An import cycle: the modules that reach each other, and a shortest cycle through them.
struct Cycle {
    component: Vec<String>,
    edges: Vec<Edge>,
}

/// The source with comments, string and char literals blanked (same length in chars, newlines kept).
fn strip(source: &str) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = chars.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(chars.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let at = |i: usize, text: &str| text.chars().enumerate().all(|(k, c)| chars.get(i + k) == Some(&c));
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let prev_ident = i > 0 && ident_char(chars[i - 1]);
        if at(i, "//") {
            let end = (i..chars.len()).find(|&j| chars[j] == '\n').unwrap_or(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if at(i, "/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < chars.len() {
                if at(j, "/*") {
                    depth += 1;
                    j += 2;
                } else if at(j, "*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !prev_ident && (at(i, "r\"") || at(i, "r#") || at(i, "br\"") || at(i, "br#")) {
            // Raw string: r#…#"…"#…#.
            let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
            let hashes = (j..chars.len()).take_while(|&k| chars[k] == '#').count();
            j += hashes;
            if chars.get(j) != Some(&'"') {
                i += 1; // `r#ident`: a raw identifier.
                continue;
            }
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let end = (j + 1..chars.len()).find(|&k| at(k, &close)).map_or(chars.len(), |k| k + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if chars[i] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if chars[i] == '\'' {
            // A char literal ('x', '\n', '\u{7f}', '\''), else a lifetime or label.
            let end = if chars.get(i + 1) == Some(&'\\') {
                (i + 2..chars.len()).find(|&k| chars[k] == '\'' && k > i + 2).map(|k| k + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn skip_ws(text: &[char], mut i: usize) -> usize {
    while i < text.len() && text[i].is_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(text: &[char], i: usize) -> Option<(String, usize)> {
    let end = (i..text.len()).find(|&k| !is_ident(text[k])).unwrap_or(text.len());
    (end > i).then(|| (text[i..end].iter().collect(), end))
}

fn starts_with(text: &[char], i: usize, word: &str) -> bool {
    word.chars().enumerate().all(|(k, c)| text.get(i + k) == Some(&c))
}

/// The first segment of each item of the `{…}` group opening at `open`: `{a, b::c, d::{e}}` → a, b, d.
fn group_heads(text: &[char], open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut i, mut expect_head) = (0usize, open, true);
    while i < text.len() {
        match text[i] {
            '{' => {
                depth += 1;
                i += 1;
            }
            '}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                expect_head = true;
                i += 1;
            }
            c if depth == 1 && expect_head && is_ident(c) => {
                let (name, end) = ident_at(text, i).expect("an identifier");
                heads.push(name);
                expect_head = false;
                i = end;
            }
            _ => i += 1,
        }
    }
    heads
}

/// Per position, how many inline `mod x { … }` blocks enclose it.
fn inline_mod_depth(text: &[char]) -> Vec<usize> {
    let mut depth_at = vec![0; text.len()];
    let (mut braces, mut open_mods) = (0usize, Vec::<usize>::new());
    for i in 0..text.len() {
        if text[i] == '{' {
            braces += 1;
            // `mod name {`?
            let mut k = i;
            while k > 0 && text[k - 1].is_whitespace() {
                k -= 1;
            }
            let name_end = k;
            while k > 0 && is_ident(text[k - 1]) {
                k -= 1;
            }
            let name_start = k;
            while k > 0 && text[k - 1].is_whitespace() {
                k -= 1;
            }
            let is_mod = name_end > name_start
                && k < name_start
                && k >= 3
                && starts_with(text, k - 3, "mod")
                && (k == 3 || !is_ident(text[k - 4]));
            if is_mod {
                open_mods.push(braces);
            }
        } else if text[i] == '}' {
            if open_mods.last() == Some(&braces) {
                open_mods.pop();
            }
            braces = braces.saturating_sub(1);
        }
        depth_at[i] = open_mods.len();
    }
    depth_at
}

/// The top-level names a file refers to, with their line numbers. `depth` is the file's module depth
/// (1 for `src/x.rs` and `src/x/mod.rs`, 2 for `src/x/y.rs`); `root` is the crate-root keyword
/// (`crate`, or `xsmom` in a binary).
fn references(text: &[char], depth: usize, root: &str) -> Vec<(String, usize)> {
    let inline = inline_mod_depth(text);
    let line_of = |i: usize| 1 + text[..i].iter().filter(|&&c| c == '\n').count();
    let mut found = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let boundary = i == 0 || !(is_ident(text[i - 1]) || text[i - 1] == '$');
        if !boundary {
            i += 1;
            continue;
        }
        // `crate::` / `xsmom::`, or a chain of `super::` that leaves the top-level module.
        let mut j = i;
        let escaped = if starts_with(text, i, root) && starts_with(text, i + root.len(), "::") {
            j += root.len() + 2;
            true
        } else if starts_with(text, i, "super::") {
            let mut supers = 0;
            while starts_with(text, j, "super::") {
                supers += 1;
                j = skip_ws(text, j + "super::".len());
            }
            supers >= depth + inline[i]
        } else {
            false
        };
        if escaped {
            let k = skip_ws(text, j);
            if text.get(k) == Some(&'{') {
                found.extend(group_heads(text, k).into_iter().map(|name| (name, line_of(i))));
            } else if let Some((name, _)) = ident_at(text, k) {
                found.push((name, line_of(i)));
            }
        }
        i = j.max(i + 1);
    }
    found
}

/// `mod x;` declarations of a file: (name, `#[path]` if any).
fn mod_declarations(original: &str, text: &[char]) -> Vec<(String, Option<String>)> {
    let original: Vec<char> = original.chars().collect();
    let mut found = Vec::new();
    for i in 0..text.len() {
        if !(starts_with(text, i, "mod") && (i == 0 || !is_ident(text[i - 1]))) {
            continue;
        }
        let k = skip_ws(text, i + 3);
        if k == i + 3 {
            continue;
        }
        let Some((name, end)) = ident_at(text, k) else { continue };
        if text.get(skip_ws(text, end)) != Some(&';') {
            continue;
        }
        // The attributes right before: back to the end of the previous item.
        let start = (0..i).rev().find(|&k| matches!(text[k], ';' | '{' | '}')).map_or(0, |k| k + 1);
        let attributes: String = original[start..i].iter().collect();
        let path = attributes.find("#[path").map(|at| {
            let rest = &attributes[at..];
            let open = rest.find('"').expect("#[path = \"…\"]") + 1;
            let close = open + rest[open..].find('"').expect("#[path = \"…\"]");
            rest[open..close].to_string()
        });
        found.push((name, path));
    }
    found
}

/// Every file of the module tree below `src/lib.rs`: path → (top-level module, depth).
fn module_tree(src: &Path) -> BTreeMap<PathBuf, (String, usize)> {
    let mut files = BTreeMap::new();
    let mut queue: Vec<(PathBuf, Option<String>, usize)> = vec![(src.join("lib.rs"), None, 0)];
    while let Some((file, top, depth)) = queue.pop() {
        let original = fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        let text = strip(&original);
        let dir = file.parent().expect("a directory");
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("a file name");
        // Children of lib.rs / mod.rs live beside it; children of x.rs in x/.
        let child_dir = if matches!(stem, "lib" | "mod") { dir.to_path_buf() } else { dir.join(stem) };
        for (name, path) in mod_declarations(&original, &text) {
            let child = match path {
                Some(path) => dir.join(path),
                None if child_dir.join(format!("{name}.rs")).is_file() => child_dir.join(format!("{name}.rs")),
                None => child_dir.join(&name).join("mod.rs"),
            };
            let top = top.clone().unwrap_or_else(|| name.clone());
            queue.push((child, Some(top), depth + 1));
        }
        if let Some(top) = top {
            files.insert(file, (top, depth));
        }
    }
    files
}

/// Names the crate root re-exports (`pub use config::Config;` → Config → config).
fn root_reexports(lib: &[char]) -> BTreeMap<String, String> {
    let text: String = lib.iter().collect();
    let mut names = BTreeMap::new();
    for statement in text.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else { continue };
        let module = rest.split("::").next().expect("a path").trim().to_string();
        let tail = rest[module.len()..].trim_start_matches("::");
        let items = tail.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let last = item.trim().rsplit("::").next().unwrap_or("").split(" as ").last().unwrap_or("").trim();
            if !last.is_empty() {
                names.insert(last.to_string(), module.clone());
            }
        }
    }
    names
}

/// The layers of the crate docs: the numbered items of the `# Layers` section, each a list of
/// the backticked module names before its ` — `.
fn documented_layers(lib_source: &str) -> Vec<Vec<String>> {
    let mut layers = Vec::new();
    let mut in_section = false;
    for line in lib_source.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim();
        if doc.starts_with('#') {
            in_section = doc.trim_start_matches('#').trim() == "Layers";
            continue;
        }
        let Some((number, item)) = doc.split_once(". ") else { continue };
        if !in_section || number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let names = item.split(" — ").next().expect("an item");
        layers.push(names.split('`').skip(1).step_by(2).map(str::to_string).collect());
    }
    layers
}

/// Dependencies between top-level modules, each with the places that make it.
fn dependencies(sources: &[(String, String, usize, String)], reexports: &BTreeMap<String, String>) -> Sites {
    let modules: BTreeSet<&str> = sources.iter().map(|(_, top, _, _)| top.as_str()).collect();
    let mut sites = Sites::new();
    for (file, top, depth, source) in sources {
        let root = if top == "bin" { "xsmom" } else { "crate" };
        for (name, line) in references(&strip(source), *depth, root) {
            let target = if modules.contains(name.as_str()) {
                name
            } else if let Some(module) = reexports.get(&name) {
                module.clone()
            } else {
                panic!("{file}:{line}: `{root}::{name}` is neither a top-level module nor a root re-export");
            };
            if &target != top {
                sites.entry((top.clone(), target)).or_default().push(format!("{file}:{line}"));
            }
        }
    }
    sites
}

fn describe(edge: &Edge, sites: &Sites) -> String {
    let places = &sites[edge];
    let shown: Vec<&str> = places.iter().take(3).map(String::as_str).collect();
    let more = if places.len() > 3 { format!(" and {} more", places.len() - 3) } else { String::new() };
    format!("{} → {} ({}{more})", edge.0, edge.1, shown.join(", "))
}

/// The import cycles: per strongly connected component of the graph, its members and a shortest
/// cycle through them, as edges.
fn cycles(sites: &Sites) -> Vec<Cycle> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in sites.keys() {
        next.entry(from).or_default().push(to);
    }
    let successors = |node: &str| next.get(node).cloned().unwrap_or_default();
    let reaches = |from: &str| -> BTreeSet<String> {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from.to_string()]);
        while let Some(node) = todo.pop() {
            for to in successors(&node) {
                if seen.insert(to.to_string()) {
                    todo.push(to.to_string());
                }
            }
        }
        seen
    };
    // Components: the modules that reach each other (the graph has a few dozen nodes).
    let reach: BTreeMap<&str, BTreeSet<String>> = next.keys().map(|&node| (node, reaches(node))).collect();
    let mut components: Vec<Vec<String>> = Vec::new();
    for (&node, reached) in &reach {
        if !reached.contains(node) || components.iter().any(|c| c.iter().any(|n| n == node)) {
            continue;
        }
        let component =
            reached.iter().filter(|other| reach.get(other.as_str()).is_some_and(|r| r.contains(node))).cloned();
        components.push(component.collect());
    }
    components
        .into_iter()
        .map(|component| {
            // Breadth-first from each member back to itself inside the component; keep the shortest.
            let mut best: Option<Vec<String>> = None;
            for start in &component {
                let mut parent: BTreeMap<String, String> = BTreeMap::new();
                let mut frontier = vec![start.clone()];
                while !parent.contains_key(start) && !frontier.is_empty() {
                    let mut following = Vec::new();
                    for node in &frontier {
                        for to in successors(node) {
                            if component.iter().any(|c| c == to) && !parent.contains_key(to) {
                                parent.insert(to.to_string(), node.clone());
                                following.push(to.to_string());
                            }
                        }
                    }
                    frontier = following;
                }
                let mut path = vec![start.clone()];
                let mut node = parent[start].clone();
                while &node != start {
                    path.push(node.clone());
                    node = parent[&node].clone();
                }
                path.reverse();
                path.rotate_right(1);
                if best.as_ref().is_none_or(|b| path.len() < b.len()) {
                    best = Some(path);
                }
            }
            let path = best.expect("a component has a cycle");
            let edges = (0..path.len()).map(|k| (path[k].clone(), path[(k + 1) % path.len()].clone())).collect();
            Cycle { component, edges }
        })
        .collect()
}

/// Everything wrong with the graph against the layers, as one message per problem.
fn problems(sites: &Sites, layers: &[Vec<String>], modules: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for Cycle { component, edges: cycle } in cycles(sites) {
        let mut path: Vec<&str> = cycle.iter().map(|(from, _)| from.as_str()).collect();
        path.push(&cycle[0].0);
        let edges: Vec<String> = cycle.iter().map(|edge| describe(edge, sites)).collect();
        let mut problem = format!("import cycle {}:\n    {}", path.join(" → "), edges.join("\n    "));
        if component.len() > cycle.len() {
            let _ = write!(problem, "\n    (modules that reach each other: {})", component.join(", "));
        }
        out.push(problem);
    }
    let mut layer_of = BTreeMap::new();
    for (index, layer) in layers.iter().enumerate() {
        for name in layer {
            if layer_of.insert(name.clone(), index).is_some() {
                out.push(format!("`{name}` is listed twice in the layers of src/lib.rs"));
            }
            if !modules.contains(name) {
                out.push(format!("`{name}` is listed in the layers of src/lib.rs but is no top-level module"));
            }
        }
    }
    for name in modules {
        if !layer_of.contains_key(name) {
            out.push(format!("top-level module `{name}` is missing from the layers of src/lib.rs"));
        }
    }
    for edge in sites.keys() {
        if let (Some(&from), Some(&to)) = (layer_of.get(&edge.0), layer_of.get(&edge.1)) {
            if to <= from {
                let relation = if to == from { "its own layer" } else { "a layer above it" };
                out.push(format!(
                    "`{}` (layer {}) uses `{}` of {relation} (layer {}): {}",
                    edge.0,
                    from + 1,
                    edge.1,
                    to + 1,
                    describe(edge, sites)
                ));
            }
        }
    }
    out
}

fn crate_sources() -> (Vec<(String, String, usize, String)>, String) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tree = module_tree(&src);
    let mut sources = Vec::new();
    let mut unreached = Vec::new();
    let mut all = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push(path);
            }
        }
    }
    all.sort();
    for path in all {
        let name = path.strip_prefix(src.parent().expect("the crate")).expect("under the crate").display().to_string();
        let source = fs::read_to_string(&path).expect("a readable source");
        if path.starts_with(src.join("bin")) {
            sources.push((name, "bin".to_string(), 0, source));
        } else if let Some((top, depth)) = tree.get(&path) {
            sources.push((name, top.clone(), *depth, source));
        } else if path != src.join("lib.rs") {
            unreached.push(name);
        }
    }
    assert!(unreached.is_empty(), "files outside the module tree of src/lib.rs: {unreached:?}");
    (sources, fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs"))
}

#[test]
fn top_level_modules_follow_the_layers_of_lib_rs() {
    let (sources, lib) = crate_sources();
    let layers = documented_layers(&lib);
    assert!(layers.len() > 3, "no `# Layers` list found in the crate docs of src/lib.rs");
    let modules: BTreeSet<String> = sources.iter().map(|(_, top, _, _)| top.clone()).collect();
    let sites = dependencies(&sources, &root_reexports(&strip(&lib)));
    let found = problems(&sites, &layers, &modules);
    let mut message = String::new();
    for problem in &found {
        let _ = writeln!(message, "- {problem}");
    }
    assert!(found.is_empty(), "the module graph breaks the layers of src/lib.rs:\n{message}");
}

/// The checker itself, on made-up sources: paths of every shape are found, and a cycle and an
/// upward use are reported with the edge and the place.
#[test]
fn the_checker_finds_paths_cycles_and_upward_uses() {
    let file = |name: &str, top: &str, depth: usize, source: &str| {
        (name.to_string(), top.to_string(), depth, source.to_string())
    };
    let sources = vec![
        file(
            "src/a.rs",
            "a",
            1,
            "use crate::{b::{X, Y}, c};\n// crate::d in a comment\nfn f() { let s = \"crate::d\"; let c = '{'; }\n",
        ),
        file("src/b/mod.rs", "b", 1, "mod tests {\n    use super::*;\n    use super::super::c::Z;\n}\n"),
        file("src/b/x.rs", "b", 2, "fn g() -> crate::Thing { super::super::a::h() }\n"),
        file("src/c.rs", "c", 1, "pub struct Z;\n"),
        file("src/bin/tool.rs", "bin", 0, "use xsmom::a;\n"),
    ];
    let reexports = BTreeMap::from([("Thing".to_string(), "c".to_string())]);
    let sites = dependencies(&sources, &reexports);
    let edges: Vec<(&str, &str)> = sites.keys().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(edges, [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("bin", "a")]);
    assert_eq!(sites[&("b".to_string(), "a".to_string())], ["src/b/x.rs:1"]);

    let layers = vec![vec!["bin".to_string()], vec!["a".to_string()], vec!["b".to_string(), "c".to_string()]];
    let modules: BTreeSet<String> = ["a", "b", "bin", "c"].map(str::to_string).into();
    let found = problems(&sites, &layers, &modules);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("import cycle a → b → a:"), "{}", found[0]);
    assert!(found[0].contains("a → b (src/a.rs:1)") && found[0].contains("b → a (src/b/x.rs:1)"), "{}", found[0]);
    assert!(found[1].contains("`b` (layer 3) uses `a` of a layer above it"), "{}", found[1]);
    assert!(found[2].contains("`b` (layer 3) uses `c` of its own layer"), "{}", found[2]);
}
