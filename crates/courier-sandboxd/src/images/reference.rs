//! Image references (`ubuntu:22.04`, `ghcr.io/org/app@sha256:…`) as Docker reads them.

use crate::error::{Error, Result};

/// The registry Docker Hub's short names (`ubuntu`, `library/ubuntu`) live on.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub registry: String,
    /// The repository (`library/ubuntu`).
    pub repository: String,
    /// The tag or digest to pull (`22.04`, `sha256:…`).
    pub reference: String,
}

impl ImageRef {
    /// Parses `image` the way Docker does: a first path part with a `.` or `:` (or
    /// `localhost`) is a registry, else Docker Hub (`library/` for one-part names); the
    /// tag defaults to `latest`; `@sha256:<64 hex>` pins a digest.
    ///
    /// ```
    /// use courier_sandboxd::images::ImageRef;
    /// let r = ImageRef::parse("ubuntu:22.04").unwrap();
    /// assert_eq!((r.registry.as_str(), r.repository.as_str(), r.reference.as_str()),
    ///            ("docker.io", "library/ubuntu", "22.04"));
    /// assert!(ImageRef::parse("../etc:1").is_err());
    /// ```
    pub fn parse(image: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidSpec {
            field: "fromImage",
            reason,
        };
        if image.is_empty() || image.len() > 512 {
            return Err(invalid("must be 1-512 characters".to_owned()));
        }
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (image, None),
        };
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), Some(tag.to_owned())),
            _ => (rest, None),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let (host, port) = registry
            .split_once(':')
            .map_or((registry.as_str(), None), |(h, p)| (h, Some(p)));
        let host_ok = host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        }) && port
            .is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok {
            return Err(invalid(format!("registry {registry:?} is not a host name")));
        }
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !repo_ok {
            return Err(invalid(format!(
                "repository {repository:?} must be /-separated parts of [a-z0-9._-], each \
                 starting with a letter or digit"
            )));
        }
        let reference = match (digest, tag) {
            (Some(d), _) => {
                if !valid_digest(d) {
                    return Err(invalid(format!("digest {d:?} must be sha256:<64 hex>")));
                }
                d.to_owned()
            }
            (None, Some(t)) => {
                let ok = (1..=128).contains(&t.len())
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    return Err(invalid(format!(
                        "tag {t:?} must be 1-128 of [A-Za-z0-9._-]"
                    )));
                }
                t
            }
            (None, None) => "latest".to_owned(),
        };
        Ok(Self {
            registry,
            repository,
            reference,
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits (the only algorithm
/// accepted: content is verified against it).
pub fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_resolve_like_docker() {
        let cases = [
            ("ubuntu", "docker.io", "library/ubuntu", "latest"),
            ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04"),
            ("org/app:1", "docker.io", "org/app", "1"),
            ("ghcr.io/org/app:v2", "ghcr.io", "org/app", "v2"),
            ("localhost:5000/app", "localhost:5000", "app", "latest"),
            ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000", "a/b", "c"),
        ];
        for (image, registry, repository, reference) in cases {
            let r = ImageRef::parse(image).unwrap();
            assert_eq!(
                (
                    r.registry.as_str(),
                    r.repository.as_str(),
                    r.reference.as_str()
                ),
                (registry, repository, reference),
                "{image}"
            );
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ubuntu@{digest}")).unwrap();
        assert_eq!(r.reference, digest);
        assert_eq!(r.to_string(), format!("docker.io/library/ubuntu@{digest}"));
    }

    #[test]
    fn malformed_references_are_refused_naming_the_field() {
        for bad in [
            "",
            "Ubuntu",
            "../etc",
            "a//b",
            "ubuntu:bad tag",
            "ubuntu@sha256:xyz",
            "ubuntu@md5:00",
            "host.io/../x",
        ] {
            let err = ImageRef::parse(bad).unwrap_err().to_string();
            assert!(err.contains("fromImage"), "{bad}: {err}");
        }
    }
}
