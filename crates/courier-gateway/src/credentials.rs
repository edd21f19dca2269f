//! Run tokens and proofs: minted from one server secret, checked without any storage.
//!
//! Both are HMAC-SHA256 tags of the run id under a key derived from the server secret
//! (different labels, so one never stands for the other). Nothing is stored: a token is
//! valid while [`crate::Grants`] says its run lives, so a run's tokens die with the run
//! and survive a restart of the server.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use courier_secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// What every run token starts with (so a leaked one is recognisable in a scan).
pub const TOKEN_PREFIX: &str = "crt_";

/// The header the sandbox backend's egress adds with the run's proof.
pub const PROOF_HEADER: &str = "x-courier-proof";

/// The header git sends the run token in (`http.extraHeader`), when not as a password.
pub const RUN_TOKEN_HEADER: &str = "x-courier-run-token";

/// A run's pair: the token the sandbox holds, the proof its egress adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCredentials {
    /// Goes into the sandbox, as the CLI's API key and git's credential.
    pub token: Secret,
    /// Never enters the sandbox: handed to the sandbox backend as a header transform.
    pub proof: Secret,
}

/// Mints and checks run credentials.
#[derive(Clone)]
pub struct Minter {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Minter(****)")
    }
}

impl Minter {
    /// A minter keyed by `secret` (the server's master key; the key used here is derived
    /// from it, so it is never used for two purposes).
    ///
    /// ```
    /// let minter = courier_gateway::Minter::new(&[7u8; 32]);
    /// let run = "0190c3a4-0000-7000-8000-000000000001";
    /// let credentials = minter.mint(run);
    /// assert_eq!(minter.run_of(credentials.token.expose()).as_deref(), Some(run));
    /// assert!(minter.proof_holds(run, credentials.proof.expose()));
    /// ```
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"courier-gateway/v1");
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        Minter { key }
    }

    fn tag(&self, label: &[u8], run: &str) -> HmacSha256 {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&*self.key).expect("HMAC takes any key");
        mac.update(label);
        mac.update(&[0]);
        mac.update(run.as_bytes());
        mac
    }

    /// The credentials of `run` (always the same for the same run and secret).
    pub fn mint(&self, run: &str) -> RunCredentials {
        let token = URL_SAFE_NO_PAD.encode(self.tag(b"token", run).finalize().into_bytes());
        let proof = URL_SAFE_NO_PAD.encode(self.tag(b"proof", run).finalize().into_bytes());
        RunCredentials {
            token: Secret::new(format!("{TOKEN_PREFIX}{run}.{token}")),
            proof: Secret::new(proof),
        }
    }

    /// The run a token was minted for, if it was minted here (checked in constant time).
    pub fn run_of(&self, token: &str) -> Option<String> {
        let (run, tag) = token.strip_prefix(TOKEN_PREFIX)?.rsplit_once('.')?;
        if run.is_empty()
            || run.len() > 64
            || !run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.tag(b"token", run).verify_slice(&tag).ok()?;
        Some(run.to_owned())
    }

    /// Whether `proof` is `run`'s (checked in constant time).
    pub fn proof_holds(&self, run: &str, proof: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(proof.trim())
            .is_ok_and(|tag| self.tag(b"proof", run).verify_slice(&tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "0190c3a4-0000-7000-8000-000000000001";

    #[test]
    fn tokens_name_their_run_and_nothing_else_passes() {
        let minter = Minter::new(b"server secret");
        let c = minter.mint(RUN);
        assert!(c.token.expose().starts_with("crt_0190c3a4-"));
        assert_eq!(minter.run_of(c.token.expose()).as_deref(), Some(RUN));
        // Another server's token, a token for another run with this run's tag, garbage.
        let other = Minter::new(b"another secret").mint(RUN);
        assert_eq!(minter.run_of(other.token.expose()), None);
        let tag = c.token.expose().rsplit_once('.').unwrap().1;
        let forged = format!("crt_0190c3a4-0000-7000-8000-000000000002.{tag}");
        assert_eq!(minter.run_of(&forged), None);
        for bad in ["", "crt_", "crt_.x", "sk-ant-123", "crt_a b.xx"] {
            assert_eq!(minter.run_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_proof_is_neither_the_token_nor_another_runs() {
        let minter = Minter::new(b"server secret");
        let c = minter.mint(RUN);
        assert!(minter.proof_holds(RUN, c.proof.expose()));
        assert!(!minter.proof_holds("0190c3a4-0000-7000-8000-000000000002", c.proof.expose()));
        let token_tag = c.token.expose().rsplit_once('.').unwrap().1;
        assert!(
            !minter.proof_holds(RUN, token_tag),
            "the token's tag is not the proof"
        );
        assert!(!minter.proof_holds(RUN, ""));
        assert!(!format!("{minter:?}").contains("secret"));
    }
}
