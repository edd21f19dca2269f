//! Whether this test process may start real sandboxes.

use std::os::unix::fs::MetadataExt as _;

/// Whether the test runs as root (sandboxes need namespaces, mounts and cgroups).
pub fn is_root() -> bool {
    // /proc/self is owned by the process's effective uid: no libc call needed.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// [`is_root`], saying on stderr that `test` is skipped when it is not.
///
/// Under CI (`CI` set) a skip would hide a missing check, so it panics instead.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (sandboxes) and CI must run it"
    );
    eprintln!("skipping {test}: sandboxes need root (namespaces, mounts, cgroups)");
    false
}
