//! A Dockerfile as a [`Recipe`]: the instructions E2B's build API runs, mapped to the
//! same steps the official SDKs' `from_dockerfile` makes (Docker's defaults `USER root`
//! and `WORKDIR /` first; E2B's `user` and `/home/user` at the end unless the file set
//! its own; `CMD`/`ENTRYPOINT` as the start command with a 20 s wait as the ready
//! command). Instructions with no step (`COPY`/`ADD`, whose files this SDK does not
//! upload yet, `EXPOSE`, `VOLUME`, …) and multi-stage files are refused, naming the line,
//! rather than dropped.

use super::{Recipe, Step};

/// Why a Dockerfile cannot become a [`Recipe`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDockerfile {
    /// No `FROM`.
    #[error("the Dockerfile has no FROM instruction")]
    NoFrom,
    /// More than one `FROM`.
    #[error("line {line}: multi-stage Dockerfiles (a second FROM) are not supported")]
    MultiStage {
        /// The second `FROM`'s line.
        line: usize,
    },
    /// An instruction that has no build step here.
    #[error(
        "line {line}: {instruction} is not supported (supported: FROM, RUN, ENV, ARG, \
         WORKDIR, USER, CMD, ENTRYPOINT){hint}"
    )]
    Unsupported {
        /// Its line (1-based, where it starts).
        line: usize,
        /// The instruction.
        instruction: String,
        /// What to do instead, when there is something.
        hint: &'static str,
    },
    /// An instruction without its value.
    #[error("line {line}: {instruction} needs a value")]
    Empty {
        /// Its line.
        line: usize,
        /// The instruction.
        instruction: String,
    },
}

/// The logical lines of a Dockerfile: continuations (`\` at the end) joined, comments
/// and blank lines dropped; each with the line it starts on.
fn logical_lines(content: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in content.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (start, mut text) = current.take().unwrap_or((index + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                text.push_str(part.trim_end());
                text.push(' ');
                current = Some((start, text));
            }
            None => {
                text.push_str(trimmed);
                lines.push((start, text.trim().to_owned()));
            }
        }
    }
    if let Some((start, text)) = current {
        lines.push((start, text.trim().to_owned()));
    }
    lines
}

/// `KEY=value KEY2="v 2"` or `KEY value` (ENV's old form; ARG `KEY` alone is empty).
fn env_pairs(value: &str, arg: bool) -> Vec<(String, String)> {
    let unquote = |v: &str| v.trim_matches(|c| c == '"' || c == '\'').to_owned();
    if !value.contains('=') {
        let mut parts = value.splitn(2, char::is_whitespace);
        let key = parts.next().unwrap_or_default().to_owned();
        return match parts.next() {
            Some(v) => vec![(key, unquote(v.trim()))],
            None if arg => vec![(key, String::new())],
            None => Vec::new(),
        };
    }
    let mut pairs = Vec::new();
    let mut rest = value.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().to_owned();
        let (val, next) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => match after[1..].find(q) {
                Some(end) => (after[1..=end].to_owned(), &after[end + 2..]),
                None => (after[1..].to_owned(), ""),
            },
            _ => match after.find(char::is_whitespace) {
                Some(end) => (after[..end].to_owned(), &after[end..]),
                None => (after.to_owned(), ""),
            },
        };
        pairs.push((key, val));
        rest = next.trim_start();
    }
    pairs
}

impl Recipe {
    /// The recipe of a Dockerfile's `content`: `FROM` is the image, `RUN`, `ENV`/`ARG`,
    /// `WORKDIR`, `USER` become steps (after Docker's `USER root`, `WORKDIR /`; E2B's
    /// `user` and `/home/user` are set at the end unless the file set its own),
    /// `CMD`/`ENTRYPOINT` the start command (ready after 20 s, as the official SDKs do).
    /// `COPY`/`ADD` and instructions without a step are refused naming their line.
    ///
    /// ```
    /// use courier_e2b::{Recipe, Step};
    /// let recipe = Recipe::from_dockerfile(
    ///     "FROM ubuntu:22.04\nRUN apt-get update && \\\n    apt-get install -y curl\nENV A=1\nCMD [\"sleep\", \"infinity\"]\n",
    /// ).unwrap();
    /// assert_eq!(recipe.from_image.as_deref(), Some("ubuntu:22.04"));
    /// assert_eq!(recipe.steps, vec![
    ///     Step::User("root".into()),
    ///     Step::Workdir("/".into()),
    ///     Step::run("apt-get update && apt-get install -y curl"),
    ///     Step::Env(vec![("A".into(), "1".into())]),
    ///     Step::User("user".into()),
    ///     Step::Workdir("/home/user".into()),
    /// ]);
    /// assert_eq!(recipe.start_cmd.as_deref(), Some("sleep infinity"));
    /// assert!(Recipe::from_dockerfile("FROM a\nEXPOSE 80").is_err());
    /// ```
    pub fn from_dockerfile(content: &str) -> Result<Recipe, InvalidDockerfile> {
        let lines = logical_lines(content);
        let mut from = None;
        let mut steps = vec![Step::User("root".into()), Step::Workdir("/".into())];
        let (mut user_set, mut workdir_set) = (false, false);
        let (mut start_cmd, mut ready_cmd) = (None, None);
        for (line, text) in lines {
            let (word, value) = text
                .split_once(char::is_whitespace)
                .map_or((text.as_str(), ""), |(w, v)| (w, v.trim()));
            let instruction = word.to_ascii_uppercase();
            let empty = || InvalidDockerfile::Empty {
                line,
                instruction: instruction.clone(),
            };
            match instruction.as_str() {
                "FROM" => {
                    if from.is_some() {
                        return Err(InvalidDockerfile::MultiStage { line });
                    }
                    // `node:18 AS builder` → `node:18`.
                    let image = value.split_whitespace().next().ok_or_else(empty)?;
                    from = Some(image.to_owned());
                }
                "RUN" => steps.push(Step::run(if value.is_empty() {
                    return Err(empty());
                } else {
                    value
                })),
                "ENV" | "ARG" => {
                    let pairs = env_pairs(value, instruction == "ARG");
                    if pairs.is_empty() {
                        return Err(empty());
                    }
                    steps.push(Step::Env(pairs));
                }
                "WORKDIR" => {
                    if value.is_empty() {
                        return Err(empty());
                    }
                    workdir_set = true;
                    steps.push(Step::Workdir(value.to_owned()));
                }
                "USER" => {
                    if value.is_empty() {
                        return Err(empty());
                    }
                    user_set = true;
                    steps.push(Step::User(value.to_owned()));
                }
                "CMD" | "ENTRYPOINT" => {
                    if value.is_empty() {
                        return Err(empty());
                    }
                    let command = serde_json::from_str::<Vec<String>>(value)
                        .map(|parts| parts.join(" "))
                        .unwrap_or_else(|_| value.to_owned());
                    start_cmd = Some(command);
                    // The official SDKs' `wait_for_timeout(20_000)`.
                    ready_cmd = Some("sleep 20".to_owned());
                }
                "COPY" | "ADD" => {
                    return Err(InvalidDockerfile::Unsupported {
                        line,
                        instruction,
                        hint: "; this SDK does not upload COPY's files yet: build with the \
                               official SDK, or RUN what makes the files",
                    });
                }
                _ => {
                    return Err(InvalidDockerfile::Unsupported {
                        line,
                        instruction,
                        hint: "",
                    });
                }
            }
        }
        let image = from.ok_or(InvalidDockerfile::NoFrom)?;
        if !user_set {
            steps.push(Step::User("user".into()));
        }
        if !workdir_set {
            steps.push(Step::Workdir("/home/user".into()));
        }
        Ok(Recipe {
            steps,
            start_cmd,
            ready_cmd,
            ..Recipe::from_image(image)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_map_to_the_sdk_steps() {
        let recipe = Recipe::from_dockerfile(
            "# a comment\nFROM node:18 AS builder\n\nARG VERSION\nENV A=1 B=\"two words\"\n\
             ENV LEGACY some value\nWORKDIR /app\nUSER node\nRUN echo \\\n  hi\n\
             ENTRYPOINT node server.js\n",
        )
        .unwrap();
        assert_eq!(recipe.from_image.as_deref(), Some("node:18"));
        assert!(recipe.from_template.is_empty());
        assert_eq!(
            recipe.steps,
            vec![
                Step::User("root".into()),
                Step::Workdir("/".into()),
                Step::Env(vec![("VERSION".into(), String::new())]),
                Step::Env(vec![
                    ("A".into(), "1".into()),
                    ("B".into(), "two words".into())
                ]),
                Step::Env(vec![("LEGACY".into(), "some value".into())]),
                Step::Workdir("/app".into()),
                Step::User("node".into()),
                Step::run("echo hi"),
            ]
        );
        assert_eq!(recipe.start_cmd.as_deref(), Some("node server.js"));
        assert_eq!(recipe.ready_cmd.as_deref(), Some("sleep 20"));
    }

    #[test]
    fn what_has_no_step_is_refused_by_line() {
        let err = Recipe::from_dockerfile("FROM a\nCOPY . /app\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2: COPY"), "{err}");
        let err = Recipe::from_dockerfile("FROM a\nexpose 80\n").unwrap_err();
        assert!(err.to_string().contains("EXPOSE"), "{err}");
        assert_eq!(
            Recipe::from_dockerfile("FROM a AS x\nFROM b\n").unwrap_err(),
            InvalidDockerfile::MultiStage { line: 2 }
        );
        assert_eq!(
            Recipe::from_dockerfile("RUN ls\n").unwrap_err(),
            InvalidDockerfile::NoFrom
        );
        assert!(matches!(
            Recipe::from_dockerfile("FROM a\nUSER\n").unwrap_err(),
            InvalidDockerfile::Empty { line: 2, .. }
        ));
    }
}
