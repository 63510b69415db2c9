//! No function in `src/` is longer than 80 lines (issue 17), except the ones listed in `WAIVED` with
//! the length they have today: a waived function may shrink (then lower its entry or remove it) but
//! never grow, and no new long function may appear.

use std::fs;
use std::path::{Path, PathBuf};

const LIMIT: usize = 80;

/// (file, function, lines today): still to be split.
const WAIVED: [(&str, &str, usize); 0] = [];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The name of the function a line declares (`fn name`, with its qualifiers), if it has a body.
fn declared_function(line: &str) -> Option<&str> {
    let code = line.split("//").next().unwrap_or("").trim_start();
    let rest = code.strip_prefix("fn ").or_else(|| {
        code.split_once(" fn ").map(|(before, rest)| {
            let qualifiers = ["pub", "pub(crate)", "pub(super)", "const", "async", "unsafe", "extern"];
            if before.split_whitespace().all(|w| qualifiers.contains(&w)) {
                rest
            } else {
                ""
            }
        })
    })?;
    let name: &str = rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next()?;
    (!name.is_empty() && !code.trim_end().ends_with(';')).then_some(name)
}

/// (function, first line, lines) of every function in `source`, by brace matching from its `fn`
/// line (string and char literals with braces are rare enough in this crate to be ignored).
fn functions(source: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = declared_function(lines[i]) else {
            i += 1;
            continue;
        };
        let (mut depth, mut opened, mut j) = (0i64, false, i);
        while j < lines.len() {
            let code = lines[j].split("//").next().unwrap_or("");
            depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
            opened |= code.contains('{');
            if opened && depth <= 0 {
                break;
            }
            j += 1;
        }
        found.push((name.to_string(), i + 1, j - i + 1));
        // Nested functions are counted inside their parent; go on after the declaration line.
        i += 1;
    }
    found
}

#[test]
fn no_function_in_src_is_longer_than_80_lines_except_the_waived() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut problems = Vec::new();
    let mut seen_waived = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let source = fs::read_to_string(&file).unwrap();
        // Unit-test modules are not production code.
        let production = source.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (name, line, length) in functions(production) {
            if length <= LIMIT {
                continue;
            }
            match WAIVED.iter().find(|(f, n, _)| *f == relative && *n == name) {
                Some(&(_, _, waived)) if length <= waived => seen_waived.push((relative.clone(), name)),
                Some(&(_, _, waived)) => problems
                    .push(format!("{relative}:{line} fn {name} has {length} lines, more than its waived {waived}")),
                None => problems.push(format!("{relative}:{line} fn {name} has {length} lines (limit {LIMIT})")),
            }
        }
    }
    for (file, name, _) in WAIVED {
        if !seen_waived.iter().any(|(f, n)| f == file && n == name) {
            problems
                .push(format!("{file} fn {name} is waived but no longer over {LIMIT} lines: remove it from WAIVED"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_counter_measures_a_function_from_its_fn_line_to_its_closing_brace() {
    let source = "pub fn short() {\n    let x = 1;\n}\n\nfn long(a: usize) -> usize {\n    if a > 0 {\n        a\n    } else {\n        0\n    }\n}\nfn declared(a: usize);\n";
    let found = functions(source);
    assert_eq!(found, vec![("short".to_string(), 1, 3), ("long".to_string(), 5, 7)]);
    assert_eq!(declared_function("    pub(crate) async fn run(&self) {"), Some("run"));
    assert_eq!(declared_function("    let f = |x| x; // fn not_this"), None);
}
