//! Template builds over E2B's template API: request a build, start it from a typed
//! [`Recipe`], follow its status and logs, list and delete templates.
//!
//! The wire format is the official SDKs' (`TemplateBuildRequestV3`,
//! `TemplateBuildStartV2`, `TemplateBuildInfo`), so the same calls work against E2B
//! cloud and courier-sandboxd.

use std::time::Duration;

use reqwest::Method;

use super::{Client, segment};
use crate::models::{
    AssignTags, AssignedTags, BuildLogEntry, BuildLogs, BuildReason, BuildRequest, BuildRequested,
    BuildState, BuildStatus, Recipe, RemoveTags, TemplateInfo, TemplateTag, TemplateUpdate,
    TemplateUpdated, TemplateWithBuilds,
};
use crate::{Error, NotFoundKind, Result};

/// How often [`Templates::wait`] polls by default (the official SDK's 0.2 s).
pub const DEFAULT_BUILD_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The template API of a [`Client`]: `client.templates()`.
///
/// ```no_run
/// # async fn demo() -> courier_e2b::Result<()> {
/// use courier_e2b::{BuildRequest, Client, Recipe, Step};
///
/// let client = Client::from_env()?;
/// let templates = client.templates();
/// let build = templates.request_build(&BuildRequest::new("claude")).await?;
/// let recipe = Recipe::from_template("base")
///     .step(Step::run_as("npm install -g @anthropic-ai/claude-code", "root"));
/// templates.start_build(&build.template_id, &build.build_id, &recipe).await?;
/// templates
///     .wait(&build.template_id, &build.build_id, |entry| println!("{}", entry.message))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Templates {
    client: Client,
}

impl Client {
    /// The template build API of this client.
    ///
    /// ```
    /// use courier_e2b::{Client, ConnectionConfig};
    /// let client = Client::new(ConnectionConfig::builder().api_key("e2b_x").build().unwrap()).unwrap();
    /// let templates = client.templates();
    /// ```
    pub fn templates(&self) -> Templates {
        Templates {
            client: self.clone(),
        }
    }
}

impl Templates {
    /// Registers a build (`POST /v3/templates`): the template id (new, or the existing
    /// template of that name) and the new build's id. Never retried.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let build = client.templates().request_build(&courier_e2b::BuildRequest::new("claude")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_build(&self, request: &BuildRequest) -> Result<BuildRequested> {
        if request.name.trim().is_empty() {
            return Err(Error::InvalidArgument {
                message: "name must not be empty".to_owned(),
            });
        }
        let url = self.client.endpoint("/v3/templates", &[])?;
        self.client
            .json(Method::POST, url, Some(request), false)
            .await
    }

    /// Starts a requested build with `recipe` (`POST /v2/templates/{id}/builds/{build}`).
    /// The build runs in the background: follow it with [`Templates::wait`].
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::{Recipe, Step};
    /// let recipe = Recipe::from_template("base").step(Step::run("echo hi"));
    /// client.templates().start_build("t1", "b1", &recipe).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_build(
        &self,
        template_id: &str,
        build_id: &str,
        recipe: &Recipe,
    ) -> Result<()> {
        let url = self.client.endpoint(
            &format!(
                "/v2/templates/{}/builds/{}",
                segment(template_id),
                segment(build_id)
            ),
            &[],
        )?;
        self.client
            .send(Method::POST, url, Some(recipe), false)
            .await
            .map(drop)
            .map_err(template_not_found)
    }

    /// A build's status and its log entries from `logs_offset` on
    /// (`GET /templates/{id}/builds/{build}/status?logsOffset=`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let status = client.templates().build_status("t1", "b1", 0).await?;
    /// println!("{:?}, {} new log lines", status.status, status.log_entries.len());
    /// # Ok(()) }
    /// ```
    pub async fn build_status(
        &self,
        template_id: &str,
        build_id: &str,
        logs_offset: usize,
    ) -> Result<BuildStatus> {
        let url = self.client.endpoint(
            &format!(
                "/templates/{}/builds/{}/status",
                segment(template_id),
                segment(build_id)
            ),
            &[("logsOffset".to_owned(), logs_offset.to_string())],
        )?;
        self.client
            .json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(template_not_found)
    }

    /// Polls a build every [`DEFAULT_BUILD_POLL_INTERVAL`] until it is `ready` (then
    /// `Ok`) or `error` (then [`Error::BuildFailed`] naming the step and reason), handing
    /// every log entry to `on_log` once, in order.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// match client.templates().wait("t1", "b1", |e| eprintln!("{}", e.message)).await {
    ///     Ok(()) => println!("ready"),
    ///     Err(courier_e2b::Error::BuildFailed { step, message, .. }) => {
    ///         eprintln!("step {step:?} failed: {message}")
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(
        &self,
        template_id: &str,
        build_id: &str,
        on_log: impl FnMut(&BuildLogEntry) + Send,
    ) -> Result<()> {
        self.wait_every(template_id, build_id, DEFAULT_BUILD_POLL_INTERVAL, on_log)
            .await
    }

    /// [`Templates::wait`] polling every `interval`.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use std::time::Duration;
    /// client.templates().wait_every("t1", "b1", Duration::from_secs(1), |_| {}).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_every(
        &self,
        template_id: &str,
        build_id: &str,
        interval: Duration,
        mut on_log: impl FnMut(&BuildLogEntry) + Send,
    ) -> Result<()> {
        let mut offset = 0usize;
        loop {
            let status = self.build_status(template_id, build_id, offset).await?;
            offset += status.log_entries.len();
            status.log_entries.iter().for_each(&mut on_log);
            if status.status.is_finished() {
                // At most 100 entries come per answer: drain the rest before returning.
                let mut more = !status.log_entries.is_empty();
                while more {
                    let tail = self.build_status(template_id, build_id, offset).await?;
                    offset += tail.log_entries.len();
                    tail.log_entries.iter().for_each(&mut on_log);
                    more = !tail.log_entries.is_empty();
                }
                return match status.status {
                    BuildState::Ready => Ok(()),
                    _ => {
                        let reason = status.reason.unwrap_or(BuildReason {
                            message: "the build failed without a reason".to_owned(),
                            step: None,
                        });
                        Err(Error::BuildFailed {
                            template_id: status.template_id,
                            build_id: status.build_id,
                            step: reason.step,
                            message: reason.message,
                        })
                    }
                };
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Every template of the account (`GET /templates`), whatever its build status.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// for t in client.templates().list().await? {
    ///     println!("{} {:?} {:?}", t.template_id, t.aliases, t.build_status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<TemplateInfo>> {
        let url = self.client.endpoint("/templates", &[])?;
        self.client.json(Method::GET, url, None::<&()>, true).await
    }

    /// Deletes a template by id or alias (`DELETE /templates/{id}`): `false` when it did
    /// not exist.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let deleted = client.templates().delete("claude").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, template_id: &str) -> Result<bool> {
        let url = self
            .client
            .endpoint(&format!("/templates/{}", segment(template_id)), &[])?;
        match self
            .client
            .send(Method::DELETE, url, None::<&()>, true)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The files of a COPY step packed for upload: a gzipped tar of `src` (a file or a
/// directory, relative to `context`) under its context-relative name, and its sha256.
fn pack_files(
    context: &std::path::Path,
    src: &str,
    resolve_symlinks: bool,
) -> Result<(String, Vec<u8>)> {
    use sha2::Digest as _;
    let invalid = |message: String| Error::InvalidArgument { message };
    // Only paths beneath the context: `..` or an absolute path would pack files the
    // caller did not mean to send.
    let relative = std::path::Path::new(src);
    if src.is_empty()
        || relative.is_absolute()
        || relative.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(invalid(format!(
            "COPY src {src:?} must be a relative path inside the context directory"
        )));
    }
    let path = context.join(relative);
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| invalid(format!("COPY src {}: {e}", path.display())))?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(gz);
    archive.follow_symlinks(resolve_symlinks);
    let packed = if meta.is_dir() {
        archive.append_dir_all(src, &path)
    } else {
        archive.append_path_with_name(&path, src)
    };
    let io = |e: std::io::Error| invalid(format!("packing COPY src {}: {e}", path.display()));
    packed.map_err(io)?;
    let bytes = archive.into_inner().map_err(io)?.finish().map_err(io)?;
    Ok((format!("{:x}", sha2::Sha256::digest(&bytes)), bytes))
}

impl Templates {
    /// Uploads the files of a COPY step for template `template_id`: `src` (a file or a
    /// directory, relative to `context`) packed as a gzipped tar under its
    /// context-relative name, sent unless the server has it already (`GET`/`PUT
    /// /templates/{id}/files/{hash}`). Returns the files hash for [`Step::copy`]
    /// (`crate::Step::copy`). Symlinks are sent as links unless `resolve_symlinks`
    /// (then their targets' content is sent). A `src` with `..` or an absolute path is
    /// refused before anything is read.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::{Recipe, Step};
    /// let templates = client.templates();
    /// let hash = templates.upload_files("t1", "./app".as_ref(), "src", false).await?;
    /// let recipe = Recipe::from_template("base").step(Step::copy("src", "/srv/src/", hash));
    /// templates.start_build("t1", "b1", &recipe).await?;
    /// # Ok(()) }
    /// ```
    pub async fn upload_files(
        &self,
        template_id: &str,
        context: &std::path::Path,
        src: &str,
        resolve_symlinks: bool,
    ) -> Result<String> {
        let (context, src_owned) = (context.to_path_buf(), src.to_owned());
        let (hash, bytes) =
            tokio::task::spawn_blocking(move || pack_files(&context, &src_owned, resolve_symlinks))
                .await
                .map_err(|e| Error::InvalidArgument {
                    message: format!("packing COPY src {src:?}: {e}"),
                })??;
        #[derive(serde::Deserialize)]
        struct Link {
            present: bool,
            url: Option<String>,
        }
        let url = self.client.endpoint(
            &format!(
                "/templates/{}/files/{}",
                segment(template_id),
                segment(&hash)
            ),
            &[],
        )?;
        let link: Link = self
            .client
            .json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(template_not_found)?;
        if link.present {
            return Ok(hash);
        }
        let put = link.url.ok_or_else(|| Error::InvalidArgument {
            message: "the server sent neither `present` nor an upload url".to_owned(),
        })?;
        let response = self
            .client
            .http()
            .put(&put)
            .body(bytes)
            .send()
            .await
            .map_err(|e| Error::InvalidArgument {
                message: format!("uploading COPY files: {e}"),
            })?;
        if !response.status().is_success() {
            return Err(Error::InvalidArgument {
                message: format!("uploading COPY files answered {}", response.status()),
            });
        }
        Ok(hash)
    }

    /// Points `tags` at the build `target` names (`POST /templates/tags`): `target` is
    /// `name:tag` (that tag's build) or `name` (the current build); tags are bare or
    /// `name:tag`. Sandboxes created from `name:tag` then start from that build.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let assigned = client.templates().assign_tags("claude:v1", &["stable"]).await?;
    /// println!("build {} is now {:?}", assigned.build_id, assigned.tags);
    /// # Ok(()) }
    /// ```
    pub async fn assign_tags(&self, target: &str, tags: &[&str]) -> Result<AssignedTags> {
        let body = AssignTags {
            target: target.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        };
        let url = self.client.endpoint("/templates/tags", &[])?;
        self.client
            .json(Method::POST, url, Some(&body), false)
            .await
            .map_err(template_not_found)
    }

    /// Removes `tags` from template `name` (`DELETE /templates/tags`); every tag must be
    /// there, else nothing is removed and the answer is [`Error::NotFound`].
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// client.templates().remove_tags("claude", &["stable"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn remove_tags(&self, name: &str, tags: &[&str]) -> Result<()> {
        let body = RemoveTags {
            name: name.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        };
        let url = self.client.endpoint("/templates/tags", &[])?;
        self.client
            .send(Method::DELETE, url, Some(&body), false)
            .await
            .map(drop)
            .map_err(template_not_found)
    }

    /// The tags of a template, by id or name (`GET /templates/{id}/tags`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// for t in client.templates().tags("claude").await? {
    ///     println!("{} -> {}", t.tag, t.build_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn tags(&self, template: &str) -> Result<Vec<TemplateTag>> {
        let url = self
            .client
            .endpoint(&format!("/templates/{}/tags", segment(template)), &[])?;
        self.client
            .json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(template_not_found)
    }

    /// A template with its builds, newest first (`GET /templates/{id}`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let info = client.templates().get("claude").await?;
    /// for b in &info.builds {
    ///     println!("{} {:?}", b.build_id, b.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, template: &str) -> Result<TemplateWithBuilds> {
        let url = self
            .client
            .endpoint(&format!("/templates/{}", segment(template)), &[])?;
        self.client
            .json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(template_not_found)
    }

    /// Updates a template (`PATCH /v2/templates/{id}`): today whether it is `public`,
    /// i.e. whether other API keys may see it and start sandboxes from it. Only the
    /// template's owner may; another key's template is [`Error::NotFound`]. Returns its
    /// names.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::TemplateUpdate;
    /// let updated = client
    ///     .templates()
    ///     .update("claude", &TemplateUpdate { public: Some(true) })
    ///     .await?;
    /// println!("{:?} is public now", updated.names);
    /// # Ok(()) }
    /// ```
    pub async fn update(&self, template: &str, update: &TemplateUpdate) -> Result<TemplateUpdated> {
        let url = self
            .client
            .endpoint(&format!("/v2/templates/{}", segment(template)), &[])?;
        self.client
            .json(Method::PATCH, url, Some(update), true)
            .await
            .map_err(template_not_found)
    }

    /// A build's log entries, oldest first, from `cursor` (milliseconds since the epoch;
    /// `0` for all), at most `limit` (1..=100)
    /// (`GET /templates/{id}/builds/{build}/logs?cursor=&limit=&direction=forward`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// for e in client.templates().build_logs("t1", "b1", 0, 100).await?.logs {
    ///     println!("{} {}", e.level, e.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn build_logs(
        &self,
        template_id: &str,
        build_id: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<BuildLogs> {
        let url = self.client.endpoint(
            &format!(
                "/templates/{}/builds/{}/logs",
                segment(template_id),
                segment(build_id)
            ),
            &[
                ("cursor".to_owned(), cursor.to_string()),
                ("limit".to_owned(), limit.to_string()),
                ("direction".to_owned(), "forward".to_owned()),
            ],
        )?;
        self.client
            .json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(template_not_found)
    }
}

/// A 404 of a template route is about a template or build, not a sandbox.
fn template_not_found(error: Error) -> Error {
    match error {
        Error::NotFound { message, .. } => Error::NotFound {
            kind: NotFoundKind::Template,
            message,
        },
        other => other,
    }
}
