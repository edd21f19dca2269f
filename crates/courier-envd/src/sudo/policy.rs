//! The broker's decisions, pure: who may use sudo, as whom a command runs, with which
//! program, arguments and environment.
//!
//! The rule is the base template's sudoers (`user ALL=(ALL) NOPASSWD:ALL`, `user` being in
//! group `sudo`): root and members of group `sudo` may run anything as anyone, without a
//! password; everyone else nothing.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{
    SECURE_PATH,
    wire::{PreserveEnv, Run, ShellMode},
};
use crate::users::{User, UserDb};

/// The group whose members may use sudo.
pub(crate) const SUDO_GROUP: &str = "sudo";

/// Why the broker runs nothing; the message follows `sudo: ` on the caller's terminal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refusal(pub String);

/// The caller, as `SO_PEERCRED` and the account database describe it.
#[derive(Debug, Clone)]
pub(crate) struct Invoker {
    /// Its account (root gets one even when `/etc/passwd` lacks it).
    pub user: User,
    /// Its real group id at connect time (`SUDO_GID`).
    pub gid: u32,
}

/// Whether the process with these credentials may use sudo: root always, others when
/// their account is in group `sudo`.
pub(crate) fn authorize(uid: u32, gid: u32, db: &UserDb) -> Result<Invoker, Refusal> {
    let Some(user) = db.user_by_uid(uid).cloned() else {
        if uid == 0 {
            return Ok(Invoker {
                user: User {
                    name: "root".into(),
                    uid: 0,
                    gid: 0,
                    home: "/root".into(),
                    shell: "/bin/sh".into(),
                },
                gid,
            });
        }
        return Err(Refusal(format!(
            "you do not exist in the passwd database (uid {uid})"
        )));
    };
    if uid == 0 || db.in_group(&user, SUDO_GROUP) {
        Ok(Invoker { user, gid })
    } else {
        Err(Refusal(format!(
            "{} is not in the sudoers file (only root and members of group '{SUDO_GROUP}' may use sudo)",
            user.name
        )))
    }
}

/// The account `-u` names (a name, or `#uid` as sudo accepts), root when absent. Ids the
/// kernel reads as "unchanged" (4294967295) are refused: the command would stay root.
pub(crate) fn target(spec: Option<&str>, db: &UserDb) -> Result<User, Refusal> {
    let spec = spec.unwrap_or("root");
    let found = match spec.strip_prefix('#') {
        Some(number) => number.parse().ok().and_then(|uid| db.user_by_uid(uid)),
        None => db.user(spec),
    };
    let user = match found {
        Some(user) => user.clone(),
        None if spec == "root" || spec == "#0" => User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: "/bin/sh".into(),
        },
        None => return Err(Refusal(format!("unknown user {spec}"))),
    };
    let groups = db.supplementary_groups(&user);
    if user.uid == u32::MAX || user.gid == u32::MAX || groups.contains(&u32::MAX) {
        return Err(Refusal(format!(
            "user {} has an invalid uid or gid (4294967295)",
            user.name
        )));
    }
    Ok(user)
}

/// What the broker starts for a `run` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The executable (absolute, or relative to the starting directory when the caller
    /// gave a path).
    pub program: PathBuf,
    /// `argv[0]` (as typed; `-bash` for a login shell).
    pub arg0: String,
    /// The other arguments.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: BTreeMap<String, String>,
    /// `-i`: start in the target's home instead of the caller's directory.
    pub in_home: bool,
}

/// Plans a `run` request of `invoker` as `target`; `is_executable` answers for the files
/// found on the secure path (the broker asks the file system).
pub(crate) fn plan(
    run: &Run,
    invoker: &Invoker,
    target: &User,
    is_executable: impl Fn(&Path) -> bool,
) -> Result<Plan, Refusal> {
    let command_line = (!run.command.is_empty()).then(|| escape_for_shell(&run.command));
    let shell_args = || match &command_line {
        Some(line) => vec!["-c".to_owned(), line.clone()],
        None => Vec::new(),
    };
    let (program, arg0, args) = match run.shell {
        ShellMode::None => {
            let Some(name) = run.command.first() else {
                return Err(Refusal(
                    "no command given (use -s or -i for a shell)".to_owned(),
                ));
            };
            let program = if name.contains('/') {
                PathBuf::from(name)
            } else {
                find_on_secure_path(name, is_executable)
                    .ok_or_else(|| Refusal(format!("{name}: command not found")))?
            };
            (program, name.clone(), run.command[1..].to_vec())
        }
        ShellMode::Shell => {
            // sudo -s: the shell in the caller's SHELL, else its account's.
            let shell = run
                .env
                .iter()
                .find(|(name, value)| name == "SHELL" && !value.is_empty())
                .map_or_else(|| invoker.user.shell.clone(), |(_, v)| PathBuf::from(v));
            let arg0 = shell.to_string_lossy().into_owned();
            (shell, arg0, shell_args())
        }
        ShellMode::Login => {
            let shell = target.shell.clone();
            let base = shell
                .file_name()
                .map_or_else(|| "sh".into(), |n| n.to_string_lossy().into_owned());
            (shell, format!("-{base}"), shell_args())
        }
    };
    let mut sudo_command = program.to_string_lossy().into_owned();
    if !args.is_empty() {
        sudo_command.push(' ');
        sudo_command.push_str(truncate(&args.join(" "), 4096));
    }
    let env = environment(run, invoker, target, &sudo_command);
    Ok(Plan {
        program,
        arg0,
        args,
        env,
        in_home: run.shell == ShellMode::Login,
    })
}

/// sudo's `secure_path` lookup: the first directory with an executable regular file.
fn find_on_secure_path(name: &str, is_executable: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    SECURE_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| is_executable(candidate))
}

/// The first `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Variables sudo's `env_reset` keeps as they are (its default `env_keep`).
const ENV_KEEP: &[&str] = &[
    "COLORS",
    "DISPLAY",
    "HOSTNAME",
    "KRB5CCNAME",
    "LS_COLORS",
    "PS1",
    "PS2",
    "XAUTHORITY",
    "XAUTHORIZATION",
    "XDG_CURRENT_DESKTOP",
];

/// Variables sudo keeps when their value holds no `/` or `%` (its default `env_check`).
const ENV_CHECK: &[&str] = &["COLORTERM", "LANG", "LANGUAGE", "LINGUAS", "TERM", "TZ"];

/// Variables `-E` still drops: they change how the shell, the dynamic loader or an
/// interpreter behaves before the command's own code runs (sudo's default `env_delete`).
const ENV_DELETE: &[&str] = &[
    "IFS",
    "CDPATH",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "HOSTALIASES",
    "NLSPATH",
    "PATH_LOCALE",
    "TERMINFO",
    "TERMINFO_DIRS",
    "TERMPATH",
    "TERMCAP",
    "ENV",
    "BASH_ENV",
    "PS4",
    "GLOBIGNORE",
    "BASHOPTS",
    "SHELLOPTS",
    "JAVA_TOOL_OPTIONS",
    "PERLIO_DEBUG",
    "PERLLIB",
    "PERL5LIB",
    "PERL5OPT",
    "PERL5DB",
    "FPATH",
    "NULLCMD",
    "READNULLCMD",
    "ZDOTDIR",
    "TMPPREFIX",
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "RUBYLIB",
    "RUBYOPT",
];

/// Whether `env_reset` keeps `name=value`.
fn kept_by_reset(name: &str, value: &str, extra: &[String]) -> bool {
    if extra.iter().any(|n| n == name) || ENV_KEEP.contains(&name) {
        return true;
    }
    let checked = ENV_CHECK.contains(&name) || name.starts_with("LC_");
    checked && !value.contains('/') && !value.contains('%')
}

/// Whether `-E` drops `name`.
fn deleted_by_preserve(name: &str) -> bool {
    ENV_DELETE.contains(&name) || name.starts_with("LD_") || name.starts_with("_RLD")
}

/// The command's environment, as sudo's `rebuild_env` builds it for this policy
/// (`env_reset`, `secure_path`, `set_logname`), then the command line's `VAR=value`s.
fn environment(
    run: &Run,
    invoker: &Invoker,
    target: &User,
    sudo_command: &str,
) -> BTreeMap<String, String> {
    let login = run.shell == ShellMode::Login;
    let mut env = BTreeMap::new();
    let mut keep_home = false;
    for (name, value) in &run.env {
        // Exported shell functions (`BASH_FUNC_x%%=() {…}`) run code in the new shell.
        if value.starts_with("()") || name.starts_with("SUDO_") {
            continue;
        }
        let keep = match (&run.preserve_env, login) {
            (PreserveEnv::All, false) => !deleted_by_preserve(name),
            (PreserveEnv::Names(extra), _) => kept_by_reset(name, value, extra),
            _ => kept_by_reset(name, value, &[]),
        };
        if keep {
            keep_home |= name == "HOME";
            env.insert(name.clone(), value.clone());
        }
    }
    // SUDO_PS1 becomes the command's PS1, as sudo does.
    if let Some((_, ps1)) = run.env.iter().find(|(name, _)| name == "SUDO_PS1") {
        env.insert("PS1".into(), ps1.clone());
    }
    let name = target.name.clone();
    env.insert("PATH".into(), SECURE_PATH.into());
    env.insert("USER".into(), name.clone());
    env.insert("LOGNAME".into(), name.clone());
    if login {
        env.insert("SHELL".into(), target.shell.to_string_lossy().into_owned());
    } else {
        env.entry("SHELL".into())
            .or_insert_with(|| target.shell.to_string_lossy().into_owned());
    }
    if login || run.set_home || !keep_home {
        env.insert("HOME".into(), target.home.to_string_lossy().into_owned());
    }
    env.entry("TERM".into()).or_insert_with(|| "unknown".into());
    env.insert("SUDO_COMMAND".into(), sudo_command.to_owned());
    env.insert("SUDO_USER".into(), invoker.user.name.clone());
    env.insert("SUDO_UID".into(), invoker.user.uid.to_string());
    env.insert("SUDO_GID".into(), invoker.gid.to_string());
    env.insert(
        "SUDO_HOME".into(),
        invoker.user.home.to_string_lossy().into_owned(),
    );
    // `sudo VAR=value cmd` (allowed: the rule is ALL, which implies SETENV), except the
    // SUDO_* variables, which say who asked.
    for (name, value) in &run.assignments {
        if !name.starts_with("SUDO_") {
            env.insert(name.clone(), value.clone());
        }
    }
    env
}

/// The command line sudo hands to `shell -c` for `-s` / `-i`: arguments joined by
/// spaces, every character but letters, digits, `_`, `-` and `$` escaped with a
/// backslash (so `$VAR` still expands in the new shell, as with sudo).
pub(crate) fn escape_for_shell(args: &[String]) -> String {
    let mut line = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        for c in arg.chars() {
            if !(c.is_alphanumeric() || c == '_' || c == '-' || c == '$') {
                line.push('\\');
            }
            line.push(c);
        }
    }
    line
}

/// `sudo -l`'s answer for an authorized caller.
pub(crate) fn listing(invoker: &Invoker, host: &str) -> String {
    format!(
        "User {} may run the following commands on {host}:\n    (ALL : ALL) NOPASSWD: ALL\n",
        invoker.user.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        user:x:1000:1000::/home/user:/bin/bash\n\
        other:x:1001:1001::/home/other:/bin/sh\n\
        admin:x:1002:27::/home/admin:/bin/zsh\n\
        bad:x:4294967295:1003::/:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:user\nuser:x:1000:\nother:x:1001:\n";

    fn db() -> UserDb {
        UserDb::parse(PASSWD, GROUP)
    }

    fn as_user() -> Invoker {
        authorize(1000, 1000, &db()).unwrap()
    }

    fn run(command: &[&str]) -> Run {
        Run {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..Run::default()
        }
    }

    fn everywhere(_: &Path) -> bool {
        true
    }

    #[test]
    fn root_and_sudo_members_are_allowed_others_are_refused() {
        let db = db();
        assert!(authorize(0, 0, &db).is_ok());
        // Listed in group sudo, or sudo as primary group.
        assert_eq!(authorize(1000, 1000, &db).unwrap().user.name, "user");
        assert_eq!(authorize(1002, 27, &db).unwrap().user.name, "admin");
        // Attack: another account of the sandbox (a service user, a compromised tool
        // running as nobody) asks the broker for root.
        let refused = authorize(1001, 1001, &db).unwrap_err().0;
        assert!(
            refused.contains("other is not in the sudoers file"),
            "{refused}"
        );
        assert!(authorize(65534, 65534, &db).is_err());
        // A uid without an account is nobody sudo knows.
        let unknown = authorize(4242, 4242, &db).unwrap_err().0;
        assert!(
            unknown.contains("do not exist in the passwd database"),
            "{unknown}"
        );
        // Root needs no passwd entry (a minimal root file system).
        assert!(authorize(0, 0, &UserDb::default()).is_ok());
        // A group named sudo with another gid does not make everyone a member.
        let lookalike = UserDb::parse(PASSWD, "sudo:x:27:\nsudo2:x:28:other\n");
        assert!(authorize(1001, 1001, &lookalike).is_err());
    }

    #[test]
    fn the_target_must_exist_and_have_a_real_uid() {
        let db = db();
        assert_eq!(target(None, &db).unwrap().uid, 0);
        assert_eq!(target(Some("nobody"), &db).unwrap().uid, 65534);
        assert_eq!(target(Some("#1001"), &db).unwrap().name, "other");
        assert_eq!(
            target(Some("ghost"), &db).unwrap_err().0,
            "unknown user ghost"
        );
        assert!(target(Some("#777"), &db).is_err());
        // uid 4294967295 means "unchanged" to setresuid: the command would stay root.
        assert!(
            target(Some("bad"), &db)
                .unwrap_err()
                .0
                .contains("invalid uid")
        );
    }

    #[test]
    fn commands_are_looked_up_on_the_secure_path_not_the_callers() {
        // The caller's PATH could point at a directory it controls.
        let mut request = run(&["id", "-u"]);
        request.env = vec![("PATH".into(), "/tmp/evil:/usr/bin".into())];
        let plan = plan(&request, &as_user(), &target(None, &db()).unwrap(), |p| {
            p == Path::new("/usr/bin/id") || p.starts_with("/tmp")
        })
        .unwrap();
        assert_eq!(plan.program, PathBuf::from("/usr/bin/id"));
        assert_eq!(
            (plan.arg0.as_str(), plan.args.as_slice()),
            ("id", &["-u".to_owned()][..])
        );
        assert_eq!(plan.env["PATH"], SECURE_PATH);
        assert_eq!(plan.env["SUDO_COMMAND"], "/usr/bin/id -u");
        let missing = super::plan(
            &run(&["nope"]),
            &as_user(),
            &target(None, &db()).unwrap(),
            |_| false,
        );
        assert_eq!(missing.unwrap_err().0, "nope: command not found");
        // A path is used as given (relative to the caller's directory).
        let local = super::plan(
            &run(&["./build.sh"]),
            &as_user(),
            &target(None, &db()).unwrap(),
            |_| false,
        );
        assert_eq!(local.unwrap().program, PathBuf::from("./build.sh"));
    }

    #[test]
    fn env_reset_keeps_a_safe_set_and_sets_the_targets_identity() {
        let mut request = run(&["env"]);
        request.env = [
            ("TERM", "xterm-256color"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "../../evil%n"),
            ("HOME", "/home/user"),
            ("PATH", "/home/user/bin:/usr/bin"),
            ("API_KEY", "secret"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("SUDO_USER", "root"),
            ("SUDO_PS1", "# "),
            ("BASH_FUNC_ls%%", "() { evil; }"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let plan = plan(
            &request,
            &as_user(),
            &target(None, &db()).unwrap(),
            everywhere,
        )
        .unwrap();
        let env = &plan.env;
        assert_eq!(env["TERM"], "xterm-256color");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert_eq!(env["HOME"], "/root");
        assert_eq!(env["USER"], "root");
        assert_eq!(env["LOGNAME"], "root");
        assert_eq!(env["SHELL"], "/bin/bash");
        assert_eq!(env["PS1"], "# ");
        assert_eq!(env["SUDO_USER"], "user");
        assert_eq!(env["SUDO_UID"], "1000");
        assert_eq!(env["SUDO_GID"], "1000");
        assert_eq!(env["SUDO_HOME"], "/home/user");
        for dropped in ["API_KEY", "LD_PRELOAD", "LC_ALL", "BASH_FUNC_ls%%"] {
            assert!(!env.contains_key(dropped), "{dropped} kept: {env:?}");
        }
    }

    #[test]
    fn preserve_env_keeps_the_callers_but_not_loader_variables_nor_path() {
        let mut request = run(&["env"]);
        request.preserve_env = PreserveEnv::All;
        request.env = [
            ("API_KEY", "k"),
            ("HOME", "/home/user"),
            ("SHELL", "/bin/zsh"),
            ("PATH", "/home/user/bin"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("PYTHONPATH", "/tmp"),
            ("USER", "user"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let root = target(None, &db()).unwrap();
        let env = plan(&request, &as_user(), &root, everywhere).unwrap().env;
        assert_eq!(env["API_KEY"], "k");
        assert_eq!(env["HOME"], "/home/user");
        assert_eq!(env["SHELL"], "/bin/zsh");
        assert_eq!(env["PATH"], SECURE_PATH);
        assert_eq!(env["USER"], "root");
        assert!(!env.contains_key("LD_PRELOAD") && !env.contains_key("PYTHONPATH"));
        // -H: the target's HOME even so.
        request.set_home = true;
        let env = plan(&request, &as_user(), &root, everywhere).unwrap().env;
        assert_eq!(env["HOME"], "/root");
        // --preserve-env=API_KEY: only the named one joins the safe set.
        request.preserve_env = PreserveEnv::Names(vec!["API_KEY".into()]);
        request.env.push(("OTHER".into(), "x".into()));
        let env = plan(&request, &as_user(), &root, everywhere).unwrap().env;
        assert_eq!(env["API_KEY"], "k");
        assert!(!env.contains_key("OTHER"));
    }

    #[test]
    fn command_line_assignments_win_except_the_sudo_variables() {
        let mut request = run(&["env"]);
        request.assignments = vec![
            ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
            ("SUDO_USER".into(), "root".into()),
        ];
        let env = plan(
            &request,
            &as_user(),
            &target(None, &db()).unwrap(),
            everywhere,
        )
        .unwrap()
        .env;
        assert_eq!(env["DEBIAN_FRONTEND"], "noninteractive");
        assert_eq!(env["SUDO_USER"], "user");
    }

    #[test]
    fn shells_get_the_escaped_command_line() {
        assert_eq!(
            escape_for_shell(&["echo".into(), "a b".into(), "$HOME;x".into()]),
            r"echo a\ b $HOME\;x"
        );
        let mut shell = run(&["echo", "hi there"]);
        shell.shell = ShellMode::Shell;
        shell.env = vec![("SHELL".into(), "/bin/dash".into())];
        let plan = plan(
            &shell,
            &as_user(),
            &target(None, &db()).unwrap(),
            everywhere,
        )
        .unwrap();
        assert_eq!(plan.program, PathBuf::from("/bin/dash"));
        assert_eq!(plan.args, ["-c", r"echo hi\ there"]);
        assert!(!plan.in_home);
        let mut login = run(&[]);
        login.shell = ShellMode::Login;
        let nobody = target(Some("other"), &db()).unwrap();
        let plan = super::plan(&login, &as_user(), &nobody, everywhere).unwrap();
        assert_eq!(
            (plan.program.as_path(), plan.arg0.as_str()),
            (Path::new("/bin/sh"), "-sh")
        );
        assert!(plan.args.is_empty() && plan.in_home);
        assert_eq!(plan.env["HOME"], "/home/other");
        assert_eq!(plan.env["SHELL"], "/bin/sh");
    }

    #[test]
    fn listing_names_the_caller() {
        let text = listing(&as_user(), "sbx");
        assert!(text.starts_with("User user may run the following commands on sbx:"));
        assert!(text.contains("NOPASSWD: ALL"));
    }
}
