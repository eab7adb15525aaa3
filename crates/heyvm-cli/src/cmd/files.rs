//! cp, files, rm-file. A sandbox path is absolute (relative ones are under
//! /workspace). Under a mount (/workspace or a mount's sandbox path) heyvm
//! splits it into mount path + relative path, which works while the sandbox
//! is stopped too; anywhere else it is sent as given (no mount path) and
//! the server reaches it through the running sandbox's agent.

use std::process::ExitCode;

use anyhow::{bail, Context};
use heyvm_client::Client;
use heyvm_types::WORKSPACE_PATH;

use crate::output::{self, Format};

/// Splits an absolute sandbox path into (mount_path, relative path) using
/// the sandbox's mounts (longest match wins); a path under no mount is
/// `("", path)`: the file routes' "anywhere in the sandbox" form.
fn split(c: &Client, id: &str, path: &str) -> anyhow::Result<(String, String)> {
    let path = if path.starts_with('/') { path.to_string() } else { format!("{WORKSPACE_PATH}/{path}") };
    let mounts = c.mounts(id)?;
    let best = mounts
        .iter()
        .map(|m| m.sandbox_path.as_str())
        .filter(|mp| path == *mp || path.starts_with(&format!("{mp}/")))
        .max_by_key(|mp| mp.len());
    Ok(match best {
        Some(mp) => (mp.to_string(), path[mp.len()..].trim_start_matches('/').to_string()),
        None => (String::new(), path),
    })
}

/// `SANDBOX:PATH` → Some((sandbox, path)); local paths → None.
fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, path) = s.split_once(':')?;
    (!id.is_empty() && !id.contains('/')).then_some((id, path))
}

pub fn cp(c: &Client, f: Format, src: &str, dst: &str) -> anyhow::Result<ExitCode> {
    let result = match (remote(src), remote(dst)) {
        (None, Some((id, path))) => {
            let local = std::fs::File::open(src).with_context(|| format!("opening {src}"))?;
            let (mp, rel) = split(c, id, path)?;
            // A directory target (the mount itself, or a path ending in /)
            // gets the source's file name.
            let rel = if rel.is_empty() || path.ends_with('/') {
                let name = std::path::Path::new(src).file_name().context("source has no file name")?.to_string_lossy();
                match rel.trim_end_matches('/') {
                    "" if mp.is_empty() => format!("/{name}"),
                    "" => name.to_string(),
                    dir => format!("{dir}/{name}"),
                }
            } else {
                rel
            };
            let r = c.upload(id, &mp, &rel, local)?;
            serde_json::json!({ "direction": "upload", "sandbox": id, "mount_path": r.mount_path, "file_path": r.file_path, "size": r.size })
        }
        (Some((id, path)), None) => {
            let (mp, rel) = split(c, id, path)?;
            let dst_path = if std::path::Path::new(dst).is_dir() {
                std::path::Path::new(dst).join(std::path::Path::new(&rel).file_name().context("source has no file name")?)
            } else {
                dst.into()
            };
            // Download next to the target and rename, so a failure leaves nothing half-written.
            let tmp = dst_path.with_extension("heyvm-partial");
            let mut out = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let size = match c.download(id, &mp, &rel, &mut out) {
                Ok(n) => n,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            };
            std::fs::rename(&tmp, &dst_path)?;
            serde_json::json!({ "direction": "download", "sandbox": id, "path": path, "local": dst_path, "size": size })
        }
        _ => bail!("exactly one of SRC and DST must be SANDBOX:PATH"),
    };
    match f {
        Format::Json => output::json(&result),
        Format::Text => println!("{} bytes copied", result["size"]),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(c: &Client, f: Format, id: &str, path: &str) -> anyhow::Result<ExitCode> {
    let (mp, rel) = split(c, id, path)?;
    let l = c.list_files(id, &mp, &rel)?;
    match f {
        Format::Json => output::json(&l),
        Format::Text => {
            let rows: Vec<Vec<String>> = l
                .files
                .iter()
                .map(|e| {
                    let kind = if e.is_dir {
                        "dir"
                    } else if e.is_symlink {
                        "link"
                    } else {
                        "file"
                    };
                    vec![format!("{:o}", e.mode), kind.into(), e.size.to_string(), e.name.clone()]
                })
                .collect();
            output::table(&["MODE", "TYPE", "SIZE", "NAME"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(c: &Client, f: Format, id: &str, path: &str, recursive: bool) -> anyhow::Result<ExitCode> {
    let (mp, rel) = split(c, id, path)?;
    let r = c.delete_file(id, &mp, &rel, recursive)?;
    match f {
        Format::Json => output::json(&r),
        Format::Text => println!("Deleted {path}"),
    }
    Ok(ExitCode::SUCCESS)
}
