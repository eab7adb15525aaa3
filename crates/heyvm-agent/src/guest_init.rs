//! PID 1 inside a heyvm microVM. The initramfs holds only this binary (as
//! `/init`) and the kernel modules the guest needs; this module does what an
//! init system would: mount `/proc /sys /dev`, load the modules listed in
//! `/lib/heyvm/modules.order` (already in dependency order) with
//! `finit_module`, mount the root disk, move into it, then fork the agent onto
//! the virtio-serial port and reap every orphan for the rest of the VM's life.
//!
//! The host passes settings on the kernel command line as `heyvm.KEY=VALUE`
//! (see [`BootArgs`]). When the agent process ends the VM powers off, so the
//! host sees QEMU exit and can report why (the console carries the reason).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Marker file that only the VM initramfs contains: PID 1 plus this file
/// means "you are a microVM's init", never a bubblewrap sandbox's agent.
pub const INITRAMFS_MARKER: &str = "/lib/heyvm/modules.order";
/// Printed for the host's accelerator probe (`heyvm.probe=1`); heyvm-vm
/// waits for exactly this text.
pub const PROBE_MARKER: &str = "heyvm-probe: guest init reached";
/// The name QEMU gives the agent's virtio-serial port (`virtserialport,name=`).
pub const AGENT_PORT_NAME: &str = "heyvm.agent";

/// Set once this process (and the agent it forks) runs as a VM's init.
static IN_VM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process is the init of a heyvm microVM.
pub fn is_guest_init() -> bool {
    std::process::id() == 1 && Path::new(INITRAMFS_MARKER).exists()
}

/// Settings from the kernel command line (`heyvm.KEY=VALUE`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BootArgs {
    /// Root block device (e.g. `/dev/vda`), mounted read-write as ext4.
    pub root: Option<String>,
    /// The `/workspace` block device.
    pub workspace: Option<String>,
    pub hostname: Option<String>,
    /// Host time in milliseconds since the epoch when the VM was started.
    pub time_ms: Option<u64>,
    /// `tag=guest path` 9p shares; `!ro` suffix on the path mounts read-only.
    pub shares: Vec<(String, String, bool)>,
    /// Everything else (`heyvm.ip`, `heyvm.gw`, `heyvm.dns`, ...).
    pub other: BTreeMap<String, String>,
}

impl BootArgs {
    pub fn parse(cmdline: &str) -> Self {
        let mut args = Self::default();
        for word in cmdline.split_whitespace() {
            let Some(kv) = word.strip_prefix("heyvm.") else { continue };
            let Some((key, value)) = kv.split_once('=') else { continue };
            match key {
                "root" => args.root = Some(value.to_string()),
                "ws" => args.workspace = Some(value.to_string()),
                "hostname" => args.hostname = Some(value.to_string()),
                "time" => args.time_ms = value.parse().ok(),
                "share" => {
                    // tag:path[:ro]
                    let mut parts = value.splitn(3, ':');
                    if let (Some(tag), Some(path)) = (parts.next(), parts.next()) {
                        args.shares.push((tag.to_string(), path.to_string(), parts.next() == Some("ro")));
                    }
                }
                _ => {
                    args.other.insert(key.to_string(), value.to_string());
                }
            }
        }
        args
    }
}

/// Runs the whole init: never returns. `serve` runs the agent on the
/// virtio-serial port in a child process.
pub fn main(serve: fn(File) -> io::Result<()>) -> ! {
    IN_VM.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = boot() {
        console(&format!("heyvm-init: boot failed: {e}"));
        power_off();
    }
    let port = match open_agent_port(Duration::from_secs(10)) {
        Ok(p) => p,
        Err(e) => {
            console(&format!("heyvm-init: no agent port: {e}"));
            power_off();
        }
    };
    // SAFETY: fork in a single-threaded process (init has started no threads).
    let agent = unsafe { libc::fork() };
    if agent == 0 {
        let code = match serve(port) {
            Ok(()) => 0,
            Err(e) => {
                console(&format!("heyvm-agent: {e}"));
                1
            }
        };
        std::process::exit(code);
    }
    drop(port);
    console("heyvm-init: agent started");
    reap_until_agent_exits(agent);
    power_off();
}

fn boot() -> io::Result<()> {
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    mount("proc", "/proc", "proc", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "")?;
    mount("sysfs", "/sys", "sysfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "")?;
    let args = BootArgs::parse(&fs::read_to_string("/proc/cmdline")?);
    if args.other.contains_key("probe") {
        // The host's accelerator probe only needs to know init was reached.
        console(PROBE_MARKER);
        power_off();
    }
    if let Some(ms) = args.time_ms {
        set_clock_ms(ms);
    }
    load_modules(Path::new(INITRAMFS_MARKER))?;
    let Some(root) = &args.root else {
        return Err(io::Error::other("no heyvm.root= on the kernel command line"));
    };
    let root = wait_for_disk(root, Duration::from_secs(10))?;
    fs::create_dir_all("/newroot")?;
    mount(&root, "/newroot", "ext4", 0, "")?;
    if let Some(ws) = &args.workspace {
        let ws = wait_for_disk(ws, Duration::from_secs(10))?;
        fs::create_dir_all("/newroot/workspace")?;
        mount(&ws, "/newroot/workspace", "ext4", 0, "")?;
        // `/workspace` is this file system's root: without this, its
        // `lost+found` would show in every listing, unlike a bubblewrap
        // sandbox's. Only an empty one goes (e2fsck makes it again when it
        // has something to put there, and then it stays).
        let _ = fs::remove_dir("/newroot/workspace/lost+found");
    }
    for (tag, path, ro) in &args.shares {
        let target = PathBuf::from("/newroot").join(path.trim_start_matches('/'));
        fs::create_dir_all(&target)?;
        let flags = if *ro { libc::MS_RDONLY } else { 0 };
        mount(tag, target.to_str().unwrap_or("/newroot/mnt"), "9p", flags, "trans=virtio,version=9p2000.L,msize=262144")?;
    }
    for dir in ["dev", "proc", "sys"] {
        let target = format!("/newroot/{dir}");
        fs::create_dir_all(&target)?;
        mount(&format!("/{dir}"), &target, "", libc::MS_MOVE, "")?;
    }
    switch_root()?;
    fs::create_dir_all("/dev/pts")?;
    mount("devpts", "/dev/pts", "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, "gid=5,mode=620,ptmxmode=666")?;
    fs::create_dir_all("/dev/shm")?;
    mount("tmpfs", "/dev/shm", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777")?;
    fs::create_dir_all("/run")?;
    mount("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=0755")?;
    if let Some(name) = &args.hostname {
        set_hostname(name);
        crate::guest_names::write(name);
    }
    if let Some(max) = args.other.get("pids").and_then(|n| n.parse().ok()) {
        // Without it the VM still runs, bounded by its RAM only.
        if let Err(e) = crate::guest_pids::setup(max) {
            console(&format!("heyvm-init: no process limit: {e}"));
        }
    }
    // Inherited by the agent: the OOM killer picks a command (they reset it
    // to 0), never the agent the host needs to reach the VM.
    let _ = fs::write("/proc/self/oom_score_adj", "-1000");
    crate::guest_net::configure(&args.other);
    Ok(())
}

/// Loads each module named in `order` (paths relative to its directory).
/// A module that is already loaded (`EEXIST`) is fine.
fn load_modules(order: &Path) -> io::Result<()> {
    let dir = order.parent().unwrap_or(Path::new("/"));
    for name in fs::read_to_string(order)?.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = File::open(dir.join(name))?;
        let empty = CString::default();
        // SAFETY: finit_module with a valid fd and a NUL-terminated (empty) parameter string.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), empty.as_ptr(), 0) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::other(format!("loading {name}: {err}")));
            }
        }
    }
    Ok(())
}

/// Moves `/newroot` over `/` and chroots into it (the initramfs is a rootfs
/// that cannot be pivoted away; its few files stay in memory, which is small).
fn switch_root() -> io::Result<()> {
    std::env::set_current_dir("/newroot")?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    let dot = CString::new(".").expect("no NUL");
    // SAFETY: chroot with a valid C string.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

/// Opens the virtio-serial port QEMU named [`AGENT_PORT_NAME`].
fn open_agent_port(timeout: Duration) -> io::Result<File> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(dir) = fs::read_dir("/sys/class/virtio-ports") {
            for entry in dir.flatten() {
                let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == AGENT_PORT_NAME {
                    let dev = Path::new("/dev").join(entry.file_name());
                    return OpenOptions::new().read(true).write(true).open(dev);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("virtio port {AGENT_PORT_NAME} did not appear")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PID 1 inherits every orphan: reap them all; return when `agent` exits.
fn reap_until_agent_exits(agent: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == agent {
            console(&format!("heyvm-init: agent exited (status {status:#x}); powering off"));
            return;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return;
        }
    }
}

/// Waits for a disk named `/dev/X` or `serial:NAME` (the virtio-blk serial
/// the host gave it, which does not depend on probe order); returns its path.
fn wait_for_disk(name: &str, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(serial) = name.strip_prefix("serial:") {
            if let Some(dev) = disk_by_serial(serial) {
                return Ok(dev);
            }
        } else if Path::new(name).exists() {
            return Ok(name.to_string());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("disk {name} did not appear")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn disk_by_serial(serial: &str) -> Option<String> {
    fs::read_dir("/sys/block").ok()?.flatten().find_map(|e| {
        let s = fs::read_to_string(e.path().join("serial")).ok()?;
        (s.trim() == serial).then(|| format!("/dev/{}", e.file_name().to_string_lossy()))
    })
}

pub(crate) fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::other("NUL in a mount argument"));
    let (src_c, target_c, fs_c, data_c) = (c(src)?, c(target)?, c(fstype)?, c(data)?);
    let fs_ptr = if fstype.is_empty() { std::ptr::null() } else { fs_c.as_ptr() };
    let data_ptr = if data.is_empty() { std::ptr::null() } else { data_c.as_ptr().cast() };
    // SAFETY: mount(2) with valid NUL-terminated strings (or null where allowed).
    if unsafe { libc::mount(src_c.as_ptr(), target_c.as_ptr(), fs_ptr, flags, data_ptr) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mount {src} on {target} ({fstype}): {e}")));
    }
    Ok(())
}

/// Sets the wall clock (the host's time at start, or after a restore/fork).
pub fn set_clock_ms(ms: u64) {
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = (ms / 1000) as _;
    ts.tv_nsec = ((ms % 1000) * 1_000_000) as _;
    // SAFETY: clock_settime with a valid timespec.
    unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
}

pub fn set_hostname(name: &str) {
    // SAFETY: sethostname with a pointer/length pair from a live &str.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

/// What a VM must change after a restore or a fork: it resumes with the
/// clock, the kernel's RNG state, the name and (for a fork) the address of
/// the moment it was checkpointed.
pub fn reset_identity(time_ms: u64, hostname: &str, seed_hex: &str, net: Option<(&str, Option<&str>)>) -> io::Result<()> {
    if !IN_VM.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(io::Error::other("only a VM's agent resets its identity"));
    }
    let seed: Vec<u8> = (0..seed_hex.len() / 2).filter_map(|i| u8::from_str_radix(seed_hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    set_clock_ms(time_ms);
    // Mixing host randomness in makes two forks of one checkpoint diverge.
    // (Writing to /dev/urandom mixes without crediting entropy, which is all
    // a reseed needs here; virtio-rng keeps feeding the pool afterwards.)
    OpenOptions::new().write(true).open("/dev/urandom").and_then(|mut f| std::io::Write::write_all(&mut f, &seed))?;
    set_hostname(hostname);
    crate::guest_names::write(hostname);
    if let Some((cidr, gw)) = net {
        crate::guest_net::configure_eth0(cidr, gw)?;
    }
    Ok(())
}

/// Writes a line to the serial console (init's stderr is `/dev/console`),
/// which the host keeps as the VM's console log; its tail goes into
/// boot-failure errors.
pub fn console(msg: &str) {
    eprintln!("{msg}");
}

fn power_off() -> ! {
    // Read-only remounts write each file system's superblock with its
    // current free-space counts, so the host reads exact disk usage off a
    // stopped VM's disks (only a busy file system, when something still
    // runs, stays as it is).
    for m in ["/workspace", "/"] {
        let _ = mount("", m, "", libc::MS_REMOUNT | libc::MS_RDONLY, "");
    }
    // SAFETY: sync and reboot(2) have no memory-safety preconditions.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 must not exit (kernel panic).
    loop {
        // SAFETY: pause(2) is always safe.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heyvm_words_only() {
        let a = BootArgs::parse("console=ttyS0 heyvm.root=/dev/vda heyvm.ws=/dev/vdb heyvm.hostname=box heyvm.time=1700000000123 heyvm.share=m0:/data:ro heyvm.share=m1:/x heyvm.ip=10.0.0.2/30 quiet");
        assert_eq!(a.root.as_deref(), Some("/dev/vda"));
        assert_eq!(a.workspace.as_deref(), Some("/dev/vdb"));
        assert_eq!(a.hostname.as_deref(), Some("box"));
        assert_eq!(a.time_ms, Some(1_700_000_000_123));
        assert_eq!(a.shares, vec![("m0".into(), "/data".into(), true), ("m1".into(), "/x".into(), false)]);
        assert_eq!(a.other.get("ip").map(String::as_str), Some("10.0.0.2/30"));
    }
}
