//! Deleting an nftables table with one nfnetlink batch, without
//! libnftables. Before running any command, libnftables (1.0.6 here) fills
//! its cache by dumping the host's tables and chains: with ~170 tables on
//! the host a `delete table` took ~80 ms (nearly all of it those dumps),
//! the largest part of a sandbox's delete, and it grows with every sandbox
//! (each has its own host guard table). The kernel needs only the table's
//! name: the same deletion here takes ~0.1 ms.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_DELTABLE: u16 = 2;
const NFTA_TABLE_NAME: u16 = 1;
/// `NFPROTO_INET`: tables of the `inet` family.
pub const INET: u8 = 1;

/// Deletes table `name` of `family` in the calling thread's network
/// namespace; a table that does not exist is not an error.
pub fn delete_table(family: u8, name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad table name"));
    }
    let sock = socket()?;
    let batch = [
        message(NFNL_MSG_BATCH_BEGIN, 0, 1, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]),
        message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, libc::NLM_F_ACK as u16, 2, family, 0, &string_attr(NFTA_TABLE_NAME, name)),
        message(NFNL_MSG_BATCH_END, 0, 3, libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES, &[]),
    ]
    .concat();
    // SAFETY: send(2) of a buffer we own on a socket we own.
    if unsafe { libc::send(sock.as_raw_fd(), batch.as_ptr().cast(), batch.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    match read_ack(&sock, 2)? {
        0 => Ok(()),
        e if e == -libc::ENOENT => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // A reply that never comes must not hang a delete.
    let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: setsockopt with a valid timeval.
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of_val(&tv) as u32)
    };
    Ok(sock)
}

/// The error code (0 or a negative errno) of the ack for `seq`.
fn read_ack(sock: &OwnedFd, seq: u32) -> io::Result<i32> {
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: recv(2) into a buffer we own.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
            let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
            if len < 16 || len > rest.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a truncated netlink reply"));
            }
            if kind == libc::NLMSG_ERROR as u16 && msg_seq == seq && len >= 20 {
                return Ok(i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes")));
            }
            rest = &rest[align(len).min(rest.len())..];
        }
    }
}

/// One netlink message: header, `nfgenmsg`, payload.
fn message(kind: u16, extra_flags: u16, seq: u32, family: u8, res_id: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + payload.len();
    let mut m = Vec::with_capacity(align(len));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | extra_flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(payload);
    m.resize(align(len), 0);
    m
}

/// A NUL-terminated string attribute, padded to 4 bytes.
fn string_attr(kind: u16, value: &str) -> Vec<u8> {
    let len = 4 + value.len() + 1;
    let mut a = Vec::with_capacity(align(len));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value.as_bytes());
    a.push(0);
    a.resize(align(len), 0);
    a
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delete_message_is_laid_out_as_the_kernel_reads_it() {
        let m = message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, 4, 2, INET, 0, &string_attr(NFTA_TABLE_NAME, "abc"));
        assert_eq!(m.len(), 28);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0a02);
        assert_eq!(&m[16..18], &[INET, 0]);
        assert_eq!(&m[20..28], &[8, 0, 1, 0, b'a', b'b', b'c', 0]);
    }

    #[test]
    fn deletes_a_table_and_accepts_a_missing_one() {
        if unsafe { libc::geteuid() } != 0 || !super::super::tools_present() {
            eprintln!("SKIP: needs root and nft");
            return;
        }
        let name = format!("heyvm_nft_delete_test_{}", std::process::id());
        super::super::nft::run(&format!("table inet {name} {{\nchain c {{ type filter hook input priority 0; }}\n}}\n")).unwrap();
        let listed = || std::process::Command::new("nft").args(["list", "table", "inet", &name]).output().unwrap().status.success();
        assert!(listed());
        delete_table(INET, &name).unwrap();
        assert!(!listed(), "the table is still there");
        delete_table(INET, &name).unwrap();
        assert!(delete_table(INET, "").is_err());
    }
}
