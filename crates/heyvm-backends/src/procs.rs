//! Small /proc helpers.

use std::path::Path;

/// Whether `pid` is alive (not a zombie) and its command line mentions
/// `marker`, which protects against pid reuse.
pub fn alive_with(pid: i32, marker: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let zombie = stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')).unwrap_or(true);
    if zombie {
        return false;
    }
    // While a process is inside execve (the sandbox owner becoming bwrap)
    // its command line reads as empty for a moment; look again rather than
    // declare it dead.
    for _ in 0..50 {
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(c) if c.is_empty() => std::thread::sleep(std::time::Duration::from_micros(200)),
            Ok(c) => return String::from_utf8_lossy(&c).contains(marker),
            Err(_) => return false,
        }
    }
    false
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
