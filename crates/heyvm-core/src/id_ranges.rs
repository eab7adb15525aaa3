//! Per-sandbox ranges of host uids and gids. Each sandbox owns 65,536 host
//! ids (root inside is the range's first id), allocated from one pool
//! configured like an `/etc/subuid` line (`HEYVM_SUBIDS=START:COUNT`) and
//! recorded in SQLite for as long as the sandbox exists, so no two
//! sandboxes of a daemon ever share one. The backend maps the range into
//! the sandbox's user namespace; files the sandbox owns carry those ids on
//! the host.
//!
//! [`shift_tree`] moves a directory tree's ownership into a range: the
//! one-time shift of a layer made before ranges existed (everything there
//! was owned by host root or by host ids equal to the inside ids), and the
//! files the daemon itself writes into a sandbox.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rusqlite::{params, OptionalExtension};

use crate::error::{CoreError, Result};
pub use crate::sandbox_ids::IdRange;
use crate::store::Store;

/// Ids per sandbox: the full 16-bit range software inside expects.
pub const RANGE_SIZE: u32 = 65_536;
/// The default pool: 16,384 ranges starting at 10^9, clear of the usual
/// `/etc/subuid` allocations (100000 + 65536·n) and of systemd's dynamic
/// users, and below 2^31 (some tools still store ids as signed ints).
pub const DEFAULT_POOL: IdPool = IdPool { start: 1_000_000_000, count: 16_384 * RANGE_SIZE };

/// A `HEYVM_SUBIDS` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadIdPool {
    #[error("HEYVM_SUBIDS={0:?}: expected START:COUNT (host ids), e.g. 1000000000:1073741824")]
    Syntax(String),
    #[error("HEYVM_SUBIDS={0:?}: needs START > 0, COUNT >= {RANGE_SIZE}, and START+COUNT within 32 bits")]
    Bounds(String),
}

/// Where ranges come from: `START:COUNT` host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPool {
    pub start: u32,
    pub count: u32,
}

impl IdPool {
    /// `HEYVM_SUBIDS`, else the default. An unusable value is an error
    /// rather than a silent fallback: ranges must not overlap host users.
    pub fn from_env() -> std::result::Result<Self, BadIdPool> {
        match crate::config::string(crate::config::SUBIDS) {
            None => Ok(DEFAULT_POOL),
            Some(v) => Self::parse(&v),
        }
    }

    pub fn parse(s: &str) -> std::result::Result<Self, BadIdPool> {
        let syntax = || BadIdPool::Syntax(s.to_string());
        let (a, b) = s.split_once(':').ok_or_else(syntax)?;
        let (start, count): (u32, u32) = (a.trim().parse().map_err(|_| syntax())?, b.trim().parse().map_err(|_| syntax())?);
        if start == 0 || count < RANGE_SIZE || start.checked_add(count - 1).is_none_or(|end| end == u32::MAX) {
            return Err(BadIdPool::Bounds(s.to_string()));
        }
        Ok(IdPool { start, count })
    }

    fn slots(&self) -> u32 {
        self.count / RANGE_SIZE
    }

    fn range(&self, slot: u32) -> IdRange {
        IdRange { base: self.start + slot * RANGE_SIZE, size: RANGE_SIZE }
    }
}

/// The `id_ranges` table: one row per sandbox holding a range (warm
/// sandboxes too, which have no `sandboxes` row).
impl Store {
    pub(crate) fn create_id_ranges_table(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS id_ranges (
                 sandbox_id TEXT PRIMARY KEY,
                 base INTEGER NOT NULL UNIQUE,
                 size INTEGER NOT NULL
             );",
        )
    }

    /// The sandbox's range, allocating the lowest free one of `pool` when it
    /// has none. Ranges recorded under another pool stay as they are.
    pub fn id_range(&self, sandbox_id: &str, pool: &IdPool) -> Result<IdRange> {
        let mut conn = self.conn();
        // IMMEDIATE: a read that later writes would fail with SQLITE_BUSY
        // instead of waiting when another connection writes meanwhile.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: Option<(u32, u32)> = tx
            .query_row("SELECT base, size FROM id_ranges WHERE sandbox_id = ?1", params![sandbox_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((base, size)) = found {
            return Ok(IdRange { base, size });
        }
        let taken: std::collections::HashSet<u32> = {
            let mut stmt = tx.prepare("SELECT base FROM id_ranges")?;
            let rows = stmt.query_map([], |r| r.get::<_, u32>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let slot = (0..pool.slots()).find(|&s| !taken.contains(&pool.range(s).base)).ok_or_else(|| {
            CoreError::Conflict(format!("all {} uid/gid ranges are in use ({} to raise the pool)", pool.slots(), crate::config::SUBIDS))
        })?;
        let range = pool.range(slot);
        tx.execute("INSERT INTO id_ranges (sandbox_id, base, size) VALUES (?1, ?2, ?3)", params![sandbox_id, range.base, range.size])?;
        tx.commit()?;
        Ok(range)
    }

    /// The sandbox's recorded range, without allocating.
    pub fn recorded_id_range(&self, sandbox_id: &str) -> Result<Option<IdRange>> {
        let found: Option<(u32, u32)> = self
            .conn()
            .query_row("SELECT base, size FROM id_ranges WHERE sandbox_id = ?1", params![sandbox_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(found.map(|(base, size)| IdRange { base, size }))
    }

    pub fn release_id_range(&self, sandbox_id: &str) -> Result<()> {
        self.conn().execute("DELETE FROM id_ranges WHERE sandbox_id = ?1", params![sandbox_id])?;
        Ok(())
    }

    /// Frees the ranges of sandboxes that no longer exist (daemon start,
    /// after warm sandboxes of a dead daemon are removed).
    pub fn release_orphan_id_ranges(&self) -> Result<usize> {
        Ok(self.conn().execute("DELETE FROM id_ranges WHERE sandbox_id NOT IN (SELECT id FROM sandboxes)", [])?)
    }
}

/// Whether this process is root (only root maps ranges).
pub fn daemon_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The host id a file's owner `id` gets in `range`: ids already in the
/// range stay, small ids (inside ids of a layer made before ranges
/// existed, when inside id n was host id n) move up by the base, anything
/// else becomes the range's `nobody`. Idempotent, so an interrupted shift
/// can simply run again.
pub fn shifted(id: u32, range: &IdRange) -> u32 {
    if range.contains(id) {
        id
    } else {
        range.host(id).unwrap_or(range.base + range.size.min(65_535) - 1)
    }
}

/// Moves every file under `dir` (itself included) into `range`, without
/// following symlinks (the tree is sandbox-writable) and without crossing
/// into other filesystems. setuid/setgid bits, which `chown` clears, are put
/// back: they belong to the sandbox's own files.
pub fn shift_tree(dir: &Path, range: &IdRange) -> std::io::Result<u64> {
    remap_tree(dir, &|id| shifted(id, range))
}

/// Moves a tree owned by one sandbox's range `from` into another's `to`
/// (a fork's copy of its files): inside id n stays inside id n; anything
/// else is shifted into `to` as [`shifted`] does. Same walk, same safety.
pub fn move_tree(dir: &Path, from: &IdRange, to: &IdRange) -> std::io::Result<u64> {
    remap_tree(dir, &|id| if from.contains(id) { to.host(id - from.base).unwrap_or_else(|| shifted(id, to)) } else { shifted(id, to) })
}

/// Walks `dir` (itself included) without following symlinks or crossing
/// file systems and gives every file the owner `map` says.
fn remap_tree(dir: &Path, map: &dyn Fn(u32) -> u32) -> std::io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))?;
    // SAFETY: open with a valid path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(&fd)?;
    let mut n = 0;
    chown_at(fd.as_raw_fd(), c"", &st, map, libc::AT_EMPTY_PATH)?;
    shift_dir(fd, st.st_dev, map, &mut n)?;
    Ok(n + 1)
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: fstat fills a zeroed stat for a valid descriptor.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

fn chown_at(dirfd: i32, name: &std::ffi::CStr, st: &libc::stat, map: &dyn Fn(u32) -> u32, flags: i32) -> std::io::Result<()> {
    let (uid, gid) = (map(st.st_uid), map(st.st_gid));
    if (uid, gid) == (st.st_uid, st.st_gid) {
        return Ok(());
    }
    // SAFETY: fchownat/fchmodat on a valid directory fd and C string.
    unsafe {
        if libc::fchownat(dirfd, name.as_ptr(), uid, gid, flags | libc::AT_SYMLINK_NOFOLLOW) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let special = st.st_mode & 0o6000;
        if special != 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG && flags & libc::AT_EMPTY_PATH == 0 {
            libc::fchmodat(dirfd, name.as_ptr(), st.st_mode & 0o7777, 0);
        }
    }
    Ok(())
}

fn shift_dir(dir: OwnedFd, dev: u64, map: &dyn Fn(u32) -> u32, n: &mut u64) -> std::io::Result<()> {
    // SAFETY: fdopendir takes ownership of a duplicate; closedir frees it.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let dp = unsafe { libc::fdopendir(dup) };
    if dp.is_null() {
        unsafe { libc::close(dup) };
        return Err(std::io::Error::last_os_error());
    }
    let mut subdirs = Vec::new();
    let result = (|| -> std::io::Result<()> {
        loop {
            // SAFETY: dp is a valid DIR*; entries live until the next readdir.
            let ent = unsafe { libc::readdir(dp) };
            if ent.is_null() {
                return Ok(());
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name == c"." || name == c".." {
                continue;
            }
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstatat on a valid dir fd and entry name.
            if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
                continue;
            }
            chown_at(dir.as_raw_fd(), name, &st, map, 0)?;
            *n += 1;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR && st.st_dev == dev {
                subdirs.push(name.to_owned());
            }
        }
    })();
    // SAFETY: closes the DIR* (and its duplicate descriptor) once.
    unsafe { libc::closedir(dp) };
    result?;
    for name in subdirs {
        // SAFETY: openat relative to a valid dir fd, never following a link.
        let fd = unsafe {
            libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor we own.
            shift_dir(unsafe { OwnedFd::from_raw_fd(fd) }, dev, map, n)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pools_and_refuses_bad_ones() {
        assert_eq!(IdPool::parse("100000:131072").unwrap(), IdPool { start: 100000, count: 131072 });
        for bad in ["", "1", "0:65536", "100000:100", "x:65536", "4294900000:131072"] {
            assert!(IdPool::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocates_disjoint_ranges_reuses_freed_ones_and_keeps_them_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let pool = IdPool { start: 100000, count: 3 * RANGE_SIZE };
        let s = Store::open(&db).unwrap();
        let a = s.id_range("sb-0000000a", &pool).unwrap();
        let b = s.id_range("sb-0000000b", &pool).unwrap();
        assert_eq!(a, IdRange { base: 100000, size: RANGE_SIZE });
        assert_eq!(b.base, 100000 + RANGE_SIZE);
        assert_eq!(s.id_range("sb-0000000a", &pool).unwrap(), a, "stable");
        s.id_range("sb-0000000c", &pool).unwrap();
        assert!(matches!(s.id_range("sb-0000000d", &pool), Err(CoreError::Conflict(_))), "pool exhausted");
        s.release_id_range("sb-0000000a").unwrap();
        assert_eq!(s.id_range("sb-0000000d", &pool).unwrap(), a, "freed range reused");
        drop(s);
        let s = Store::open(&db).unwrap();
        assert_eq!(s.recorded_id_range("sb-0000000b").unwrap(), Some(b));
        assert_eq!(s.release_orphan_id_ranges().unwrap(), 3, "no sandbox rows: all orphans");
    }

    #[test]
    fn shifting_is_idempotent() {
        let r = IdRange { base: 200000, size: RANGE_SIZE };
        assert_eq!(shifted(0, &r), 200000);
        assert_eq!(shifted(42, &r), 200042);
        assert_eq!(shifted(200042, &r), 200042);
        assert_eq!(shifted(shifted(7, &r), &r), 200007);
        assert_eq!(shifted(4_000_000_000, &r), 200000 + 65534);
    }

    #[test]
    fn moving_a_tree_between_ranges_keeps_inside_ids_and_never_follows_links() {
        use std::os::unix::fs::MetadataExt;
        if !daemon_is_root() {
            return eprintln!("SKIP: chown needs root");
        }
        let (from, to) = (IdRange { base: 300000, size: RANGE_SIZE }, IdRange { base: 500000, size: RANGE_SIZE });
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::write(&outside, "host").unwrap();
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("home")).unwrap();
        std::fs::write(tree.join("home/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        std::os::unix::fs::lchown(&tree, Some(300000), Some(300000)).unwrap();
        std::os::unix::fs::lchown(tree.join("home/f"), Some(301000), Some(301001)).unwrap();
        std::os::unix::fs::lchown(tree.join("link"), Some(300000), Some(300000)).unwrap();
        move_tree(&tree, &from, &to).unwrap();
        let m = std::fs::metadata(tree.join("home/f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (501000, 501001));
        assert_eq!(std::fs::metadata(&tree).unwrap().uid(), 500000);
        assert_eq!(std::fs::symlink_metadata(tree.join("link")).unwrap().uid(), 500000);
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0, "the link's target is untouched");
    }
}
