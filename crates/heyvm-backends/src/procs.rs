//! Small /proc helpers.

use std::path::Path;

/// What a liveness check found. `Unknown` means the check itself failed
/// (out of descriptors, /proc unreadable): never a reason to call a
/// sandbox dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    Unknown,
}

/// Whether `pid` is alive, or not known to be dead.
pub fn alive_with(pid: i32, marker: &str) -> bool {
    liveness(pid, marker) != Liveness::Dead
}

/// Whether `pid` is alive (not a zombie) and its command line mentions
/// `marker`, which protects against pid reuse. A pidfd pins the process
/// while its /proc files are read, so a pid recycled meanwhile is noticed.
pub fn liveness(pid: i32, marker: &str) -> Liveness {
    use std::io::ErrorKind;
    let gone = |e: &std::io::Error| e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH);
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if gone(&e) { Liveness::Dead } else { Liveness::Unknown };
    }
    // SAFETY: a fresh descriptor we own.
    let pidfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let verdict = (|| {
        let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s,
            Err(e) if gone(&e) => return Liveness::Dead,
            Err(_) => return Liveness::Unknown,
        };
        let zombie = stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')).unwrap_or(true);
        if zombie {
            return Liveness::Dead;
        }
        // While a process is inside execve (the sandbox owner becoming bwrap)
        // its command line reads as empty for a moment; look again rather than
        // declare it dead.
        for _ in 0..50 {
            match std::fs::read(format!("/proc/{pid}/cmdline")) {
                Ok(c) if c.is_empty() => std::thread::sleep(std::time::Duration::from_micros(200)),
                Ok(c) => return if String::from_utf8_lossy(&c).contains(marker) { Liveness::Alive } else { Liveness::Dead },
                Err(e) if gone(&e) => return Liveness::Dead,
                Err(_) => return Liveness::Unknown,
            }
        }
        Liveness::Unknown
    })();
    if verdict == Liveness::Alive {
        // The /proc reads named the process the pidfd holds only if it
        // still exists now.
        // SAFETY: signal 0 through a valid pidfd only checks existence.
        let r =
            unsafe { libc::syscall(libc::SYS_pidfd_send_signal, std::os::fd::AsRawFd::as_raw_fd(&pidfd), 0, std::ptr::null::<u8>(), 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return Liveness::Dead;
        }
    }
    verdict
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

pub fn sigkill(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid never fails.
    unsafe { libc::geteuid() == 0 }
}

pub fn find_in_path(prog: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(prog)).find(|p| Path::new(p).is_file())
}

/// Makes the calling thread (and what it spawns) a background one: nice
/// [`BACKGROUND_NICE`]. Spares are refilled by such threads, so on a small
/// host the create that just took a spare (and every other request) gets
/// the CPU first.
pub fn background_thread() {
    // SAFETY: setpriority on the calling thread (PRIO_PROCESS with the
    // thread id is per thread on Linux); no memory is involved.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE) };
}

/// Nice 10: about a tenth of a normal thread's CPU share when both want
/// it. Not 19 (a seventieth): beside busy guests (a TCG VM's vCPUs at nice
/// 0) spares then starved for minutes and every create paid the full cost.
const BACKGROUND_NICE: libc::c_int = 10;

/// Back to the normal priority (nice 0): a parked owner, started by a
/// background thread, becomes a sandbox. Needs root (lowering nice).
pub fn normal_priority() {
    // SAFETY: as above, for the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 0) };
}
