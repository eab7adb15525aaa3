//! Named network namespaces, made and removed in-process the way
//! `ip netns add/del` does it: a namespace file under `/run/netns` with the
//! namespace bind-mounted on it (so it outlives every process in it, and
//! the daemon), `/run/netns` itself a shared mount so the namespaces
//! propagate like iproute2's. Interoperates with `ip netns`.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::netlink::Netlink;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn last(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does.
fn ensure_dir() -> io::Result<()> {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR)?;
    let dir = c(Path::new(NETNS_DIR))?;
    // SAFETY: mount(2) with valid C strings and no data.
    unsafe {
        let none = c"none".as_ptr();
        if libc::mount(none, dir.as_ptr(), none, libc::MS_SHARED | libc::MS_REC, std::ptr::null()) != 0 {
            // Not a mount point yet: bind it on itself, then share it.
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(last("making /run/netns shared"));
            }
            if libc::mount(dir.as_ptr(), dir.as_ptr(), none, libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
                return Err(last("bind-mounting /run/netns"));
            }
            if libc::mount(none, dir.as_ptr(), none, libc::MS_SHARED | libc::MS_REC, std::ptr::null()) != 0 {
                return Err(last("making /run/netns shared"));
            }
        }
    }
    let _ = DONE.set(());
    Ok(())
}

/// A fresh namespace, pinned at `/run/netns/<name>`: its descriptor and a
/// netlink socket inside it, with loopback up. Fails if the name is taken.
pub fn create(name: &str) -> io::Result<(OwnedFd, Netlink)> {
    ensure_dir()?;
    let path = Path::new(NETNS_DIR).join(name);
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o0).open(&path)?;
    let target = c(&path)?;
    let made = std::thread::spawn(move || -> io::Result<(OwnedFd, Netlink)> {
        // SAFETY: unshare/mount/open on this thread, with valid C strings;
        // the new namespace is this thread's only.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(last("unshare(CLONE_NEWNET)"));
            }
            let me = c"/proc/thread-self/ns/net";
            if libc::mount(me.as_ptr(), target.as_ptr(), c"none".as_ptr(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(last("pinning the network namespace"));
            }
            let fd = libc::open(me.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(last("opening the network namespace"));
            }
            let mut nl = Netlink::open()?;
            nl.set_up("lo")?;
            Ok((OwnedFd::from_raw_fd(fd), nl))
        }
    })
    .join()
    .map_err(|_| io::Error::other("network namespace thread panicked"))?;
    if made.is_err() {
        let _ = delete(name);
    }
    made
}

/// Opens the namespace pinned at `/run/netns/<name>`.
pub fn open(name: &str) -> io::Result<OwnedFd> {
    let f = std::fs::File::open(Path::new(NETNS_DIR).join(name))?;
    Ok(OwnedFd::from(f))
}

/// Unpins and removes `/run/netns/<name>`; the namespace itself goes when
/// its last process or reference does. Ok if it was not there.
pub fn delete(name: &str) -> io::Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    let p = c(&path)?;
    // SAFETY: umount2 with a valid C string.
    unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Detaches every namespace pinned under `/run/netns` from the calling
/// process's mount namespace (a sandbox owner's private copy; never the
/// host's).
pub fn detach_all() {
    // `/run/netns` is a mount point of its own (see `ensure_dir`) holding
    // every pin: detaching it takes them all in one call. Each umount
    // waits for an RCU grace period, so one per pin cost ~60 µs each
    // (3.5 ms with 60 namespaces on the host). Pins it does not cover
    // (made before it was a mount point) are still found below.
    if let Ok(dir) = c(Path::new(NETNS_DIR)) {
        // SAFETY: a valid C string.
        unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = format!("{NETNS_DIR}/");
    for target in info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|t| t.starts_with(&prefix)) {
        if let Ok(t) = c(Path::new(target)) {
            // SAFETY: a valid C string.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Whether the calling thread's namespace is the one in `fd` (tests).
#[cfg(test)]
fn same_as_mine(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let mine = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).ok();
    // SAFETY: fstat on a valid descriptor.
    let theirs = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd.as_raw_fd(), &mut st) == 0).then_some(st.st_ino)
    };
    mine == theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_pin_and_delete_as_root() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let name = format!("heyvm-unit-{}", std::process::id());
        let (fd, mut nl) = create(&name).unwrap();
        assert!(!same_as_mine(&fd));
        assert!(Path::new(NETNS_DIR).join(&name).exists());
        assert!(create(&name).is_err(), "a taken name is refused");
        assert_eq!(nl.ipv4_addresses().unwrap(), vec![std::net::Ipv4Addr::LOCALHOST]);
        delete(&name).unwrap();
        assert!(!Path::new(NETNS_DIR).join(&name).exists());
        delete(&name).unwrap();
    }
}
