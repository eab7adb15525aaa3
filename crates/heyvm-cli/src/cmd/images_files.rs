//! `heyvm images save|load|upload`: images as OCI image archives. `save`
//! writes what `GET /images/:ref/archive` sends; `load` and `upload` send an
//! archive with `PUT /images/:name` (to the local daemon, or to a remote
//! server's store with the token remote commands use).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use heyvm_client::Client;
use heyvm_types::ImageInfo;
use sha2::{Digest as _, Sha256};

use crate::args::Cli;
use crate::output::{self, human_bytes, Format};

struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Downloads `reference` as an archive to `out` (via a temp file beside it,
/// renamed once complete); returns its sha256 and size.
pub fn save_to(c: &Client, reference: &str, out: &Path) -> anyhow::Result<(String, u64)> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".heyvm-save-").tempfile_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
    let mut w = Hashing { inner: std::io::BufWriter::new(tmp.reopen()?), hasher: Sha256::new() };
    let size = c.save_image(reference, &mut w)?;
    w.flush()?;
    let sha = hex(&w.hasher.finalize());
    tmp.persist(out).with_context(|| format!("writing {}", out.display()))?;
    Ok((sha, size))
}

pub fn save(c: &Client, f: Format, reference: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let (sha, size) = save_to(c, reference, out)?;
    match f {
        Format::Json => output::json(&serde_json::json!({"reference": reference, "path": out, "size_bytes": size, "sha256": sha})),
        Format::Text => println!("Saved {reference} to {} ({})", out.display(), human_bytes(size)),
    }
    Ok(ExitCode::SUCCESS)
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The reference an OCI archive's `index.json` records (what `images save`
/// and containerd write), if any.
fn archive_name(path: &Path) -> anyhow::Result<Option<String>> {
    let mut head = [0u8; 2];
    std::fs::File::open(path)?.read_exact(&mut head).ok();
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> =
        if head == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(std::io::BufReader::new(file)) };
    let mut a = tar::Archive::new(reader);
    for e in a.entries()? {
        let mut e = e?;
        if e.path()?.to_string_lossy().trim_start_matches("./") != "index.json" {
            continue;
        }
        let mut v = Vec::new();
        e.by_ref().take(4 << 20).read_to_end(&mut v)?;
        let index: serde_json::Value = serde_json::from_slice(&v).context("index.json is not JSON")?;
        let ann = &index["manifests"][0]["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .or_else(|| ann["org.opencontainers.image.ref.name"].as_str().filter(|n| n.contains(['/', ':'])));
        return Ok(name.map(String::from));
    }
    Ok(None)
}

fn show(f: Format, verb: &str, info: &ImageInfo) {
    match f {
        Format::Json => output::json(info),
        Format::Text => println!("{verb} {} ({}, {})", info.name, info.digest, human_bytes(info.size_bytes)),
    }
}

pub fn load(c: &Client, f: Format, file: &Path, name: Option<String>) -> anyhow::Result<ExitCode> {
    let name = match name {
        Some(n) => n,
        None => archive_name(file)?.with_context(|| format!("{} names no image; give one with --name REF", file.display()))?,
    };
    let sha = sha256_of(file)?;
    let info = c.upload_image(&name, file, Some(&sha))?;
    show(f, "Loaded", &info);
    Ok(ExitCode::SUCCESS)
}

/// A client for this machine's daemon, whatever `--server` says:
/// `$HEYVM_API_URL` when it names another server, else the local daemon.
pub fn local_source(cli: &Cli, remote: &str) -> anyhow::Result<Client> {
    let env = heyvm_core::config::string(heyvm_core::config::API_URL).filter(|u| u.trim_end_matches('/') != remote.trim_end_matches('/'));
    match env {
        Some(url) => Ok(Client::new(&url, crate::credentials::token(cli))),
        None => crate::daemon::default_local_client(cli),
    }
}

/// Sends the local image `reference` to the remote server's store as
/// `name`; returns what the server stored.
pub fn upload_to(local: &Client, remote: &Client, reference: &str, name: &str, f: Format) -> anyhow::Result<ImageInfo> {
    let tmp = tempfile::Builder::new().prefix("heyvm-upload-").suffix(".tar").tempfile()?;
    let path: PathBuf = tmp.path().into();
    let (sha, size) = save_to(local, reference, &path)?;
    if f == Format::Text {
        eprintln!("==> uploading {reference} ({}) to {} as {name}", human_bytes(size), remote.base_url());
    }
    let info = remote.upload_image(name, &path, Some(&sha))?;
    drop(tmp);
    Ok(info)
}

pub fn upload(cli: &Cli, reference: &str, name: Option<String>) -> anyhow::Result<ExitCode> {
    let (server, remote, have_token) = super::remote::client(cli, "images upload")?;
    super::remote::check_credentials(&remote, have_token)?;
    let local = local_source(cli, &server)?;
    let name = name.unwrap_or_else(|| reference.to_string());
    if name.contains('@') {
        bail!("--as names the image on the server by a tag, not a digest");
    }
    let info = upload_to(&local, &remote, reference, &name, cli.format)?;
    show(cli.format, "Uploaded", &info);
    Ok(ExitCode::SUCCESS)
}
