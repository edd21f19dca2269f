//! sudo's command line, the subset Courier's sudo supports.

use std::ffi::OsString;

use super::{
    SudoError,
    wire::{PreserveEnv, Request, Run, ShellMode},
};

/// The options this sudo understands, for error messages.
pub(crate) const SUPPORTED: &str = "-n, -E, --preserve-env[=LIST], -H, -u USER, -i, -s, -v, \
    -l, -k, -K, -S, -p PROMPT, -h, -V, --";

/// Usage, as `sudo -h` prints it.
pub(crate) const USAGE: &str = "\
usage: sudo -h | -K | -k | -V
usage: sudo -v [-knS] [-u user]
usage: sudo -l [-knS] [-u user] [command [arg ...]]
usage: sudo [-EHknS] [--preserve-env=list] [-u user] [VAR=value] [-i | -s] [command [arg ...]]

Courier's sudo: the sandbox's privilege broker (courier-envd) runs the command.
Options:
  -E, --preserve-env         keep the caller's environment (but PATH = secure_path)
      --preserve-env=LIST    keep these variables too
  -H, --set-home             HOME of the target user
  -i, --login                the target user's login shell, in its home
  -s, --shell                the caller's shell ($SHELL)
  -u, --user=USER            run as USER (a name or #uid; default root)
  -l, --list                 what may I run; with a command, its full path
  -v, --validate             may I use sudo (exit 0 when so)
  -k, -K                     accepted; there is no password cache to reset
  -n, -S, -p PROMPT          accepted; no password is ever asked
  -h, --help / -V, --version this help / the version
";

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// `-h`.
    Help,
    /// `-V`.
    Version,
    /// `-k` / `-K` alone: nothing to forget.
    Nothing,
    /// Something for the broker (a `run` request still lacks the environment).
    Broker(Request),
}

#[derive(Default)]
struct Flags {
    help: bool,
    version: bool,
    reset: bool,
    validate: bool,
    list: bool,
    login: bool,
    shell: bool,
    set_home: bool,
    preserve: Option<PreserveEnv>,
    user: Option<String>,
}

/// Parses the arguments after `argv[0]`. Option parsing stops at the first argument that
/// is not an option (as sudo's does), so `sudo ls -l` passes `-l` to `ls`.
pub(crate) fn parse(args: Vec<OsString>) -> Result<Invocation, SudoError> {
    let args = args
        .into_iter()
        .enumerate()
        .map(|(i, arg)| {
            arg.into_string().map_err(|arg| SudoError::NotUtf8 {
                what: format!("argument {} ({})", i + 1, arg.to_string_lossy()),
            })
        })
        .collect::<Result<Vec<String>, _>>()?;
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (long, None),
            };
            let option = format!("--{name}");
            let mut value_of = |what: &'static str| -> Result<String, SudoError> {
                if let Some(value) = &value {
                    return Ok(value.clone());
                }
                let next = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| SudoError::MissingValue {
                        option: option.clone(),
                        what,
                    })?;
                i += 1;
                Ok(next)
            };
            match name {
                "user" => flags.user = Some(value_of("a user name or #uid")?),
                "prompt" => {
                    value_of("a prompt")?;
                }
                "preserve-env" => {
                    flags.preserve = Some(match &value {
                        None => PreserveEnv::All,
                        Some(list) => PreserveEnv::Names(
                            list.split(',')
                                .filter(|n| !n.is_empty())
                                .map(str::to_owned)
                                .collect(),
                        ),
                    });
                }
                _ => {
                    if value.is_some() {
                        return Err(match long_flag(name, &mut flags) {
                            true => SudoError::UnexpectedValue { option },
                            false => SudoError::UnknownOption { option },
                        });
                    }
                    if !long_flag(name, &mut flags) {
                        return Err(SudoError::UnknownOption { option });
                    }
                }
            }
            continue;
        }
        let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
            i -= 1;
            break;
        };
        for (at, c) in shorts.char_indices() {
            match c {
                'u' | 'p' => {
                    let rest = &shorts[at + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        let next = args
                            .get(i)
                            .cloned()
                            .ok_or_else(|| SudoError::MissingValue {
                                option: format!("-{c}"),
                                what: if c == 'u' {
                                    "a user name or #uid"
                                } else {
                                    "a prompt"
                                },
                            })?;
                        i += 1;
                        next
                    } else {
                        rest.to_owned()
                    };
                    if c == 'u' {
                        flags.user = Some(value);
                    }
                    break;
                }
                'E' => flags.preserve = Some(PreserveEnv::All),
                'H' => flags.set_home = true,
                'i' => flags.login = true,
                's' => flags.shell = true,
                'v' => flags.validate = true,
                'l' => flags.list = true,
                'k' | 'K' => flags.reset = true,
                'h' => flags.help = true,
                'V' => flags.version = true,
                // No password is ever asked: nothing to make non-interactive or to read.
                'n' | 'S' => {}
                other => {
                    return Err(SudoError::UnknownOption {
                        option: format!("-{other}"),
                    });
                }
            }
        }
    }
    let rest = &args[i..];
    decide(flags, rest)
}

/// Sets the flag of a long option without a value; false when there is none by that name.
fn long_flag(name: &str, flags: &mut Flags) -> bool {
    match name {
        "set-home" => flags.set_home = true,
        "login" => flags.login = true,
        "shell" => flags.shell = true,
        "validate" => flags.validate = true,
        "list" => flags.list = true,
        "reset-timestamp" | "remove-timestamp" => flags.reset = true,
        "help" => flags.help = true,
        "version" => flags.version = true,
        "non-interactive" | "stdin" => {}
        _ => return false,
    }
    true
}

/// Whether `arg` is a `NAME=value` assignment (sudo's rule: before the command, a name of
/// letters, digits and `_` not starting with a digit).
fn assignment(arg: &str) -> Option<(String, String)> {
    let (name, value) = arg.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_owned(), value.to_owned()))
}

fn decide(flags: Flags, rest: &[String]) -> Result<Invocation, SudoError> {
    if flags.help {
        return Ok(Invocation::Help);
    }
    if flags.version {
        return Ok(Invocation::Version);
    }
    if flags.login && flags.shell {
        return Err(SudoError::Conflict {
            first: "-i",
            second: "-s",
        });
    }
    if flags.validate {
        if !rest.is_empty() {
            return Err(SudoError::Conflict {
                first: "-v",
                second: "a command",
            });
        }
        return Ok(Invocation::Broker(Request::Validate));
    }
    if flags.list {
        return Ok(Invocation::Broker(Request::List {
            command: rest.to_vec(),
        }));
    }
    let assignments: Vec<(String, String)> = rest.iter().map_while(|a| assignment(a)).collect();
    let command = rest[assignments.len()..].to_vec();
    let shell = if flags.login {
        ShellMode::Login
    } else if flags.shell {
        ShellMode::Shell
    } else {
        ShellMode::None
    };
    if command.is_empty() && shell == ShellMode::None {
        return if flags.reset && assignments.is_empty() {
            Ok(Invocation::Nothing)
        } else {
            Err(SudoError::NoCommand)
        };
    }
    Ok(Invocation::Broker(Request::Run(Run {
        user: flags.user,
        shell,
        preserve_env: flags.preserve.unwrap_or_default(),
        set_home: flags.set_home,
        assignments,
        command,
        env: Vec::new(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Invocation, SudoError> {
        parse(args.iter().map(OsString::from).collect())
    }

    fn run_of(args: &[&str]) -> Run {
        match parse_str(args).unwrap() {
            Invocation::Broker(Request::Run(run)) => run,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn options_stop_at_the_command() {
        let run = run_of(&["-n", "ls", "-l", "-u", "x"]);
        assert_eq!(run.command, ["ls", "-l", "-u", "x"]);
        assert_eq!(run.user, None);
        assert_eq!(run_of(&["--", "-weird"]).command, ["-weird"]);
    }

    #[test]
    fn user_takes_every_spelling() {
        for args in [
            &["-u", "nobody", "id"][..],
            &["-unobody", "id"],
            &["--user", "nobody", "id"],
            &["--user=nobody", "id"],
            &["-nu", "nobody", "id"],
        ] {
            assert_eq!(run_of(args).user.as_deref(), Some("nobody"), "{args:?}");
        }
        assert!(matches!(
            parse_str(&["-u"]),
            Err(SudoError::MissingValue { option, .. }) if option == "-u"
        ));
    }

    #[test]
    fn combined_flags_and_env_policies() {
        let run = run_of(&["-nEH", "env"]);
        assert_eq!(run.preserve_env, PreserveEnv::All);
        assert!(run.set_home);
        let run = run_of(&["--preserve-env=A,B", "env"]);
        assert_eq!(
            run.preserve_env,
            PreserveEnv::Names(vec!["A".into(), "B".into()])
        );
        assert_eq!(run_of(&["env"]).preserve_env, PreserveEnv::Reset);
    }

    #[test]
    fn assignments_before_the_command_are_environment() {
        let run = run_of(&["DEBIAN_FRONTEND=noninteractive", "apt-get", "X=1"]);
        assert_eq!(
            run.assignments,
            [("DEBIAN_FRONTEND".to_owned(), "noninteractive".to_owned())]
        );
        assert_eq!(run.command, ["apt-get", "X=1"]);
        assert!(matches!(parse_str(&["A=1"]), Err(SudoError::NoCommand)));
    }

    #[test]
    fn shells_list_validate_and_no_ops() {
        let login = run_of(&["-i"]);
        assert_eq!(login.shell, ShellMode::Login);
        assert!(login.command.is_empty());
        assert_eq!(run_of(&["-s", "echo", "x"]).shell, ShellMode::Shell);
        assert!(matches!(
            parse_str(&["-i", "-s"]),
            Err(SudoError::Conflict { .. })
        ));
        assert!(matches!(
            parse_str(&["-v"]),
            Ok(Invocation::Broker(Request::Validate))
        ));
        assert!(matches!(
            parse_str(&["-l", "id"]),
            Ok(Invocation::Broker(Request::List { command })) if command == ["id"]
        ));
        assert!(matches!(parse_str(&["-k"]), Ok(Invocation::Nothing)));
        assert!(matches!(parse_str(&["-K"]), Ok(Invocation::Nothing)));
        assert_eq!(run_of(&["-k", "true"]).command, ["true"]);
        assert!(matches!(parse_str(&["-h"]), Ok(Invocation::Help)));
        assert!(matches!(parse_str(&["--version"]), Ok(Invocation::Version)));
        assert!(matches!(parse_str(&[]), Err(SudoError::NoCommand)));
    }

    #[test]
    fn unknown_options_are_named_with_the_supported_ones() {
        for (args, option) in [
            (&["-b", "x"][..], "-b"),
            (&["-nx", "true"], "-x"),
            (&["--chroot=/", "true"], "--chroot"),
            (&["-g", "adm", "true"], "-g"),
        ] {
            let err = parse_str(args).unwrap_err();
            assert!(
                matches!(&err, SudoError::UnknownOption { option: o } if o == option),
                "{args:?}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(option) && text.contains("-u USER"), "{text}");
        }
        assert!(matches!(
            parse_str(&["--login=yes"]),
            Err(SudoError::UnexpectedValue { .. })
        ));
    }

    #[test]
    fn arguments_that_are_not_utf8_are_refused_by_position() {
        use std::os::unix::ffi::OsStringExt as _;
        let err = parse(vec!["cat".into(), OsString::from_vec(vec![0xff])]).unwrap_err();
        assert!(err.to_string().contains("argument 2"), "{err}");
    }
}
