//! How registries are reached: mirrors, plain HTTP registries (loopback
//! ones always, others when listed) and credentials (what `heyvm images
//! login` stored in the data dir, then Docker's config file). The daemon's
//! configuration (heyvm-core's `config`) supplies the values.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::error::{ImageError, Result};
use crate::reference::{ImageRef, DOCKER_HUB};

#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Registry -> mirrors tried first, in order.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Registries reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Docker's config file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Where `heyvm images login` keeps credentials (0600, Docker's format).
    pub login_file: Option<PathBuf>,
}

/// A username and password (or token) for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl RegistrySettings {
    /// From the daemon's configuration: `mirrors` as in
    /// `HEYVM_REGISTRY_MIRRORS`, `insecure` as in `HEYVM_INSECURE_REGISTRIES`
    /// (comma-separated), Docker's config file if any; `data_dir` holds the
    /// login file.
    pub fn new(data_dir: &Path, mirrors: &str, insecure: &str, docker_config: Option<PathBuf>) -> Result<Self> {
        let mirrors = parse_mirrors(mirrors)?;
        let insecure = insecure.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        Ok(RegistrySettings { mirrors, insecure, docker_config, login_file: Some(data_dir.join("registry-auth.json")) })
    }

    /// Plain HTTP for loopback registries and the listed ones.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let probe = ImageRef { registry: registry.to_string(), repository: "x".into(), tag: None, digest: None };
        probe.is_loopback_registry() || self.insecure.iter().any(|r| r == registry)
    }

    /// The registries to try for `r`, mirrors first.
    pub fn endpoints(&self, r: &ImageRef) -> Vec<String> {
        let mut v = self.mirrors.get(&r.registry).cloned().unwrap_or_default();
        v.push(r.registry.clone());
        v
    }

    /// Credentials for `registry`: the login file wins over Docker's config.
    pub fn credentials(&self, registry: &str) -> Option<Credentials> {
        [&self.login_file, &self.docker_config].into_iter().flatten().find_map(|f| read_auth(f, registry))
    }

    /// Stores credentials for `registry` in the login file (0600, replaced
    /// atomically).
    pub fn save_login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let file = self.login_file.as_ref().ok_or_else(|| ImageError::Unsupported("no login file configured".into()))?;
        let mut doc: Value = std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::json!({}));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.username, creds.password));
        doc["auths"][registry] = serde_json::json!({ "auth": token });
        let tmp = file.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&doc).unwrap_or_default().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        Ok(())
    }
}

/// `docker.io=127.0.0.1:5000,ghcr.io=mirror:5000`.
pub fn parse_mirrors(s: &str) -> Result<HashMap<String, Vec<String>>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for item in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (reg, mirror) = item
            .split_once('=')
            .ok_or_else(|| ImageError::Unsupported(format!("HEYVM_REGISTRY_MIRRORS entry '{item}' is not REGISTRY=MIRROR")))?;
        let reg = if reg.trim() == "index.docker.io" { DOCKER_HUB } else { reg.trim() };
        let mirror = mirror.trim().trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
        m.entry(reg.to_string()).or_default().push(mirror.to_string());
    }
    Ok(m)
}

/// Docker's `auths` map, keyed by registry (Docker Hub's key is its v1 URL).
fn read_auth(file: &Path, registry: &str) -> Option<Credentials> {
    let doc: Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let keys: Vec<String> = if registry == DOCKER_HUB {
        vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), DOCKER_HUB.into()]
    } else {
        vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")]
    };
    let entry = keys.iter().find_map(|k| auths.get(k))?;
    if let (Some(u), Some(p)) = (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str)) {
        return Some(Credentials { username: u.into(), password: p.into() });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(entry.get("auth")?.as_str()?).ok()?;
    let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some(Credentials { username: u.into(), password: p.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_and_come_first() {
        let m = parse_mirrors("docker.io=127.0.0.1:5000, index.docker.io=http://m2:1/").unwrap();
        assert_eq!(m["docker.io"], vec!["127.0.0.1:5000".to_string(), "m2:1".to_string()]);
        assert!(parse_mirrors("nonsense").is_err());
        let s = RegistrySettings { mirrors: m, ..Default::default() };
        let r = ImageRef::parse("ubuntu:24.04").unwrap();
        assert_eq!(s.endpoints(&r), ["127.0.0.1:5000", "m2:1", "docker.io"]);
    }

    #[test]
    fn credentials_from_docker_config_and_login_file() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("u1:p1");
        std::fs::write(
            &docker,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"reg.io":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let s = RegistrySettings { docker_config: Some(docker), login_file: Some(dir.path().join("login.json")), ..Default::default() };
        let want = Credentials { username: "u1".into(), password: "p1".into() };
        assert_eq!(s.credentials("docker.io"), Some(want.clone()));
        assert_eq!(s.credentials("reg.io"), Some(want));
        assert_eq!(s.credentials("other.io"), None);
        let mine = Credentials { username: "me".into(), password: "pa:ss".into() };
        s.save_login("reg.io", &mine).unwrap();
        assert_eq!(s.credentials("reg.io"), Some(mine));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.path().join("login.json")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn loopback_is_plain_http() {
        let s = RegistrySettings { insecure: vec!["build-box:5000".into()], ..Default::default() };
        assert!(s.is_insecure("127.0.0.1:5000") && s.is_insecure("localhost:1") && s.is_insecure("[::1]:5000"));
        assert!(s.is_insecure("build-box:5000") && !s.is_insecure("ghcr.io"));
    }
}
