//! Loading nftables scripts in-process through `libnftables` (the library
//! the `nft` tool is a thin front end of), opened with `dlopen` so heyvm
//! neither links against it nor needs its headers to build. A script is
//! still one atomic transaction, exactly as `nft -f -` would run it, minus
//! the fork and exec (~4–6 ms each on the reference machine). Where the
//! library is missing, the `nft` tool runs instead.
//!
//! A context talks to the network namespace of the thread that created it,
//! so [`run_in`] creates one on a thread inside the target namespace.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use super::error::{NetError, NetResult};

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

struct Lib {
    new: CtxNew,
    free: CtxFree,
    buffer_output: CtxBuffer,
    buffer_error: CtxBuffer,
    get_error: CtxGetBuffer,
    run: RunCmd,
}

// SAFETY: plain function pointers into a library that stays loaded.
unsafe impl Send for Lib {}
unsafe impl Sync for Lib {}

/// The library, loaded once; None when it is not installed.
fn lib() -> Option<&'static Lib> {
    static LIB: OnceLock<Option<Lib>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is
        // never closed, so the pointers stay valid.
        unsafe {
            let h = ["libnftables.so.1", "libnftables.so"]
                .iter()
                .map(|n| CString::new(*n).expect("no NUL"))
                .map(|n| libc::dlopen(n.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL))
                .find(|h| !h.is_null())?;
            let sym = |name: &CStr| {
                let p = libc::dlsym(h, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            Some(Lib {
                new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
                free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
                buffer_output: std::mem::transmute::<*mut c_void, CtxBuffer>(sym(c"nft_ctx_buffer_output")?),
                buffer_error: std::mem::transmute::<*mut c_void, CtxBuffer>(sym(c"nft_ctx_buffer_error")?),
                get_error: std::mem::transmute::<*mut c_void, CtxGetBuffer>(sym(c"nft_ctx_get_error_buffer")?),
                run: std::mem::transmute::<*mut c_void, RunCmd>(sym(c"nft_run_cmd_from_buffer")?),
            })
        }
    })
    .as_ref()
}

/// Whether nftables is installed (its library or its tool): links,
/// addresses and namespaces need nothing but the kernel (netlink).
pub fn tools_present() -> bool {
    in_process() || super::tool::locate("nft").is_absolute()
}

/// Whether scripts load in-process (else through the `nft` tool).
pub fn in_process() -> bool {
    lib().is_some()
}

/// libnftables waits for the kernel's answers with select(2), which cannot
/// watch a descriptor numbered 1024 or more: glibc aborts the whole process
/// ("bit out of range 0 - FD_SETSIZE"). Its netlink socket takes the lowest
/// free number, so the library is only used while this process holds few
/// descriptors (a daemon serving hundreds of connections runs the `nft`
/// tool instead, a process of its own with few). 256 leaves a margin of
/// 768 descriptors opened by other threads meanwhile.
fn few_descriptors() -> bool {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() < 256).unwrap_or(false)
}

/// Runs `script` as one transaction in the calling thread's network
/// namespace.
pub fn run(script: &str) -> NetResult<()> {
    let Some(lib) = lib().filter(|_| few_descriptors()) else {
        return super::tool::run("nft", &["-f", "-"], Some(script)).map(|_| ());
    };
    let tool_err = |stderr: String| NetError::Tool { prog: "libnftables".into(), args: "-f -".into(), stderr };
    let text = CString::new(script).map_err(|_| tool_err("NUL in the script".into()))?;
    // libnftables keeps process-wide state (its symbol tables, the
    // parser's scanner setup); one transaction at a time is cheap enough.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: a context used and freed on this thread only; the strings
    // outlive the calls.
    unsafe {
        let ctx = (lib.new)(0);
        if ctx.is_null() {
            return Err(tool_err("nft_ctx_new failed".into()));
        }
        (lib.buffer_output)(ctx);
        (lib.buffer_error)(ctx);
        let rc = (lib.run)(ctx, text.as_ptr());
        let result = if rc == 0 {
            Ok(())
        } else {
            let e = (lib.get_error)(ctx);
            let msg = if e.is_null() { String::new() } else { CStr::from_ptr(e).to_string_lossy().trim().to_string() };
            Err(tool_err(msg))
        };
        (lib.free)(ctx);
        result
    }
}

/// Runs `script` inside the network namespace at `netns` (a bind-mounted
/// namespace file).
pub fn run_in(netns: &Path, script: &str) -> NetResult<()> {
    let ns = std::fs::File::open(netns).map_err(|e| NetError::io("opening", netns, e))?;
    let script = script.to_string();
    super::netlink::in_netns(ns.as_raw_fd(), move || Ok(run(&script)))
        .map_err(|e| NetError::io("entering the network namespace", netns, e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_descriptors_mean_the_tool() {
        if unsafe { libc::geteuid() } != 0 || !super::tools_present() {
            return;
        }
        // Push this process past 1024 descriptors: the library would abort
        // it (select(2) on a descriptor >= FD_SETSIZE); the tool runs.
        let held: Vec<std::fs::File> = (0..1100).filter_map(|_| std::fs::File::open("/dev/null").ok()).collect();
        assert!(!few_descriptors());
        run("table ip heyvm_nft_fd_test {}\ndelete table ip heyvm_nft_fd_test\n").unwrap();
        drop(held);
    }

    #[test]
    fn a_bad_script_is_an_error_with_the_reason() {
        if unsafe { libc::geteuid() } != 0 || !super::tools_present() {
            return;
        }
        let e = run("table ip heyvm_nft_unit_test { chain c { no such thing; } }").unwrap_err();
        assert!(e.to_string().contains("syntax") || e.to_string().contains("Error"), "{e}");
    }
}
