//! The crate's architecture, checked: the module graph read from the code's own paths (`crate::…`,
//! `super::…`, `self::…` and a file's declared child modules) has no circle between files, and every
//! import between top-level modules points down the layers that `src/lib.rs`'s "# Layout" writes (a
//! numbered list, bottom to top, naming each module as [`name`]): never up, never sideways within a layer.
//! Comments and string literals do not count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "a test reads the sources and fails loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// A module path: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`; `src/lib.rs` is `[]`.
type Module = Vec<String>;

fn module_of(rel: &Path) -> Module {
    let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The library's files (not the binary's `main.rs`, which sits on top of everything), module → source.
fn sources() -> BTreeMap<Module, String> {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    files
        .iter()
        .filter(|p| !p.ends_with("main.rs"))
        .map(|p| (module_of(p.strip_prefix(SRC).unwrap()), std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// The code of a file with comments and string/char literals blanked out.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            out.push_str("' '");
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // An escaped char literal like '\n' or '\u{1F600}'.
            let mut j = i + 2;
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Each `mod name` in `code` (any visibility): the name and the offset right after it.
fn mod_items(code: &str) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("mod ") {
        let start = from + p;
        from = start + 4;
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            continue;
        }
        let rest = &code[from..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end > 0 {
            out.push((rest[..end].to_owned(), from + end));
        }
    }
    out
}

/// The modules a file declares (`mod name;`): paths starting with `name::` or `self::name::` there
/// lead to them.
fn declared_children(code: &str) -> Vec<String> {
    mod_items(code)
        .into_iter()
        .filter(|(_, after)| code[*after..].trim_start().starts_with(';'))
        .map(|(n, _)| n)
        .collect()
}

/// How a path is rooted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// `crate::…`
    Crate,
    /// `super::…`; the first segment is `^n` for `n` more `super`s.
    Super,
    /// `self::…`, or a declared child's name: relative to the file's own module.
    Own,
}

/// Every path the code names from `crate::`, `super::`, `self::` or one of `children`.
fn paths(code: &str, children: &[String]) -> Vec<(usize, Root, Vec<String>)> {
    let mut roots: Vec<(String, Root)> =
        vec![("crate::".into(), Root::Crate), ("super::".into(), Root::Super), ("self::".into(), Root::Own)];
    roots.extend(children.iter().map(|c| (format!("{c}::"), Root::Own)));
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (root, kind) in roots {
        let is_crate = kind == Root::Crate;
        let child = match kind {
            Root::Own if root != "self::" => Some(root.trim_end_matches("::").to_owned()),
            _ => None,
        };
        let mut from = 0;
        while let Some(p) = code[from..].find(root.as_str()) {
            let start = from + p;
            from = start + root.len();
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            if kind == Root::Own && start > 0 && bytes[start - 1] == b':' {
                // `a::self::` or `x::child::` is not rooted here.
                continue;
            }
            let rest = &code[from..];
            let mut prefix_supers = 0;
            let mut r = rest;
            if !is_crate {
                while let Some(x) = r.strip_prefix("super::") {
                    prefix_supers += 1;
                    r = x;
                }
            }
            let mut push = |segments: Vec<String>| {
                let mut s = match kind {
                    Root::Crate => vec![],
                    Root::Super => vec![format!("^{prefix_supers}")],
                    Root::Own => child.iter().cloned().collect(),
                };
                s.extend(segments);
                out.push((start, kind.clone(), s));
            };
            if let Some(group) = r.strip_prefix('{') {
                // A group: split its top-level items.
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            item.push(c);
                        }
                        '}' if depth == 0 => {
                            push(segments_of(&item));
                            break;
                        }
                        '}' => {
                            depth -= 1;
                            item.push(c);
                        }
                        ',' if depth == 0 => {
                            push(segments_of(&item));
                            item.clear();
                        }
                        _ => item.push(c),
                    }
                }
            } else {
                push(segments_of(r));
            }
        }
    }
    out
}

/// The byte ranges of inline modules (`mod name { … }`) in `code`: a `super::` inside one is relative to
/// it, not to the file.
fn inline_modules(code: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (_, after) in mod_items(code) {
        let rest = &code[after..];
        if !rest.trim_start().starts_with('{') {
            continue;
        }
        let open = after + (rest.len() - rest.trim_start().len());
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((open, open + i));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The `a::b::c` segments at the start of `s` (stopping at anything that is not a path).
fn segments_of(s: &str) -> Vec<String> {
    let s = s.trim_start();
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) if r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') => rest = r,
            _ => break,
        }
    }
    segs
}

/// The layers of a `lib.rs`'s "# Layout": module name → layer number.
fn layers_of(lib: &str) -> BTreeMap<String, u32> {
    let layout = lib.split("# Layout").nth(1).expect("src/lib.rs has a # Layout section");
    let mut out = BTreeMap::new();
    for line in layout.lines().skip(1) {
        let Some(line) = line.trim().strip_prefix("//!") else { break };
        let Some((number, rest)) = line.trim().split_once(". ") else { continue };
        let Ok(number) = number.parse::<u32>() else { continue };
        let names = rest.split(':').next().unwrap_or("");
        for part in names.split("[`").skip(1) {
            let name = part.split("`]").next().unwrap().trim_start_matches("crate::");
            assert!(out.insert(name.to_owned(), number).is_none(), "{name} is in two layers");
        }
    }
    assert!(!out.is_empty(), "the # Layout lists no layers");
    out
}

/// Files and the imports between them.
struct Graph {
    modules: BTreeSet<Module>,
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

impl Graph {
    fn of(sources: &BTreeMap<Module, String>) -> Self {
        let modules: BTreeSet<Module> = sources.keys().cloned().collect();
        // The deepest file a path names.
        let resolve = |path: &[String]| {
            (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p))
        };
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, source) in sources {
            let code = code_only(source);
            let inline = inline_modules(&code);
            for (at, root, segs) in paths(&code, &declared_children(&code)) {
                let inside = inline.iter().filter(|(s, e)| *s < at && at < *e).count();
                let absolute = match root {
                    Root::Crate => segs,
                    // Relative to an inline module (a test module's own children): not a file.
                    Root::Own if inside > 0 => continue,
                    Root::Own => module.iter().cloned().chain(segs).collect(),
                    Root::Super => {
                        // The `super` of a::b is a; inside an inline module of the file, the first
                        // `super`s climb out of it first.
                        let ups: usize = segs[0][1..].parse::<usize>().unwrap() + 1;
                        let keep = module.len().saturating_sub(ups.saturating_sub(inside));
                        module[..keep].iter().cloned().chain(segs[1..].iter().cloned()).collect()
                    }
                };
                if let Some(target) = resolve(&absolute)
                    && &target != module
                    && !target.is_empty()
                {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        Self { modules, edges }
    }

    /// Imports between top-level modules that do not point down `layers`, and the modules `layers`
    /// misses or names without their existing.
    fn against(&self, layers: &BTreeMap<String, u32>) -> Vec<String> {
        let top: BTreeSet<&String> = self.modules.iter().filter_map(|m| m.first()).collect();
        let mut wrong: Vec<String> = top
            .iter()
            .filter(|m| !layers.contains_key(**m))
            .map(|m| format!("{m} is missing from the # Layout"))
            .chain(
                layers
                    .keys()
                    .filter(|m| !top.contains(m))
                    .map(|m| format!("{m} is in the # Layout but not in src/")),
            )
            .collect();
        for (from, tos) in &self.edges {
            let Some(f) = from.first() else { continue };
            for to in tos {
                let t = &to[0];
                match (layers.get(f), layers.get(t)) {
                    (Some(lf), Some(lt)) if f != t && lf <= lt => {
                        wrong.push(format!("{} (layer {lf}) -> {} (layer {lt})", show(from), show(to)));
                    }
                    _ => {}
                }
            }
        }
        wrong
    }
}

/// Strongly connected components with more than one file (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.edges.get(v) {
            for w in ws {
                let w = t.g.modules.get(w).unwrap();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.clone());
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
        next: 0,
        out: Vec::new(),
    };
    for v in g.modules.iter() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn show(m: &[String]) -> String {
    if m.is_empty() { "lib".into() } else { m.join("::") }
}

fn circle_text(g: &Graph) -> Vec<String> {
    circles(g).iter().map(|c| c.iter().map(|m| show(m)).collect::<Vec<_>>().join(" ⇄ ")).collect()
}

#[test]
fn no_file_sits_in_a_circle() {
    let found = circle_text(&Graph::of(&sources()));
    assert!(found.is_empty(), "import circles between files:\n{}", found.join("\n"));
}

#[test]
fn every_import_points_down_the_layers_of_lib_rs() {
    let sources = sources();
    let wrong = Graph::of(&sources).against(&layers_of(&sources[&Vec::new()]));
    assert!(wrong.is_empty(), "against lib.rs's # Layout:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_paths_groups_supers_and_children_but_not_comments() {
    let code = code_only(
        "mod kid;\nuse crate::{a::b, c};\n// crate::commented\nlet s = \"crate::in_string\";\n\
         use super::super::d::e;\nfn f() { crate::g::h(); kid::k(); self::kid::m(); x::kid::n(); }",
    );
    let named: Vec<(Root, Vec<String>)> =
        paths(&code, &declared_children(&code)).into_iter().map(|(_, r, s)| (r, s)).collect();
    let has = |r: Root, s: &[&str]| named.contains(&(r, s.iter().map(|x| (*x).to_owned()).collect()));
    assert!(has(Root::Crate, &["a", "b"]) && has(Root::Crate, &["c"]) && has(Root::Crate, &["g", "h"]));
    assert!(has(Root::Super, &["^1", "d", "e"]));
    assert!(has(Root::Own, &["kid", "k"]) && has(Root::Own, &["kid", "m"]));
    assert!(!has(Root::Own, &["kid", "n"]), "x::kid:: is not rooted here: {named:?}");
    assert!(!named.iter().any(|(_, s)| s.iter().any(|x| x == "commented" || x == "in_string")));
}

/// A small crate to run the checks on: (module path, source).
fn crate_of(files: &[(&str, &str)]) -> Graph {
    let m = |p: &str| if p.is_empty() { Vec::new() } else { p.split("::").map(str::to_owned).collect() };
    Graph::of(&files.iter().map(|(p, s)| (m(p), (*s).to_owned())).collect())
}

#[test]
fn circles_and_imports_that_do_not_point_down_are_caught() {
    let lib = "//! # Layout\n//! 1. [`low`]: below.\n//! 2. [`mid`], [`side`]: the middle.\n//! 3. [`high`]: on top.\npub mod low;";
    let layers = layers_of(lib);
    assert_eq!(layers.values().copied().collect::<Vec<_>>(), [3, 1, 2, 2]);
    let good = crate_of(&[
        ("", lib),
        ("low", ""),
        ("mid", "use crate::low::X;"),
        ("side", "fn f() { crate::low::y(); }"),
        ("high", "use crate::{mid::A, side::B};"),
    ]);
    assert!(good.against(&layers).is_empty(), "{:?}", good.against(&layers));
    assert!(circle_text(&good).is_empty());
    let bad = crate_of(&[
        ("", lib),
        ("low", "use crate::high::Z; // up"),
        ("mid", "use crate::side::B; // sideways"),
        ("side", ""),
        ("high", "pub mod part;\npub use part::P;"),
        ("high::part", "use super::Q; // back into the module that re-exports it"),
        ("extra", ""),
    ]);
    let wrong = bad.against(&layers);
    assert!(wrong.iter().any(|w| w.starts_with("low (layer 1) -> high")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.starts_with("mid (layer 2) -> side")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.contains("extra is missing")), "{wrong:?}");
    assert_eq!(circle_text(&bad), ["high::part ⇄ high"]);
}
