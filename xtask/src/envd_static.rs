//! `cargo xtask envd-static`: a statically linked courier-envd, checked to have no
//! dynamic loader and to run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run};

/// Builds courier-envd statically linked (release or dev profile), checks it has no
/// dynamic loader and runs, and returns its path.
pub fn envd_static(release: bool) -> Result<PathBuf> {
    let dir = root().join("target/static");
    let profile = if release { "release" } else { "dev" };
    run(
        "static courier-envd",
        cargo()
            .args([
                "build",
                "--profile",
                profile,
                "-p",
                "courier-envd-bin",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
            ])
            .arg(&dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let binary = dir
        .join("x86_64-unknown-linux-gnu")
        .join(if release { "release" } else { "debug" })
        .join("courier-envd");
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    if has_interpreter(&bytes) {
        bail!(
            "{} has a PT_INTERP segment: it is dynamically linked",
            binary.display()
        );
    }
    let out = Command::new(&binary).arg("--version").output()?;
    if !out.status.success() {
        bail!("{} --version failed", binary.display());
    }
    println!(
        "==> {} is static ({} bytes): {}",
        binary.display(),
        bytes.len(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(binary)
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let read = |offset: usize, len: usize| -> u64 {
        elf.get(offset..offset + len).map_or(0, |b| {
            b.iter()
                .rev()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
        })
    };
    if elf.get(..4) != Some(b"\x7fELF") {
        return false;
    }
    let phoff = read(0x20, 8) as usize;
    let phentsize = read(0x36, 2) as usize;
    let phnum = read(0x38, 2) as usize;
    (0..phnum).any(|i| read(phoff + i * phentsize, 4) == 3)
}
