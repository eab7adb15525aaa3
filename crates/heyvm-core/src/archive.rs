//! Safe tar.gz extraction for deploy archives.
//!
//! The daemon unpacks on the host side, into a sandbox's workspace
//! directory, so an archive must never write outside it. The whole archive
//! is checked before anything is written, and an archive with any bad
//! entry is refused as a whole (`invalid_archive`):
//! - paths must be relative without `..` (no absolute paths);
//! - symlink targets must be relative and stay inside, resolved from the
//!   link's directory; hard links must name an earlier file of the archive;
//! - no entry may pass through a symlink of the archive, or replace one;
//! - only files, directories and links (no devices or fifos);
//! - total size and entry count are capped.
//!
//! Extraction then creates entries without following symlinks, and
//! set-id bits are dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::{CoreError, Result};

/// Extracted bytes at most (guards against decompression bombs).
pub const MAX_TOTAL_BYTES: u64 = 8 << 30;
pub const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// What a valid archive holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries: usize,
    pub files: usize,
    pub bytes: u64,
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::InvalidArchive(msg.into())
}

fn open(path: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<BufReader<File>>>> {
    let f = File::open(path)?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f))))
}

/// A clean relative path: only normal components (`.` is dropped).
fn clean(p: &Path, what: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad(format!("{what} '{}' contains '..'", p.display()))),
            Component::RootDir | Component::Prefix(_) => return Err(bad(format!("{what} '{}' is absolute", p.display()))),
        }
    }
    Ok(out)
}

/// Whether a symlink at `link` (relative to the root) pointing at `target`
/// resolves, lexically, to somewhere inside the root.
pub fn link_inside(link: &Path, target: &Path) -> bool {
    if target.has_root() {
        return false;
    }
    let mut depth = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Whether the symlink at `link` stays inside the root when resolved the
/// way the kernel would (`openat2` with `RESOLVE_BENEATH`): following the
/// archive's other symlinks along the way, so a chain such as `up -> .`
/// then `x -> up/..` is caught although each link looks fine on its own.
fn resolves_inside(link: &Path, links: &HashMap<PathBuf, PathBuf>) -> bool {
    let mut stack: Vec<&std::ffi::OsStr> = link.parent().map(|p| p.iter().collect()).unwrap_or_default();
    let Some(first) = links.get(link) else { return true };
    let mut queue: std::collections::VecDeque<Component> = first.components().collect();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            Component::Normal(n) => {
                stack.push(n);
                let here: PathBuf = stack.iter().collect();
                if let Some(t) = links.get(&here) {
                    hops += 1;
                    if hops > 40 || t.has_root() {
                        return false;
                    }
                    stack.pop();
                    for (i, tc) in t.components().enumerate() {
                        queue.insert(i, tc);
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

/// Checks every entry; nothing is written.
pub fn validate(path: &Path) -> Result<Summary> {
    let mut ar = open(path)?;
    let mut seen: HashMap<PathBuf, Kind> = HashMap::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut sum = Summary::default();
    let entries = ar.entries().map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let ty = entry.header().entry_type();
        if matches!(ty, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let raw = entry.path().map_err(|e| bad(format!("bad entry name: {e}")))?.into_owned();
        let rel = clean(&raw, "entry")?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        sum.entries += 1;
        if sum.entries > MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        // No entry may live below a symlink of the archive.
        for anc in rel.ancestors().skip(1) {
            match seen.get(anc) {
                Some(Kind::Symlink) => return Err(bad(format!("'{}' passes through the symlink '{}'", rel.display(), anc.display()))),
                Some(Kind::File) => return Err(bad(format!("'{}' is below the file '{}'", rel.display(), anc.display()))),
                _ => {}
            }
        }
        let kind = match ty {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                sum.files += 1;
                sum.bytes += entry.size();
                if sum.bytes > MAX_TOTAL_BYTES {
                    return Err(bad(format!("more than {} GiB uncompressed", MAX_TOTAL_BYTES >> 30)));
                }
                Kind::File
            }
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => {
                let target = entry.link_name().map_err(|e| bad(format!("bad link target: {e}")))?.unwrap_or_default();
                if target.as_os_str().is_empty() || !link_inside(&rel, &target) {
                    return Err(bad(format!("symlink '{}' points outside the archive ('{}')", rel.display(), target.display())));
                }
                links.insert(rel.clone(), target.into_owned());
                Kind::Symlink
            }
            EntryType::Link => {
                let target = entry.link_name().map_err(|e| bad(format!("bad link target: {e}")))?.unwrap_or_default();
                let target = clean(&target, "hard link target")?;
                if seen.get(&target) != Some(&Kind::File) {
                    return Err(bad(format!("hard link '{}' must name an earlier file of the archive", rel.display())));
                }
                Kind::File
            }
            other => return Err(bad(format!("'{}' has an unsupported type ({other:?})", rel.display()))),
        };
        if let Some(prev) = seen.get(&rel) {
            // A file may be replaced by a later file; anything else would
            // turn a checked path into something unchecked.
            if *prev != kind || kind == Kind::Symlink {
                return Err(bad(format!("'{}' appears twice with different types", rel.display())));
            }
        }
        seen.insert(rel, kind);
    }
    for link in links.keys() {
        if !resolves_inside(link, &links) {
            return Err(bad(format!("symlink '{}' leaves the archive through other symlinks", link.display())));
        }
    }
    Ok(sum)
}

/// Validates, then unpacks into `dest` (an existing directory).
pub fn extract(archive: &Path, dest: &Path) -> Result<Summary> {
    let sum = validate(archive)?;
    let mut ar = open(archive)?;
    for entry in ar.entries()? {
        let mut entry = entry?;
        let ty = entry.header().entry_type();
        if matches!(ty, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let rel = clean(&entry.path()?, "entry")?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        if let Some(parent) = rel.parent() {
            make_dirs(dest, parent)?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match ty {
            EntryType::Directory => {
                make_dirs(dest, &rel)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o700))?;
            }
            EntryType::Symlink => {
                let link = entry.link_name()?.unwrap_or_default().into_owned();
                std::os::unix::fs::symlink(&link, &target)?;
            }
            EntryType::Link => {
                let src = dest.join(clean(&entry.link_name()?.unwrap_or_default(), "hard link target")?);
                remove_file_if_any(&target)?;
                std::fs::hard_link(&src, &target)?;
            }
            _ => {
                remove_file_if_any(&target)?;
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(mode).open(&target)?;
                std::io::copy(&mut (&mut entry).take(sum.bytes + 1), &mut f)?;
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
                }
            }
        }
    }
    Ok(sum)
}

/// Creates `rel`'s directories under `root`, refusing to traverse symlinks.
fn make_dirs(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(bad(format!("'{}' is not a directory", rel.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&cur)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn remove_file_if_any(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err(bad(format!("'{}' is a directory", p.display()))),
        Ok(_) => Ok(std::fs::remove_file(p)?),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_chains_are_resolved() {
        let links =
            |v: &[(&str, &str)]| -> HashMap<PathBuf, PathBuf> { v.iter().map(|(a, b)| (PathBuf::from(a), PathBuf::from(b))).collect() };
        let chain = links(&[("d/up", ".."), ("x", "d/up/..")]);
        assert!(resolves_inside(Path::new("d/up"), &chain));
        assert!(!resolves_inside(Path::new("x"), &chain), "x -> d/up/.. is the parent of the root");
        let deep = links(&[("a", "."), ("b", "a/a/a/.."), ("c", "b/../etc")]);
        assert!(!resolves_inside(Path::new("b"), &deep));
        let fine = links(&[("lib", "usr/lib"), ("l2", "lib/x/../y")]);
        assert!(resolves_inside(Path::new("l2"), &fine));
        let looped = links(&[("a", "b"), ("b", "a")]);
        assert!(!resolves_inside(Path::new("a"), &looped));
    }

    /// Builds a tar.gz with raw headers, so hostile names can be written.
    fn build(entries: &[(&str, EntryType, &str)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, ty, content) in entries {
            let mut h = tar::Header::new_gnu();
            // set_path refuses '..'; write the raw name bytes instead.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*ty);
            h.set_mode(0o644);
            if matches!(ty, EntryType::Symlink | EntryType::Link) {
                h.set_link_name(content).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            } else {
                h.set_size(content.len() as u64);
                h.set_cksum();
                b.append(&h, content.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap();
        f
    }

    fn code(entries: &[(&str, EntryType, &str)]) -> std::result::Result<Summary, String> {
        let f = build(entries);
        let dest = tempfile::tempdir().unwrap();
        let r = extract(f.path(), dest.path()).map_err(|e| e.code().to_string());
        if r.is_err() {
            assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0, "nothing may be extracted");
        }
        r
    }

    #[test]
    fn good_archive_extracts() {
        let f = build(&[
            ("app/", EntryType::Directory, ""),
            ("app/server.py", EntryType::Regular, "print(1)"),
            ("app/link", EntryType::Symlink, "server.py"),
            ("app/hard", EntryType::Link, "app/server.py"),
            ("./top.txt", EntryType::Regular, "t"),
        ]);
        let dest = tempfile::tempdir().unwrap();
        let s = extract(f.path(), dest.path()).unwrap();
        assert_eq!(s.files, 2, "hard links add no file data");
        assert_eq!(std::fs::read_to_string(dest.path().join("app/link")).unwrap(), "print(1)");
        assert_eq!(std::fs::read_to_string(dest.path().join("app/hard")).unwrap(), "print(1)");
        assert_eq!(std::fs::read_to_string(dest.path().join("top.txt")).unwrap(), "t");
    }

    #[test]
    fn hostile_archives_are_rejected_whole() {
        let ok = ("fine.txt", EntryType::Regular, "x");
        assert_eq!(code(&[ok, ("../escape", EntryType::Regular, "x")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("a/../../escape", EntryType::Regular, "x")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("/etc/evil", EntryType::Regular, "x")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("l", EntryType::Symlink, "/etc")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("a/l", EntryType::Symlink, "../../etc")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("h", EntryType::Link, "/etc/passwd")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("h", EntryType::Link, "../x")]), Err("invalid_archive".into()));
        // A link that is fine by itself, then a write through it.
        assert_eq!(code(&[ok, ("d", EntryType::Symlink, "."), ("d/x", EntryType::Regular, "x")]), Err("invalid_archive".into()));
        // Replacing a file with a symlink.
        assert_eq!(code(&[ok, ("fine.txt", EntryType::Symlink, "x")]), Err("invalid_archive".into()));
        assert_eq!(code(&[ok, ("dev", EntryType::Char, "")]), Err("invalid_archive".into()));
    }

    #[test]
    fn not_an_archive() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"definitely not gzip").unwrap();
        assert_eq!(validate(f.path()).unwrap_err().code(), "invalid_archive");
    }
}
