//! Who is on the other end of a loopback TCP connection: the owner uid of
//! the client's socket, asked of the kernel through `NETLINK_SOCK_DIAG`
//! (`inet_diag`, what `ss -e` uses). Loopback TCP carries no credentials of
//! its own, so this is how the daemon tells its own user from `nobody`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
/// `inet_diag_msg.idiag_uid` after the netlink header (16) + family/state/
/// timer/retrans (4) + sockid (48) + expires/rqueue/wqueue (12).
const UID_OFFSET: usize = 16 + 4 + 48 + 12;

/// The uid owning the socket at `client` that is connected to `server`.
/// `Ok(None)` when the kernel knows no such socket (it closed meanwhile).
pub fn uid_of(client: SocketAddr, server: SocketAddr) -> io::Result<Option<u32>> {
    let (client, server) = (canonical(client), canonical(server));
    let family = match (client.ip(), server.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return Ok(None),
    };
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: setsockopt with a valid timeval.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let req = request(family as u8, client, server);
    // SAFETY: sending a buffer we own to the kernel (nl_pid 0).
    let sent = unsafe {
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: recv into a buffer we own.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse(&buf[..n as usize])
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// An exact-match `inet_diag_req_v2` for the client's socket (its source is
/// the client, its destination the server).
fn request(family: u8, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    m.extend_from_slice(&client.port().to_be_bytes());
    m.extend_from_slice(&server.port().to_be_bytes());
    m.extend_from_slice(&addr16(client.ip()));
    m.extend_from_slice(&addr16(server.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    debug_assert_eq!(m.len(), 72);
    m
}

fn addr16(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

fn parse(msg: &[u8]) -> io::Result<Option<u32>> {
    let u32_at = |o: usize| msg.get(o..o + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
    let kind = msg.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]])).ok_or_else(|| io::Error::other("short netlink reply"))?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(16).map(|e| -(e as i32)).unwrap_or(0);
        return match errno {
            libc::ENOENT => Ok(None),
            0 => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY {
        return Err(io::Error::other(format!("unexpected netlink message type {kind}")));
    }
    u32_at(UID_OFFSET).map(Some).ok_or_else(|| io::Error::other("short inet_diag reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_uid() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        // SAFETY: getuid never fails.
        let me = unsafe { libc::getuid() };
        assert_eq!(uid_of(peer, l.local_addr().unwrap()).unwrap(), Some(me));
        // A socket that does not exist.
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(uid_of(gone, l.local_addr().unwrap()).unwrap(), None);
    }
}
