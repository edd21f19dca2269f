//! Which addresses an image pull may reach: public ones, and the registries the operator
//! allows ([`RegistryAllow`], `--registry-allow HOST[:PORT]`).
//!
//! `fromImage` names a registry host, the registry names a token realm and redirects to
//! blob storage: all of it chosen by whoever asks for a build. Without a check a build
//! request makes the server GET any host it can reach (a cloud metadata service at
//! 169.254.169.254, an internal HTTPS service, a port on loopback). So:
//!
//! - every URL a pull requests (the registry base, the token realm, each redirect) is
//!   checked before the request ([`Reach::check_url`]): an IP literal must be public
//!   unless allowed, and an allowed host with a port matches that port only;
//! - names are resolved by [`PublicResolver`], the HTTP client's one resolver: it
//!   returns only the public addresses of a name the operator did not allow, so the
//!   connection goes to an address that was checked (no second lookup an attacker's DNS
//!   could answer differently);
//! - the client uses no proxy (a proxy would resolve names itself).
//!
//! "Internal" is the egress policy's list ([`crate::egress::policy::internal_range`]):
//! loopback, link-local and metadata, private, CGNAT, ULA, multicast, reserved.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::egress::policy::internal_range;
use crate::error::{Error, Result};

/// A registry the operator lets pulls reach although its addresses are not public (a
/// local mirror, the test suites' registry stand-in): a host name or an IP address,
/// optionally with the one port allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAllow {
    /// Lower-case host name, or an IP address in its canonical text form.
    host: String,
    /// The one port allowed; `None`: any.
    port: Option<u16>,
}

impl RegistryAllow {
    /// Parses `HOST[:PORT]`: `registry.internal`, `127.0.0.1:5000`, `[::1]:5000`, `::1`.
    ///
    /// ```
    /// use courier_sandboxd::images::RegistryAllow;
    /// assert!(RegistryAllow::parse("127.0.0.1:5000").is_ok());
    /// assert!(RegistryAllow::parse("[::1]:5000").is_ok());
    /// assert!(RegistryAllow::parse("mirror.internal").is_ok());
    /// assert!(RegistryAllow::parse("mirror.internal:http").is_err());
    /// assert!(RegistryAllow::parse("http://mirror.internal").is_err());
    /// assert!(RegistryAllow::parse("").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidSpec {
            field: "registry allow",
            reason: format!("{text:?}: {reason} (HOST[:PORT], e.g. 127.0.0.1:5000)"),
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| invalid("bad port"))?),
            };
            (v6, port)
        } else if text.matches(':').count() > 1 {
            (text, None)
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| invalid("bad port")))
            .transpose()?;
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                let valid = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !valid {
                    return Err(invalid("not a host name or IP address"));
                }
                host.to_ascii_lowercase()
            }
        };
        Ok(Self { host, port })
    }

    fn host_matches(&self, host: &str) -> bool {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.host == ip.to_string(),
            Err(_) => self.host.eq_ignore_ascii_case(host.trim_end_matches('.')),
        }
    }
}

impl std::fmt::Display for RegistryAllow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

/// Why a pull may not reach a URL or name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is {why}: pulls from non-public addresses are refused unless the operator \
     allows the registry (--registry-allow HOST[:PORT])"
)]
pub struct Unreachable {
    /// The URL, host or address refused.
    pub what: String,
    /// Which internal range it is in, or why it has no public address.
    pub why: String,
}

impl From<Unreachable> for Error {
    fn from(e: Unreachable) -> Self {
        Error::InvalidSpec {
            field: "fromImage",
            reason: e.to_string(),
        }
    }
}

/// The operator's allow list, and the checks made with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reach {
    allow: Arc<Vec<RegistryAllow>>,
}

impl Reach {
    pub(crate) fn new(allow: Vec<RegistryAllow>) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }

    /// Whether the operator allows `host` (with `port`, when the entry names one).
    fn allowed(&self, host: &str, port: Option<u16>) -> bool {
        self.allow
            .iter()
            .any(|a| a.host_matches(host) && a.port.is_none_or(|p| Some(p) == port))
    }

    /// Checks a URL before it is requested: a host the operator allows (at that port),
    /// else a public IP literal, else a name (its addresses are checked when resolved,
    /// by [`PublicResolver`]); a name the operator allows only at another port is
    /// refused here, because the resolver cannot see ports.
    pub(crate) fn check_url(&self, url: &url::Url) -> std::result::Result<(), Unreachable> {
        let port = url.port_or_known_default();
        let (host, ip) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            Some(url::Host::Domain(d)) => (d.to_owned(), None),
            None => {
                return Err(Unreachable {
                    what: url.to_string(),
                    why: "a URL without a host".to_owned(),
                });
            }
        };
        if self.allowed(&host, port) {
            return Ok(());
        }
        match ip {
            Some(ip) => match internal_range(ip) {
                Some(range) => Err(Unreachable {
                    what: url_origin(url),
                    why: format!("in {range}"),
                }),
                None => Ok(()),
            },
            None if self.allow.iter().any(|a| a.host_matches(&host)) => Err(Unreachable {
                what: url_origin(url),
                why: "a port the operator's allow entry for this host does not name".to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The resolver for the pull's HTTP client.
    pub(crate) fn resolver(&self) -> PublicResolver {
        PublicResolver {
            reach: self.clone(),
        }
    }

    /// The addresses of `name` a pull may connect to: all of an allowed host's, else
    /// the public ones; none is an error saying which internal ranges it had.
    fn filter(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> std::result::Result<Vec<SocketAddr>, Unreachable> {
        if self.allow.iter().any(|a| a.host_matches(name)) {
            return Ok(addrs);
        }
        let (public, internal): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
            .into_iter()
            .partition(|a| internal_range(a.ip()).is_none());
        if !public.is_empty() {
            return Ok(public);
        }
        let why = if internal.is_empty() {
            "a name with no address".to_owned()
        } else {
            let ranges: Vec<String> = internal
                .iter()
                .map(|a| format!("{} in {}", a.ip(), internal_range(a.ip()).unwrap_or("?")))
                .collect();
            format!(
                "a name with only non-public addresses ({})",
                ranges.join(", ")
            )
        };
        Err(Unreachable {
            what: name.to_owned(),
            why,
        })
    }

    /// Resolves `url`'s host as a pull would and checks it (the API's early check of
    /// `fromImage`, so a refused registry is a 400 rather than a failed build).
    pub(crate) async fn check_reachable(&self, url: &url::Url) -> Result<()> {
        self.check_url(url)?;
        if let Some(url::Host::Domain(name)) = url.host()
            && !self.allowed(name, url.port_or_known_default())
        {
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| Error::InvalidSpec {
                    field: "fromImage",
                    reason: format!("registry host {name} does not resolve: {e}"),
                })?
                .collect();
            self.filter(name, addrs)?;
        }
        Ok(())
    }
}

/// `scheme://host[:port]` of a URL (what an error names; never its path or query).
fn url_origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// The pull client's DNS resolver: the system's answers, less the addresses a pull may
/// not reach (see [`Reach`]).
#[derive(Debug, Clone)]
pub(crate) struct PublicResolver {
    reach: Reach,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.reach.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let addrs = reach.filter(&name, addrs)?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    // Attacker: a tenant whose build names a registry (or whose registry names a token
    // realm or redirect) at an internal address, to make the server fetch from a
    // metadata service or an internal port. Every internal literal is refused, naming
    // the range; only what the operator allowed passes, at the allowed port.
    #[test]
    fn internal_literals_are_refused_unless_allowed_at_that_port() {
        let reach = Reach::new(vec![
            RegistryAllow::parse("127.0.0.1:5000").unwrap(),
            RegistryAllow::parse("mirror.internal:8443").unwrap(),
        ]);
        for refused in [
            "https://169.254.169.254/v2/x/manifests/latest",
            "http://127.0.0.1:22/v2/",
            "https://10.1.2.3/v2/",
            "https://[::1]/v2/",
            "https://[fe80::1]/v2/",
            "https://[::ffff:169.254.169.254]/v2/",
            "https://192.168.1.1:8443/token",
            "https://mirror.internal/v2/",
        ] {
            let err = reach.check_url(&url(refused)).unwrap_err();
            let text = Error::from(err).to_string();
            assert!(
                text.contains("fromImage") && text.contains("--registry-allow"),
                "{refused}: {text}"
            );
        }
        let err = reach
            .check_url(&url("https://169.254.169.254/latest/meta-data?secret=1"))
            .unwrap_err();
        assert!(err.why.contains("metadata"), "{err}");
        assert!(
            !err.to_string().contains("secret"),
            "no query in errors: {err}"
        );
        for allowed in [
            "http://127.0.0.1:5000/v2/",
            "https://mirror.internal:8443/v2/",
            "https://8.8.8.8/v2/",
            "https://registry-1.docker.io/v2/",
        ] {
            assert!(reach.check_url(&url(allowed)).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn resolved_names_keep_only_public_addresses() {
        let reach = Reach::new(vec![RegistryAllow::parse("mirror.internal").unwrap()]);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        // A name that resolves to the metadata service and nothing else is refused.
        let err = reach
            .filter("evil.example", vec![addr("169.254.169.254:0")])
            .unwrap_err();
        assert!(err.why.contains("169.254.169.254"), "{err}");
        // Mixed answers (DNS rebinding's trick) keep only the public address.
        assert_eq!(
            reach
                .filter(
                    "mixed.example",
                    vec![addr("127.0.0.1:0"), addr("93.184.216.34:0")]
                )
                .unwrap(),
            [addr("93.184.216.34:0")]
        );
        // The operator's host keeps its internal addresses.
        assert_eq!(
            reach
                .filter("MIRROR.internal", vec![addr("10.0.0.5:0")])
                .unwrap(),
            [addr("10.0.0.5:0")]
        );
        assert!(reach.filter("nothing.example", vec![]).is_err());
    }

    #[test]
    fn allow_entries_print_as_they_parse() {
        for text in ["127.0.0.1:5000", "[::1]:5000", "mirror.internal", "::1"] {
            let parsed = RegistryAllow::parse(text).unwrap();
            assert_eq!(RegistryAllow::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
