use super::*;

fn bash_lc(script: &str) -> ProcessConfig {
    ProcessConfig {
        cmd: "/bin/bash".to_owned(),
        args: vec!["-l".to_owned(), "-c".to_owned(), script.to_owned()],
        ..ProcessConfig::default()
    }
}

#[test]
fn only_plain_words_of_a_login_shell_command_qualify() {
    let words = |s: &str| simple_command(&bash_lc(s));
    assert_eq!(words("true"), Some(vec!["true".to_owned()]));
    assert_eq!(
        words("  ls -la\t/tmp/x_y,z+1%@:a=b "),
        Some(vec!["ls".into(), "-la".into(), "/tmp/x_y,z+1%@:a=b".into()])
    );
    assert_eq!(
        words("./run.sh --fast"),
        Some(vec!["./run.sh".into(), "--fast".into()])
    );
    // Any shell syntax keeps bash: expansion, quoting, operators, redirections, globs,
    // comments, tilde, newlines.
    for script in [
        "echo $HOME",
        "ls 'a b'",
        "a && b",
        "a; b",
        "a | b",
        "a > f",
        "ls *",
        "a # c",
        "ls ~",
        "a\nb",
        "a &",
        "$(id)",
        "a\\ b",
        "ls [ab]",
        "{ a; }",
        "",
    ] {
        assert_eq!(words(script), None, "{script:?}");
    }
    // Builtins never exec a program (but bare true/false behave as their programs do),
    // reserved words are syntax, a leading assignment is not a program.
    for script in [
        "echo hi", "cd /tmp", "true x", "false 1", "exec ls", "if", "time ls", "A=1 ls", ".",
    ] {
        assert_eq!(words(script), None, "{script:?}");
    }
    assert_eq!(words("false"), Some(vec!["false".to_owned()]));
    // Not the SDK's shape: other shells, options or argument counts.
    let mut other = bash_lc("true");
    other.cmd = "/usr/bin/bash".to_owned();
    assert_eq!(simple_command(&other), None);
    let mut other = bash_lc("true");
    other.args[0] = "-i".to_owned();
    assert_eq!(simple_command(&other), None);
    let mut other = bash_lc("true");
    other.args.push("name".to_owned());
    assert_eq!(simple_command(&other), None);
}

#[test]
fn the_trace_yields_absolute_paths_including_path_like_values() {
    let trace =
        "+ . /home/u/.bashrc\n++ '[' -d /home/u/bin ']'\n+ PATH=/home/u/bin:/usr/bin\n+ cd rel\n";
    let paths = traced_paths(trace);
    for expected in ["/home/u/.bashrc", "/home/u/bin", "/usr/bin"] {
        assert!(
            paths.contains(&PathBuf::from(expected)),
            "{expected} in {paths:?}"
        );
    }
    assert!(!paths.iter().any(|p| p.to_str() == Some("rel")));
    let many = "/x ".repeat(MAX_TRACED_PATHS * 2);
    assert_eq!(traced_paths(&many).len(), MAX_TRACED_PATHS);
}

#[test]
fn a_capture_with_traps_or_aliases_is_refused_and_functions_are_recorded() {
    let ok = b"0027\ndeclare -f nvm\n\0HOME=/h\0_=/usr/bin/env\0PATH=/bin\0";
    let login = parse_capture(ok, Fingerprint::default()).unwrap();
    assert_eq!(login.umask, 0o027);
    assert!(login.functions.contains("nvm"));
    assert_eq!(
        login.env,
        [
            ("HOME".to_owned(), "/h".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned())
        ]
    );
    assert!(parse_capture(b"0022\ntraps\n\0", Fingerprint::default()).is_none());
    assert!(parse_capture(b"0022\naliases\n\0", Fingerprint::default()).is_none());
    assert!(parse_capture(b"0022\nlimits\n\0", Fingerprint::default()).is_none());
    assert!(parse_capture(b"0022\n", Fingerprint::default()).is_none());
    assert!(parse_capture(b"junk\n\0", Fingerprint::default()).is_none());
}

#[test]
fn commands_resolve_as_bash_searches_path_and_functions_keep_bash() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let write = |path: &Path, mode: u32| {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    write(&b.join("tool"), 0o755);
    // A directory of the same name earlier in PATH is skipped, as bash does.
    std::fs::create_dir_all(a.join("tool")).unwrap();
    let path = format!("{}:{}", a.display(), b.display());
    let login = Login {
        env: vec![("PATH".to_owned(), path.clone())],
        umask: 0o022,
        functions: HashSet::from(["shadowed".to_owned()]),
        fingerprint: Fingerprint::default(),
    };
    let direct = login
        .direct(&["tool".into(), "x".into()], dir.path(), None)
        .unwrap();
    assert_eq!(direct.program, b.join("tool"));
    assert_eq!(direct.argv, ["tool", "x"]);
    assert!(
        direct
            .env
            .contains(&("_".to_owned(), b.join("tool").display().to_string()))
    );
    // Relative names keep the word as `_`, as bash does.
    let direct = login.direct(&["b/tool".into()], dir.path(), None).unwrap();
    assert_eq!(direct.program, dir.path().join("b/tool"));
    assert!(direct.env.contains(&("_".to_owned(), "b/tool".to_owned())));
    // Not found, a profile function, a file without execute permission for the user,
    // a relative PATH entry: bash decides.
    assert!(
        login
            .direct(&["missing".into()], dir.path(), None)
            .is_none()
    );
    write(&b.join("shadowed"), 0o755);
    assert!(
        login
            .direct(&["shadowed".into()], dir.path(), None)
            .is_none()
    );
    // A file the kernel would refuse (no `#!`, not ELF): bash runs it itself.
    std::fs::write(b.join("plain"), "echo hi\n").unwrap();
    std::fs::set_permissions(
        b.join("plain"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(login.direct(&["plain".into()], dir.path(), None).is_none());
    std::fs::write(b.join("elf"), b"\x7fELF\x02\x01").unwrap();
    std::fs::set_permissions(
        b.join("elf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert!(login.direct(&["elf".into()], dir.path(), None).is_some());
    write(&b.join("private"), 0o700);
    let other = Identity {
        uid: 4242,
        gid: 4242,
        groups: vec![],
    };
    assert!(
        login
            .direct(&["private".into()], dir.path(), Some(&other))
            .is_none()
    );
    let relative = Login {
        env: vec![("PATH".to_owned(), format!(":{path}"))],
        ..login
    };
    assert!(
        relative
            .direct(&["tool".into()], dir.path(), None)
            .is_none()
    );
}

#[test]
fn a_fingerprint_notices_edits_creations_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".profile");
    let absent = dir.path().join(".local");
    std::fs::write(&file, "A=1\n").unwrap();
    let print = Fingerprint::of([file.clone(), absent.clone()]);
    assert!(print.unchanged());
    std::fs::create_dir(&absent).unwrap();
    assert!(!print.unchanged());
    let print = Fingerprint::of([file.clone(), absent.clone()]);
    std::fs::write(&file, "A=22\n").unwrap();
    assert!(!print.unchanged());
    let print = Fingerprint::of([file.clone()]);
    std::fs::remove_file(&file).unwrap();
    assert!(!print.unchanged());
}
