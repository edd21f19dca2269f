use super::output::{LineSplitter, MAX_LINE, exit_message};
use super::*;
use crate::envd_link::Stream;

#[test]
fn output_is_split_into_lines_per_stream() {
    let mut splitter = LineSplitter::default();
    assert!(splitter.push(Stream::Stdout, b"hel").is_empty());
    assert_eq!(splitter.push(Stream::Stderr, b"err\r\n"), ["err"]);
    assert_eq!(splitter.push(Stream::Stdout, b"lo\nwor"), ["hello"]);
    assert_eq!(splitter.finish(), ["wor"]);
    assert!(splitter.finish().is_empty());
}

#[test]
fn endless_lines_are_cut() {
    let mut splitter = LineSplitter::default();
    let lines = splitter.push(Stream::Stdout, &vec![b'x'; MAX_LINE + 10]);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].len() <= MAX_LINE + '…'.len_utf8());
}

#[test]
fn relative_workdirs_continue_from_the_current_one() {
    let mut env = Environment {
        envs: BTreeMap::new(),
        user: None,
        workdir: None,
    };
    assert_eq!(absolute_workdir("/srv", &env), "/srv");
    assert_eq!(absolute_workdir("app", &env), "/home/user/app");
    env.user = Some("root".to_owned());
    assert_eq!(absolute_workdir("app", &env), "/root/app");
    env.workdir = Some("/srv/".to_owned());
    assert_eq!(absolute_workdir("app/x", &env), "/srv/app/x");
}

#[test]
fn a_step_gets_its_own_deadline_or_the_builds_when_that_is_sooner() {
    // What a recipe author tries: a step that never ends (`sleep infinity`, a
    // hanging `npm install`), or many steps that each stay under the step deadline.
    let now = tokio::time::Instant::now();
    let roomy = Deadlines {
        step: Duration::from_secs(10),
        build: Duration::from_secs(3600),
        build_end: now + Duration::from_secs(3600),
    };
    let (end, passed) = roomy.for_step();
    assert!(end < roomy.build_end);
    assert!(
        passed.contains("10 s") && passed.contains("template_step_timeout"),
        "{passed}"
    );
    let late = Deadlines {
        step: Duration::from_secs(600),
        build: Duration::from_secs(60),
        build_end: now + Duration::from_secs(5),
    };
    let (end, passed) = late.for_step();
    assert_eq!(end, late.build_end);
    assert!(
        passed.contains("60 s") && passed.contains("template_build_timeout"),
        "{passed}"
    );
}

#[test]
fn failure_messages_name_the_exit_code_and_quote_the_output() {
    assert_eq!(exit_message(3, &["boom".to_owned()]), "exit code 3: boom");
    assert_eq!(exit_message(-1, &[]), "killed by a signal");
}
