use serde::{Deserialize, Serialize};

use super::*;

#[test]
fn debug_display_and_serialize_show_only_last_four() {
    let s = Secret::new("ghp_0123456789abcd");
    assert_eq!(format!("{s:?}"), "****abcd");
    assert_eq!(s.to_string(), "****abcd");
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"****abcd\"");
    assert!(!format!("{:?}", Some(&s)).contains("0123"));
}

#[test]
fn short_secrets_are_fully_masked() {
    assert_eq!(Secret::new("abc").masked(), "****");
    assert_eq!(Secret::new("").masked(), "****");
    assert_eq!(Secret::new("1234567").masked(), "****");
    assert_eq!(Secret::new("12345678").masked(), "****5678");
    assert_eq!(
        serde_json::to_string(&Secret::new("abc")).unwrap(),
        "\"****\""
    );
}

#[test]
fn multibyte_tail_is_cut_on_char_boundaries() {
    assert_eq!(Secret::new("ééééééééé").masked(), "****éééé");
}

#[test]
fn exposed_wrapper_writes_the_raw_value() {
    let s = Secret::new("tok-0123456789");
    assert_eq!(
        serde_json::to_string(&Exposed(&s)).unwrap(),
        "\"tok-0123456789\""
    );
    assert_eq!(
        serde_json::to_string(&s.exposed()).unwrap(),
        "\"tok-0123456789\""
    );
    assert!(!format!("{:?}", Exposed(&s)).contains("0123"));
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Wire {
    masked: Secret,
    #[serde(with = "crate::exposed")]
    raw: Secret,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::exposed::option"
    )]
    maybe: Option<Secret>,
}

#[test]
fn exposed_fields_round_trip_and_masked_fields_do_not() {
    let wire = Wire {
        masked: Secret::new("sk-masked-abcd"),
        raw: Secret::new("tok-raw-0123456789"),
        maybe: Some(Secret::new("tok-maybe-wxyz")),
    };
    let json = serde_json::to_string(&wire).unwrap();
    assert_eq!(
        json,
        r#"{"masked":"****abcd","raw":"tok-raw-0123456789","maybe":"tok-maybe-wxyz"}"#
    );
    let back: Wire = serde_json::from_str(&json).unwrap();
    assert_eq!(back.raw, wire.raw);
    assert_eq!(back.maybe, wire.maybe);
    // What was masked on the way out stays masked: it cannot be read back.
    assert_eq!(back.masked.expose(), "****abcd");

    let none: Wire = serde_json::from_str(r#"{"masked":"a","raw":"b"}"#).unwrap();
    assert_eq!(none.maybe, None);
    assert_eq!(
        serde_json::to_string(&none).unwrap(),
        r#"{"masked":"****","raw":"b"}"#
    );
}

#[test]
fn deserialize_reads_the_raw_value() {
    let s: Secret = serde_json::from_str("\"e2b_0123456789abcdef\"").unwrap();
    assert_eq!(s.expose(), "e2b_0123456789abcdef");
    assert!(serde_json::from_str::<Secret>("12").is_err());
}

#[test]
fn option_none_serializes_as_null_without_skip() {
    #[derive(Serialize)]
    struct Body {
        #[serde(with = "crate::exposed::option")]
        token: Option<Secret>,
    }
    assert_eq!(
        serde_json::to_string(&Body { token: None }).unwrap(),
        r#"{"token":null}"#
    );
}
