//! Network setup inside a microVM, with plain ioctls so that no image needs
//! `ip`: loopback up, and when the host passed `heyvm.ip=A.B.C.D/N`
//! (`heyvm.gw=`, `heyvm.dns=`), `eth0` gets that address, a default route
//! and `/etc/resolv.conf`. Errors are written to the console, never fatal: a
//! VM without network still serves exec.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;

/// Applies the network settings from the kernel command line.
pub fn configure(args: &BTreeMap<String, String>) {
    if let Err(e) = set_up("lo") {
        eprintln!("heyvm-init: lo: {e}"); // stderr is the serial console
    }
    let Some(cidr) = args.get("ip") else { return };
    if let Some(mtu) = args.get("mtu").and_then(|m| m.parse::<i32>().ok()) {
        // The host side of the guest's link may carry less than 1500 bytes.
        if let Err(e) = set_mtu("eth0", mtu) {
            eprintln!("heyvm-init: eth0 mtu {mtu}: {e}"); // stderr is the serial console
        }
    }
    if let Err(e) = configure_eth0(cidr, args.get("gw").map(String::as_str)) {
        eprintln!("heyvm-init: eth0 {cidr}: {e}"); // stderr is the serial console
    }
    if let Some(dns) = args.get("dns") {
        let body: String = dns.split(',').map(|d| format!("nameserver {d}\n")).collect();
        let _ = std::fs::remove_file("/etc/resolv.conf");
        if let Err(e) = std::fs::write("/etc/resolv.conf", body) {
            eprintln!("heyvm-init: resolv.conf: {e}"); // stderr is the serial console
        }
    }
}

/// Changes eth0's address (used after a fork: the clone gets its own).
pub fn configure_eth0(cidr: &str, gateway: Option<&str>) -> io::Result<()> {
    let (addr, prefix) = parse_cidr(cidr)?;
    let sock = Socket::new()?;
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    sock.ifreq_addr("eth0", libc::SIOCSIFADDR, addr)?;
    sock.ifreq_addr("eth0", libc::SIOCSIFNETMASK, Ipv4Addr::from(mask))?;
    drop(sock);
    set_up("eth0")?;
    if let Some(gw) = gateway {
        let gw: Ipv4Addr = gw.parse().map_err(|_| io::Error::other(format!("bad gateway {gw}")))?;
        add_default_route(gw)?;
    }
    Ok(())
}

fn parse_cidr(cidr: &str) -> io::Result<(Ipv4Addr, u32)> {
    let bad = || io::Error::other(format!("bad address {cidr}"));
    let (a, p) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let prefix: u32 = p.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((a.parse().map_err(|_| bad())?, prefix))
}

struct Socket(libc::c_int);

impl Socket {
    fn new() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    fn ioctl(&self, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
        // SAFETY: the callers pass a pointer to a properly sized ifreq/rtentry.
        if unsafe { libc::ioctl(self.0, req as _, arg) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn ifreq_addr(&self, ifname: &str, req: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
        let mut ifr = ifreq(ifname);
        // SAFETY: writing a sockaddr_in into the ifreq's address union member.
        unsafe {
            let sin = &mut ifr.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in;
            *sin = sockaddr_in(addr);
        }
        self.ioctl(req, (&mut ifr as *mut libc::ifreq).cast())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(addr).to_be();
    sin
}

fn set_up(ifname: &str) -> io::Result<()> {
    let sock = Socket::new()?;
    let mut ifr = ifreq(ifname);
    sock.ioctl(libc::SIOCGIFFLAGS, (&mut ifr as *mut libc::ifreq).cast())?;
    // SAFETY: the flags member is what SIOCGIFFLAGS filled in.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    sock.ioctl(libc::SIOCSIFFLAGS, (&mut ifr as *mut libc::ifreq).cast())
}

fn set_mtu(ifname: &str, mtu: i32) -> io::Result<()> {
    let sock = Socket::new()?;
    let mut ifr = ifreq(ifname);
    ifr.ifr_ifru.ifru_mtu = mtu;
    sock.ioctl(libc::SIOCSIFMTU, (&mut ifr as *mut libc::ifreq).cast())
}

fn add_default_route(gw: Ipv4Addr) -> io::Result<()> {
    let sock = Socket::new()?;
    // SAFETY: rtentry is plain data; all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    // SAFETY: the sockaddr members of rtentry are sockaddr-sized.
    unsafe {
        *(&mut rt.rt_dst as *mut libc::sockaddr as *mut libc::sockaddr_in) = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        *(&mut rt.rt_genmask as *mut libc::sockaddr as *mut libc::sockaddr_in) = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        *(&mut rt.rt_gateway as *mut libc::sockaddr as *mut libc::sockaddr_in) = sockaddr_in(gw);
    }
    rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
    match sock.ioctl(libc::SIOCADDRT, (&mut rt as *mut libc::rtentry).cast()) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.89.0.2/30").unwrap(), ("10.89.0.2".parse().unwrap(), 30));
        assert_eq!(parse_cidr("10.0.0.1").unwrap().1, 32);
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("nope/8").is_err());
    }
}
