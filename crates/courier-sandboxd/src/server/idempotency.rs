//! Idempotent create: `POST /sandboxes` with an `Idempotency-Key` header.
//!
//! The same key with the same body, from the same API key, within [`KEY_WINDOW`] of the
//! first use, answers with the sandbox the first request created instead of creating
//! another; concurrent duplicates wait for the one create in flight. The same key with
//! a different body is refused (it is a client bug: a retry must repeat its request).
//! Keys are scoped by the SHA-256 of the API key that sent them, so one key's idempotency
//! keys never answer with another key's sandbox; at most [`MAX_KEYS`] are remembered,
//! each for [`KEY_WINDOW`]. They are kept in memory: a restarted server forgets them
//! (E2B's API has no idempotent create to follow here; a retry across a restart creates
//! a new sandbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::{CreateRequest, Sandboxd};
use crate::error::Error;
use crate::lock::lock;
use crate::state::SandboxRecord;

/// How long a key is remembered after its first use.
pub const KEY_WINDOW: Duration = Duration::from_secs(60 * 60);

/// How many keys are remembered at once (all API keys together).
pub const MAX_KEYS: usize = 10_000;

/// Longest accepted key (printable ASCII).
pub const MAX_KEY_LEN: usize = 255;

/// Why an idempotent create failed.
#[derive(Debug, thiserror::Error)]
pub enum IdempotentError {
    /// The header value is empty, too long or not printable ASCII.
    #[error(
        "invalid Idempotency-Key header: expected 1 to {MAX_KEY_LEN} printable ASCII characters"
    )]
    InvalidKey,
    /// The key was used with another body.
    #[error(
        "the Idempotency-Key header was already used with a different request body; a \
         retry must repeat its request exactly, a new request needs a new key"
    )]
    DifferentBody,
    /// The key's sandbox is gone (killed since).
    #[error(
        "the Idempotency-Key header names a create whose sandbox {0} no longer exists; use a \
         new key to create another"
    )]
    SandboxGone(String),
    /// Too many keys in use.
    #[error(
        "too many Idempotency-Key values in use (at most {MAX_KEYS} within {} s); retry later",
        KEY_WINDOW.as_secs()
    )]
    TooMany,
    /// The create itself failed.
    #[error(transparent)]
    Create(#[from] Error),
}

struct Slot {
    body: [u8; 32],
    first_used: Instant,
    sandbox: tokio::sync::OnceCell<String>,
}

/// A remembered key: the SHA-256 of the API key that sent it, and the key.
type ScopedKey = ([u8; 32], String);

/// The remembered keys, each to the create it made.
#[derive(Default)]
pub(super) struct IdempotencyKeys {
    slots: Mutex<HashMap<ScopedKey, Arc<Slot>>>,
}

/// A JSON body in canonical form (object keys sorted at every depth, no whitespace), so
/// that a retry whose client serializes keys in another order is the same request.
pub fn canonical_body(body: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(&serde_json::Value::Object(body.clone()), &mut out);
    out.into_bytes()
}

/// Whether `key` is an acceptable header value.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

impl IdempotencyKeys {
    fn slot(
        &self,
        scope: [u8; 32],
        key: &str,
        body: [u8; 32],
    ) -> Result<Arc<Slot>, IdempotentError> {
        let mut slots = lock(&self.slots);
        let now = Instant::now();
        slots.retain(|_, slot| now.duration_since(slot.first_used) < KEY_WINDOW);
        let id = (scope, key.to_owned());
        if let Some(slot) = slots.get(&id) {
            if slot.body != body {
                return Err(IdempotentError::DifferentBody);
            }
            return Ok(slot.clone());
        }
        if slots.len() >= MAX_KEYS {
            return Err(IdempotentError::TooMany);
        }
        let slot = Arc::new(Slot {
            body,
            first_used: now,
            sandbox: tokio::sync::OnceCell::new(),
        });
        slots.insert(id, slot.clone());
        Ok(slot)
    }

    /// Forgets `slot` when no create succeeded under it, so a failed create does not pin
    /// its key to a body.
    fn forget_failed(&self, scope: [u8; 32], key: &str, slot: &Arc<Slot>) {
        let mut slots = lock(&self.slots);
        let id = (scope, key.to_owned());
        if slots
            .get(&id)
            .is_some_and(|s| Arc::ptr_eq(s, slot) && s.sandbox.get().is_none())
        {
            slots.remove(&id);
        }
    }
}

impl Sandboxd {
    /// Creates a sandbox under idempotency `key` sent with `api_key` and a request body
    /// whose canonical form is `body` (see the [module docs](self)). Returns the record
    /// and whether it is a replay of an earlier create.
    pub async fn create_idempotent(
        &self,
        api_key: &str,
        key: &str,
        body: &[u8],
        request: CreateRequest,
    ) -> Result<(SandboxRecord, bool), IdempotentError> {
        if !valid_key(key) {
            return Err(IdempotentError::InvalidKey);
        }
        let scope: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        let body: [u8; 32] = Sha256::digest(body).into();
        let keys = &self.inner.idempotency;
        let slot = keys.slot(scope, key, body)?;
        let mut created = None;
        let result = slot
            .sandbox
            .get_or_try_init(|| async {
                let record = self.create(request).await?;
                let id = record.sandbox_id.clone();
                created = Some(record);
                Ok::<_, Error>(id)
            })
            .await;
        let id = match result {
            Ok(id) => id.clone(),
            Err(e) => {
                keys.forget_failed(scope, key, &slot);
                return Err(e.into());
            }
        };
        if let Some(record) = created {
            return Ok((record, false));
        }
        match self.get(&id) {
            Ok(record) => Ok((record, true)),
            Err(Error::NotFound(_)) => Err(IdempotentError::SandboxGone(id)),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_scoped_and_bound_to_their_body() {
        let keys = IdempotencyKeys::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let first = keys.slot(a, "k", [9; 32]).unwrap();
        // The same key and body from the same API key is the same create.
        assert!(Arc::ptr_eq(&first, &keys.slot(a, "k", [9; 32]).unwrap()));
        // Another body under the same key is refused.
        assert!(matches!(
            keys.slot(a, "k", [8; 32]),
            Err(IdempotentError::DifferentBody)
        ));
        // An attacker holding API key B reusing A's idempotency key gets a create of
        // its own, never A's sandbox.
        assert!(!Arc::ptr_eq(&first, &keys.slot(b, "k", [9; 32]).unwrap()));
        for i in 0..(MAX_KEYS - 2) {
            keys.slot(a, &format!("n{i}"), [0; 32]).unwrap();
        }
        assert!(matches!(
            keys.slot(a, "one-too-many", [0; 32]),
            Err(IdempotentError::TooMany)
        ));
        // A failed create frees its key.
        keys.forget_failed(a, "k", &first);
        assert!(keys.slot(a, "k", [8; 32]).is_ok());
    }

    #[test]
    fn bodies_are_compared_whatever_their_key_order_and_spacing() {
        let parse = |text: &str| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_str(text).unwrap()
        };
        let a = parse(r#"{"templateID":"base","metadata":{"b":"2","a":"1"},"x":[{"q":1,"p":2}]}"#);
        let b = parse(
            r#"{ "x": [{"p": 2, "q": 1}], "metadata": {"a": "1", "b": "2"}, "templateID": "base" }"#,
        );
        assert_eq!(canonical_body(&a), canonical_body(&b));
        let c = parse(r#"{"templateID":"base","metadata":{"b":"2","a":"1"},"x":[{"q":1,"p":3}]}"#);
        assert_ne!(canonical_body(&a), canonical_body(&c));
    }

    #[test]
    fn keys_must_be_short_printable_ascii() {
        assert!(valid_key("req-1_2:3"));
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
