//! Who may bind which host directory into a sandbox. A bind mount hands a
//! sandbox (code nobody reviewed) a host directory, so a caller may only
//! mount what it could read itself:
//!
//! * a local caller (a loopback connection whose uid the kernel named) may
//!   mount what that uid can read (and write, for a writable mount), with or
//!   without a token; a user other than the daemon's own must also own the
//!   directory, because root inside the sandbox could otherwise read files
//!   below it that the user cannot;
//! * any other caller (remote, authenticated by token) only paths under
//!   `HEYVM_MOUNT_ROOTS` (colon- or comma-separated; default none);
//!   otherwise 403 `mount_not_allowed`.
//!
//! Permission bits are checked for the caller's uid, its primary and
//! supplementary groups on every directory along the way (ACLs are not
//! consulted, which can only refuse more).

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use heyvm_types::MountSpec;

use super::Peer;
use crate::error::AppError;

/// The caller of a request, as far as mounts are concerned.
pub struct Caller(pub Option<Peer>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller(parts.extensions.get::<Peer>().cloned()))
    }
}

impl Caller {
    /// Ok when every mount is one this caller may make.
    pub fn authorize(&self, mounts: &[MountSpec]) -> Result<(), AppError> {
        // No peer: an in-process caller (tests, embedding), trusted.
        let Some(peer) = &self.0 else { return Ok(()) };
        // S3-backed mounts bind no host directory of the caller's choosing.
        for m in mounts.iter().filter(|m| m.s3_prefix.is_none()) {
            let allowed = match peer.uid {
                Some(uid) => {
                    may_access(uid, Path::new(&m.host_path), !m.read_only) && (uid == own_uid() || owns(uid, Path::new(&m.host_path)))
                }
                None => under_mount_roots(Path::new(&m.host_path)),
            };
            if !allowed {
                let who = peer.uid.map(|u| format!("local user {u}")).unwrap_or_else(|| "a remote caller".into());
                return Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "mount_not_allowed",
                    format!(
                        "{who} may not mount {} (local callers mount what they can access; remote ones only under HEYVM_MOUNT_ROOTS)",
                        m.host_path
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn own_uid() -> u32 {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() }
}

fn owns(uid: u32, path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.uid() == uid)
}

fn under_mount_roots(path: &Path) -> bool {
    let roots = heyvm_core::config::string(heyvm_core::config::MOUNT_ROOTS).unwrap_or_default();
    let Ok(real) = path.canonicalize() else { return false };
    roots
        .split([':', ','])
        .filter(|r| !r.trim().is_empty())
        .filter_map(|r| Path::new(r.trim()).canonicalize().ok())
        .any(|root| real.starts_with(root))
}

/// Whether `uid` can reach and read (and write) `path`.
pub fn may_access(uid: u32, path: &Path, write: bool) -> bool {
    if uid == 0 {
        return true;
    }
    let Ok(real) = path.canonicalize() else { return false };
    let Some((gid, groups)) = groups_of(uid) else { return false };
    let check = |p: &Path, want: u32| -> bool {
        let Ok(md) = std::fs::metadata(p) else { return false };
        let bits = if md.uid() == uid {
            md.mode() >> 6
        } else if md.gid() == gid || groups.contains(&md.gid()) {
            md.mode() >> 3
        } else {
            md.mode()
        } & 7;
        bits & want == want
    };
    let ancestors: Vec<PathBuf> = real.ancestors().skip(1).map(Path::to_path_buf).collect();
    if !ancestors.iter().all(|a| check(a, 1)) {
        return false;
    }
    let is_dir = real.is_dir();
    let want = 4 | if is_dir { 1 } else { 0 } | if write { 2 } else { 0 };
    check(&real, want)
}

/// The primary gid and supplementary groups of `uid`.
fn groups_of(uid: u32) -> Option<(u32, Vec<u32>)> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into pw/buf, which outlive the call.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        // A uid without a passwd entry: no groups beyond "other".
        return Some((u32::MAX, Vec::new()));
    }
    let gid = pw.pw_gid;
    // SAFETY: pw_name points into buf, valid here.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_owned();
    let name = CString::new(name.to_bytes()).ok()?;
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: groups has room for n entries.
    if unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) } < 0 {
        return None;
    }
    groups.truncate(n.max(0) as usize);
    Some((gid, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_cannot_read_root_only_paths() {
        assert!(may_access(0, Path::new("/etc/shadow"), true));
        assert!(!may_access(65534, Path::new("/etc/shadow"), false));
        assert!(!may_access(65534, Path::new("/root"), false));
        assert!(may_access(65534, Path::new("/usr/bin"), false));
        assert!(!may_access(65534, Path::new("/usr/bin"), true));
        assert!(may_access(65534, Path::new("/tmp"), true));
        assert!(!may_access(65534, Path::new("/no/such/path"), false));
    }

    #[test]
    fn remote_callers_need_mount_roots() {
        // Unset in tests: nothing is allowed.
        if heyvm_core::config::string(heyvm_core::config::MOUNT_ROOTS).is_none() {
            assert!(!under_mount_roots(Path::new("/tmp")));
        }
    }
}
