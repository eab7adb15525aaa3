//! Talking to registries through `oci-client`: endpoints (mirrors first),
//! plain HTTP for loopback and listed registries, credentials, and turning
//! the client's errors into heyvm's codes.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::ImageError;
use crate::reference::ImageRef;
use crate::settings::RegistrySettings;

/// One registry endpoint ready to talk to.
pub struct Endpoint {
    pub registry: String,
    pub client: Client,
    pub auth: RegistryAuth,
}

fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Endpoint {
    pub fn new(settings: &RegistrySettings, registry: &str) -> Self {
        install_crypto();
        let protocol =
            if settings.is_insecure(registry) { ClientProtocol::HttpsExcept(vec![registry.to_string()]) } else { ClientProtocol::Https };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            // heyvm picks the platform itself (and verifies every digest).
            platform_resolver: None,
            user_agent: concat!("heyvm/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let auth = match settings.credentials(registry) {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        Endpoint { registry: registry.to_string(), client: Client::new(config), auth }
    }

    /// `r`'s repository on this endpoint, at `tag_or_digest`.
    pub fn reference(&self, r: &ImageRef) -> Reference {
        match (&r.digest, &r.tag) {
            (Some(d), _) => Reference::with_digest(self.registry.clone(), r.repository.clone(), d.clone()),
            (None, Some(t)) => Reference::with_tag(self.registry.clone(), r.repository.clone(), t.clone()),
            (None, None) => Reference::with_tag(self.registry.clone(), r.repository.clone(), "latest".into()),
        }
    }

    /// Maps a client error to heyvm's codes (`image` names what we asked for).
    pub fn error(&self, image: &str, e: OciDistributionError) -> ImageError {
        let registry = self.registry.clone();
        let unauthorized = |why: String| ImageError::RegistryUnauthorized { registry: registry.clone(), image: image.to_string(), why };
        match e {
            OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotFound(image.to_string()),
            OciDistributionError::AuthenticationFailure(w) => unauthorized(w),
            OciDistributionError::UnauthorizedError { url } => unauthorized(format!("401 from {url}")),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let msg = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
                if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    unauthorized(msg)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound | OciErrorCode::BlobUnknown
                    )
                }) {
                    ImageError::NotFound(image.to_string())
                } else {
                    ImageError::BadRegistryAnswer { registry, why: msg }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => ImageError::NotFound(image.to_string()),
            OciDistributionError::ServerError { code: 401 | 403, message, .. } => unauthorized(message),
            OciDistributionError::RequestError(re) if re.is_connect() || re.is_timeout() || re.is_request() => {
                ImageError::RegistryUnreachable { registry, why: format!("pulling {image}: {}", chain(&re)) }
            }
            OciDistributionError::DigestError(d) => {
                ImageError::DigestMismatch { what: image.to_string(), expected: "the announced digest".into(), actual: d.to_string() }
            }
            other => ImageError::BadRegistryAnswer { registry, why: other.to_string() },
        }
    }
}

/// An error with its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether trying the next endpoint (the real registry after a mirror) could help.
pub fn worth_falling_back(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::NotFound(_)
            | ImageError::RegistryUnreachable { .. }
            | ImageError::RegistryUnauthorized { .. }
            | ImageError::BadRegistryAnswer { .. }
    )
}
