//! A build's source tree (the context directory, or another stage's root
//! for `COPY --from`): `.dockerignore`, wildcard sources confined to the
//! tree, content hashes for the layer cache, and the tar entries `COPY` and
//! `ADD` put in a new layer. Nothing here follows a symlink out of the tree:
//! sources are read with `symlink_metadata` and links are copied as links.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};

pub struct Context {
    pub root: PathBuf,
    /// (`!` exception, pattern segments), in file order; the last match wins.
    ignore: Vec<(bool, Vec<String>)>,
}

/// How COPY/ADD write what they take.
pub struct CopyOptions {
    /// Absolute destination (already expanded and resolved against WORKDIR).
    pub dest: String,
    pub dest_is_dir: bool,
    pub owner: (u32, u32),
    pub chmod: Option<u32>,
    /// ADD: unpack local tar archives instead of copying them.
    pub extract_archives: bool,
}

fn bad(line: usize, msg: impl std::fmt::Display) -> ImageError {
    ImageError::Build(format!("Dockerfile line {line}: {msg}"))
}

/// `*`, `?` within one segment.
fn segment_match(p: &[u8], t: &[u8]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(b'*'), _) => segment_match(&p[1..], t) || (!t.is_empty() && segment_match(p, &t[1..])),
        (Some(b'?'), Some(_)) => segment_match(&p[1..], &t[1..]),
        (Some(a), Some(b)) if a == b => segment_match(&p[1..], &t[1..]),
        _ => false,
    }
}

/// A path pattern of segments where `**` spans any number of segments.
pub fn path_match(pat: &[String], path: &[String]) -> bool {
    match pat.first() {
        None => path.is_empty(),
        Some(s) if s == "**" => (0..=path.len()).any(|i| path_match(&pat[1..], &path[i..])),
        Some(s) => !path.is_empty() && segment_match(s.as_bytes(), path[0].as_bytes()) && path_match(&pat[1..], &path[1..]),
    }
}

fn segments(p: &Path) -> Vec<String> {
    p.components().filter_map(|c| if let Component::Normal(n) = c { Some(n.to_string_lossy().to_string()) } else { None }).collect()
}

impl Context {
    /// A context directory with its `.dockerignore`.
    pub fn open(root: &Path) -> Result<Self> {
        let mut ignore = Vec::new();
        if let Ok(text) = std::fs::read_to_string(root.join(".dockerignore")) {
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let (neg, pat) = match line.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, line),
                };
                ignore.push((neg, segments(Path::new(pat))));
            }
        }
        Ok(Context { root: root.to_path_buf(), ignore })
    }

    /// Another stage's root: everything in it counts.
    pub fn tree(root: &Path) -> Self {
        Context { root: root.to_path_buf(), ignore: vec![] }
    }

    /// Whether `.dockerignore` excludes `rel` (or a directory above it).
    pub fn is_ignored(&self, rel: &Path) -> bool {
        let segs = segments(rel);
        let mut ignored = false;
        for (neg, pat) in &self.ignore {
            if (1..=segs.len()).any(|n| path_match(pat, &segs[..n])) {
                ignored = !neg;
            }
        }
        ignored
    }

    /// The tree's entries a COPY source names (wildcards allowed), relative
    /// to the root. A source leaving the tree is an error.
    pub fn resolve(&self, src: &str, line: usize) -> Result<Vec<PathBuf>> {
        let mut rel = Vec::new();
        for c in Path::new(src).components() {
            match c {
                Component::Normal(n) => rel.push(n.to_string_lossy().to_string()),
                Component::ParentDir if rel.pop().is_some() => {}
                Component::ParentDir => return Err(bad(line, format!("COPY source '{src}' is outside the build context"))),
                _ => {}
            }
        }
        if rel.is_empty() {
            return Ok(vec![PathBuf::new()]);
        }
        let wild = rel.iter().any(|s| s.contains(['*', '?']));
        if !wild {
            let p: PathBuf = rel.iter().collect();
            if std::fs::symlink_metadata(self.root.join(&p)).is_err() || self.is_ignored(&p) {
                return Err(bad(line, format!("COPY source '{src}' not found in the build context")));
            }
            return Ok(vec![p]);
        }
        let mut found: Vec<PathBuf> =
            self.walk(Path::new("")).into_iter().filter(|p| segments(p).len() == rel.len() && path_match(&rel, &segments(p))).collect();
        found.sort();
        if found.is_empty() {
            return Err(bad(line, format!("no file in the build context matches '{src}'")));
        }
        Ok(found)
    }

    /// Every non-ignored entry under `rel` (not following symlinks), sorted.
    pub fn walk(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(self.root.join(&dir)) else { continue };
            for e in rd.flatten() {
                let p = dir.join(e.file_name());
                if self.is_ignored(&p) {
                    continue;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
        out.sort();
        out
    }

    /// A digest of the sources' paths, types, modes and contents.
    pub fn hash(&self, srcs: &[PathBuf]) -> Result<String> {
        let mut h = Sha256::new();
        for s in srcs {
            let mut all = vec![s.clone()];
            if std::fs::symlink_metadata(self.root.join(s)).is_ok_and(|m| m.is_dir()) {
                all.extend(self.walk(s));
            }
            for p in all {
                let full = self.root.join(&p);
                let m = std::fs::symlink_metadata(&full)?;
                h.update(format!("{}\0{:o}\0{}\0", p.display(), std::os::unix::fs::MetadataExt::mode(&m), m.len()).as_bytes());
                if m.file_type().is_symlink() {
                    h.update(std::fs::read_link(&full)?.as_os_str().as_encoded_bytes());
                } else if m.is_file() {
                    let mut f = std::fs::File::open(&full)?;
                    std::io::copy(&mut f, &mut HashW(&mut h))?;
                }
            }
        }
        Ok(format!("sha256:{}", crate::oci::hex(&h.finalize())))
    }

    /// Appends the tar entries that copy `srcs` as `opts` says.
    pub fn append<W: std::io::Write>(&self, b: &mut tar::Builder<W>, srcs: &[PathBuf], opts: &CopyOptions) -> Result<()> {
        let dest = PathBuf::from(opts.dest.trim_start_matches('/'));
        if opts.dest_is_dir && !dest.as_os_str().is_empty() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_uid(opts.owner.0 as u64);
            h.set_gid(opts.owner.1 as u64);
            h.set_size(0);
            b.append_data(&mut h, &dest, std::io::empty())?;
        }
        for s in srcs {
            let full = self.root.join(s);
            let m = std::fs::symlink_metadata(&full)?;
            if m.is_dir() {
                for p in self.walk(s) {
                    let inner = p.strip_prefix(s).unwrap_or(&p);
                    self.entry(b, &self.root.join(&p), &dest.join(inner), opts)?;
                }
                continue;
            }
            let target = if opts.dest_is_dir { dest.join(s.file_name().unwrap_or_default()) } else { dest.clone() };
            if opts.extract_archives && m.is_file() {
                if let Some(reader) = archive_reader(&full)? {
                    extract_into(b, reader, &dest)?;
                    continue;
                }
            }
            self.entry(b, &full, &target, opts)?;
        }
        Ok(())
    }

    fn entry<W: std::io::Write>(&self, b: &mut tar::Builder<W>, full: &Path, target: &Path, opts: &CopyOptions) -> Result<()> {
        let m = std::fs::symlink_metadata(full)?;
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
        h.set_uid(opts.owner.0 as u64);
        h.set_gid(opts.owner.1 as u64);
        if let Some(mode) = opts.chmod {
            h.set_mode(mode);
        }
        if m.file_type().is_symlink() {
            b.append_link(&mut h, target, std::fs::read_link(full)?)?;
        } else if m.is_dir() {
            b.append_data(&mut h, target, std::io::empty())?;
        } else if m.is_file() {
            b.append_data(&mut h, target, std::fs::File::open(full)?)?;
        }
        Ok(())
    }
}

struct HashW<'a>(&'a mut Sha256);

impl std::io::Write for HashW<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader over a local tar archive (plain or gzip, by content), or None.
fn archive_reader(p: &Path) -> Result<Option<Box<dyn Read>>> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(p)?.read(&mut head)?;
    let f = std::io::BufReader::new(std::fs::File::open(p)?);
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        return Ok(Some(Box::new(flate2::read::GzDecoder::new(f))));
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(Box::new(f)));
    }
    Ok(None)
}

/// Re-roots an archive's entries under `dest`, refusing paths that leave it.
fn extract_into<W: std::io::Write>(b: &mut tar::Builder<W>, reader: Box<dyn Read>, dest: &Path) -> Result<()> {
    let mut a = tar::Archive::new(reader);
    for e in a.entries().map_err(|e| ImageError::Build(format!("ADD archive: {e}")))? {
        let mut e = e.map_err(|e| ImageError::Build(format!("ADD archive: {e}")))?;
        let p = e.path().map_err(|e| ImageError::Build(format!("ADD archive: {e}")))?.into_owned();
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(ImageError::Build(format!("ADD archive entry '{}' leaves its destination", p.display())));
        }
        let rel: PathBuf = p.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let mut h = e.header().clone();
        let target = dest.join(&rel);
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = e.link_name().ok().flatten().map(|l| l.into_owned()).unwrap_or_default();
                let link = if h.entry_type() == tar::EntryType::Link { dest.join(link) } else { link };
                b.append_link(&mut h, &target, link)?;
            }
            _ => b.append_data(&mut h, &target, &mut e)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
