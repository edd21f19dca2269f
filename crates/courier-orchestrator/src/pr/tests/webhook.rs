//! Webhook deliveries: signatures checked before anything is read.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pr::{WebhookEvent, handle_webhook, verify_signature};
use crate::{OrchestratorError, WebhookRejection};

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn webhook_signatures_are_checked_before_anything_is_read() {
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let good = sign(b"s3cret", body);
    assert_eq!(
        handle_webhook(b"s3cret", Some("ping"), Some(&good), body).unwrap(),
        WebhookEvent::Ping
    );
    for (sig, says) in [
        (None, "missing"),
        (Some("sha1=abcd"), "sha256="),
        (Some("sha256=zz"), "hex"),
        (Some(sign(b"other", body).as_str()), "does not match"),
    ] {
        let err = handle_webhook(b"s3cret", Some("ping"), sig, body)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{sig:?}: {err}");
    }
    let tampered = br#"{"zen":"Keep it logically awesome!"}"#;
    assert!(handle_webhook(b"s3cret", Some("ping"), Some(&good), tampered).is_err());
    assert!(verify_signature(b"", Some(&good), body).is_err());
}

#[test]
fn each_rejection_says_what_a_caller_can_act_on() {
    let body = br#"{"action":"closed"}"#;
    let good = sign(b"s3cret", body);
    let rejection = |secret: &[u8], event: Option<&str>, sig: Option<&str>| match handle_webhook(
        secret, event, sig, body,
    ) {
        Err(OrchestratorError::Webhook(why)) => why,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(matches!(
        rejection(b"", Some("ping"), Some(&good)),
        WebhookRejection::NoSecret
    ));
    assert!(matches!(
        rejection(b"s3cret", Some("ping"), None),
        WebhookRejection::MissingSignature
    ));
    assert!(matches!(
        rejection(b"other", Some("ping"), Some(&good)),
        WebhookRejection::Mismatch
    ));
    assert!(matches!(
        rejection(b"s3cret", None, Some(&good)),
        WebhookRejection::MissingEvent
    ));
    assert!(matches!(
        rejection(b"s3cret", Some("pull_request"), Some(&good)),
        WebhookRejection::UnreadablePayload(_)
    ));
}
