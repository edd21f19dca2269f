//! `courier-sandbox-init`: the sandbox helper as a stand-alone program.
//!
//! The runtime starts it with `--courier-sandbox-helper` to become a sandbox's monitor and
//! PID 1. Programs that embed `courier-sandboxd` can instead call
//! `main_if_requested()` themselves and keep the default helper (`/proc/self/exe`); tests
//! point `RuntimeConfig::helper` at this binary.

fn main() {
    courier_sandboxd::runtime::init::main_if_requested();
    eprintln!(
        "courier-sandbox-init is started by the courier-sandboxd runtime ({}), not by hand",
        courier_sandboxd::runtime::init::HELPER_MARKER
    );
    std::process::exit(2);
}
