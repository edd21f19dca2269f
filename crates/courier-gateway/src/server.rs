//! The gateway's router, its upstreams, and who a request comes from.

use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use base64::Engine as _;
use http::HeaderMap;

use crate::{Grant, Grants, Minter, PROOF_HEADER, RUN_TOKEN_HEADER, Refusal};

/// Where the gateway sends what it forwards: the providers' API roots and GitHub. A request
/// for `/llm/anthropic/v1/messages` goes to `{anthropic}/v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    /// Anthropic's API root.
    pub anthropic: String,
    /// OpenAI's API root.
    pub openai: String,
    /// OpenRouter's root (its API is under `/api/v1`).
    pub openrouter: String,
    /// GitHub's git root (`{github}/{owner}/{repo}.git`).
    pub github: String,
}

impl Default for Upstreams {
    /// The providers' own hosts.
    fn default() -> Self {
        Upstreams {
            anthropic: "https://api.anthropic.com".into(),
            openai: "https://api.openai.com".into(),
            openrouter: "https://openrouter.ai".into(),
            github: "https://github.com".into(),
        }
    }
}

/// The gateway: mints nothing itself, checks what runs present, forwards what they may.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) minter: Minter,
    pub(crate) upstreams: Upstreams,
    pub(crate) grants: Arc<dyn Grants>,
    pub(crate) client: reqwest::Client,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstreams", &self.inner.upstreams)
            .finish_non_exhaustive()
    }
}

/// A request's run, checked.
pub(crate) struct Caller {
    pub(crate) run: String,
    pub(crate) grant: Grant,
}

impl Gateway {
    /// A gateway checking tokens with `minter` and runs with `grants`.
    pub fn new(minter: Minter, upstreams: Upstreams, grants: Arc<dyn Grants>) -> Self {
        let client = reqwest::Client::builder()
            // Never follow a redirect with a real credential attached.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .expect("a reqwest client with rustls builds");
        Gateway {
            inner: Arc::new(Inner {
                minter,
                upstreams,
                grants,
                client,
            }),
        }
    }

    /// `/llm/{provider}/…` and `/git/{owner}/{repo}/…`; everything else is 404.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/llm/{provider}/{*rest}", any(crate::llm::forward))
            .route("/git/{owner}/{repo}/{*rest}", any(crate::git::forward))
            .with_state(self.clone())
    }

    /// Checks who sent `headers`: a run token minted here, for a live run, with its proof
    /// when the run requires one.
    pub(crate) async fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let token = presented_token(headers).ok_or(Refusal::NoToken)?;
        let run = self.inner.minter.run_of(&token).ok_or(Refusal::NoToken)?;
        let grant = self.inner.grants.grant(&run).await?;
        if grant.proof_required {
            let proof = headers
                .get(PROOF_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or(Refusal::NoProof)?;
            if !self.inner.minter.proof_holds(&run, proof) {
                return Err(Refusal::NoProof);
            }
        }
        Ok(Caller { run, grant })
    }
}

/// This host's outward IPv4 address (the one its default route leaves from): where
/// sandboxes on this host reach a gateway listening on it. `None` without a route.
///
/// ```
/// if let Some(ip) = courier_gateway::outward_ipv4() {
///     assert!(!ip.is_loopback());
/// }
/// ```
pub fn outward_ipv4() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the route's source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The run token a request carries, wherever its client puts credentials: `x-api-key`,
/// `Authorization: Bearer`, `Authorization: Basic` (git's password) or
/// [`RUN_TOKEN_HEADER`].
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header(RUN_TOKEN_HEADER).or_else(|| header("x-api-key")) {
        return Some(token.trim().to_owned());
    }
    let auth = header("authorization")?.trim();
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let basic = auth.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_, password) = decoded.split_once(':')?;
    Some(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_wherever_a_client_puts_it() {
        let with = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            presented_token(&h)
        };
        assert_eq!(with("x-api-key", "crt_a_b").as_deref(), Some("crt_a_b"));
        assert_eq!(
            with("authorization", "Bearer crt_a_b").as_deref(),
            Some("crt_a_b")
        );
        // git: `x-access-token:<token>`.
        let basic = base64::engine::general_purpose::STANDARD.encode("x:crt_a_b");
        assert_eq!(
            with("authorization", &format!("Basic {basic}")).as_deref(),
            Some("crt_a_b")
        );
        assert_eq!(
            with(RUN_TOKEN_HEADER, "crt_a_b").as_deref(),
            Some("crt_a_b")
        );
        assert_eq!(with("authorization", "Digest x"), None);
    }
}
