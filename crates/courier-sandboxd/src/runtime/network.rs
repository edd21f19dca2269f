//! The sandbox's network namespace.
//!
//! Every sandbox gets a fresh network namespace whose only interface is loopback, brought
//! up by the helper: processes inside can talk to each other over `127.0.0.1`, and
//! nothing else. Outbound access (`SandboxSpec::allow_internet`) needs a veth pair + NAT
//! or a user-space network stack; neither is implemented yet, so asking for it fails with
//! [`crate::Error::Unsupported`] rather than silently giving a sandbox
//! without network. The host reaches a sandbox's ports through the sandbox's own agent
//! (envd's port tunnel), not through the network namespace.

use crate::error::{Error, Result};

/// Checks that the requested network mode is available.
pub(crate) fn check_supported(allow_internet: bool) -> Result<()> {
    if allow_internet {
        return Err(Error::Unsupported(
            "allow_internet: outbound network (veth + NAT) is not implemented yet; \
             sandboxes only have loopback"
                .into(),
        ));
    }
    Ok(())
}

/// Configures the current (fresh) network namespace: loopback up. Runs in the helper.
pub(crate) fn configure_isolated() -> Result<(), String> {
    super::sys::loopback_up().map_err(|e| format!("bring up lo: {e}"))
}
