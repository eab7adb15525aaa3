//! Starting a command without copying the agent.
//!
//! `std::process::Command` forks whenever a `pre_exec` closure is set, and
//! every exec needs one (its own session, the VM's pids cgroup, a normal
//! OOM score, maybe another user). A fork copies the agent's page tables,
//! and each page either side then touches faults and, the agent being
//! multi-threaded, flushes the other CPUs' TLBs by IPI, which a VM pays
//! for in exits: measured on these machines, the agent's kernel time was
//! the largest single cost of an `echo hi` exec. So commands start the way
//! `posix_spawn` does it: `clone(CLONE_VM | CLONE_VFORK)`, the child
//! running on a stack of its own in the agent's memory until `execve`,
//! while the calling thread waits.
//!
//! Sharing memory makes the child's rules stricter than after a fork:
//! between clone and exec it calls raw syscalls only (no allocation, no
//! locks, no libc wrapper that touches shared state: `setuid` goes through
//! `syscall(2)`, since glibc's wrapper would signal the agent's threads),
//! on data built before the clone; its result goes back through memory.
//! All signals are blocked in the caller across the clone, and the child
//! resets handled signals to their defaults before unblocking, so no agent
//! signal handler ever runs on the child's stack.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::user::Ident;

/// One command to start.
pub struct Spawn {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// Descriptors that become the child's 0, 1 and 2.
    pub stdio: [RawFd; 3],
    /// Who the command runs as, when not the agent's own identity.
    pub identity: Option<Ident>,
}

const STACK_BYTES: usize = 64 * 1024;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Spawn {
    /// `argv[0]` is looked up in the command's own `PATH` (or the default)
    /// unless it names a path, as `execvp` would.
    pub fn new(argv: &[String], env: &[(String, String)], cwd: &str) -> io::Result<Spawn> {
        let first = argv.first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let path = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
        let program = resolve(first, path)?;
        Ok(Spawn {
            program: cstring(program.as_os_str().as_bytes())?,
            argv: argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<_>>()?,
            envp: env.iter().map(|(k, v)| cstring(format!("{k}={v}").as_bytes())).collect::<io::Result<_>>()?,
            cwd: cstring(cwd.as_bytes())?,
            stdio: [0, 1, 2],
            identity: None,
        })
    }

    /// Starts the command; returns its pid once it has exec'd (or the
    /// error that stopped it, the child already reaped).
    pub fn start(&self) -> io::Result<i32> {
        let argv = null_terminated(&self.argv);
        let envp = null_terminated(&self.envp);
        // A file without a `#!` line runs under /bin/sh, as with execvp.
        let script_argv: Vec<CString> =
            [c"/bin/sh".to_owned(), self.program.clone()].into_iter().chain(self.argv.iter().skip(1).cloned()).collect();
        let script_argv = null_terminated(&script_argv);
        let groups: &[u32] = self.identity.as_ref().map_or(&[], |i| &i.groups);
        let child = Child {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            script_argv: script_argv.as_ptr(),
            cwd: self.cwd.as_ptr(),
            stdio: self.stdio,
            ids: self.identity.as_ref().map(|i| (i.uid, i.gid)),
            groups: groups.as_ptr(),
            n_groups: groups.len(),
            errno: AtomicI32::new(0),
        };
        let mut stack = vec![0u128; STACK_BYTES / 16];
        // SAFETY: the stack top is 16-byte aligned and outlives the child's
        // use of it (CLONE_VFORK returns only after the exec or exit); every
        // pointer in `child` stays valid until then; all signals are blocked
        // around the clone and restored right after.
        let pid = unsafe {
            let top = stack.as_mut_ptr().add(stack.len()).cast::<libc::c_void>();
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&child as *const Child).cast_mut().cast(),
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_error);
            }
            pid
        };
        drop(stack);
        let errno = child.errno.load(Ordering::SeqCst);
        if errno != 0 {
            // SAFETY: reaping our own child, which has exited.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(pid)
    }
}

/// What the child reads: raw pointers into the caller's data, valid while
/// the caller waits in `clone`.
struct Child {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    script_argv: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    ids: Option<(u32, u32)>,
    groups: *const u32,
    n_groups: usize,
    /// Set by the child when it cannot exec.
    errno: AtomicI32,
}

/// The child, between clone and exec: raw syscalls only (see module docs).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the caller's `Child`, alive while the caller is
    // suspended in clone (CLONE_VFORK).
    let c = unsafe { &*(arg as *const Child) };
    let fail = |c: &Child| -> libc::c_int {
        c.errno.store(errno().max(1), Ordering::SeqCst);
        // SAFETY: _exit never returns and touches no shared state.
        unsafe { libc::syscall(libc::SYS_exit, 127) };
        127
    };
    // SAFETY: raw syscalls on valid pointers built before the clone.
    unsafe {
        reset_signals();
        libc::syscall(libc::SYS_setsid);
        crate::exec::prepare_command_process();
        for (target, &fd) in c.stdio.iter().enumerate() {
            let target = target as RawFd;
            let ok = if fd == target {
                libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, 0) == 0
            } else {
                libc::syscall(libc::SYS_dup2, fd, target) >= 0
            };
            if !ok {
                return fail(c);
            }
        }
        if libc::syscall(libc::SYS_chdir, c.cwd) != 0 {
            return fail(c);
        }
        if let Some((uid, gid)) = c.ids {
            if libc::syscall(libc::SYS_setgroups, c.n_groups, c.groups) != 0
                || libc::syscall(libc::SYS_setgid, gid) != 0
                || libc::syscall(libc::SYS_setuid, uid) != 0
            {
                return fail(c);
            }
        }
        libc::syscall(libc::SYS_execve, c.program, c.argv, c.envp);
        if errno() == libc::ENOEXEC {
            libc::syscall(libc::SYS_execve, c"/bin/sh".as_ptr(), c.script_argv, c.envp);
        }
    }
    fail(c)
}

/// Every handled signal back to its default (an agent handler must not run
/// in the child), SIGPIPE too (Rust ignores it, and an ignored signal stays
/// ignored across exec), then an empty mask.
///
/// # Safety
/// Only in the spawned child: it changes this process's dispositions.
unsafe fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
            continue;
        }
        if current.sa_sigaction != libc::SIG_DFL && (current.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE) {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &empty as *const libc::sigset_t, std::ptr::null_mut::<libc::sigset_t>(), 8);
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `name` itself if it holds a `/`, else the first executable regular
/// file called `name` in `path`'s directories.
fn resolve(name: &str, path: &str) -> io::Result<std::path::PathBuf> {
    if name.contains('/') {
        return Ok(name.into());
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = std::path::Path::new(dir).join(name);
        let Ok(c) = cstring(candidate.as_os_str().as_bytes()) else { continue };
        // SAFETY: access(2) on a valid C string.
        if candidate.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: not found in PATH", OsStr::new(name).to_string_lossy())))
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the command"))
}

fn null_terminated(items: &[CString]) -> Vec<*const libc::c_char> {
    items.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// Runs `argv` with stdout to a pipe; returns (exit status, stdout).
    fn run(argv: &[&str], env: &[(&str, &str)], cwd: &str) -> io::Result<(i32, String)> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut s = Spawn::new(&argv, &env, cwd)?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        s.stdio = [0, w.as_raw_fd(), 2];
        let pid = s.start()?;
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out)?;
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        Ok((libc::WEXITSTATUS(status), out))
    }

    #[test]
    fn runs_with_the_given_environment_directory_and_own_session() {
        let (code, out) = run(
            &["sh", "-c", "echo $A; pwd; [ $(ps -o sid= -p $$) -eq $$ ] && echo leader; exit 3"],
            &[("A", "1"), ("PATH", "/usr/bin:/bin")],
            "/tmp",
        )
        .unwrap();
        assert_eq!(code, 3);
        assert_eq!(out, "1\n/tmp\nleader\n");
    }

    #[test]
    fn a_missing_program_or_directory_is_an_error_not_a_child() {
        assert_eq!(run(&["no-such-program-here"], &[], "/").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(run(&["/no/such/program"], &[], "/").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(run(&["/bin/true"], &[], "/no/such/dir").unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_without_an_interpreter_line_runs_under_sh() {
        let dir = std::env::temp_dir().join(format!("heyvm-spawn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("plain");
        std::fs::write(&script, "echo from-script $1\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let (code, out) = run(&[script.to_str().unwrap(), "arg"], &[], "/").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((code, out.as_str()), (0, "from-script arg\n"));
    }

    #[test]
    fn ignored_sigpipe_and_blocked_signals_are_not_passed_on() {
        // Rust's runtime ignores SIGPIPE in this process (and `start`
        // blocks every signal around the clone).
        let (_, out) = run(&["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"], &[], "/").unwrap();
        let mask = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE stayed ignored: {out}");
        assert_eq!(mask("SigBlk:"), 0, "signals stayed blocked: {out}");
    }
}
