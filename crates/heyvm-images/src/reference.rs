//! Image references by Docker's rules: `python:3.12` is
//! `docker.io/library/python:3.12`, a first component with a `.` or `:` (or
//! `localhost`) is a registry, a missing tag is `latest`, and
//! `@sha256:<64 hex>` pins a digest.

use std::fmt;

use crate::error::ImageError;

/// Docker Hub's canonical name.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`, ...
    pub registry: String,
    /// `library/python`, `org/app`, ...
    pub repository: String,
    /// `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = |why: &str| ImageError::InvalidReference(format!("'{s}': {why}"));
        if s.is_empty() || s.len() > 512 {
            return Err(bad("must be 1 to 512 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(|e| bad(&e))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(|e| bad(&e))?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => (first.to_string(), path),
            _ => (DOCKER_HUB.to_string(), name),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" { DOCKER_HUB.to_string() } else { registry };
        check_registry(&registry).map_err(|e| bad(&e))?;
        if path.is_empty() {
            return Err(bad("has no repository name"));
        }
        for comp in path.split('/') {
            check_component(comp).map_err(|e| bad(&e))?;
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// The same repository at `digest` (what a pull resolves a tag to).
    pub fn with_digest(&self, digest: &str) -> Self {
        ImageRef { tag: None, digest: Some(digest.to_string()), ..self.clone() }
    }

    /// Docker's short form: `python:3.12` for Docker Hub's library images.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        if self.registry == DOCKER_HUB {
            let short = full.trim_start_matches("docker.io/");
            return short.strip_prefix("library/").unwrap_or(short).to_string();
        }
        full
    }

    /// Whether the registry is on this machine (reached over plain HTTP, as
    /// Docker does).
    pub fn is_loopback_registry(&self) -> bool {
        let host = host_of(&self.registry);
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// The host part of `host[:port]` (IPv6 in brackets).
pub fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry)
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

pub fn check_digest(d: &str) -> Result<(), String> {
    let hex = d.strip_prefix("sha256:").ok_or("only sha256 digests are supported")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err("a sha256 digest is 64 lowercase hex digits".into());
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag '{t}' (letters, digits, _ . -; at most 128)"))
    }
}

fn check_registry(r: &str) -> Result<(), String> {
    let ok = r.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) && !r.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry '{r}'"))
    }
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or
/// runs of `-`.
fn check_component(c: &str) -> Result<(), String> {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !c.is_empty()
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| alnum(b) || b"._-".contains(&b))
        && !c.contains("..")
        && !c.contains("___")
        && !c.contains("._")
        && !c.contains("_.");
    if ok {
        Ok(())
    } else {
        Err(format!("invalid repository component '{c}' (lowercase letters, digits and separators)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_rules() {
        assert_eq!(p("python:3.12"), "docker.io/library/python:3.12");
        assert_eq!(p("ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(p("org/app:v1"), "docker.io/org/app:v1");
        assert_eq!(p("docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("index.docker.io/busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(ImageRef::parse("python:3.12").unwrap().familiar(), "python:3.12");
        assert_eq!(ImageRef::parse("org/app").unwrap().familiar(), "org/app:latest");
    }

    #[test]
    fn registries_ports_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(p("127.0.0.1:5000/x/y:1"), "127.0.0.1:5000/x/y:1");
        assert_eq!(p("localhost/busybox"), "localhost/busybox:latest");
        assert_eq!(p(&format!("ghcr.io/o/r@{d}")), format!("ghcr.io/o/r@{d}"));
        assert_eq!(p(&format!("busybox:1@{d}")), format!("docker.io/library/busybox:1@{d}"));
        let r = ImageRef::parse("127.0.0.1:5000/bb").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "bb", Some("latest")));
        assert!(r.is_loopback_registry());
        assert!(ImageRef::parse("localhost:5000/a").unwrap().is_loopback_registry());
        assert!(!ImageRef::parse("ghcr.io/a").unwrap().is_loopback_registry());
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "",
            "UPPER",
            "a b",
            "busybox:",
            "busybox@sha256:abc",
            "busybox@md5:aaaa",
            "-x",
            "x/",
            "/x",
            "a//b",
            "busybox:-tag",
            "a..b",
            "reg.io/",
            &format!("x:{}", "t".repeat(129)),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
