//! Container images as template bases (`fromImage`): pulled through the OCI distribution
//! API ([`registry`]), their layers flattened into one read-only layer beneath the
//! server's data dir ([`unpack`]), their config's `Env` and `WorkingDir` kept for the
//! template's sandboxes.
//!
//! ```text
//! <data_dir>/images/<manifest sha256 hex>/rootfs/      the flattened image
//!                                        /layer.json   an empty layer manifest
//!                                        /image.json   an ImageRecord
//! ```
//!
//! An image is pulled once per manifest digest (the cache is keyed by content, so a tag
//! that moves is pulled again) and appears atomically (unpacked beside, then renamed).
//! It is removed when no template version stacks on it and nothing has used it for an
//! hour (see [`crate::templates::Templates::collect_garbage`]).
//!
//! Registries: Docker Hub (`docker.io`) is `https://registry-1.docker.io`, any other
//! registry host `https://<host>`, unless the operator maps it to a mirror
//! ([`ImageConfig::mirrors`], `--registry-mirror docker.io=http://127.0.0.1:5000`).
//! Plain HTTP is refused except to loopback addresses. Pulls are anonymous: images that
//! need credentials (`fromImageRegistry`) are refused by name at the API.
//!
//! A pull reaches public addresses only, unless the operator allows a registry
//! ([`ImageConfig::allow`], `--registry-allow HOST[:PORT]`; a mirror at an internal
//! address needs it too): see [`reach`].

pub mod reach;
mod reference;
pub mod registry;
pub mod unpack;

pub use reach::{RegistryAllow, Unreachable};
pub use reference::{DOCKER_HUB, ImageRef, valid_digest};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The template id prefix of a pulled image (`image@sha256:<hex>`): never a valid
/// template name, so it cannot clash with one.
pub const IMAGE_TEMPLATE_PREFIX: &str = "image@";

/// Default cap on what one image unpacks to (file bytes plus a block per entry).
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 8 << 30;
/// Default cap on one image's compressed layers, downloaded.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 4 << 30;

/// Where images come from and how big they may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// Registry host (`docker.io`, `ghcr.io`) → base URL to pull from instead
    /// (`http://127.0.0.1:5000`). Set through [`ImageConfig::add_mirror`].
    pub mirrors: BTreeMap<String, String>,
    /// Most bytes one image may unpack to ([`DEFAULT_MAX_UNPACKED_BYTES`]).
    pub max_unpacked_bytes: u64,
    /// Most bytes of layers one image may download ([`DEFAULT_MAX_DOWNLOAD_BYTES`]).
    pub max_download_bytes: u64,
    /// Registries pulls may reach although their addresses are not public (loopback,
    /// private, link-local...); empty by default. Set through
    /// [`ImageConfig::add_allow_arg`].
    pub allow: Vec<RegistryAllow>,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            mirrors: BTreeMap::new(),
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
            allow: Vec::new(),
        }
    }
}

/// Whether `url`'s host is this machine's loopback.
pub(crate) fn is_loopback_url(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl ImageConfig {
    /// Pulls `registry`'s images from `url` instead: `https://…`, or `http://` to a
    /// loopback address only (a registry stand-in or a local mirror).
    ///
    /// ```
    /// let mut c = courier_sandboxd::images::ImageConfig::default();
    /// c.add_mirror("docker.io", "http://127.0.0.1:5000").unwrap();
    /// assert!(c.add_mirror("docker.io", "http://10.0.0.5:5000").is_err());
    /// ```
    pub fn add_mirror(&mut self, registry: &str, url: &str) -> Result<()> {
        let invalid = |reason: String| Error::InvalidSpec {
            field: "registry mirror",
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("{url:?}: {e}")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback_url(&parsed) => {}
            "http" => {
                return Err(invalid(format!(
                    "{url:?}: plain HTTP is only allowed to a loopback address; use https"
                )));
            }
            other => return Err(invalid(format!("{url:?}: scheme {other} (http, https)"))),
        }
        if registry.is_empty() || registry.contains('/') {
            return Err(invalid(format!("{registry:?} is not a registry host")));
        }
        self.mirrors
            .insert(registry.to_owned(), url.trim_end_matches('/').to_owned());
        Ok(())
    }

    /// Lets pulls reach `HOST[:PORT]` (the `--registry-allow` flag's form) although its
    /// addresses are not public.
    ///
    /// ```
    /// let mut c = courier_sandboxd::images::ImageConfig::default();
    /// c.add_allow_arg("127.0.0.1:5000").unwrap();
    /// assert!(c.add_allow_arg("http://127.0.0.1:5000").is_err());
    /// ```
    pub fn add_allow_arg(&mut self, arg: &str) -> Result<()> {
        self.allow.push(RegistryAllow::parse(arg)?);
        Ok(())
    }

    /// Parses `registry=url` (the `--registry-mirror` flag's form).
    ///
    /// ```
    /// let mut c = courier_sandboxd::images::ImageConfig::default();
    /// c.add_mirror_arg("docker.io=http://127.0.0.1:5000").unwrap();
    /// assert_eq!(c.mirrors["docker.io"], "http://127.0.0.1:5000");
    /// ```
    pub fn add_mirror_arg(&mut self, arg: &str) -> Result<()> {
        let (registry, url) = arg.split_once('=').ok_or_else(|| Error::InvalidSpec {
            field: "registry mirror",
            reason: format!("{arg:?} must be REGISTRY=URL, e.g. docker.io=http://127.0.0.1:5000"),
        })?;
        self.add_mirror(registry, url)
    }

    /// The base URL `image`'s registry is pulled from.
    pub fn base_url(&self, image: &ImageRef) -> String {
        if let Some(mirror) = self.mirrors.get(&image.registry) {
            return mirror.clone();
        }
        if image.registry == DOCKER_HUB {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{}", image.registry)
        }
    }
}

/// A pulled image (`image.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The reference it was pulled as (`docker.io/library/ubuntu:22.04`).
    pub reference: String,
    /// Its manifest digest.
    pub digest: String,
    /// Its config's `Env`.
    pub envs: BTreeMap<String, String>,
    /// Its config's `WorkingDir`, if any.
    pub workdir: Option<String>,
    /// Its config's `User`, if any (informational: steps run as `user` unless told).
    pub user: Option<String>,
    /// When it was pulled.
    pub pulled_at: DateTime<Utc>,
}

/// The pulled images of a server.
#[derive(Debug)]
pub struct Images {
    dir: PathBuf,
    config: ImageConfig,
}

impl Images {
    /// The images under `<data_dir>/images` (created 0700: set-id files of images live
    /// there; see [`unpack`]). Leftovers of interrupted pulls are removed.
    pub fn open(data_dir: &Path, config: ImageConfig) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = data_dir.join("images");
        std::fs::create_dir_all(&dir).map_err(Error::io("create dir", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io("chmod", &dir))?;
        for entry in std::fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let entry = entry.map_err(Error::io("read dir", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".partial") || !entry.path().join("image.json").is_file() {
                crate::cleanup::remove_dir(&entry.path());
            }
        }
        Ok(Self { dir, config })
    }

    /// Where the images live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image template `id` (`image@sha256:<hex>`) names: its layer dir and record.
    pub fn find(&self, id: &str) -> Option<(PathBuf, ImageRecord)> {
        let digest = id.strip_prefix(IMAGE_TEMPLATE_PREFIX)?;
        if !valid_digest(digest) {
            return None;
        }
        let dir = self.dir.join(&digest["sha256:".len()..]);
        let bytes = std::fs::read(dir.join("image.json")).ok()?;
        let record = serde_json::from_slice(&bytes).ok()?;
        Some((dir, record))
    }

    /// Checks that `image`'s registry (or its mirror) is one a pull may reach, resolving
    /// its name as the pull will: a registry at a non-public address the operator did
    /// not allow is `InvalidSpec { field: "fromImage" }`. The pull checks again at every
    /// connection (see [`reach`]); this makes the refusal an answer to the request.
    pub async fn check_registry(&self, image: &ImageRef) -> Result<()> {
        let base = self.config.base_url(image);
        let url = reqwest::Url::parse(&base).map_err(|e| Error::InvalidSpec {
            field: "fromImage",
            reason: format!("registry URL {base:?}: {e}"),
        })?;
        reach::Reach::new(self.config.allow.clone())
            .check_reachable(&url)
            .await
    }

    /// Pulls `image` (or finds it pulled): its template id. `log` hears the progress.
    pub async fn pull(&self, image: &ImageRef, mut log: impl FnMut(String)) -> Result<String> {
        let pull_error = |e: registry::PullError| Error::InvalidSpec {
            field: "fromImage",
            reason: format!("pulling {image}: {e}"),
        };
        let base = self.config.base_url(image);
        let reach = reach::Reach::new(self.config.allow.clone());
        let mut registry =
            registry::Registry::new(base.clone(), image.clone(), reach).map_err(pull_error)?;
        log(format!("Pulling image {image} from {base}"));
        let manifest = registry.manifest().await.map_err(pull_error)?;
        let hex = manifest.digest["sha256:".len()..].to_owned();
        let id = format!("{IMAGE_TEMPLATE_PREFIX}{}", manifest.digest);
        let dest = self.dir.join(&hex);
        if dest.join("image.json").is_file() {
            log(format!(
                "Image {} is here already (cached)",
                manifest.digest
            ));
            touch(&dest);
            return Ok(id);
        }
        let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
        if total > self.config.max_download_bytes {
            return Err(pull_error(registry::PullError::Invalid(format!(
                "its layers are {total} bytes, over the download cap of {}",
                self.config.max_download_bytes
            ))));
        }
        for layer in &manifest.layers {
            if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
                return Err(pull_error(registry::PullError::Invalid(format!(
                    "layer {} has media type {}; supported: {}",
                    layer.digest,
                    layer.media_type,
                    LAYER_TYPES.join(", ")
                ))));
            }
        }
        let config = registry
            .config(&manifest.config)
            .await
            .map_err(pull_error)?;
        let partial = self
            .dir
            .join(format!("{hex}.partial-{}", crate::state::random_hex(4)));
        let result = self
            .download_and_unpack(&mut registry, &manifest, &partial, &mut log)
            .await;
        let result = result.and_then(|()| {
            let run = config.config.unwrap_or_default();
            let envs = run
                .env
                .unwrap_or_default()
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect();
            let record = ImageRecord {
                reference: image.to_string(),
                digest: manifest.digest.clone(),
                envs,
                workdir: run.working_dir.filter(|w| w.starts_with('/')),
                user: run.user.filter(|u| !u.is_empty()),
                pulled_at: Utc::now(),
            };
            let manifest_path = partial.join(crate::runtime::rootfs::LAYER_MANIFEST);
            let empty = crate::runtime::rootfs::LayerManifest::default();
            std::fs::write(
                &manifest_path,
                serde_json::to_vec(&empty).expect("manifests serialize"),
            )
            .map_err(Error::io("write", &manifest_path))?;
            let record_path = partial.join("image.json");
            std::fs::write(
                &record_path,
                serde_json::to_vec_pretty(&record).expect("records serialize"),
            )
            .map_err(Error::io("write", &record_path))?;
            match std::fs::rename(&partial, &dest) {
                Ok(()) => Ok(()),
                // Another build pulled it meanwhile: theirs is as good.
                Err(_) if dest.join("image.json").is_file() => {
                    crate::cleanup::remove_dir(&partial);
                    Ok(())
                }
                Err(e) => Err(Error::io("rename", &dest)(e)),
            }
        });
        if result.is_err() {
            crate::cleanup::remove_dir(&partial);
        }
        result.map(|()| id)
    }

    async fn download_and_unpack(
        &self,
        registry: &mut registry::Registry,
        manifest: &registry::Manifest,
        partial: &Path,
        log: &mut impl FnMut(String),
    ) -> Result<()> {
        let rootfs = partial.join(crate::runtime::rootfs::LAYER_ROOTFS);
        std::fs::create_dir_all(&rootfs).map_err(Error::io("create dir", &rootfs))?;
        let blobs = partial.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(Error::io("create dir", &blobs))?;
        let mut paths = Vec::new();
        for (i, layer) in manifest.layers.iter().enumerate() {
            log(format!(
                "Downloading layer {}/{} ({}, {} bytes)",
                i + 1,
                manifest.layers.len(),
                layer.digest,
                layer.size
            ));
            let path = blobs.join(format!("{i}"));
            registry
                .blob_to(layer, &path, self.config.max_download_bytes)
                .await
                .map_err(|e| Error::InvalidSpec {
                    field: "fromImage",
                    reason: e.to_string(),
                })?;
            paths.push((path, layer.media_type.clone()));
        }
        let cap = self.config.max_unpacked_bytes;
        let stats = tokio::task::spawn_blocking(move || -> Result<unpack::UnpackStats> {
            let mut unpacker = unpack::Unpacker::new(&rootfs, cap).map_err(unpack_error)?;
            for (path, media_type) in paths {
                let file = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
                let file = std::io::BufReader::new(file);
                if media_type.ends_with("gzip") {
                    unpacker
                        .apply(flate2::read::GzDecoder::new(file))
                        .map_err(unpack_error)?;
                } else {
                    unpacker.apply(file).map_err(unpack_error)?;
                }
                std::fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            }
            Ok(unpacker.stats)
        })
        .await
        .map_err(|e| Error::InvalidSpec {
            field: "fromImage",
            reason: format!("the unpack task failed: {e}"),
        })??;
        crate::cleanup::remove_dir(&blobs);
        log(format!(
            "Unpacked {} entries ({} bytes; {} whiteouts applied, {} device nodes left out)",
            stats.entries, stats.bytes, stats.whiteouts, stats.skipped_devices
        ));
        Ok(())
    }

    /// Removes pulled images no template version stacks on (`referenced` layer dirs)
    /// and nothing used for an hour. Returns what was removed.
    pub fn collect_garbage(&self, referenced: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().contains(".partial") || referenced(&path) {
                continue;
            }
            let idle = std::fs::metadata(path.join("image.json"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > IMAGE_IDLE);
            if idle && std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
        removed
    }
}

/// How long an unreferenced image is kept (a build may be about to use it).
const IMAGE_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Layer media types this server unpacks.
const LAYER_TYPES: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

fn unpack_error(e: unpack::UnpackError) -> Error {
    Error::InvalidSpec {
        field: "fromImage",
        reason: e.to_string(),
    }
}

/// Marks an image used now (its idle clock restarts).
fn touch(dir: &Path) {
    let record = dir.join("image.json");
    if let Ok(file) = std::fs::File::options().append(true).open(&record) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}
