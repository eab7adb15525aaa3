//! A small rtnetlink client over plain `libc` sockets: just what a
//! sandbox's network needs (veth pairs, IPv4 addresses, links up, a default
//! route, deleting links, listing addresses). The same framing carries
//! nfnetlink batches ([`Netlink::open_netfilter`], used by `nft_delete`). Each `ip` process it replaces
//! cost a fork, an exec and iproute2's own start-up (~3–8 ms each on the
//! reference machine); a request here is one syscall pair.
//!
//! A netlink socket belongs to the network namespace it was opened in, so
//! [`Netlink::open_in`] opens one inside another namespace from a
//! short-lived thread (`setns` moves only the calling thread) and the
//! socket then works from anywhere.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 1 << 15;

const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;
const NLMSGHDR_LEN: usize = 16;

/// An open `NETLINK_ROUTE` (or `NETLINK_NETFILTER`) socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// One request being built: header, fixed part, attributes.
pub(super) struct Msg {
    buf: Vec<u8>,
    /// Start offsets of open nested attributes.
    nests: Vec<usize>,
}

impl Msg {
    pub(super) fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set in send
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Msg { buf, nests: Vec::new() }
    }

    pub(super) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self.align();
        self
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.bytes(data)
    }

    pub(super) fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("an open nested attribute");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Asks the kernel to acknowledge this message.
    fn ack(&mut self) {
        let flags = u16::from_ne_bytes([self.buf[6], self.buf[7]]) | libc::NLM_F_ACK as u16;
        self.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
    }

    /// Sets the length and sequence number; the finished message.
    pub(super) fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// `struct ifinfomsg` for link `index` with `flags` under `change`.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut m = [0u8; IFINFOMSG_LEN];
    m[0] = libc::AF_UNSPEC as u8;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    /// An nfnetlink socket (nftables) in the calling thread's network namespace.
    pub(super) fn open_netfilter() -> io::Result<Netlink> {
        Self::open_protocol(NETLINK_NETFILTER)
    }

    fn open_protocol(protocol: libc::c_int) -> io::Result<Netlink> {
        // SAFETY: plain socket(2); owned right away.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: bind to the kernel-assigned port id with a zeroed address.
        unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
            if libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), len) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Replies to a hung kernel never come: bound the wait.
            let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Netlink { fd, seq: 0 })
    }

    /// A socket inside the network namespace `ns` (a descriptor of it).
    pub fn open_in(ns: BorrowedFd<'_>) -> io::Result<Netlink> {
        let raw = ns.as_raw_fd();
        in_netns(raw, Netlink::open)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, msg: &mut Msg) -> io::Result<u32> {
        let seq = self.next_seq();
        self.send_bytes(msg.finish(seq))?;
        Ok(seq)
    }

    fn send_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sending a buffer we own; the kernel is the default peer.
        let n = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends a request with `NLM_F_ACK` and waits for its acknowledgement.
    fn request(&mut self, msg: &mut Msg) -> io::Result<()> {
        msg.ack();
        let seq = self.send(msg)?;
        self.acknowledged(seq)
    }

    /// Sends `msgs` in one datagram (an nfnetlink batch: begin, requests,
    /// end) and waits for the acknowledgement of `msgs[acked]`.
    pub(super) fn request_batch(&mut self, msgs: &mut [Msg], acked: usize) -> io::Result<()> {
        msgs[acked].ack();
        let (mut bytes, mut seq) = (Vec::new(), 0);
        for (i, m) in msgs.iter_mut().enumerate() {
            let s = self.next_seq();
            bytes.extend_from_slice(m.finish(s));
            if i == acked {
                seq = s;
            }
        }
        self.send_bytes(&bytes)?;
        self.acknowledged(seq)
    }

    /// Waits for the kernel's acknowledgement of `seq`: Ok, or its error.
    fn acknowledged(&mut self, seq: u32) -> io::Result<()> {
        let mut done = None;
        self.receive(seq, |kind, payload| {
            if kind == NLMSG_ERROR {
                let code = payload.get(0..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(-libc::EIO);
                done = Some(if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) });
                return false;
            }
            true
        })?;
        done.unwrap_or_else(|| Err(io::Error::other("netlink: no acknowledgement")))
    }

    /// Reads replies to `seq`, calling `each(type, payload)` until it
    /// returns false or the dump ends.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8]) -> bool) -> io::Result<()> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: recv into a buffer we own.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSGHDR_LEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < NLMSGHDR_LEN || len > rest.len() {
                    return Err(io::Error::other("netlink: truncated message"));
                }
                if mseq == seq {
                    if kind == NLMSG_DONE {
                        return Ok(());
                    }
                    if !each(kind, &rest[NLMSGHDR_LEN..len]) {
                        return Ok(());
                    }
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }

    /// Creates a veth pair: `host` here, `peer` in the namespace `peer_ns`.
    pub fn add_veth(&mut self, host: &str, peer: &str, peer_ns: BorrowedFd<'_>, mtu: Option<u32>) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16);
        m.bytes(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, host);
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        m.begin(IFLA_LINKINFO).attr_str(IFLA_INFO_KIND, "veth").begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        m.bytes(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, peer).attr(IFLA_NET_NS_FD, &peer_ns.as_raw_fd().to_ne_bytes());
        if let Some(mtu) = mtu {
            m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        m.end().end().end();
        self.request(&mut m)
    }

    /// Deletes link `name` (a veth takes its peer with it).
    pub fn del_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_DELLINK, 0);
        m.bytes(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        self.request(&mut m)
    }

    /// Brings link `name` up.
    pub fn set_up(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        let up = libc::IFF_UP as u32;
        m.bytes(&ifinfomsg(0, up, up)).attr_str(IFLA_IFNAME, name);
        self.request(&mut m)
    }

    /// Adds `addr/prefix` to link `name`.
    pub fn add_addr(&mut self, name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let index = self.index(name)?;
        let mut m = Msg::new(RTM_NEWADDR, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16);
        let mut ifa = [0u8; IFADDRMSG_LEN];
        ifa[0] = libc::AF_INET as u8;
        ifa[1] = prefix;
        ifa[4..8].copy_from_slice(&index.to_ne_bytes());
        m.bytes(&ifa).attr(IFA_LOCAL, &addr.octets()).attr(IFA_ADDRESS, &addr.octets());
        self.request(&mut m)
    }

    /// Adds the IPv4 default route via `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWROUTE, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16);
        let mut rt = [0u8; RTMSG_LEN];
        rt[0] = libc::AF_INET as u8; // family; dst_len 0: default
        rt[4] = libc::RT_TABLE_MAIN;
        rt[5] = libc::RTPROT_BOOT;
        rt[6] = libc::RT_SCOPE_UNIVERSE;
        rt[7] = libc::RTN_UNICAST;
        m.bytes(&rt).attr(RTA_GATEWAY, &gateway.octets());
        self.request(&mut m)
    }

    /// Every IPv4 address configured in this socket's namespace.
    pub fn ipv4_addresses(&mut self) -> io::Result<Vec<Ipv4Addr>> {
        let mut m = Msg::new(RTM_GETADDR, libc::NLM_F_DUMP as u16);
        let mut ifa = [0u8; IFADDRMSG_LEN];
        ifa[0] = libc::AF_INET as u8;
        m.bytes(&ifa);
        let seq = self.send(&mut m)?;
        let mut out = Vec::new();
        let mut failed = None;
        self.receive(seq, |kind, payload| {
            if kind == NLMSG_ERROR {
                let code = payload.get(0..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(-libc::EIO);
                failed = Some(io::Error::from_raw_os_error(-code));
                return false;
            }
            if kind == RTM_NEWADDR && payload.len() >= IFADDRMSG_LEN && payload[0] == libc::AF_INET as u8 {
                for (t, v) in attrs(&payload[IFADDRMSG_LEN..]) {
                    if (t == IFA_LOCAL || t == IFA_ADDRESS) && v.len() == 4 {
                        out.push(Ipv4Addr::new(v[0], v[1], v[2], v[3]));
                    }
                }
            }
            true
        })?;
        match failed {
            Some(e) => Err(e),
            None => {
                // IFA_LOCAL and IFA_ADDRESS usually name the same address.
                out.sort();
                out.dedup();
                Ok(out)
            }
        }
    }

    /// The index of link `name` in this socket's namespace.
    fn index(&mut self, name: &str) -> io::Result<i32> {
        // RTM_GETLINK by name answers with the link; its ifinfomsg carries
        // the index. (if_nametoindex would ask the caller's namespace.)
        let mut m = Msg::new(libc::RTM_GETLINK, 0);
        m.bytes(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        let seq = self.send(&mut m)?;
        let mut found = Err(io::Error::other("netlink: no answer about the link"));
        self.receive(seq, |kind, payload| {
            found = if kind == NLMSG_ERROR {
                let code = payload.get(0..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(-libc::EIO);
                Err(io::Error::from_raw_os_error(-code))
            } else if payload.len() >= IFINFOMSG_LEN {
                Ok(i32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]))
            } else {
                Err(io::Error::other("netlink: short link message"))
            };
            false
        })?;
        found
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The (type, value) attributes in `b`.
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// Runs `f` on a short-lived thread that has joined the network namespace
/// `ns_fd` (the caller's threads stay where they are).
pub fn in_netns<T: Send + 'static>(ns_fd: i32, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    // SAFETY: dup of a descriptor the caller keeps open for this call.
    let dup = unsafe { libc::fcntl(ns_fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let ns = unsafe { OwnedFd::from_raw_fd(dup) };
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace descriptor; affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("network namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length() {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.bytes(&ifinfomsg(0, 0, 0));
        m.begin(IFLA_LINKINFO).attr_str(IFLA_INFO_KIND, "veth").end();
        let nest = &m.buf[NLMSGHDR_LEN + IFINFOMSG_LEN..];
        // 4 (nest header) + 4 (kind header) + "veth\0" padded to 8.
        assert_eq!(u16::from_ne_bytes([nest[0], nest[1]]), 16);
        assert_eq!(u16::from_ne_bytes([nest[2], nest[3]]), IFLA_LINKINFO | NLA_F_NESTED);
        let inner = attrs(&nest[4..16]);
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth\0"[..])]);
    }

    #[test]
    fn lists_loopback_address_as_root() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let addrs = Netlink::open().unwrap().ipv4_addresses().unwrap();
        assert!(addrs.contains(&Ipv4Addr::LOCALHOST), "{addrs:?}");
    }
}
