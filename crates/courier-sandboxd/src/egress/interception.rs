//! TLS interception for `network.rules` transforms: the server's own CA, the leaves it
//! signs for the names rules match, and the client that verifies the real destination.
//!
//! - **The CA** lives in `<data dir>/egress-ca/` (directory `0700`): `ca.key` (PKCS#8,
//!   `0600`, root only) and `ca.pem`. It is made the first time a sandbox with transform
//!   rules needs it and reused across restarts, so sandboxes that outlive a restart keep
//!   trusting it. Its subject and key usages are fixed, so the issuer of every leaf is
//!   rebuilt from the key alone (a lost `ca.pem` is re-signed from `ca.key`, and the
//!   sandboxes that trust the old one still verify the new leaves: same subject, same
//!   key). The key never leaves this module: it is not logged, not in any `Debug`, and
//!   no sandbox can see the data dir.
//! - **Leaves** are minted only for a name a domain key of the connection's sandbox
//!   matches (the transform proxy checks the SNI before asking), valid
//!   [`LEAF_VALIDITY_DAYS`] days, cached per name ([`MAX_LEAVES`] at most, re-minted after
//!   [`LEAF_CACHE_TTL`]). Each carries ALPN `http/1.1` only: the proxy speaks HTTP/1.
//! - **Upstream** connections are verified against the SNI name with the host's roots,
//!   as reqwest does in the rest of sandboxd (`rustls-platform-verifier`), plus the
//!   operator's extra roots ([`TlsInterception::extra_roots`], e.g. an internal CA).
//!   A certificate that does not verify is a 502 naming why, never a fallback.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ServerConfig};

/// Days a minted leaf is valid (from the day before it is made).
pub(crate) const LEAF_VALIDITY_DAYS: i64 = 30;
/// How long a minted leaf is served before a new one is made.
pub(crate) const LEAF_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most leaves kept (all sandboxes together).
pub(crate) const MAX_LEAVES: usize = 256;
/// Years the CA is valid.
const CA_VALIDITY_YEARS: i32 = 10;
/// The CA's subject: fixed, so that the issuer can be rebuilt from the key alone.
const CA_COMMON_NAME: &str = "courier-sandboxd egress interception CA";
const CA_ORGANIZATION: &str = "Courier";
/// File names in the CA's directory.
const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.pem";

/// Where the CA lives and which extra roots upstream certificates may chain to.
#[derive(Clone, Default)]
pub struct TlsInterception {
    /// The CA's directory (`<data dir>/egress-ca`).
    pub dir: PathBuf,
    /// Roots trusted for upstream certificates besides the host's (operator
    /// configuration, e.g. an internal CA; tests use it for their own CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TlsInterception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsInterception")
            .field("dir", &self.dir)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl TlsInterception {
    /// Interception with its CA in `<data_dir>/egress-ca`, trusting the roots of the PEM
    /// files `extra_root_files` upstream besides the host's.
    pub fn new(data_dir: &Path, extra_root_files: &[PathBuf]) -> Result<Self, InterceptError> {
        let mut extra_roots = Vec::new();
        for path in extra_root_files {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| InterceptError::ExtraRoots {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(InterceptError::ExtraRoots {
                    path: path.clone(),
                    reason: "no certificate in the file".to_owned(),
                });
            }
            extra_roots.extend(certs);
        }
        Ok(Self {
            dir: data_dir.join("egress-ca"),
            extra_roots,
        })
    }
}

/// Why interception is unavailable (the TLS connection is closed, or a create fails).
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// The server was started without interception (the runtime used on its own).
    #[error("TLS interception is not configured (no data dir for its CA)")]
    Disabled,
    /// A file or directory of the CA could not be read or written.
    #[error("egress CA {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The stored CA key is not a usable key.
    #[error("egress CA key {path}: {reason}")]
    Key {
        /// The key (or certificate) file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// Making a certificate failed.
    #[error("signing a certificate for {name}: {reason}")]
    Sign {
        /// The name the certificate was for.
        name: String,
        /// Why signing failed.
        reason: String,
    },
    /// An extra upstream root file (`--egress-upstream-ca`) is unusable.
    #[error("extra upstream roots {path}: {reason}")]
    ExtraRoots {
        /// The PEM file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The loaded CA, its leaves and the upstream client configuration.
pub(crate) struct Interceptor {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
    upstream: Arc<ClientConfig>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> InterceptError + '_ {
    move |source| InterceptError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sign_error(name: &str) -> impl FnOnce(rcgen::Error) -> InterceptError + '_ {
    move |e| InterceptError::Sign {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

/// The date `days` from today (UTC): year, month, day, as rcgen takes them.
fn day(days: i64) -> (i32, u8, u8) {
    use chrono::Datelike as _;
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
    // Months and days of a month fit a u8.
    (d.year(), d.month() as u8, d.day() as u8)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Interceptor {
    /// Loads the CA from `config.dir`, making it first if it does not exist.
    pub(crate) fn open(config: &TlsInterception) -> Result<Self, InterceptError> {
        let dir = &config.dir;
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        // Root only, whatever the umask or an earlier run left.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        let key = match fs::read_to_string(&key_path) {
            Ok(pem) => {
                fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
                    .map_err(io_error(&key_path))?;
                KeyPair::from_pem(&pem).map_err(|e| InterceptError::Key {
                    path: key_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(sign_error("the egress CA"))?;
                write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                // A certificate of an earlier key would not match this one.
                let _ = fs::remove_file(&cert_path);
                tracing::info!(dir = %dir.display(), "egress interception CA created");
                key
            }
            Err(e) => return Err(io_error(&key_path)(e)),
        };
        let ca_pem = match fs::read_to_string(&cert_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut params = ca_params();
                let (y, m, d) = day(-1);
                params.not_before = rcgen::date_time_ymd(y, m, d);
                params.not_after = rcgen::date_time_ymd(y + CA_VALIDITY_YEARS, m, d.min(28));
                let cert = params
                    .self_signed(&key)
                    .map_err(sign_error("the egress CA"))?;
                let pem = cert.pem();
                write_new(&cert_path, pem.as_bytes(), 0o644)?;
                pem
            }
            Err(e) => return Err(io_error(&cert_path)(e)),
        };
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| InterceptError::Key {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let issuer = Issuer::new(ca_params(), key);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
            config.extra_roots.iter().cloned(),
            provider.clone(),
        )
        .map_err(|e| InterceptError::Tls(e.to_string()))?;
        let mut upstream = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| InterceptError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        upstream.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem,
            ca_der,
            issuer,
            provider,
            leaves: Mutex::new(HashMap::new()),
            upstream: Arc::new(upstream),
        })
    }

    /// The CA certificate (PEM), for sandboxes to trust.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The client configuration for upstream connections.
    pub(crate) fn upstream(&self) -> Arc<ClientConfig> {
        self.upstream.clone()
    }

    /// A server configuration presenting a leaf for `name` (minted or cached). The
    /// caller has checked that a transform rule names `name`.
    pub(crate) fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, InterceptError> {
        {
            let leaves = crate::lock::lock(&self.leaves);
            if let Some((made, config)) = leaves.get(name)
                && made.elapsed() < LEAF_CACHE_TTL
            {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.mint(name)?);
        let mut leaves = crate::lock::lock(&self.leaves);
        if leaves.len() >= MAX_LEAVES {
            leaves.retain(|_, (made, _)| made.elapsed() < LEAF_CACHE_TTL);
        }
        if leaves.len() >= MAX_LEAVES {
            // Still full of live leaves: start over rather than grow (re-minting is
            // a few milliseconds).
            leaves.clear();
        }
        leaves.insert(name.to_owned(), (Instant::now(), config.clone()));
        Ok(config)
    }

    /// How many leaves are cached.
    #[cfg(test)]
    pub(crate) fn cached_leaves(&self) -> usize {
        crate::lock::lock(&self.leaves).len()
    }

    fn mint(&self, name: &str) -> Result<ServerConfig, InterceptError> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(sign_error(name))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let (y, m, d) = day(-1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = day(LEAF_VALIDITY_DAYS);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(sign_error(name))?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(sign_error(name))?;
        let chain = vec![leaf.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| InterceptError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| InterceptError::Tls(e.to_string()))?;
        // HTTP/1 only: the transform proxy parses HTTP/1 (a client offering h2 too picks
        // http/1.1; one offering only h2 fails the handshake).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Writes a new file with `mode` from its creation (never readable by others, even for
/// a moment), through a temporary name so that a crash leaves no half-written file.
fn write_new(path: &Path, content: &[u8], mode: u32) -> Result<(), InterceptError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(content).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
#[path = "interception_tests.rs"]
mod tests;
