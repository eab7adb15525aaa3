//! Acting as a sandbox user for one file request. Linux keeps the
//! filesystem uid/gid and the supplementary groups per thread at the
//! kernel level; the raw syscalls (unlike libc's `setgroups`, which
//! changes every thread) switch only the handler's own thread, which
//! serves this one request and then ends. A non-root fsuid also drops the
//! thread's file capabilities, so permission checks are that user's.

use heyvm_protocol::files::FileErrorCode;

use crate::files::{fail, FResult};

/// Whether this thread acts as root (no `user` was given, or it was root).
pub fn acting_as_root() -> bool {
    // SAFETY: setfsuid with an invalid id changes nothing and returns the current one.
    (unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) }) == 0
}

/// Switches this thread to `user` (a name or numeric uid from the
/// sandbox's `/etc/passwd`); `None` keeps the agent's own identity.
pub fn act_as(user: Option<&str>) -> FResult<()> {
    let Some(user) = user.filter(|u| !u.is_empty()) else { return Ok(()) };
    let (name, uid, gid) = lookup(user)?;
    // SAFETY: geteuid has no preconditions.
    if uid == unsafe { libc::geteuid() } {
        return Ok(());
    }
    let groups = groups_of(name.as_deref(), gid);
    let denied = || fail(FileErrorCode::PermissionDenied, format!("the agent cannot act as user '{user}'"));
    // SAFETY: a valid array of `groups.len()` gids; affects this thread only.
    if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } != 0 {
        return Err(denied());
    }
    // SAFETY: setfsgid/setfsuid take plain ids; they return the previous
    // id and report failure only by leaving it unchanged.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    // SAFETY: as in `acting_as_root`.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
    if now != uid as libc::c_long {
        return Err(denied());
    }
    Ok(())
}

/// `(name, uid, gid)` for a user name or a numeric uid (which need not be
/// in `/etc/passwd`; its group is then the same number).
fn lookup(user: &str) -> FResult<(Option<String>, u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let numeric = user.parse::<u32>().ok();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else { continue };
        if f[0] == user || numeric == Some(uid) {
            return Ok((Some(f[0].to_string()), uid, gid));
        }
    }
    match numeric {
        Some(uid) => Ok((None, uid, uid)),
        None => Err(fail(FileErrorCode::UnknownUser, format!("no user '{user}' in the sandbox's /etc/passwd"))),
    }
}

/// The user's primary group and every group of `/etc/group` naming it.
fn groups_of(name: Option<&str>, gid: u32) -> Vec<libc::gid_t> {
    let mut out = vec![gid];
    let Some(name) = name else { return out };
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    for line in groups.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() == 4 && f[3].split(',').any(|m| m == name) {
            if let Ok(g) = f[2].parse::<u32>() {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_refused_and_numeric_ids_pass() {
        assert!(matches!(lookup("no-such-user-heyvm"), Err(f) if f.code == FileErrorCode::UnknownUser));
        let (_, uid, _) = lookup("54321").ok().unwrap();
        assert_eq!(uid, 54321);
        assert!(act_as(None).is_ok());
    }
}
