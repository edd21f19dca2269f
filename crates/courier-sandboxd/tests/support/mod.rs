//! What the control-plane and template tests share.

use std::path::PathBuf;

use courier_sandboxd::runtime::Isolation;

/// The isolation the suites run under: `COURIER_TEST_ISOLATION` (`container` or
/// `gvisor`), default `container`. CI runs the suites once each way.
pub fn isolation() -> Isolation {
    match std::env::var("COURIER_TEST_ISOLATION") {
        Ok(value) if !value.is_empty() => value
            .parse()
            .unwrap_or_else(|e| panic!("COURIER_TEST_ISOLATION: {e}")),
        _ => Isolation::Container,
    }
}
use std::process::Command;
use std::sync::OnceLock;

/// The courier-envd binary: `COURIER_ENVD_BIN`, else the one in this target dir, built
/// on first use (`cargo nextest -p courier-sandboxd` does not build other packages).
pub fn envd_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("COURIER_ENVD_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current exe");
        // <target>/<profile>/deps/<test>
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
        let bin = profile_dir.join("courier-envd");
        if !bin.is_file() {
            let target_dir = profile_dir.parent().expect("target dir");
            eprintln!("building courier-envd into {}", target_dir.display());
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "courier-envd-bin",
                    "--bin",
                    "courier-envd",
                    "--target-dir",
                ])
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "building courier-envd failed");
        }
        bin
    })
    .clone()
}
