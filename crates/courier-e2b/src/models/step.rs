//! Template build steps: [`Step`], the typed form, and [`TemplateStep`], the wire form the
//! official SDKs send (`{"type", "args", "filesHash", "force"}`), with the one parser
//! between them that courier-sandboxd and this SDK share.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// The step types [`Step`] models, as named in errors.
pub const SUPPORTED_STEPS: &str = "RUN, ENV, WORKDIR, USER, COPY";

/// One build step. Serialized as the SDKs' `TemplateStep`
/// (`{"type", "args", "filesHash"?, "force"}`, see [`TemplateStep`]) and read back from it.
///
/// ```
/// use courier_e2b::Step;
/// let json = serde_json::to_value(Step::run_as("apt-get install -y vim", "root")).unwrap();
/// assert_eq!(json, serde_json::json!({"type": "RUN", "args": ["apt-get install -y vim", "root"], "force": false}));
/// let back: Step = serde_json::from_value(json).unwrap();
/// assert_eq!(back, Step::run_as("apt-get install -y vim", "root"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TemplateStep")]
pub enum Step {
    /// A shell command (`/bin/bash -c`), as `user` (the current user when `None`, for this
    /// step only).
    Run {
        /// The command line.
        command: String,
        /// The Unix user to run it as.
        user: Option<String>,
    },
    /// Environment variables for later steps and for the template's sandboxes.
    Env(Vec<(String, String)>),
    /// The working directory (created if needed) of later steps and of the template's
    /// sandboxes.
    Workdir(String),
    /// The user of later steps and of the template's sandboxes.
    User(String),
    /// Files the client uploaded (a tar archive, `GET`/`PUT
    /// /templates/{id}/files/{hash}`) copied into the image, like Docker's COPY.
    Copy {
        /// Path (or glob) of the files inside the archive, relative to the client's
        /// context directory.
        src: String,
        /// Destination: a directory when it ends with `/` or exists as one; relative
        /// paths are taken from the current working directory.
        dest: String,
        /// Owner (`user` or `user:group`); `None` = the user the steps run as.
        user: Option<String>,
        /// Octal mode applied to the copied files (not directories), e.g. `0644`.
        mode: Option<String>,
        /// The upload holding the files.
        files_hash: String,
    },
}

impl Step {
    /// A `RUN` step as the template's current user.
    ///
    /// ```
    /// assert!(matches!(courier_e2b::Step::run("ls"), courier_e2b::Step::Run { user: None, .. }));
    /// ```
    pub fn run(command: impl Into<String>) -> Step {
        Step::Run {
            command: command.into(),
            user: None,
        }
    }

    /// A `RUN` step as `user`.
    ///
    /// ```
    /// assert!(matches!(courier_e2b::Step::run_as("ls", "root"), courier_e2b::Step::Run { user: Some(_), .. }));
    /// ```
    pub fn run_as(command: impl Into<String>, user: impl Into<String>) -> Step {
        Step::Run {
            command: command.into(),
            user: Some(user.into()),
        }
    }

    /// A `COPY` step of `src` (inside the upload `files_hash`) to `dest`, owned by the
    /// steps' user, modes kept.
    ///
    /// ```
    /// let step = courier_e2b::Step::copy("app/", "/srv/app/", "3f2a");
    /// assert_eq!(
    ///     serde_json::to_value(&step).unwrap(),
    ///     serde_json::json!({"type": "COPY", "args": ["app/", "/srv/app/", "", ""], "filesHash": "3f2a", "force": false})
    /// );
    /// ```
    pub fn copy(
        src: impl Into<String>,
        dest: impl Into<String>,
        files_hash: impl Into<String>,
    ) -> Step {
        Step::Copy {
            src: src.into(),
            dest: dest.into(),
            user: None,
            mode: None,
            files_hash: files_hash.into(),
        }
    }

    /// The wire `type` of this step.
    ///
    /// ```
    /// assert_eq!(courier_e2b::Step::Workdir("/app".into()).kind(), "WORKDIR");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Run { .. } => "RUN",
            Step::Env(_) => "ENV",
            Step::Workdir(_) => "WORKDIR",
            Step::User(_) => "USER",
            Step::Copy { .. } => "COPY",
        }
    }

    /// A one-line description for build logs: the command, the variable names (never
    /// their values), the paths.
    ///
    /// ```
    /// use courier_e2b::Step;
    /// assert_eq!(Step::run_as("apt-get update", "root").describe(), "RUN apt-get update (as root)");
    /// assert_eq!(Step::Env(vec![("TOKEN".into(), "s3cret".into())]).describe(), "ENV TOKEN");
    /// ```
    pub fn describe(&self) -> String {
        self.to_string()
    }

    /// The wire form.
    ///
    /// ```
    /// let wire = courier_e2b::Step::User("root".into()).to_wire();
    /// assert_eq!((wire.kind.as_str(), wire.args.as_slice()), ("USER", &["root".to_owned()][..]));
    /// ```
    pub fn to_wire(&self) -> TemplateStep {
        let args = match self {
            Step::Run { command, user } => {
                let mut args = vec![command.clone()];
                args.extend(user.clone());
                args
            }
            Step::Env(pairs) => pairs
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            Step::Workdir(path) => vec![path.clone()],
            Step::User(user) => vec![user.clone()],
            // The official SDKs always send four args, "" for the defaults.
            Step::Copy {
                src,
                dest,
                user,
                mode,
                ..
            } => vec![
                src.clone(),
                dest.clone(),
                user.clone().unwrap_or_default(),
                mode.clone().unwrap_or_default(),
            ],
        };
        let files_hash = match self {
            Step::Copy { files_hash, .. } => Some(files_hash.clone()),
            _ => None,
        };
        TemplateStep {
            kind: self.kind().to_owned(),
            args,
            files_hash,
            force: false,
        }
    }
}

impl fmt::Display for Step {
    /// See [`Step::describe`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Run {
                command,
                user: Some(user),
            } => write!(f, "RUN {command} (as {user})"),
            Step::Run {
                command,
                user: None,
            } => write!(f, "RUN {command}"),
            Step::Env(pairs) => {
                let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                write!(f, "ENV {}", names.join(" "))
            }
            Step::Workdir(dir) => write!(f, "WORKDIR {dir}"),
            Step::User(user) => write!(f, "USER {user}"),
            Step::Copy { src, dest, .. } => write!(f, "COPY {src} {dest}"),
        }
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_wire().serialize(serializer)
    }
}

/// A step as it travels (`TemplateStep` in E2B's API): what a server reads before it
/// knows whether the step is one it supports. [`Step::try_from`] checks it.
///
/// ```
/// use courier_e2b::models::TemplateStep;
/// let wire: TemplateStep = serde_json::from_str(r#"{"type":"ADD","args":["a","/a"]}"#).unwrap();
/// let err = courier_e2b::Step::try_from(wire).unwrap_err();
/// assert!(err.to_string().contains("supported steps: RUN, ENV, WORKDIR, USER, COPY"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStep {
    /// `RUN`, `ENV`, `WORKDIR`, `USER`, `COPY`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The step's arguments (see [`Step`] for each type's).
    #[serde(default)]
    pub args: Vec<String>,
    /// The upload a `COPY` step reads from.
    #[serde(rename = "filesHash", default, skip_serializing_if = "Option::is_none")]
    pub files_hash: Option<String>,
    /// Rebuild this step even if cached (no effect on servers without a build cache).
    #[serde(default)]
    pub force: bool,
}

/// Why a [`TemplateStep`] is not a valid [`Step`]: `{kind}: {reason}`.
///
/// ```
/// use courier_e2b::{Step, models::TemplateStep};
/// let wire = TemplateStep { kind: "WORKDIR".into(), ..Default::default() };
/// let err = Step::try_from(wire).unwrap_err();
/// assert_eq!((err.kind.as_str(), err.reason.as_str()), ("WORKDIR", "args must be [directory]"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct InvalidStep {
    /// The step's wire `type`.
    pub kind: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Whether `hash` can name an upload: 1-128 of `[A-Za-z0-9_-]` (it becomes a file name).
///
/// ```
/// assert!(courier_e2b::models::valid_files_hash("3f2a_b-c"));
/// assert!(!courier_e2b::models::valid_files_hash("../x"));
/// ```
pub fn valid_files_hash(hash: &str) -> bool {
    (1..=128).contains(&hash.len())
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl TryFrom<TemplateStep> for Step {
    type Error = InvalidStep;

    /// Checks a wire step: the argument shapes of each type, non-empty commands and
    /// paths, variable names without `=`, and for `COPY` a relative `src` without `..`,
    /// an octal mode and a [valid](valid_files_hash) `filesHash`.
    fn try_from(step: TemplateStep) -> Result<Step, InvalidStep> {
        let TemplateStep {
            kind,
            args,
            files_hash,
            ..
        } = step;
        let bad = |reason: &str| InvalidStep {
            kind: kind.clone(),
            reason: reason.to_owned(),
        };
        let non_empty = |value: &String| (!value.is_empty()).then(|| value.clone());
        Ok(match kind.as_str() {
            "RUN" => match args.as_slice() {
                [command] if !command.is_empty() => Step::run(command),
                [command, user] if !command.is_empty() => Step::Run {
                    command: command.clone(),
                    user: non_empty(user),
                },
                _ => return Err(bad("args must be [command] or [command, user]")),
            },
            "ENV" => {
                if args.is_empty() || args.len() % 2 != 0 {
                    return Err(bad("args must be name, value pairs"));
                }
                let pairs: Vec<(String, String)> = args
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                if pairs.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
                    return Err(bad("variable names must be non-empty and contain no '='"));
                }
                Step::Env(pairs)
            }
            "WORKDIR" => match args.as_slice() {
                [dir] if !dir.is_empty() => Step::Workdir(dir.clone()),
                _ => return Err(bad("args must be [directory]")),
            },
            "USER" => match args.as_slice() {
                [user] if !user.is_empty() => Step::User(user.clone()),
                _ => return Err(bad("args must be [user]")),
            },
            "COPY" => {
                let Some(files_hash) = files_hash.filter(|h| valid_files_hash(h)) else {
                    return Err(bad("filesHash is required (1-128 of [A-Za-z0-9_-])"));
                };
                let empty = String::new();
                let (src, dest, user, mode) = match args.as_slice() {
                    [src, dest] => (src, dest, &empty, &empty),
                    [src, dest, user] => (src, dest, user, &empty),
                    [src, dest, user, mode, ..] => (src, dest, user, mode),
                    _ => return Err(bad("args must be [src, dest, user?, mode?]")),
                };
                if src.is_empty() || src.starts_with('/') || src.split('/').any(|c| c == "..") {
                    return Err(bad(
                        "src must be a relative path inside the context, without `..`",
                    ));
                }
                if dest.is_empty() {
                    return Err(bad("dest must not be empty"));
                }
                let octal = mode.len() <= 4 && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !octal {
                    return Err(bad("mode must be octal, e.g. 0644"));
                }
                Step::Copy {
                    src: src.clone(),
                    dest: dest.clone(),
                    user: non_empty(user),
                    mode: non_empty(mode),
                    files_hash,
                }
            }
            _ => {
                return Err(bad(&format!(
                    "unknown step type; supported steps: {SUPPORTED_STEPS}"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_round_trips_through_its_wire_form() {
        let steps = [
            Step::run("echo hi"),
            Step::run_as("apt-get update", "root"),
            Step::Env(vec![("A".into(), "1".into()), ("B".into(), "".into())]),
            Step::Workdir("/app".into()),
            Step::User("root".into()),
            Step::copy("app/*.py", "/srv/", "abc"),
            Step::Copy {
                src: "a".into(),
                dest: "/a".into(),
                user: Some("user:user".into()),
                mode: Some("0755".into()),
                files_hash: "h".into(),
            },
        ];
        for step in steps {
            let json = serde_json::to_value(&step).unwrap();
            assert_eq!(serde_json::from_value::<Step>(json).unwrap(), step);
        }
    }

    #[test]
    fn copy_is_sent_as_the_official_sdks_send_it() {
        let step = Step::Copy {
            src: "app".into(),
            dest: "/srv/".into(),
            user: None,
            mode: Some("0755".into()),
            files_hash: "abc".into(),
        };
        assert_eq!(
            serde_json::to_value(&step).unwrap(),
            serde_json::json!({"type": "COPY", "args": ["app", "/srv/", "", "0755"], "filesHash": "abc", "force": false})
        );
    }

    #[test]
    fn invalid_steps_say_what_is_wrong() {
        let parse = |json: serde_json::Value| {
            Step::try_from(serde_json::from_value::<TemplateStep>(json).unwrap())
        };
        let err =
            parse(serde_json::json!({"type": "COPY", "args": ["../etc", "/a"], "filesHash": "x"}))
                .unwrap_err();
        assert!(err.reason.contains("src"), "{err}");
        let err =
            parse(serde_json::json!({"type": "COPY", "args": ["a", "/a"], "filesHash": "../x"}))
                .unwrap_err();
        assert!(err.reason.contains("filesHash"), "{err}");
        let err = parse(serde_json::json!({"type": "ENV", "args": ["A=B", "1"]})).unwrap_err();
        assert!(err.reason.contains("'='"), "{err}");
        let err = parse(serde_json::json!({"type": "RUN", "args": []})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RUN: args must be [command] or [command, user]"
        );
    }
}
