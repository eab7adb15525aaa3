//! The parked owner's handoff (see `bubblewrap::parked`): the daemon
//! sends the plan's path with two descriptors (the agent's listening
//! socket, the owner log) as one `SOCK_SEQPACKET` message; the owner, which
//! has the other end on stdin, puts them in place. Both sides live here, a
//! leaf below the backend and the owner.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// Sends `data` with descriptors attached (SCM_RIGHTS).
pub(crate) fn send_with_fds(sock: &OwnedFd, data: &[u8], fds: &[i32]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr over buffers that outlive sendmsg; the control header
    // is filled through the CMSG macros within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Owner side: waits on stdin for the plan path and two descriptors, puts
/// them in place (listener on the agent's descriptor, log on stdout and
/// stderr, /dev/null on stdin) and returns the plan's path. None when the
/// daemon went away first.
pub fn receive_plan(agent_fd: i32) -> io::Result<Option<PathBuf>> {
    let mut data = vec![0u8; 4096];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((2 * std::mem::size_of::<i32>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut fds = Vec::new();
    // SAFETY: recvmsg into buffers we own; the control data is read
    // through the CMSG macros within `control`.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            let n = libc::recvmsg(0, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<i32>();
                let p = libc::CMSG_DATA(c).cast::<i32>();
                for i in 0..count {
                    fds.push(std::ptr::read_unaligned(p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        n as usize
    };
    if n == 0 {
        return Ok(None);
    }
    let [listener, log] = fds[..] else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the plan came without its two descriptors"));
    };
    // SAFETY: dup2/fcntl/open/close on descriptors this process owns; the
    // log goes to 1 and 2 before anything may land on the agent's number.
    unsafe {
        for target in [1, 2] {
            if libc::dup2(log, target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if listener != agent_fd && libc::dup2(listener, agent_fd) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::fcntl(agent_fd, libc::F_SETFD, 0);
        for fd in [listener, log] {
            if fd > 2 && fd != agent_fd {
                libc::close(fd);
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
            if null != 0 && null != agent_fd {
                libc::close(null);
            }
        }
    }
    data.truncate(n);
    Ok(Some(PathBuf::from(String::from_utf8(data).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "plan path"))?)))
}
