use std::os::unix::fs::PermissionsExt as _;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn open(dir: &Path) -> Interceptor {
    Interceptor::open(&TlsInterception {
        dir: dir.join("egress-ca"),
        extra_roots: Vec::new(),
    })
    .unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The key is made once, root-only (an attacker in a sandbox cannot see the data dir at
/// all; another local user cannot read the key either), and reused: the CA a sandbox
/// trusts stays the one that signs its leaves across restarts.
#[test]
fn the_ca_is_made_once_root_only_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let ca_dir = dir.path().join("egress-ca");
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join(CA_KEY)), 0o600);
    assert!(first.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!first.ca_pem().contains("PRIVATE KEY"));
    let key = fs::read_to_string(ca_dir.join(CA_KEY)).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    assert!(!format!("{first:?}").contains(&key[40..80]));

    let again = open(dir.path());
    assert_eq!(again.ca_pem(), first.ca_pem());
    assert_eq!(fs::read_to_string(ca_dir.join(CA_KEY)).unwrap(), key);

    // A key someone loosened is tightened again on load.
    fs::set_permissions(ca_dir.join(CA_KEY), fs::Permissions::from_mode(0o644)).unwrap();
    let _ = open(dir.path());
    assert_eq!(mode(&ca_dir.join(CA_KEY)), 0o600);
}

/// A lost certificate is re-signed from the key; a sandbox that trusts the old one
/// still verifies the new leaves (same subject, same key).
#[tokio::test]
async fn a_leaf_verifies_against_the_ca_an_older_copy_included() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(dir.path()).ca_pem().to_owned();
    fs::remove_file(dir.path().join("egress-ca").join(CA_CERT)).unwrap();
    let interceptor = open(dir.path());
    assert_ne!(interceptor.ca_pem(), old, "re-signed (new serial)");
    for trusted in [old.as_str(), interceptor.ca_pem()] {
        let got = handshake(&interceptor, trusted, "api.example.test").await;
        assert_eq!(got.as_deref(), Ok("hello"), "trusting {trusted}");
    }
    // The leaf is for its name only.
    let config = interceptor.server_config("api.example.test").unwrap();
    let got = handshake_with(config, interceptor.ca_pem(), "other.example.test").await;
    assert!(got.is_err(), "{got:?}");
}

#[test]
fn leaves_are_cached_per_name_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let interceptor = open(dir.path());
    let a = interceptor.server_config("a.test").unwrap();
    let again = interceptor.server_config("a.test").unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
    for i in 0..MAX_LEAVES + 10 {
        interceptor.server_config(&format!("n{i}.test")).unwrap();
        assert!(interceptor.cached_leaves() <= MAX_LEAVES);
    }
}

#[test]
fn extra_roots_name_the_file_that_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "not a certificate\n").unwrap();
    let e = TlsInterception::new(dir.path(), std::slice::from_ref(&empty)).unwrap_err();
    assert!(e.to_string().contains("empty.pem"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = TlsInterception::new(dir.path(), &[missing]).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

async fn handshake(interceptor: &Interceptor, trusted: &str, name: &str) -> Result<String, String> {
    let config = interceptor.server_config(name).unwrap();
    handshake_with(config, trusted, name).await
}

/// A TLS client trusting only `trusted` connects (as `name`) to a server presenting
/// `config`'s leaf and reads what the server writes.
async fn handshake_with(
    config: Arc<ServerConfig>,
    trusted: &str,
    name: &str,
) -> Result<String, String> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let serving = tokio::spawn(async move {
        if let Ok(mut tls) = acceptor.accept(server).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trusted.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let result = async {
        let mut tls = connector
            .connect(ServerName::try_from(name.to_owned()).unwrap(), client)
            .await
            .map_err(|e| e.to_string())?;
        let mut got = String::new();
        tls.read_to_string(&mut got)
            .await
            .map_err(|e| e.to_string())?;
        Ok(got)
    }
    .await;
    serving.abort();
    result
}
