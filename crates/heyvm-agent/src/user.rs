//! Sandbox users, resolved from the sandbox's own `/etc/passwd` and
//! `/etc/group` (never the host's), and the two ways the agent acts as one:
//!
//! * a command (exec, shell) runs as the user: between fork and exec the
//!   child takes the user's supplementary groups, gid and uid;
//! * a file request acts as the user on its handler thread only. Linux
//!   keeps the filesystem uid/gid and the supplementary groups per thread
//!   at the kernel level; the raw syscalls (unlike libc's `setgroups`,
//!   which changes every thread) switch only the handler's own thread,
//!   which serves this one request and then ends. A non-root fsuid also
//!   drops the thread's file capabilities, so permission checks are that
//!   user's.
//!
//! A user is a name or a numeric uid, optionally `:group` (name or gid), as
//! Docker's `USER` and `exec -u` take it. A numeric uid need not exist in
//! `/etc/passwd` (its group is then the same number); a name must.

use std::process::Command;

use heyvm_protocol::files::FileErrorCode;

use crate::file_error::{fail, FResult};

/// Who a command or file request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group first).
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd`, if the user is listed there.
    pub home: Option<String>,
    pub name: Option<String>,
}

/// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`).
pub fn lookup(spec: &str) -> Result<Ident, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(format!("invalid user '{spec}' (USER, UID, USER:GROUP or UID:GID)"));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let numeric = user.parse::<u32>().ok();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (numeric.is_some() && f[2].parse::<u32>().ok() == numeric)));
    let (name, uid, mut gid, home) = match (entry, numeric) {
        (Some(f), _) => {
            let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
                return Err(format!("the sandbox's /etc/passwd entry for '{user}' is malformed"));
            };
            (Some(f[0].to_string()), uid, gid, f.get(5).map(|h| h.to_string()).filter(|h| !h.is_empty()))
        }
        (None, Some(uid)) => (None, uid, uid, None),
        (None, None) => return Err(format!("no user '{user}' in the sandbox's /etc/passwd")),
    };
    let group_file = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let groups: Vec<Vec<&str>> = group_file.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() == 4).collect();
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("no group '{g}' in the sandbox's /etc/group"))?,
        };
    }
    let mut all = vec![gid];
    // An explicit group replaces the user's supplementary groups, as in Docker.
    if let (Some(n), None) = (&name, group) {
        for f in &groups {
            if f[3].split(',').any(|m| m == n) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !all.contains(&g) {
                        all.push(g);
                    }
                }
            }
        }
    }
    Ok(Ident { uid, gid, groups: all, home, name })
}

/// The user a request names, `None` for no user, the empty string, or the
/// identity the agent already has (a hosted agent in tests is not root).
pub fn resolve(user: Option<&str>) -> Result<Option<Ident>, String> {
    let id = user.filter(|u| !u.is_empty()).map(lookup).transpose()?;
    // SAFETY: geteuid/getegid have no preconditions.
    let current = |i: &Ident| i.uid == unsafe { libc::geteuid() } && i.gid == unsafe { libc::getegid() };
    Ok(id.filter(|i| !current(i)))
}

/// `HOME` and `USER` for a command run as `id` when the request left the
/// host's defaults (root's) in place; a request's own values stay.
pub fn env_for(id: &Ident, env: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut extra = Vec::new();
    if id.uid != 0 {
        if env.get("HOME").is_none_or(|h| h == "/root") {
            extra.push(("HOME".into(), id.home.clone().unwrap_or_else(|| "/".into())));
        }
        if env.get("USER").is_none_or(|u| u == "root") {
            extra.push(("USER".into(), id.name.clone().unwrap_or_else(|| id.uid.to_string())));
        }
    }
    extra
}

/// Makes `cmd` run as `id`: supplementary groups, gid, then uid, in the
/// child between fork and exec. Also points `HOME` and `USER` at the
/// user's when the request did not set them to something else.
pub fn run_as(cmd: &mut Command, id: &Ident, env: &std::collections::BTreeMap<String, String>) {
    cmd.envs(env_for(id, env));
    let (uid, gid, groups) = (id.uid, id.gid, id.groups.clone());
    // SAFETY: runs between fork and exec; only the raw setgroups, setgid
    // and setuid syscalls on data prepared before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, gid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether this thread acts as root (no `user` was given, or it was root).
pub fn acting_as_root() -> bool {
    // SAFETY: setfsuid with an invalid id changes nothing and returns the current one.
    (unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) }) == 0
}

/// Switches this thread's filesystem identity to `user`; `None` keeps the
/// agent's own identity.
pub fn act_as(user: Option<&str>) -> FResult<()> {
    let Some(id) = resolve(user).map_err(|m| fail(FileErrorCode::UnknownUser, m))? else { return Ok(()) };
    // SAFETY: geteuid has no preconditions.
    if id.uid == unsafe { libc::geteuid() } {
        return Ok(());
    }
    let denied = || fail(FileErrorCode::PermissionDenied, format!("the agent cannot act as user '{}'", user.unwrap_or_default()));
    // SAFETY: a valid array of `groups.len()` gids; affects this thread only.
    if unsafe { libc::syscall(libc::SYS_setgroups, id.groups.len(), id.groups.as_ptr()) } != 0 {
        return Err(denied());
    }
    // SAFETY: setfsgid/setfsuid take plain ids; they return the previous
    // id and report failure only by leaving it unchanged.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, id.gid);
        libc::syscall(libc::SYS_setfsuid, id.uid);
    }
    // SAFETY: as in `acting_as_root`.
    let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
    if now != id.uid as libc::c_long {
        return Err(denied());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_refused_and_numeric_ids_pass() {
        assert!(lookup("no-such-user-heyvm").is_err());
        assert!(matches!(act_as(Some("no-such-user-heyvm")), Err(f) if f.code == FileErrorCode::UnknownUser));
        let id = lookup("54321").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (54321, 54321, vec![54321]));
        let id = lookup("54321:7").unwrap();
        assert_eq!((id.uid, id.gid), (54321, 7));
        assert_eq!(lookup("root").unwrap().uid, 0);
        assert!(lookup("root:no-such-group-heyvm").is_err());
        for bad in ["", ":", "root:", ":0"] {
            assert!(lookup(bad).is_err(), "{bad:?}");
        }
        assert!(act_as(None).is_ok());
        assert_eq!(resolve(Some("")).unwrap(), None);
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() }.to_string();
        assert_eq!(resolve(Some(&me)).unwrap(), None, "already that user");
    }

    #[test]
    fn a_command_runs_as_the_user() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let id = lookup("54321:54322").unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo $(id -u) $(id -g) $(id -G) $HOME"]).env_clear();
        run_as(&mut cmd, &id, &Default::default());
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "54321 54322 54322 /\n");
    }
}
