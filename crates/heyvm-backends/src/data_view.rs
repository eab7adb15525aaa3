//! The data directory as bwrap sees it in a sandbox with its own uid range.
//!
//! bwrap runs as the sandbox's mapped root, a host uid with no rights on
//! anything but the sandbox's own files, and it resolves every bind source
//! by path. The default data directory of a root daemon is `~/.heyo`, i.e.
//! `/root/.heyo`, and `/root` is mode 0700: the mapped root cannot even
//! traverse it ("Can't find source path …: Permission denied"). So the
//! owner, in its private mount namespace, binds the data directory (with
//! everything it mounted under it) onto [`VIEW`], a root-owned 0755 path,
//! and hands bwrap sources under that instead. Nothing about the host's
//! directories changes, and the sandbox's mount table no longer names the
//! data directory either.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// Where the data directory appears in an owner's mount namespace.
pub(crate) const VIEW: &str = "/run/heyvm-data";

/// bwrap options whose first operand is a host path (the source).
const SOURCE_OPTIONS: &[&str] = &["--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"];

/// Binds `data_dir` (recursively: overlays and idmapped views made under
/// it come along) onto [`VIEW`]. Call in the owner's private mount
/// namespace, after its mounts and before it gives up root.
pub(crate) fn mount(data_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(VIEW)?;
    let c = |p: &str| CString::new(p).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
    let (src, dst) = (c(&data_dir.display().to_string())?, c(VIEW)?);
    // SAFETY: mount(2) with valid C strings; the namespace is the owner's own.
    if unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("binding {} onto {VIEW}: {e}", data_dir.display())));
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
