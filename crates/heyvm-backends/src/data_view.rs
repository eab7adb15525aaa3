//! The data directory as bwrap sees it in a sandbox with its own uid range.
//!
//! bwrap runs as the sandbox's mapped root, a host uid with no rights on
//! anything but the sandbox's own files, and it resolves every bind source
//! by path. The default data directory of a root daemon is `~/.heyo`, i.e.
//! `/root/.heyo`, and `/root` is mode 0700: the mapped root cannot even
//! traverse it ("Can't find source path …: Permission denied"). A data
//! directory made by `mktemp -d` is itself 0700, with the same effect. So
//! the owner, in its private mount namespace, mounts a small root-owned
//! 0755 tmpfs on [`VIEW`], binds each of the data directory's
//! subdirectories (with everything it mounted under them) into it, and
//! hands bwrap sources under that instead. Nothing about the host's
//! directories changes, and the sandbox's mount table no longer names the
//! data directory either.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// Where the data directory appears in an owner's mount namespace.
pub(crate) const VIEW: &str = "/run/heyvm-data";

/// bwrap options whose first operand is a host path (the source).
const SOURCE_OPTIONS: &[&str] = &["--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"];

/// Mounts the view: a 0755 tmpfs on [`VIEW`] holding a recursive bind
/// (overlays and idmapped views made under them come along) of each
/// subdirectory of `data_dir`; the data directory's own mode no longer
/// matters. Call in the owner's private mount namespace, after its mounts
/// and before it gives up root.
pub(crate) fn mount(data_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(VIEW)?;
    let c =
        |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
    let view = c(Path::new(VIEW))?;
    // SAFETY: mount(2) with valid C strings; the namespace is the owner's own.
    let r = unsafe {
        libc::mount(
            c"heyvm-data".as_ptr(),
            view.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755,size=1m".as_ptr().cast(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mounting a tmpfs on {VIEW}: {e}")));
    }
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        // Files (the database, logs) are never bind sources; symlinks are
        // not followed.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let target = Path::new(VIEW).join(entry.file_name());
        std::fs::create_dir(&target)?;
        let (src, dst) = (c(&entry.path())?, c(&target)?);
        // SAFETY: as above.
        if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("binding {} onto {}: {e}", entry.path().display(), target.display())));
        }
    }
    Ok(())
}

/// bwrap's argv with every bind source under `data_dir` moved under [`VIEW`].
pub(crate) fn rewrite(args: &mut [String], data_dir: &Path) {
    for i in 1..args.len() {
        if !SOURCE_OPTIONS.contains(&args[i - 1].as_str()) {
            continue;
        }
        if let Ok(rel) = Path::new(&args[i]).strip_prefix(data_dir) {
            args[i] = if rel.as_os_str().is_empty() { VIEW.to_string() } else { Path::new(VIEW).join(rel).display().to_string() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bind_sources_under_the_data_dir_move() {
        let mut a: Vec<String> = [
            "bwrap",
            "--bind",
            "/root/.heyo/sandboxes/sb-1/disk/root",
            "/",
            "--ro-bind",
            "/usr/local/bin/heyvm-agent",
            "/run/heyvm-bin/heyvm-agent",
            "--bind",
            "/root/.heyo2/x",
            "/root/.heyo/y",
            "--hostname",
            "/root/.heyo/z",
            "--bind",
            "/root/.heyo",
            "/data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        rewrite(&mut a, Path::new("/root/.heyo"));
        assert_eq!(a[2], "/run/heyvm-data/sandboxes/sb-1/disk/root");
        assert_eq!(a[3], "/", "destinations stay");
        assert_eq!(a[5], "/usr/local/bin/heyvm-agent", "sources elsewhere stay");
        assert_eq!((a[8].as_str(), a[9].as_str()), ("/root/.heyo2/x", "/root/.heyo/y"), "a sibling prefix is not the data dir");
        assert_eq!(a[11], "/root/.heyo/z", "operands of other options stay");
        assert_eq!(a[13], "/run/heyvm-data");
    }
}
