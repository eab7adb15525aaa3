//! Packs a directory as tar.gz for `deploy`, honouring `.gitignore`.
//!
//! The matcher is a small implementation of gitignore rules (nested
//! `.gitignore` files, `!` negation, `/` anchoring, trailing-`/` directory
//! rules, `*`, `?`, `[...]`, `**`) rather than the `ignore` crate, which
//! would pull regex, globset and a parallel walker into a 2-core build for
//! what is a one-shot walk. `.git/` is never archived. Symlinks are kept
//! when they stay inside the directory and skipped (with a warning) when
//! they point outside, because the server rejects those.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One gitignore line.
#[derive(Debug, Clone)]
struct Rule {
    /// Directory (relative to the archive root, "" for the root) whose
    /// `.gitignore` holds the rule.
    base: String,
    segments: Vec<String>,
    /// No slash in the pattern: matches the last path component at any depth.
    basename_only: bool,
    dir_only: bool,
    negate: bool,
}

impl Rule {
    fn parse(base: &str, line: &str) -> Option<Rule> {
        let line = line.trim_end_matches(['\r', '\n']);
        // Trailing spaces are ignored unless escaped.
        let mut line = line.trim_end_matches(' ').to_string();
        if line.ends_with('\\') {
            line.push(' ');
        }
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut pat = line.as_str();
        let negate = pat.starts_with('!');
        if negate {
            pat = &pat[1..];
        }
        if pat.starts_with("\\#") || pat.starts_with("\\!") {
            pat = &pat[1..];
        }
        let dir_only = pat.ends_with('/');
        let pat = pat.trim_end_matches('/');
        if pat.is_empty() {
            return None;
        }
        let basename_only = !pat.contains('/');
        let segments = pat.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).map(String::from).collect();
        Some(Rule { base: base.to_string(), segments, basename_only, dir_only, negate })
    }

    /// `rel` is the path relative to the archive root, `/`-separated.
    fn matches(&self, rel: &str, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        let sub = if self.base.is_empty() {
            rel
        } else {
            match rel.strip_prefix(self.base.as_str()).and_then(|r| r.strip_prefix('/')) {
                Some(s) => s,
                None => return false,
            }
        };
        let parts: Vec<&str> = sub.split('/').collect();
        if self.basename_only {
            return glob_segment(self.segments[0].as_bytes(), parts[parts.len() - 1].as_bytes());
        }
        let segs: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        match_segments(&segs, &parts)
    }
}

/// Matches pattern segments against path segments; `**` spans any number.
fn match_segments(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| match_segments(rest, &path[i..])),
        Some((p, rest)) => !path.is_empty() && glob_segment(p.as_bytes(), path[0].as_bytes()) && match_segments(rest, &path[1..]),
    }
}

/// fnmatch for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`.
fn glob_segment(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob_segment(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob_segment(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().skip(2).position(|&c| c == b']').map(|i| i + 2) else {
                return s.first() == Some(&b'[') && glob_segment(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let mut set = &p[1..close];
            let negated = matches!(set.first(), Some(b'!' | b'^'));
            if negated {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negated && glob_segment(&p[close + 1..], &s[1..])
        }
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob_segment(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_segment(&p[1..], &s[1..]),
    }
}

/// Whether `rel` is ignored: the last matching rule wins.
fn ignored(rules: &[Rule], rel: &str, is_dir: bool) -> bool {
    let mut out = false;
    for r in rules {
        if r.matches(rel, is_dir) {
            out = !r.negate;
        }
    }
    out
}

/// What went into an archive.
#[derive(Debug, Default)]
pub struct Packed {
    pub files: u64,
    pub bytes: u64,
    pub skipped_symlinks: Vec<String>,
}

/// Entries to archive: relative path and metadata.
type Entries = Vec<(String, std::fs::Metadata)>;

/// Lists the entries to archive (relative paths, parents before children)
/// and the symlinks skipped because they leave the directory.
fn collect(root: &Path) -> anyhow::Result<(Entries, Vec<String>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut rules = Vec::new();
    walk(root, "", &mut rules, &mut out, &mut skipped)?;
    Ok((out, skipped))
}

fn walk(dir: &Path, rel_dir: &str, rules: &mut Vec<Rule>, out: &mut Entries, skipped: &mut Vec<String>) -> anyhow::Result<()> {
    let pushed_before = rules.len();
    if let Ok(text) = std::fs::read_to_string(dir.join(".gitignore")) {
        rules.extend(text.lines().filter_map(|l| Rule::parse(rel_dir, l)));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let rel = if rel_dir.is_empty() { name.clone() } else { format!("{rel_dir}/{name}") };
        let meta = std::fs::symlink_metadata(e.path())?;
        if ignored(rules, &rel, meta.is_dir()) {
            continue;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path())?;
            if !link_stays_inside(&rel, &target) {
                skipped.push(rel);
                continue;
            }
            out.push((rel, meta));
        } else if meta.is_dir() {
            out.push((rel.clone(), meta));
            walk(&e.path(), &rel, rules, out, skipped)?;
        } else if meta.is_file() {
            out.push((rel, meta));
        }
        // Sockets, fifos and devices are not part of an app.
    }
    rules.truncate(pushed_before);
    Ok(())
}

/// A relative symlink target that, resolved lexically from the link's
/// directory, stays inside the archive root (the server applies the same
/// rule when it unpacks).
fn link_stays_inside(rel: &str, target: &Path) -> bool {
    heyvm_core::archive::link_inside(Path::new(rel), target)
}

/// Writes `dir` as a gzip-compressed tar to `dest`.
pub fn pack(dir: &Path, dest: &Path) -> anyhow::Result<Packed> {
    let (entries, skipped) = collect(dir)?;
    let file = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut packed = Packed { skipped_symlinks: skipped, ..Default::default() };
    for (rel, meta) in &entries {
        let path = dir.join(rel);
        tar.append_path_with_name(&path, rel).with_context(|| format!("archiving {}", path.display()))?;
        if meta.is_file() {
            packed.files += 1;
            packed.bytes += meta.len();
        }
    }
    let gz = tar.into_inner()?;
    gz.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(packed)
}

/// A temporary file removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(suffix: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        TempFile(std::env::temp_dir().join(format!("heyvm-{}-{nanos:08x}{suffix}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(base: &str, text: &str) -> Vec<Rule> {
        text.lines().filter_map(|l| Rule::parse(base, l)).collect()
    }

    #[test]
    fn gitignore_semantics() {
        let r = rules("", "node_modules/\n*.log\n!keep.log\n/build\ndocs/**/*.tmp\n# comment\n\\#hash\n[ab].txt\n");
        assert!(ignored(&r, "node_modules", true));
        assert!(ignored(&r, "sub/node_modules", true));
        assert!(!ignored(&r, "node_modules", false), "dir-only rule");
        assert!(ignored(&r, "a/b/x.log", false));
        assert!(!ignored(&r, "keep.log", false));
        assert!(ignored(&r, "build", true));
        assert!(!ignored(&r, "src/build", true), "anchored");
        assert!(ignored(&r, "docs/x.tmp", false));
        assert!(ignored(&r, "docs/a/b/x.tmp", false));
        assert!(!ignored(&r, "x.tmp", false));
        assert!(ignored(&r, "#hash", false));
        assert!(ignored(&r, "a.txt", false) && !ignored(&r, "c.txt", false));
    }

    #[test]
    fn nested_gitignore_is_relative() {
        let r = rules("sub", "/only-here\n*.o\n");
        assert!(ignored(&r, "sub/only-here", false));
        assert!(!ignored(&r, "only-here", false));
        assert!(ignored(&r, "sub/x/y.o", false));
        assert!(!ignored(&r, "y.o", false));
    }

    #[test]
    fn symlink_containment() {
        assert!(link_stays_inside("a/link", Path::new("../b")));
        assert!(!link_stays_inside("link", Path::new("../b")));
        assert!(!link_stays_inside("a/link", Path::new("/etc")));
        assert!(link_stays_inside("link", Path::new("./x/../y")));
    }

    #[test]
    fn pack_honours_gitignore() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join(".gitignore"), "*.log\nsecret/\n").unwrap();
        std::fs::write(p.join("app.py"), "print(1)").unwrap();
        std::fs::write(p.join("debug.log"), "x").unwrap();
        std::fs::create_dir_all(p.join("secret")).unwrap();
        std::fs::write(p.join("secret/key"), "k").unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join(".git/HEAD"), "ref").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("out")).unwrap();
        std::os::unix::fs::symlink("app.py", p.join("in")).unwrap();
        let (entries, skipped) = collect(p).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [".gitignore", "app.py", "in"]);
        assert_eq!(skipped, ["out"]);
        let dest = TempFile::new(".tar.gz");
        let packed = pack(p, &dest.0).unwrap();
        assert_eq!(packed.files, 2);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&dest.0).unwrap()));
        let got: Vec<String> = ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(got, [".gitignore", "app.py", "in"]);
    }
}
