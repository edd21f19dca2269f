//! A crate's module tree, read from its files the way rustc finds them (`mod x;` in
//! `a.rs` is `a/x.rs` or `a/x/mod.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use super::scan::{Base, FileScan, PathRef, scan};

/// A module's path below the crate root (`[]` is the root, `["a", "x"]` is `a::x`).
pub type ModPath = Vec<String>;

/// `a::x`, or `crate` for the root.
pub fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

/// Where source files come from: the disk, or a map in the tests.
pub trait Files {
    /// The text of `path`, if it exists.
    fn read(&self, path: &Path) -> Option<String>;
}

/// The files on disk.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

impl Files for BTreeMap<PathBuf, String> {
    fn read(&self, path: &Path) -> Option<String> {
        self.get(path).cloned()
    }
}

/// One module backed by a file.
pub struct Module {
    /// The file that holds it.
    pub file: PathBuf,
    /// What the file declares and names.
    pub scan: FileScan,
}

/// Every file-backed module of one crate.
pub struct ModTree {
    /// By module path; the root is `[]`.
    pub modules: BTreeMap<ModPath, Module>,
}

impl ModTree {
    /// Reads the crate whose root file is `root` (`src/lib.rs` or `src/main.rs`). A
    /// declared module without a file (generated, or behind a `#[path]`) is left out.
    pub fn load(root: &Path, files: &dyn Files) -> ModTree {
        let mut modules = BTreeMap::new();
        let mut queue = VecDeque::from([(ModPath::new(), root.to_path_buf())]);
        while let Some((path, file)) = queue.pop_front() {
            let Some(text) = files.read(&file) else {
                continue;
            };
            let scan = scan(&text);
            // `lib.rs`, `main.rs` and `mod.rs` own their directory; `a.rs` owns `a/`.
            let owns_dir = path.is_empty() || file.file_name().is_some_and(|n| n == "mod.rs");
            let dir = if owns_dir {
                file.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                file.with_extension("")
            };
            for name in &scan.mods {
                let child: ModPath = path.iter().cloned().chain([name.clone()]).collect();
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(name).join("mod.rs");
                if files.read(&flat).is_some() {
                    queue.push_back((child, flat));
                } else {
                    queue.push_back((child, nested));
                }
            }
            modules.insert(path, Module { file, scan });
        }
        ModTree { modules }
    }

    /// The deepest module of the tree that `reference`, written in module `from`, names;
    /// `None` if it climbs above the crate root.
    pub fn resolve(&self, from: &[String], reference: &PathRef) -> Option<ModPath> {
        let mut target: ModPath = match reference.base {
            Base::Crate => Vec::new(),
            Base::Up(up) => from.get(..from.len().checked_sub(up)?)?.to_vec(),
        };
        for segment in &reference.segments {
            target.push(segment.clone());
            if !self.modules.contains_key(&target) {
                target.pop();
                break;
            }
        }
        Some(target)
    }
}
