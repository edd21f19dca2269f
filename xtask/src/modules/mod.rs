//! `cargo xtask modules`: no crate of the workspace has an import cycle between sibling
//! modules.
//!
//! For each crate root (`src/lib.rs`, `src/main.rs`) the module tree is read from the
//! files; every `crate::…`, `super::…` and `self::…` path a module names (in `use` items
//! and in code) is resolved to the deepest module it reaches. A reference from P to Q,
//! neither containing the other, is an edge between the two children of their lowest
//! common ancestor that hold P and Q. Every group of siblings must be acyclic.
//! `#[cfg(test)]` modules are test code and left out.

mod graph;
mod scan;
mod tree;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use graph::{Edges, cycles, sibling_edges};
use tree::{Disk, ModPath, ModTree, display};

/// Checks every crate of the workspace at `root`, printing each cycle.
pub fn check(root: &Path) -> Result<()> {
    let mut crates = 0;
    let mut found = 0;
    for package in members(root)? {
        let name = package_name(&package.join("Cargo.toml"))?;
        for (target, file) in [("lib", "src/lib.rs"), ("bin", "src/main.rs")] {
            let file = package.join(file);
            if !file.is_file() {
                continue;
            }
            crates += 1;
            let label = if package.join("src/lib.rs").is_file() && target == "bin" {
                format!("{name} (bin)")
            } else {
                name.clone()
            };
            let tree = ModTree::load(&file, &Disk);
            for line in report(&label, &tree, root) {
                found += 1;
                println!("{line}");
            }
        }
    }
    if found > 0 {
        bail!("{found} import cycle(s) between sibling modules");
    }
    println!("==> modules: no import cycles between sibling modules in {crates} crates");
    Ok(())
}

/// One entry per cycle: `crate: a::x -> a::y -> a::x`, then one example reference
/// (`file:line`) per edge, file names relative to `root`.
fn report(label: &str, tree: &ModTree, root: &Path) -> Vec<String> {
    let edges = sibling_edges(tree);
    cycles(&edges)
        .iter()
        .map(|cycle| describe(label, cycle, &edges, root))
        .collect()
}

fn describe(label: &str, cycle: &[ModPath], edges: &Edges, root: &Path) -> String {
    let names: Vec<String> = cycle.iter().map(|m| display(m)).collect();
    let mut text = format!("{label}: {}", names.join(" -> "));
    for pair in cycle.windows(2) {
        if let [from, to] = pair
            && let Some(example) = edges.get(&(from.clone(), to.clone()))
        {
            let file = example.file.strip_prefix(root).unwrap_or(&example.file);
            text.push_str(&format!(
                "\n    {} -> {}: {}:{} ({})",
                display(from),
                display(to),
                file.display(),
                example.line,
                example.path
            ));
        }
    }
    text
}

/// The package directories the workspace's `members` list names (`dir/*` expanded).
fn members(root: &Path) -> Result<Vec<PathBuf>> {
    let manifest = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let list = text
        .split_once("members")
        .and_then(|(_, rest)| rest.split_once('['))
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .context("the workspace manifest has no `members = [...]`")?;
    let mut dirs = Vec::new();
    for entry in list.split(',').map(|s| s.trim().trim_matches('"')) {
        if entry.is_empty() {
            continue;
        }
        if let Some(parent) = entry.strip_suffix("/*") {
            let parent = root.join(parent);
            let mut found: Vec<PathBuf> = std::fs::read_dir(&parent)
                .with_context(|| format!("listing {}", parent.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect();
            found.sort();
            dirs.extend(found);
        } else {
            dirs.push(root.join(entry));
        }
    }
    Ok(dirs)
}

/// The `name` of a package manifest's `[package]` table.
fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.split("[package]")
        .nth(1)
        .and_then(|table| {
            table.lines().find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
            })
        })
        .with_context(|| format!("{} has no package name", manifest.display()))
}
