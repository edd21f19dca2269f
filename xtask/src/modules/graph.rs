//! Sibling edges between modules, and the cycles among them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use super::tree::{ModPath, ModTree};

/// Where an edge comes from: one reference that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The file holding the reference.
    pub file: PathBuf,
    /// Its 1-based line.
    pub line: usize,
    /// The path as written.
    pub path: String,
}

/// Edges between sibling modules (`a::x -> a::y`), each with its first example.
pub type Edges = BTreeMap<(ModPath, ModPath), Example>;

/// For every reference from module P to module Q where neither contains the other, the
/// edge between the children of their lowest common ancestor that hold P and Q.
pub fn sibling_edges(tree: &ModTree) -> Edges {
    let mut edges = Edges::new();
    for (from, module) in &tree.modules {
        for reference in &module.scan.refs {
            let Some(to) = tree.resolve(from, reference) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            // One is an ancestor of the other (or they are the same module).
            if common == from.len() || common == to.len() {
                continue;
            }
            let key = (from[..=common].to_vec(), to[..=common].to_vec());
            edges.entry(key).or_insert_with(|| Example {
                file: module.file.clone(),
                line: reference.line,
                path: reference.display(),
            });
        }
    }
    edges
}

/// Cycles among siblings, each as its modules in order with the first repeated at the end
/// (`[x, y, x]`); every edge that lies on a cycle is on at least one of them. Each cycle
/// starts at its smallest module, so the output is stable.
pub fn cycles(edges: &Edges) -> Vec<Vec<ModPath>> {
    let mut next: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut found = BTreeSet::new();
    for (from, to) in edges.keys() {
        // The shortest way back from `to` to `from` closes a cycle through this edge.
        let mut came_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = VecDeque::from([to]);
        while let Some(at) = queue.pop_front() {
            if at == from {
                break;
            }
            for &n in next.get(at).into_iter().flatten() {
                if n != to && !came_from.contains_key(n) {
                    came_from.insert(n, at);
                    queue.push_back(n);
                }
            }
        }
        if from != to && !came_from.contains_key(from) {
            continue;
        }
        let mut back = vec![from.clone()];
        let mut at = from;
        while at != to {
            at = came_from[at];
            back.push(at.clone());
        }
        back.reverse();
        // `back` is to, …, from; the cycle is from, to, …, from.
        let mut cycle: Vec<ModPath> = std::iter::once(from.clone()).chain(back).collect();
        cycle.pop();
        let start = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| *m)
            .map_or(0, |(i, _)| i);
        cycle.rotate_left(start);
        cycle.push(cycle[0].clone());
        found.insert(cycle);
    }
    found.into_iter().collect()
}
