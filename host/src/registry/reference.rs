//! OCI references: `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`, parsed
//! and checked by the grammar of the distribution spec, so that nothing a
//! manifest says reaches a URL unchecked.

use std::fmt;

/// The scheme that marks a component source as an OCI artifact.
pub const SCHEME: &str = "oci://";

/// The tag a reference without tag or digest names, as Docker and Spin do.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` as written (`docker.io` included).
    pub registry: String,
    /// The repository path: lower-case components separated by `/`.
    pub repository: String,
    /// The tag, if one is written (a digest wins over it).
    pub tag: Option<String>,
    /// `sha256:<hex>` of the manifest, if the reference is pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `oci://...`; the error says what is wrong, without the input.
    pub fn parse(text: &str) -> Result<Reference, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("an OCI reference starts with `{SCHEME}`"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (rest, Some(check_digest(digest)?)),
            None => (rest, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or("names no repository: write oci://REGISTRY/REPOSITORY:TAG")?;
        check_registry(registry)?;
        // A tag follows the last `:` after the last `/`.
        let last = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last..].rfind(':') {
            Some(i) => (&path[..last + i], Some(&path[last + i + 1..])),
            None => (path, None),
        };
        check_repository(repository)?;
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// Whether `text` is meant as an OCI reference (it may still be invalid).
    pub fn is_oci(text: &str) -> bool {
        text.starts_with(SCHEME)
    }

    /// What the registry is asked for: the digest when pinned, else the tag.
    pub fn target(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// The same reference pinned to manifest `digest`, keeping the tag for
    /// the reader (`oci://r/app:1.0@sha256:...`).
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The host the API is served by: Docker Hub's `docker.io` is served at
    /// `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" || self.registry == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The reference without its digest: what a tag resolution is cached under.
    pub fn unpinned(&self) -> String {
        format!(
            "{SCHEME}{}/{}:{}",
            self.registry,
            self.repository,
            self.tag.as_deref().unwrap_or(DEFAULT_TAG)
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `s` is `sha256:` and 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn check_digest(digest: &str) -> Result<&str, String> {
    if is_sha256(digest) {
        Ok(digest)
    } else if digest.starts_with("sha256:") {
        Err("its digest is not `sha256:` and 64 lower-case hex digits".into())
    } else {
        Err("its digest is not sha256 (the only algorithm Membrane verifies)".into())
    }
}

/// `host[:port]`: a DNS name or IPv4 address, or `[IPv6]`, with an optional port.
pub fn check_registry(registry: &str) -> Result<(), String> {
    let bad = || format!("registry {registry:?} is not a host name with an optional :port");
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().map_or(true, |p| p == 0))
    {
        return Err(bad());
    }
    Ok(())
}

/// Components of `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`,
/// separated by `/`; at most 255 characters.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_digit() || b.is_ascii_lowercase() {
                i += 1;
                continue;
            }
            // A separator: `.`, `_`, `__` or a run of `-`.
            let sep = match b {
                b'.' => 1,
                b'_' if bytes.get(i + 1) == Some(&b'_') => 2,
                b'_' => 1,
                b'-' => bytes[i..].iter().take_while(|&&c| c == b'-').count(),
                _ => return false,
            };
            i += sep;
            if !bytes
                .get(i)
                .is_some_and(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            {
                return false;
            }
        }
        true
    };
    if repository.is_empty() || repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "repository {repository:?} must be lower-case letters and digits, separated by `/`, `.`, `_` or `-`"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_by_the_distribution_grammar() {
        let ok = [
            (
                "oci://ghcr.io/acme/rater:1.0",
                "ghcr.io",
                "acme/rater",
                Some("1.0"),
                None,
            ),
            ("oci://127.0.0.1:5000/rater", "127.0.0.1:5000", "rater", None, None),
            (
                "oci://localhost:5000/a/b/c:v_2-x.y",
                "localhost:5000",
                "a/b/c",
                Some("v_2-x.y"),
                None,
            ),
            (
                "oci://[::1]:5000/a__b/c--d.e:t",
                "[::1]:5000",
                "a__b/c--d.e",
                Some("t"),
                None,
            ),
            (&format!("oci://r.io/a@{D}"), "r.io", "a", None, Some(D)),
            (&format!("oci://r.io:443/a:1@{D}"), "r.io:443", "a", Some("1"), Some(D)),
        ];
        for (text, registry, repository, tag, digest) in ok {
            let r = Reference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (
                    r.registry.as_str(),
                    r.repository.as_str(),
                    r.tag.as_deref(),
                    r.digest.as_deref()
                ),
                (registry, repository, tag, digest),
                "{text}"
            );
            assert_eq!(r.to_string(), text, "displays as written");
        }
        let bad = [
            ("ghcr.io/acme/rater", "starts with `oci://`"),
            ("oci://ghcr.io", "names no repository"),
            ("oci://ghcr.io/Acme/rater", "repository \"Acme/rater\""),
            ("oci://ghcr.io/a//b", "repository"),
            ("oci://ghcr.io/a/../b", "repository"),
            ("oci://ghcr.io/-a", "repository"),
            ("oci://ghcr.io/a:", "tag \"\""),
            ("oci://ghcr.io/a:-x", "tag"),
            ("oci://ghcr.io/a:x/y", "repository"),
            ("oci://gh cr.io/a", "registry"),
            ("oci://user@ghcr.io/a", "digest"),
            ("oci://ghcr.io:0/a", "registry"),
            ("oci://ghcr.io:99999/a", "registry"),
            ("oci://ghcr.io:/a", "registry"),
            ("oci://[::1/a", "registry"),
            ("oci://ghcr.io/a@sha256:ABC", "not `sha256:` and 64"),
            ("oci://ghcr.io/a@sha512:abc", "not sha256"),
            ("oci://ghcr.io/a?x=1", "repository"),
            ("oci://ghcr.io/a#frag", "repository"),
        ];
        for (text, why) in bad {
            let err = Reference::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn a_reference_targets_its_digest_then_its_tag_then_latest() {
        let r = Reference::parse("oci://r.io/a").unwrap();
        assert_eq!(r.target(), "latest");
        assert_eq!(r.unpinned(), "oci://r.io/a:latest");
        let pinned = Reference::parse("oci://r.io/a:1").unwrap().pinned(D);
        assert_eq!(pinned.target(), D);
        assert_eq!(pinned.to_string(), format!("oci://r.io/a:1@{D}"));
        assert_eq!(pinned.unpinned(), "oci://r.io/a:1");
        assert_eq!(
            Reference::parse("oci://docker.io/library/a").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }
}
