//! `CommandLine::to_shell` must deliver every argument byte for byte, whatever it holds.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use courier_tools::{CommandLine, RunRequest, ToolId, first_run_command, shell_quote};
use proptest::prelude::*;

/// A tiny POSIX word splitter for the subset `to_shell` emits: bare words, single-quoted
/// strings and `\'`, separated by spaces.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Runs `printf '%s\0' ARGS…` through `sh -c` and splits the output on NUL.
fn through_sh(args: &[String]) -> Vec<String> {
    let mut cmd = CommandLine::new(
        "printf",
        std::iter::once("%s\\0".to_owned()).chain(args.iter().cloned()),
    );
    cmd.stdin_null = true;
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd.to_shell())
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    parts.pop();
    parts
}

#[test]
fn hostile_prompts_survive_a_real_shell() {
    let prompts = [
        "plain",
        "",
        "it's \"quoted\" and `ticked` and $HOME and $(rm -rf /) and ${PATH}",
        "multi\nline\n\nprompt\n",
        "'''",
        "\\'\\\\",
        "* ? [a-z] ~ # ; & | < > ( ) { } !",
        "ünïcödé ✓ 🚀",
        "  leading and trailing spaces  ",
        "tab\there",
    ];
    let args: Vec<String> = prompts.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(through_sh(&args), args);
}

#[test]
fn tiny_splitter_reads_back_a_full_agent_command() {
    let prompt = "Fix 'it' now; echo $x\nand \"this\"";
    let cmd = first_run_command(
        ToolId::Claude,
        &RunRequest {
            prompt: prompt.into(),
            ..Default::default()
        },
    );
    let line = cmd.to_shell();
    let words = split_words(
        line.split(" && ")
            .nth(1)
            .unwrap()
            .trim_end_matches(" < /dev/null"),
    );
    let claude_at = words.iter().position(|w| w == "claude").unwrap();
    assert_eq!(words[claude_at + 1..], cmd.args[..]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn quoted_words_split_back_to_themselves(words in prop::collection::vec("[^\\x00]{0,30}", 0..6)) {
        let line = words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(split_words(&line), words);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_arguments_round_trip_through_sh(args in prop::collection::vec("[^\\x00]{0,40}", 1..4)) {
        prop_assert_eq!(through_sh(&args), args);
    }
}
