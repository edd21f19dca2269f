//! The body of envd's `POST /init`: what a control plane tells a sandbox's envd before the
//! tenant's first request (courier-sandboxd writes it, courier-envd reads it).

use std::collections::BTreeMap;

use courier_secret::Secret;
use serde::{Deserialize, Serialize};

/// `POST /init`'s body. Every field is optional: an absent or empty one leaves envd's
/// setting as it is; an empty body is the same as `{}`.
///
/// ```
/// use courier_e2b::models::EnvdInit;
/// let init = EnvdInit {
///     access_token: Some("tok-0123456789".into()),
///     default_user: Some("user".into()),
///     ..EnvdInit::default()
/// };
/// let json = serde_json::to_string(&init).unwrap();
/// assert_eq!(json, r#"{"accessToken":"tok-0123456789","defaultUser":"user"}"#);
/// assert_eq!(format!("{init:?}").contains("0123456789"), false);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvdInit {
    /// Environment variables every process of the sandbox gets (added to envd's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// The token envd requires from then on in `X-Access-Token` (written raw: envd needs
    /// the value itself).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "courier_secret::exposed::option"
    )]
    pub access_token: Option<Secret>,
    /// The user processes and file operations run as when a request names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    /// The working directory of processes that name none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_workdir: Option<String>,
}
