//! The daemon's outer defences, applied before any route runs:
//!
//! * [`accept`]: a cap on open connections (excess ones wait in the kernel's
//!   accept queue rather than being reset) and a deadline for request heads,
//!   so idle floods cannot exhaust descriptors or memory.
//! * [`peer`]: the local uid behind a loopback TCP connection.
//! * Without `JWT_SECRET`, only the daemon's own uid (and the users named in
//!   `HEYVM_ALLOW_USERS`) may use the API; [`origin`] refuses foreign `Host`
//!   headers (DNS rebinding, 421) and cross-site `Origin`s (403).
//! * [`mounts`]: who may bind which host directory into a sandbox.

pub mod accept;
pub mod mounts;
pub mod origin;
pub mod peer;

use std::net::SocketAddr;
use std::time::Duration;

/// Connections served at once; more wait in the accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a client may take to send a request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is calling, attached to every request as an extension.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The uid owning the client's socket, when the client is on this
    /// machine (a loopback connection the kernel could name).
    pub uid: Option<u32>,
}

impl Peer {
    pub fn is_loopback(&self) -> bool {
        self.remote.ip().to_canonical().is_loopback()
    }
}

/// Listener-level policy (environment: `HEYVM_MAX_CONNECTIONS`,
/// `HEYVM_HEADER_TIMEOUT_SECS`, `HEYVM_ALLOW_USERS`).
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Some(uids) when local callers are restricted (auth off); the daemon's
    /// own uid is always among them.
    pub allowed_uids: Option<Vec<u32>>,
    /// `HEYVM_ALLOW_USERS=*`: any local user.
    pub any_user: bool,
}

impl GuardConfig {
    pub fn from_env(auth: bool) -> Result<Self, String> {
        use heyvm_core::config;
        let max_connections = config::parse::<usize>(config::MAX_CONNECTIONS).unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1);
        let header_timeout = config::parse::<u64>(config::HEADER_TIMEOUT_SECS).map(Duration::from_secs).unwrap_or(DEFAULT_HEADER_TIMEOUT);
        let spec = config::string(config::ALLOW_USERS).unwrap_or_default();
        let any_user = spec.split([',', ' ']).any(|u| u.trim() == "*");
        // SAFETY: geteuid never fails.
        let mut uids = vec![unsafe { libc::geteuid() }];
        for name in spec.split([',', ' ']).map(str::trim).filter(|u| !u.is_empty() && *u != "*") {
            uids.push(resolve_user(name)?);
        }
        Ok(GuardConfig { max_connections, header_timeout, allowed_uids: (!auth).then_some(uids), any_user })
    }

    /// Whether a caller may use the API at all; `Err` is the reason.
    pub fn admit(&self, peer: &Peer) -> Result<(), String> {
        let Some(allowed) = &self.allowed_uids else { return Ok(()) };
        if self.any_user {
            return Ok(());
        }
        match peer.uid {
            // Root can act as any user on this machine anyway.
            Some(uid) if uid == 0 || allowed.contains(&uid) => Ok(()),
            Some(uid) => Err(format!(
                "local user {uid} may not use this daemon (it runs as uid {}); the daemon's owner can allow it with HEYVM_ALLOW_USERS",
                allowed[0]
            )),
            None => Err("the calling process could not be identified".into()),
        }
    }
}

/// A user name or numeric uid.
fn resolve_user(name: &str) -> Result<u32, String> {
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(uid);
    }
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    // SAFETY: getpwnam returns NULL or a pointer valid until the next call;
    // read at once, at startup.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!("HEYVM_ALLOW_USERS: no such user {name:?}"));
    }
    // SAFETY: pw is non-null and points to a valid passwd struct.
    Ok(unsafe { (*pw).pw_uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: Option<u32>) -> Peer {
        Peer { remote: "127.0.0.1:5000".parse().unwrap(), local: "127.0.0.1:34099".parse().unwrap(), uid }
    }

    #[test]
    fn admits_only_listed_users_when_auth_is_off() {
        let g =
            GuardConfig { max_connections: 1, header_timeout: DEFAULT_HEADER_TIMEOUT, allowed_uids: Some(vec![0, 1000]), any_user: false };
        assert!(g.admit(&peer(Some(0))).is_ok());
        assert!(g.admit(&peer(Some(1000))).is_ok());
        assert!(g.admit(&peer(Some(65534))).is_err());
        assert!(g.admit(&peer(None)).is_err());
        let open = GuardConfig { allowed_uids: None, ..g };
        assert!(open.admit(&peer(Some(65534))).is_ok());
        assert_eq!(resolve_user("root"), Ok(0));
        assert!(resolve_user("no-such-user-heyvm").is_err());
    }
}
