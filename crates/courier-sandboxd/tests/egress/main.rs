//! Egress policy end to end, against the real `courier-sandboxd` binary: what an
//! attacker inside a networked sandbox tries to reach, and that it fails (fast) while
//! the server keeps serving.
//!
//! Traffic never leaves the machine. Each test builds its own world out of network
//! namespaces:
//!
//! ```text
//!  sandboxd's namespace (<p>s)                 the outside (<p>o)
//!  lo: 127.0.0.1, API :3000, proxy :3001       v-out 10.77.0.2/24, and as /32s:
//!  v-host 10.77.0.1/24 + 198.51.100.1/24 <──>    203.0.113.10, 203.0.113.20  stand-in public hosts
//!  "sandboxd-host" on 0.0.0.0:8081, :8082        169.254.169.254             cloud metadata
//!  default route via 10.77.0.2                   10.77.0.5, 10.77.0.6        private hosts
//!                                                10.77.0.53                  DNS (allowed.test, ...)
//! ```
//!
//! Each namespace is held by a `sleep` process (`unshare --net`) rather than named with
//! `ip netns add`: a named namespace is a bind mount under the shared `/run/netns`, and a
//! slirp4netns started with `--enable-sandbox` from the host's mount namespace (as
//! courier-sandboxd did before it gave slirp4netns a private one) unmounts every such
//! mount on the machine.
//!
//! The outside answers HTTP on 80/8080, HTTPS on 443 (with the address it was reached
//! at; `/headers` echoes the request's headers, `/sse` streams two events 3 s apart),
//! UDP echo on 9999 and DNS (`tests/support/egress_lab.py`); sandboxd's namespace has
//! "sandboxd-host" on 8081 and 8082 (one port opened by a port-scoped `--egress-allow`,
//! the other not). `transform.rs` covers `network.rules` transforms. courier-sandboxd runs
//! in its namespace through `nsenter`, in a private mount namespace whose
//! `/etc/resolv.conf` names 10.77.0.53; the test talks to its API from a thread that
//! entered the same namespace, and runs the attacks inside sandboxes through envd (the
//! official path), or with `nsenter` into a sandbox's network namespace when
//! courier-sandboxd itself is down.
//!
//! They need root, iproute2, util-linux, python3, openssl, curl and slirp4netns; without
//! them each test prints why and returns, unless `CI` is set: then it fails.

// Test code may unwrap (clippy.toml's allow-unwrap-in-tests covers only `#[test]`
// functions, not the helpers of an integration test binary).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_e2b::api::models::NetworkConfig;
use courier_e2b::{Client, ConnectionConfig, Sandbox};
use courier_sandboxd::egress::{Egress, EgressRules};
use courier_sandboxd::runtime::network;

mod attacks;
mod lab;
mod measure;
mod probes;
#[path = "../support/mod.rs"]
mod support;
mod transform;

const KEY: &str = "e2b_00112233445566778899aabbccddeeff00112233";
const API: &str = "127.0.0.1:3000";
const PROXY: &str = "127.0.0.1:3001";
/// Longest a refused connection may take to fail: refusals are answered at once (a RST),
/// so anything near curl's own timeout means a hang, not a refusal.
const FAST: f64 = 3.0;

/// Skips (or, under CI, fails) a test that cannot run here.
pub(crate) fn unavailable(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why} (CI is set: the egress tests must run)"
    );
    eprintln!("skipping {test}: {why}");
}

pub(crate) fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
