//! Deleting an nftables table with one nfnetlink batch, without
//! libnftables. Before running any command, libnftables (1.0.6 here) fills
//! its cache by dumping the host's tables and chains: with ~170 tables on
//! the host a `delete table` took ~80 ms (nearly all of it those dumps),
//! the largest part of a sandbox's delete, and it grows with every sandbox
//! (each has its own host guard table). The kernel needs only the table's
//! name: the same deletion here takes ~0.1 ms.

use std::io;

use super::netlink::{Msg, Netlink};

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
    let mut batch = [batch_edge(NFNL_MSG_BATCH_BEGIN), delete_message(family, name), batch_edge(NFNL_MSG_BATCH_END)];
    match Netlink::open_netfilter()?.request_batch(&mut batch, 1) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        done => done,
    }
}

fn delete_message(family: u8, name: &str) -> Msg {
    let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, 0);
    m.bytes(&nfgenmsg(family, 0)).attr_str(NFTA_TABLE_NAME, name);
    m
}

/// A batch's begin or end message.
fn batch_edge(kind: u16) -> Msg {
    let mut m = Msg::new(kind, 0);
    m.bytes(&nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES));
    m
}

/// `struct nfgenmsg`: family, version 0, resource id (big-endian).
fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delete_message_is_laid_out_as_the_kernel_reads_it() {
        let mut msg = delete_message(INET, "abc");
        let m = msg.finish(2);
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
