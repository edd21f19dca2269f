use std::fs;

use chrono::Utc;

use super::names::new_build_id;
use super::store::read_log;
use super::*;

#[test]
fn names_are_checked_and_tags_split_off() {
    assert_eq!(
        parse_name("my-tpl:v1").unwrap(),
        ("my-tpl".to_owned(), Some("v1".to_owned()))
    );
    assert_eq!(parse_name("a.b_c").unwrap(), ("a.b_c".to_owned(), None));
    for bad in ["", "Upper", "team/name", "-x", "base", "ok:bad tag"] {
        let err = parse_name(bad).unwrap_err();
        assert!(
            err.to_string().contains("name") || err.to_string().contains("tags"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn build_ids_look_like_uuids() {
    let id = new_build_id();
    let parts: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12]);
}

#[test]
fn torn_log_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.log");
    let entry = LogEntry {
        timestamp: Utc::now(),
        level: LogLevel::Info,
        message: "hello".to_owned(),
        step: Some("1".to_owned()),
    };
    let mut text = serde_json::to_string(&entry).unwrap();
    text.push_str("\n{\"timestamp\":");
    fs::write(&path, text).unwrap();
    assert_eq!(read_log(&path), vec![entry]);
}
