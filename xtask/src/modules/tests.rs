use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::graph::{cycles, sibling_edges};
use super::report;
use super::tree::{ModPath, ModTree};

/// A crate from `(file, text)` pairs under `src/`, rooted at `src/lib.rs`.
fn tree(files: &[(&str, &str)]) -> ModTree {
    let files: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(path, text)| (Path::new("src").join(path), (*text).to_owned()))
        .collect();
    ModTree::load(Path::new("src/lib.rs"), &files)
}

fn path(p: &str) -> ModPath {
    p.split("::").map(str::to_owned).collect()
}

fn edges(tree: &ModTree) -> Vec<(String, String)> {
    sibling_edges(tree)
        .keys()
        .map(|(a, b)| (a.join("::"), b.join("::")))
        .collect()
}

#[test]
fn a_cycle_between_siblings_is_found_with_an_example_per_edge() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        (
            "b.rs",
            "pub struct B;\n\nfn f() -> super::a::A { todo() }\n",
        ),
    ]);
    assert_eq!(
        cycles(&sibling_edges(&tree)),
        vec![vec![path("a"), path("b"), path("a")]]
    );
    assert_eq!(
        report("demo", &tree, Path::new("")),
        vec![
            "demo: a -> b -> a\n    a -> b: src/a.rs:1 (crate::b::B)\n    b -> a: src/b.rs:3 (super::a::A)"
        ]
    );
}

#[test]
fn references_to_parents_and_children_are_not_edges() {
    let tree = tree(&[
        ("lib.rs", "mod a;\npub struct Root;\n"),
        ("a/mod.rs", "mod x;\nuse self::x::X;\nuse crate::Root;\n"),
        (
            "a/x.rs",
            "use super::super::Root;\nuse crate::a::Shared;\npub struct X;\n",
        ),
    ]);
    assert_eq!(tree.modules.len(), 3);
    assert!(edges(&tree).is_empty());
}

#[test]
fn super_paths_resolve_from_the_module_that_names_them() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "mod x;\nmod y;\n"),
        (
            "a/x.rs",
            "fn f() { super::y::go(); super::super::b::run(); }\n",
        ),
        ("a/y.rs", "pub fn go() {}\n"),
        ("b.rs", "pub fn run() {}\n"),
    ]);
    assert_eq!(
        edges(&tree),
        vec![("a".into(), "b".into()), ("a::x".into(), "a::y".into())]
    );
    assert!(cycles(&sibling_edges(&tree)).is_empty());
}

#[test]
fn test_modules_inline_or_in_files_are_ignored() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::b::B;\n}\n#[cfg(test)]\nmod more;\n",
        ),
        ("a/more.rs", "use crate::b::B;\n"),
        ("b.rs", "use crate::a::A;\n"),
    ]);
    assert!(!tree.modules.contains_key(&path("a::more")));
    assert_eq!(edges(&tree), vec![("b".into(), "a".into())]);
}

#[test]
fn comments_strings_and_char_literals_name_nothing() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            "// crate::b::B\n/* crate::b /* nested */ crate::b */\nconst S: &str = \"crate::b::B\";\nconst R: &str = r#\"super::b\"#;\nconst C: char = '\"';\nfn f<'a>(x: &'a str) {}\n",
        ),
        ("b.rs", "use crate::a::A;\n"),
    ]);
    assert_eq!(edges(&tree), vec![("b".into(), "a".into())]);
}

#[test]
fn use_groups_name_each_of_their_paths() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::{b::{self, B}, c::C as D};\n"),
        ("b.rs", ""),
        ("c.rs", "use crate::{a::*};\n"),
    ]);
    assert_eq!(
        edges(&tree),
        vec![
            ("a".into(), "b".into()),
            ("a".into(), "c".into()),
            ("c".into(), "a".into())
        ]
    );
    assert_eq!(
        cycles(&sibling_edges(&tree)),
        vec![vec![path("a"), path("c"), path("a")]]
    );
}

#[test]
fn a_three_module_cycle_is_reported_once() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::B;\n"),
        ("b.rs", "use crate::c::C;\n"),
        ("c.rs", "use crate::a::A;\n"),
    ]);
    assert_eq!(
        cycles(&sibling_edges(&tree)),
        vec![vec![path("a"), path("b"), path("c"), path("a")]]
    );
}

#[test]
fn escapes_and_precise_captures_do_not_derail_the_scan() {
    let tree = tree(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            "const Q: char = '\\'';\nfn f<'a>(x: &'a str) -> impl Sized + use<'a> { x }\nconst S: &str = \"one \\\ntwo\";\nuse crate::b::B;\n",
        ),
        ("b.rs", ""),
    ]);
    let edges = sibling_edges(&tree);
    let example = edges.get(&(path("a"), path("b"))).map(|e| e.line);
    assert_eq!(example, Some(5));
}
