//! One VM's files and its QEMU process, independent of the daemon's traits.
//!
//! QEMU is started in a session of its own (and, for `nat`, inside the
//! sandbox's network namespace), so a daemon killed with `kill -9` leaves it
//! running; the pid file plus a check of `/proc/PID/cmdline` for this VM's
//! own agent socket path let a restarted daemon find it again without ever
//! signalling a recycled pid.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::qemu::VmSpec;

/// Where one VM's files live: `<sandbox dir>/vm/`. The guest reaches none of
/// them (it only sees its disks), so none is sandbox-writable.
#[derive(Debug, Clone)]
pub struct VmLayout {
    pub dir: PathBuf,
}

impl VmLayout {
    pub fn new(sandbox_dir: &Path) -> Self {
        Self { dir: sandbox_dir.join("vm") }
    }
    /// The qcow2 overlay over the image's base disk (the guest's `/`).
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("root.qcow2")
    }
    /// The persistent `/workspace` disk (raw ext4; loop-mountable while stopped).
    pub fn workspace_disk(&self) -> PathBuf {
        self.dir.join("workspace.ext4")
    }
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// Sockets and the pid file (mode 0700).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir().join("qmp.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("qemu.pid")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
}

/// A running (or once-running) QEMU.
#[derive(Debug, Clone)]
pub struct VmProcess {
    pub pid: i32,
    /// Identifies this VM in `/proc/PID/cmdline`.
    agent_socket: PathBuf,
}

/// Starts QEMU for `spec`, detached from the daemon's session, inside
/// `netns` and the cgroups of `cgroup` if given, with what `handover`
/// holds (see [`crate::confine`]); its stderr goes to the layout's
/// `qemu.log`.
pub fn spawn(
    spec: &VmSpec,
    layout: &VmLayout,
    netns: Option<&Path>,
    cgroup: Option<&crate::cgroup::Join>,
    handover: &crate::confine::Handover,
) -> io::Result<VmProcess> {
    fs::create_dir_all(layout.run_dir())?;
    set_mode(&layout.run_dir(), 0o700)?;
    for stale in [layout.agent_socket(), layout.qmp_socket(), layout.pid_file()] {
        let _ = fs::remove_file(stale);
    }
    let log = fs::OpenOptions::new().create(true).append(true).open(layout.qemu_log())?;
    let netns_fd =
        netns.map(fs::File::open).transpose().map_err(|e| io::Error::new(e.kind(), format!("opening the network namespace: {e}")))?;
    let raw_netns = netns_fd.as_ref().map(|f| f.as_raw_fd());
    let cgroup_fds = cgroup.map(|j| j.fds()).unwrap_or_default();
    let read_only: Vec<std::ffi::CString> = spec
        .read_only_binds
        .iter()
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::other("a NUL byte in a mount path")))
        .collect::<io::Result<_>>()?;
    let root = std::ffi::CString::new("/").expect("no NUL");
    let trees = handover.raw_trees();
    let incoming = spec.incoming_fd;
    let mut cmd = Command::new(qemu_binary());
    cmd.args(spec.args()).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: only async-signal-safe syscalls (write, setsid, setns,
    // unshare, mount, move_mount, fcntl on strings and descriptors made
    // before the fork) between fork and exec; the descriptors outlive the
    // spawn.
    unsafe {
        cmd.pre_exec(move || {
            // First, so everything QEMU allocates is charged to its cgroup.
            crate::cgroup::join_self(&cgroup_fds)?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = raw_netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fd) = incoming {
                // The checkpoint's memory, inherited across exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if !read_only.is_empty() || !trees.is_empty() {
                // QEMU's own mount namespace (a slave of the host's, so
                // nothing made here shows outside): the shares' idmapped
                // clones over their paths, then the read-only paths,
                // read-only whichever share shows them to the guest.
                let null = std::ptr::null();
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(null, root.as_ptr(), null, libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                crate::confine::attach_trees(&trees)?;
                for p in &read_only {
                    if libc::mount(p.as_ptr(), p.as_ptr(), null, libc::MS_BIND, std::ptr::null()) != 0
                        || libc::mount(null, p.as_ptr(), null, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, std::ptr::null()) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", qemu_binary())))?;
    let pid = child.id() as i32;
    // The child is reaped by whoever is its parent: the daemon's tokio
    // runtime does not reap, so leave a thread that does (after a daemon
    // restart QEMU is init's child and init reaps it).
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    fs::write(layout.pid_file(), pid.to_string())?;
    Ok(VmProcess { pid, agent_socket: spec.agent_socket.clone() })
}

/// `HEYVM_QEMU` or `qemu-system-x86_64`.
pub fn qemu_binary() -> String {
    heyvm_core::config::string(heyvm_core::config::QEMU).unwrap_or_else(|| "qemu-system-x86_64".into())
}

fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

/// The QEMU a previous daemon started for this layout, if it still runs.
pub fn find(layout: &VmLayout) -> Option<VmProcess> {
    let pid: i32 = fs::read_to_string(layout.pid_file()).ok()?.trim().parse().ok()?;
    let p = VmProcess { pid, agent_socket: layout.agent_socket() };
    (p.alive() == Some(true)).then_some(p)
}

impl VmProcess {
    /// `Some(true)` while this VM's QEMU runs, `Some(false)` once gone (or a
    /// zombie), `None` when /proc cannot tell.
    pub fn alive(&self) -> Option<bool> {
        let cmdline = match fs::read(format!("/proc/{}/cmdline", self.pid)) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
        };
        if cmdline.is_empty() {
            return Some(false); // a zombie has no command line
        }
        let needle = self.agent_socket.to_string_lossy();
        Some(String::from_utf8_lossy(&cmdline).contains(needle.as_ref()))
    }

    pub fn kill(&self) {
        if self.alive() == Some(true) {
            // SAFETY: kill(2) on a pid just confirmed to be this VM's QEMU.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    /// CPU time (ns) and resident memory (bytes) of the QEMU process.
    pub fn usage(&self) -> (u64, u64) {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
        let pages: u64 = fields.get(21).and_then(|s| s.parse().ok()).unwrap_or(0);
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        (ticks * 1_000_000_000 / hz, pages * page)
    }
}

/// Why a VM is not (or no longer) running: QEMU's own last error and the
/// tail of the guest console.
pub fn failure_reason(layout: &VmLayout) -> Option<String> {
    let qemu = tail_lines(&layout.qemu_log(), 3);
    let console = tail_lines(&layout.console_log(), 12);
    if qemu.is_empty() && console.is_empty() {
        return None;
    }
    let mut s = String::new();
    if !qemu.is_empty() {
        s.push_str(&format!("qemu: {}", qemu.join(" | ")));
    }
    if !console.is_empty() {
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(&format!("serial console tail: {}", console.join(" | ")));
    }
    Some(s)
}

/// Console logs above this are cut back to their last [`CONSOLE_KEEP`]
/// bytes: the guest decides what it prints, the host's disk must not pay.
pub const CONSOLE_MAX: u64 = 4 << 20;
pub const CONSOLE_KEEP: u64 = 1 << 20;

/// Cuts an oversized console log back to its tail. QEMU opened it with
/// `O_APPEND`, so its next write lands after what is kept.
pub fn trim_console(layout: &VmLayout) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = layout.console_log();
    let Ok(mut f) = fs::OpenOptions::new().read(true).write(true).open(&path) else { return };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len <= CONSOLE_MAX || f.seek(SeekFrom::Start(len - CONSOLE_KEEP)).is_err() {
        return;
    }
    let mut tail = Vec::new();
    if f.take(CONSOLE_KEEP).read_to_end(&mut tail).is_err() {
        return;
    }
    let Ok(mut f) = fs::OpenOptions::new().write(true).truncate(true).open(&path) else { return };
    let _ = f.write_all(b"[heyvm: console log trimmed]\n");
    let _ = f.write_all(&tail);
}

/// The last `n` non-empty lines of a file, reading at most its last 16 KiB.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.take(16 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<String> = text.lines().map(|l| l.trim()).filter(|l| !l.is_empty()).map(|l| l.chars().take(300).collect()).collect();
    let keep = lines.len().saturating_sub(n);
    lines.drain(..keep);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_reason() {
        let t = tempfile::tempdir().unwrap();
        let l = VmLayout::new(t.path());
        fs::create_dir_all(&l.dir).unwrap();
        assert!(failure_reason(&l).is_none());
        fs::write(l.console_log(), "a\n\nb\nc\nKernel panic - not syncing: VFS\n").unwrap();
        assert_eq!(tail_lines(&l.console_log(), 2), ["c", "Kernel panic - not syncing: VFS"]);
        let r = failure_reason(&l).unwrap();
        assert!(r.contains("serial console tail") && r.contains("Kernel panic"), "{r}");
    }

    #[test]
    fn console_is_trimmed_to_its_tail() {
        let t = tempfile::tempdir().unwrap();
        let l = VmLayout::new(t.path());
        fs::create_dir_all(&l.dir).unwrap();
        let mut big = vec![b'x'; (CONSOLE_MAX + 10) as usize];
        big.extend_from_slice(b"\nlast line\n");
        fs::write(l.console_log(), &big).unwrap();
        trim_console(&l);
        let len = fs::metadata(l.console_log()).unwrap().len();
        assert!(len <= CONSOLE_KEEP + 64, "{len}");
        assert_eq!(tail_lines(&l.console_log(), 1), ["last line"]);
    }

    #[test]
    fn a_foreign_pid_is_not_this_vm() {
        let t = tempfile::tempdir().unwrap();
        let l = VmLayout::new(t.path());
        fs::create_dir_all(l.run_dir()).unwrap();
        // Our own pid: alive, but its command line does not name this VM.
        fs::write(l.pid_file(), std::process::id().to_string()).unwrap();
        assert!(find(&l).is_none());
        fs::write(l.pid_file(), "999999999").unwrap();
        assert!(find(&l).is_none());
    }
}
