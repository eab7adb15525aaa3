//! The local terminal for `heyvm sh`: raw mode that is always restored,
//! window size, and SIGWINCH delivered as a readable pipe (so one poll(2)
//! loop can wait for keys, network and resizes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Puts a terminal in raw mode; dropping it restores the saved settings.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// `Ok(None)` when `fd` is not a terminal (input is piped).
    pub fn enable(fd: RawFd) -> io::Result<Option<RawMode>> {
        // SAFETY: isatty/tcgetattr/tcsetattr only read or write the termios
        // struct we pass.
        unsafe {
            if libc::isatty(fd) != 1 {
                return Ok(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Some(RawMode { fd, saved }))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings saved in `enable`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSAFLUSH, &self.saved) };
    }
}

/// `(cols, rows)` of the terminal on stdin or stdout, if either is one.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: TIOCGWINSZ writes one winsize.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

static WINCH_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the
        // byte (one pending wake-up is enough).
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// The read end of a pipe that becomes readable on every SIGWINCH.
pub struct WinchPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl WinchPipe {
    pub fn install() -> io::Result<WinchPipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors that we own from here on;
        // sigaction installs a handler that only calls write(2).
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
            let (read, write) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
            WINCH_FD.store(write.as_raw_fd(), Ordering::Relaxed);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_winch as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGWINCH, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(WinchPipe { read, _write: write })
        }
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empties the pipe after a wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: non-blocking read into a local buffer.
        while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

impl Drop for WinchPipe {
    fn drop(&mut self) {
        WINCH_FD.store(-1, Ordering::Relaxed);
        // SAFETY: back to the default disposition.
        unsafe { libc::signal(libc::SIGWINCH, libc::SIG_DFL) };
    }
}
