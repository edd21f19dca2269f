//! A client of the OCI distribution API (what `docker pull` speaks), the few calls a
//! pull needs: `GET /v2/<repo>/manifests/<ref>` and `GET /v2/<repo>/blobs/<digest>`,
//! with the anonymous bearer-token dance registries like Docker Hub ask for.
//!
//! Written over reqwest (already in the workspace) rather than the `oci-client` crate:
//! a pull is two GETs, a JSON shape and a token request, while that crate would bring
//! its own HTTP stack features, JWT and signing dependencies to every build of the
//! server. Every blob is verified against its sha256 digest as it streams, and every
//! answer is size-capped before it is read.

use std::path::Path;

use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use super::ImageRef;
use super::reach::{Reach, Unreachable};
use super::reference::valid_digest;

/// Largest manifest or index accepted (real ones are a few KiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image config accepted.
const MAX_CONFIG_BYTES: usize = 4 << 20;

pub(super) const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(super) const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry could not be reached or answered garbage.
    #[error("{what}: {}", chain(source))]
    Http {
        /// The request.
        what: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The registry answered an error status.
    #[error("{what} answered {status}")]
    Status {
        /// The request.
        what: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The content is not what the image says.
    #[error("{0}")]
    Invalid(String),
    /// A URL of the pull (registry, token realm, redirect) is at an address pulls may
    /// not reach.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// A local file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The call.
        what: &'static str,
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// `error` and its sources, `: `-separated: reqwest's own message says only "error
/// sending request", the reason (a refused address, a TLS failure) is in its sources.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// A manifest's layer or config (`Descriptor`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image manifest or an index, whichever the registry answered.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// An image manifest: its config and layers (bottom first).
#[derive(Debug, Clone)]
pub(super) struct Manifest {
    /// The manifest's own digest (what the image is cached under).
    pub digest: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config a template uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct ImageConfigFile {
    #[serde(default)]
    pub config: Option<RunConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RunConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// The architecture images are pulled for: this host's, in OCI's words.
pub(super) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One registry session: base URL and the token a pull earned.
pub(super) struct Registry {
    http: reqwest::Client,
    base: String,
    image: ImageRef,
    token: Option<String>,
    reach: Reach,
}

impl Registry {
    pub(super) fn new(base: String, image: ImageRef, reach: Reach) -> Result<Self, PullError> {
        // Redirects (registries send blobs to a CDN) only to https, or within the
        // configured (loopback) origin; and, like every URL of the pull, only to
        // addresses a pull may reach.
        let origin = reqwest::Url::parse(&base)
            .map_err(|e| PullError::Invalid(format!("registry URL {base:?}: {e}")))?;
        reach.check_url(&origin)?;
        let redirects = reach.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let url = attempt.url();
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if let Err(refused) = redirects.check_url(url) {
                attempt.error(refused)
            } else if url.scheme() == "https"
                || (url.host_str() == origin.host_str() && url.port() == origin.port())
            {
                attempt.follow()
            } else {
                attempt.error("a redirect to plain HTTP elsewhere is refused")
            }
        });
        let http = reqwest::Client::builder()
            .redirect(policy)
            // Names resolve to checked addresses only, and are connected to directly (a
            // proxy would resolve them itself).
            .dns_resolver(reach.resolver())
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| PullError::Http {
                what: "build the HTTP client".to_owned(),
                source: e,
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            image,
            token: None,
            reach,
        })
    }

    /// GETs `path` (below `/v2/<repo>/`), answering a bearer challenge once.
    async fn get(&mut self, path: &str, accept: &str) -> Result<reqwest::Response, PullError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.image.repository);
        let what = format!("GET {url}");
        for attempt in 0..2 {
            let mut request = self.http.get(&url).header("accept", accept);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| PullError::Http {
                what: what.clone(),
                source: e,
            })?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if let Some(challenge) = challenge {
                    self.token = Some(self.anonymous_token(&challenge).await?);
                    continue;
                }
            }
            if !response.status().is_success() {
                return Err(PullError::Status {
                    what,
                    status: response.status(),
                });
            }
            return Ok(response);
        }
        Err(PullError::Invalid(format!(
            "{what}: the registry refused its own token"
        )))
    }

    /// An anonymous pull token from a `Bearer realm=…,service=…,scope=…` challenge.
    async fn anonymous_token(&self, challenge: &str) -> Result<String, PullError> {
        let params = challenge
            .strip_prefix("Bearer ")
            .ok_or_else(|| {
                PullError::Invalid(format!(
                    "the registry asks for {challenge:?}; only anonymous bearer tokens are \
                     supported (no credentials)"
                ))
            })?
            .split(',')
            .filter_map(|kv| kv.trim().split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect::<Vec<_>>();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let realm = param("realm")
            .ok_or_else(|| PullError::Invalid("bearer challenge without a realm".to_owned()))?;
        let realm_url = reqwest::Url::parse(realm)
            .map_err(|e| PullError::Invalid(format!("token realm {realm:?}: {e}")))?;
        self.reach.check_url(&realm_url)?;
        if realm_url.scheme() != "https" && !super::is_loopback_url(&realm_url) {
            return Err(PullError::Invalid(format!(
                "token realm {realm} is plain HTTP off this host; refused"
            )));
        }
        let mut query = Vec::new();
        if let Some(service) = param("service") {
            query.push(("service", service.clone()));
        }
        query.push((
            "scope",
            param("scope")
                .cloned()
                .unwrap_or_else(|| format!("repository:{}:pull", self.image.repository)),
        ));
        let what = format!("GET token from {realm}");
        let response = self
            .http
            .get(realm_url)
            .query(&query)
            .send()
            .await
            .map_err(|e| PullError::Http {
                what: what.clone(),
                source: e,
            })?;
        if !response.status().is_success() {
            return Err(PullError::Status {
                what,
                status: response.status(),
            });
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_capped(response, 64 << 10, &what).await?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| PullError::Invalid(format!("{what}: {e}")))?;
        token
            .token
            .or(token.access_token)
            .ok_or_else(|| PullError::Invalid(format!("{what}: no token in the answer")))
    }

    /// The image manifest for this host's platform (following an index).
    pub(super) async fn manifest(&mut self) -> Result<Manifest, PullError> {
        let accept = INDEX_TYPES
            .iter()
            .chain(MANIFEST_TYPES.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let reference = self.image.reference.clone();
        let (mut digest, mut parsed) = self.fetch_manifest(&reference, &accept).await?;
        if let Some(manifests) = parsed.manifests.take() {
            let arch = host_architecture();
            let chosen = manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                        && MANIFEST_TYPES.contains(&m.media_type.as_str())
                })
                .ok_or_else(|| {
                    let offered: Vec<String> = manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref())
                        .map(|p| {
                            format!(
                                "{}/{}{}",
                                p.os,
                                p.architecture,
                                p.variant
                                    .as_deref()
                                    .map(|v| format!("/{v}"))
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    PullError::Invalid(format!(
                        "image {} has no linux/{arch} manifest (it offers {})",
                        self.image,
                        offered.join(", ")
                    ))
                })?
                .clone();
            let (child_digest, child) = self.fetch_manifest(&chosen.digest, &accept).await?;
            digest = child_digest;
            parsed = child;
        }
        if let Some(t) = &parsed.media_type
            && !MANIFEST_TYPES.contains(&t.as_str())
        {
            return Err(PullError::Invalid(format!(
                "image {} has a manifest of type {t}; supported: {}",
                self.image,
                MANIFEST_TYPES.join(", ")
            )));
        }
        let config = parsed.config.ok_or_else(|| {
            PullError::Invalid(format!("image {} manifest has no config", self.image))
        })?;
        let layers = parsed.layers.unwrap_or_default();
        for d in std::iter::once(&config).chain(layers.iter()) {
            if !valid_digest(&d.digest) {
                return Err(PullError::Invalid(format!(
                    "image {} names blob {:?}: only sha256 digests are accepted",
                    self.image, d.digest
                )));
            }
        }
        Ok(Manifest {
            digest,
            config,
            layers,
        })
    }

    /// One manifest by tag or digest: its digest (checked when asked by digest) and body.
    async fn fetch_manifest(
        &mut self,
        reference: &str,
        accept: &str,
    ) -> Result<(String, AnyManifest), PullError> {
        let response = self.get(&format!("manifests/{reference}"), accept).await?;
        let what = format!("manifest {reference} of {}", self.image);
        let body = read_capped(response, MAX_MANIFEST_BYTES, &what).await?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        if reference.starts_with("sha256:") && digest != reference {
            return Err(PullError::Invalid(format!(
                "{what}: content digest {digest} does not match"
            )));
        }
        let parsed: AnyManifest = serde_json::from_slice(&body)
            .map_err(|e| PullError::Invalid(format!("{what}: {e}")))?;
        Ok((digest, parsed))
    }

    /// The image config blob.
    pub(super) async fn config(&mut self, d: &Descriptor) -> Result<ImageConfigFile, PullError> {
        if d.size > MAX_CONFIG_BYTES as u64 {
            return Err(PullError::Invalid(format!(
                "image config of {} is {} bytes (cap {MAX_CONFIG_BYTES})",
                self.image, d.size
            )));
        }
        let response = self
            .get(
                &format!("blobs/{}", d.digest),
                "application/octet-stream, */*",
            )
            .await?;
        let what = format!("config {} of {}", d.digest, self.image);
        let body = read_capped(response, MAX_CONFIG_BYTES, &what).await?;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
        if digest != d.digest {
            return Err(PullError::Invalid(format!(
                "{what}: content digest {digest} does not match"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| PullError::Invalid(format!("{what}: {e}")))
    }

    /// Streams blob `d` to `dest`, at most `d.size` and `cap` bytes, verifying its digest.
    pub(super) async fn blob_to(
        &mut self,
        d: &Descriptor,
        dest: &Path,
        cap: u64,
    ) -> Result<(), PullError> {
        use futures::StreamExt as _;
        if d.size > cap {
            return Err(PullError::Invalid(format!(
                "layer {} of {} is {} bytes, over the download cap of {cap}",
                d.digest, self.image, d.size
            )));
        }
        let response = self
            .get(
                &format!("blobs/{}", d.digest),
                "application/octet-stream, */*",
            )
            .await?;
        let what = format!("layer {} of {}", d.digest, self.image);
        let io = |what: &'static str| {
            let path = dest.display().to_string();
            move |source| PullError::Io { what, path, source }
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io("create"))?;
        let mut hasher = sha2::Sha256::new();
        let mut written = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Http {
                what: what.clone(),
                source: e,
            })?;
            written += chunk.len() as u64;
            if written > d.size {
                return Err(PullError::Invalid(format!(
                    "{what}: more than the {} bytes its manifest declares",
                    d.size
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io("write"))?;
        }
        file.flush().await.map_err(io("write"))?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if digest != d.digest {
            return Err(PullError::Invalid(format!(
                "{what}: content digest {digest} does not match"
            )));
        }
        Ok(())
    }
}

/// Reads a whole answer of at most `cap` bytes.
async fn read_capped(
    response: reqwest::Response,
    cap: usize,
    what: &str,
) -> Result<Vec<u8>, PullError> {
    use futures::StreamExt as _;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| PullError::Http {
            what: what.to_owned(),
            source: e,
        })?;
        if body.len() + chunk.len() > cap {
            return Err(PullError::Invalid(format!(
                "{what}: answer larger than {cap} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    use super::*;
    use crate::images::RegistryAllow;

    /// A loopback HTTP server giving `answer` to every request; it counts connections.
    async fn serve(answer: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (addr, hits)
    }

    fn allowing(addr: std::net::SocketAddr) -> Reach {
        Reach::new(vec![RegistryAllow::parse(&addr.to_string()).unwrap()])
    }

    // Attacker: whoever asks for a build picks the registry, and the registry picks
    // where the pull goes next (a redirect, a token realm). An allowed registry that
    // sends the pull to another loopback port, or a realm at a private address, must be
    // refused before anything connects there; a registry on loopback that the operator
    // did not allow is refused outright.
    #[tokio::test]
    async fn redirects_and_token_realms_to_internal_addresses_are_refused_before_connecting() {
        let image = ImageRef::parse("x:1").unwrap();
        let (internal, internal_hits) =
            serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_owned()).await;
        let (redirecting, _) = serve(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://127.0.0.1:{}/v2/x\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            internal.port()
        ))
        .await;
        let mut registry = Registry::new(
            format!("http://{redirecting}"),
            image.clone(),
            allowing(redirecting),
        )
        .unwrap();
        let err = registry.manifest().await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{}", internal.port()))
                && err.contains("--registry-allow"),
            "{err}"
        );
        assert_eq!(
            internal_hits.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );

        let (challenging, _) = serve(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer \
             realm=\"https://10.9.8.7/token\",service=\"x\"\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
                .to_owned(),
        )
        .await;
        let mut registry = Registry::new(
            format!("http://{challenging}"),
            image.clone(),
            allowing(challenging),
        )
        .unwrap();
        let err = registry.manifest().await.unwrap_err().to_string();
        assert!(
            err.contains("10.9.8.7") && err.contains("10.0.0.0/8"),
            "{err}"
        );

        let err = Registry::new(format!("http://{internal}"), image, Reach::default())
            .err()
            .expect("a loopback registry the operator did not allow");
        assert!(err.to_string().contains("127.0.0.0/8"), "{err}");
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0);
    }
}
