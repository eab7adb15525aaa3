//! The process limit inside a VM. A bubblewrap sandbox's size class bounds
//! its processes with a host pids cgroup; a VM's processes live in its own
//! kernel, where the host's cgroups cannot count them. So the guest init
//! mounts the guest's cgroup2 file system, makes one cgroup, `sandbox`,
//! with `pids.max` from the size class (`heyvm.pids=N` on the kernel
//! command line), and every command, shell and start command the agent
//! runs joins it between fork and exec. The init and the agent stay
//! outside: a fork bomb stops at the limit while the agent can still start
//! the commands that end it.
//!
//! The guest's root owns its kernel and could leave the cgroup or raise the
//! limit; what it protects is the agent's ability to serve (and through it
//! the host's control), not the host, which QEMU's own host cgroup bounds.

use std::ffi::CString;
use std::fs;
use std::io;
use std::sync::OnceLock;

/// Where the guest's cgroup2 hierarchy is mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The cgroup of everything the agent starts.
pub const CGROUP: &str = "/sys/fs/cgroup/sandbox";

/// `cgroup.procs` of [`CGROUP`], once it exists with its limit.
static PROCS: OnceLock<CString> = OnceLock::new();

/// Mounts cgroup2 and makes [`CGROUP`] with at most `max` processes
/// (threads count too, as in `pids.max` on the host).
pub fn setup(max: u32) -> io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    crate::guest_init::mount("cgroup2", ROOT, "cgroup2", flags, "")?;
    fs::write(format!("{ROOT}/cgroup.subtree_control"), "+pids")?;
    fs::create_dir_all(CGROUP)?;
    fs::write(format!("{CGROUP}/pids.max"), max.to_string())?;
    let procs = CString::new(format!("{CGROUP}/cgroup.procs")).map_err(|_| io::Error::other("NUL in a path"))?;
    let _ = PROCS.set(procs);
    Ok(())
}

/// Moves the calling process into [`CGROUP`] if the init made it (only in
/// a VM). Between fork and exec: only open, write and close, on a path
/// built before the fork. A failure leaves the process where it is.
pub fn join() {
    let Some(path) = PROCS.get() else { return };
    // SAFETY: open/write/close with a valid C string and a static buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}
