//! The git commands run in the sandbox and their output read.

use crate::pr::{GitState, parse_git_state, push_command};

#[test]
fn git_state_reads_remote_branch_and_default_branch() {
    let state = parse_git_state(
        "remote=git@github.com:acme/engine.git\nbranch=courier/1\nbase=origin/main\n",
    );
    assert_eq!(
        state,
        GitState {
            remote_url: Some("git@github.com:acme/engine.git".into()),
            branch: Some("courier/1".into()),
            default_branch: Some("main".into()),
        }
    );
    assert_eq!(parse_git_state(""), GitState::default());
    assert_eq!(
        parse_git_state("remote=\nbranch=HEAD\nbase=\n"),
        GitState::default()
    );
}

#[test]
fn push_command_never_forces() {
    let cmd = push_command("/home/user/project", "courier/ab");
    assert!(cmd.contains("HEAD:refs/heads/courier/ab"), "{cmd}");
    assert!(!cmd.contains("--force") && !cmd.contains(" -f"), "{cmd}");
}
