//! A local container registry stand-in (the OCI distribution API's pull side) serving
//! images the test tooling builds itself, so `fromImage` builds run without the
//! internet:
//!
//! - [`OciImage::from_rootfs`] packs a directory (a real root file system: a
//!   debootstrapped Debian, or [`mini_rootfs`]) as a one-layer image;
//!   [`OciImage::from_layers`] makes one from raw layers (hostile ones too, built with
//!   [`raw_tar`]);
//! - [`Registry::start`] serves them under `repository:tag` on a loopback port: an
//!   index (linux/amd64 plus a decoy linux/arm64 entry), the manifest, the config and
//!   the layers, optionally behind the anonymous bearer-token challenge Docker Hub
//!   sends. It counts blob downloads, so a test can tell a cached pull from a fresh one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest as _;

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An image: blobs by digest and the index its tag points at.
#[derive(Debug, Clone)]
pub struct OciImage {
    /// The index (what the tag resolves to).
    pub index: Vec<u8>,
    /// The linux/amd64 manifest's digest.
    pub manifest_digest: String,
    /// Every blob (manifests, config, layers) by digest.
    pub blobs: BTreeMap<String, (String, Vec<u8>)>,
}

impl OciImage {
    /// Packs `rootfs` (owners kept numerically) as a one-layer gzip image with `env`
    /// (`K=V`) and `workdir` in its config.
    ///
    /// # Panics
    /// When `tar` fails: the tooling needs it.
    pub fn from_rootfs(rootfs: &Path, env: &[&str], workdir: &str) -> OciImage {
        let out = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(rootfs)
            .args(["-czf", "-", "."])
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "tar of {}: {}",
            rootfs.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        OciImage::from_gzip_layers(vec![out.stdout], env, workdir)
    }

    /// An image of `layers` (plain tars, bottom first; gzipped here).
    pub fn from_layers(layers: Vec<Vec<u8>>, env: &[&str], workdir: &str) -> OciImage {
        let gz = layers
            .into_iter()
            .map(|tar| {
                use std::io::Write as _;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tar).expect("gzip in memory");
                e.finish().expect("gzip in memory")
            })
            .collect();
        OciImage::from_gzip_layers(gz, env, workdir)
    }

    fn from_gzip_layers(layers: Vec<Vec<u8>>, env: &[&str], workdir: &str) -> OciImage {
        let mut blobs = BTreeMap::new();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env, "WorkingDir": workdir, "Cmd": ["/bin/bash"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .expect("json");
        let config_digest = digest(&config);
        let config_size = config.len();
        blobs.insert(config_digest.clone(), (CONFIG_TYPE.to_owned(), config));
        let mut descriptors = Vec::new();
        for layer in layers {
            let d = digest(&layer);
            descriptors.push(serde_json::json!({
                "mediaType": LAYER_GZIP, "digest": d, "size": layer.len(),
            }));
            blobs.insert(d, (LAYER_GZIP.to_owned(), layer));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_size},
            "layers": descriptors,
        }))
        .expect("json");
        let manifest_digest = digest(&manifest);
        let manifest_size = manifest.len();
        blobs.insert(
            manifest_digest.clone(),
            (MANIFEST_TYPE.to_owned(), manifest),
        );
        // A decoy for another architecture first: the client must pick by platform.
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [
                {"mediaType": MANIFEST_TYPE, "digest": format!("sha256:{}", "0".repeat(64)),
                 "size": 1, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": MANIFEST_TYPE, "digest": manifest_digest, "size": manifest_size,
                 "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        }))
        .expect("json");
        OciImage {
            index,
            manifest_digest,
            blobs,
        }
    }
}

/// A running registry stand-in.
#[derive(Debug)]
pub struct Registry {
    /// Its address (`http://` this).
    pub addr: SocketAddr,
    /// Layer and config downloads so far.
    pub blob_downloads: Arc<AtomicUsize>,
    /// Requests of the distribution API (`/v2/…`, manifests and blobs) so far.
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Served {
    images: Arc<BTreeMap<(String, String), OciImage>>,
    token: Option<String>,
    addr: SocketAddr,
    blob_downloads: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Registry {
    /// Serves `images` (`(repository, tag)` → image) on a loopback port; with
    /// `token_auth`, every `/v2/` call needs the bearer token `/token` hands out
    /// anonymously (Docker Hub's dance).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(images: Vec<(&str, &str, OciImage)>, token_auth: bool) -> Registry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the registry stand-in");
        let addr = listener.local_addr().expect("bound");
        let blob_downloads = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let served = Served {
            images: Arc::new(
                images
                    .into_iter()
                    .map(|(r, t, i)| ((r.to_owned(), t.to_owned()), i))
                    .collect(),
            ),
            token: token_auth.then(|| format!("tok-{}", addr.port())),
            addr,
            blob_downloads: blob_downloads.clone(),
            requests: requests.clone(),
        };
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .route("/v2/", axum::routing::get(|| async { StatusCode::OK }))
            .route("/v2/{*rest}", axum::routing::get(v2))
            .with_state(served);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Registry {
            addr,
            blob_downloads,
            requests,
            task,
        }
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn token(State(s): State<Served>) -> Response {
    match s.token {
        Some(t) => axum::Json(serde_json::json!({"token": t})).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn v2(
    State(s): State<Served>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(token) = &s.token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            let challenge = format!(
                "Bearer realm=\"http://{}/token\",service=\"standin\",scope=\"repository:x:pull\"",
                s.addr
            );
            return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response();
        }
    }
    let (repo, kind, reference) = if let Some((repo, r)) = rest.rsplit_once("/manifests/") {
        (repo, "manifests", r)
    } else if let Some((repo, r)) = rest.rsplit_once("/blobs/") {
        (repo, "blobs", r)
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let found = s
        .images
        .iter()
        .filter(|((r, _), _)| r == repo)
        .find_map(|((_, tag), image)| {
            if kind == "manifests" && tag == reference {
                return Some((INDEX_TYPE.to_owned(), image.index.clone()));
            }
            let blob = image.blobs.get(reference)?;
            if kind == "blobs" && blob.0 != MANIFEST_TYPE {
                s.blob_downloads.fetch_add(1, Ordering::SeqCst);
            }
            Some(blob.clone())
        });
    match found {
        Some((media_type, body)) => ([("content-type", media_type)], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// One entry of a hand-made tar ([`raw_tar`]): names and types exactly as given, so a
/// test can write what no honest tool writes (`../x`, `/etc/x`, devices).
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The name, as stored.
    pub name: String,
    /// The type flag: `b'0'` file, `b'1'` hard link, `b'2'` symlink, `b'3'` char
    /// device, `b'5'` directory.
    pub kind: u8,
    /// Permission bits (set-id included).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// The link target (links only).
    pub link: String,
    /// The content (files only).
    pub data: Vec<u8>,
    /// The size written in the header (`None`: the content's).
    pub claimed_size: Option<u64>,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: &[u8], mode: u32) -> RawEntry {
        RawEntry {
            name: name.to_owned(),
            kind: b'0',
            mode,
            uid: 0,
            link: String::new(),
            data: data.to_vec(),
            claimed_size: None,
        }
    }

    /// A directory.
    pub fn dir(name: &str) -> RawEntry {
        RawEntry {
            kind: b'5',
            ..RawEntry::file(name, b"", 0o755)
        }
    }

    /// A symlink (`kind` `b'2'`) or hard link (`b'1'`) to `target`.
    pub fn link(name: &str, kind: u8, target: &str) -> RawEntry {
        RawEntry {
            kind,
            link: target.to_owned(),
            ..RawEntry::file(name, b"", 0o777)
        }
    }
}

/// A ustar archive of `entries`, byte for byte as given.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, len: usize, bytes: &[u8]| {
            let n = bytes.len().min(len);
            h[at..at + n].copy_from_slice(&bytes[..n]);
        };
        put(&mut h, 0, 100, e.name.as_bytes());
        put(&mut h, 100, 8, format!("{:07o}\0", e.mode).as_bytes());
        put(&mut h, 108, 8, format!("{:07o}\0", e.uid).as_bytes());
        put(&mut h, 116, 8, format!("{:07o}\0", e.uid).as_bytes());
        let size = e.claimed_size.unwrap_or(e.data.len() as u64);
        put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
        put(&mut h, 136, 12, b"00000000000\0");
        h[156] = e.kind;
        put(&mut h, 157, 100, e.link.as_bytes());
        put(&mut h, 257, 8, b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A small real root file system at `dest` made of this host's programs: bash, dash
/// (`/bin/sh`), the coreutils and grep a build needs, their shared libraries and those
/// of `extra` binaries (courier-envd, which is bind-mounted into every sandbox and, when
/// linked dynamically, needs the host's libc there), merged-`/usr` symlinks
/// (`/bin` → `usr/bin`, …) and an `/etc/passwd` with root only. Built in milliseconds;
/// for image tests that need a genuine distribution, debootstrap one.
///
/// # Panics
/// When a program is missing: the tooling needs them.
pub fn mini_rootfs(dest: &Path, extra: &[&Path]) {
    let programs = [
        "bash", "sh", "cat", "ls", "echo", "id", "whoami", "readlink", "test", "sleep", "mkdir",
        "chown", "chmod", "grep", "ln", "stat", "env", "true", "rm", "touch",
    ];
    let usr_bin = dest.join("usr/bin");
    std::fs::create_dir_all(&usr_bin).expect("mkdir usr/bin");
    for d in [
        "usr/lib",
        "usr/lib64",
        "etc",
        "root",
        "tmp",
        "home",
        "proc",
        "sys",
        "dev",
        "run",
    ] {
        std::fs::create_dir_all(dest.join(d)).expect("mkdir");
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/bin"),
    ] {
        std::os::unix::fs::symlink(target, dest.join(link)).expect("symlink");
    }
    let mut libs: Vec<PathBuf> = Vec::new();
    for name in programs {
        let host = which(name);
        std::fs::copy(&host, usr_bin.join(name)).expect("copy a program");
        libs.extend(shared_libraries(&host));
    }
    for bin in extra {
        libs.extend(shared_libraries(bin));
    }
    libs.sort();
    libs.dedup();
    for lib in libs {
        // `/lib/...` and `/lib64/...` live under `usr/` behind the merged-/usr links.
        let rel = lib.strip_prefix("/").expect("absolute");
        let rel = if rel.starts_with("usr") {
            rel.to_path_buf()
        } else {
            Path::new("usr").join(rel)
        };
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir lib dir");
        std::fs::copy(&lib, &to).expect("copy a library");
    }
    std::fs::write(dest.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").expect("passwd");
    std::fs::write(dest.join("etc/group"), "root:x:0:\n").expect("group");
}

fn which(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return std::fs::canonicalize(p).expect("canonicalize");
        }
    }
    panic!("{name} is not installed on this host");
}

fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}
