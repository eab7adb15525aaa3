//! `heyvm images build` and `heyvm images push`: the context goes up as a
//! tar.gz (with the Dockerfile beside it), progress comes back as events;
//! human mode shows a spinner per step and RUN output, JSON mode prints
//! only the result.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use heyvm_client::{encode, Client, ClientError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::BuildArgs;
use crate::output::{self, Format};

/// Must match the server's `SIDE_DOCKERFILE`.
const SIDE_DOCKERFILE: &str = ".heyvm-build-dockerfile";

/// Packs the context directory (links kept as links) plus the Dockerfile.
fn pack(context: &Path, dockerfile: &[u8], out: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    b.follow_symlinks(false);
    b.append_dir_all(".", context).with_context(|| format!("packing {}", context.display()))?;
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, SIDE_DOCKERFILE, dockerfile)?;
    b.into_inner()?.finish()?;
    Ok(())
}

/// Collects a streamed operation's result; `on_progress` sees the rest.
fn stream_result(
    run: impl FnOnce(&mut dyn FnMut(&str, &serde_json::Value) -> bool) -> heyvm_client::Result<()>,
    mut on_progress: impl FnMut(&str, &serde_json::Value),
) -> anyhow::Result<serde_json::Value> {
    let mut result = None;
    run(&mut |name, data| {
        match name {
            "done" => result = Some(Ok(data.clone())),
            "error" => {
                result = Some(Err(anyhow::Error::new(ClientError::Api {
                    status: 0,
                    code: data["error"].as_str().unwrap_or("error").to_string(),
                    message: data["message"].as_str().unwrap_or("failed").to_string(),
                })))
            }
            other => on_progress(other, data),
        }
        true
    })?;
    result.unwrap_or_else(|| bail!("the server ended the stream without a result"))
}

fn spinner(human: bool) -> Option<ProgressBar> {
    human.then(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    })
}

pub fn build(c: &Client, f: Format, a: BuildArgs) -> anyhow::Result<ExitCode> {
    let v = build_value(c, f, a)?;
    match f {
        Format::Json => output::json(&v),
        Format::Text => println!(
            "Built {} ({} of {} layer steps cached){}{}",
            v["digest"].as_str().unwrap_or_default(),
            v["cached_steps"],
            v["layer_steps"],
            v["tags"]
                .as_array()
                .filter(|t| !t.is_empty())
                .map(|t| format!(", tagged {}", t.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", ")))
                .unwrap_or_default(),
            v["prepared_for"].as_str().map(|b| format!(", prepared for {b}")).unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds and returns the server's result; progress goes to stderr in
/// human mode, nothing is printed on stdout.
pub fn build_value(c: &Client, f: Format, a: BuildArgs) -> anyhow::Result<serde_json::Value> {
    let file = a.file.clone().unwrap_or_else(|| a.context.join("Dockerfile"));
    let dockerfile = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    if !a.context.is_dir() {
        bail!("build context '{}' is not a directory", a.context.display());
    }
    let tmp = std::env::temp_dir().join(format!("heyvm-build-{}.tar.gz", std::process::id()));
    pack(&a.context, &dockerfile, &tmp)?;
    let mut q = vec![format!("dockerfile={}", encode(SIDE_DOCKERFILE))];
    q.extend(a.tags.iter().map(|t| format!("t={}", encode(t))));
    for kv in &a.build_args {
        if !kv.contains('=') {
            bail!("--build-arg expects KEY=VALUE, got '{kv}'");
        }
        q.push(format!("build_arg={}", encode(kv)));
    }
    if let Some(t) = &a.target {
        q.push(format!("target={}", encode(t)));
    }
    if a.no_cache {
        q.push("no_cache=1".into());
    }
    if let Some(b) = &a.backend_type {
        q.push(format!("backend_type={}", encode(b)));
    }
    let human = f == Format::Text && std::io::stderr().is_terminal();
    let pb = spinner(human);
    let res = stream_result(
        |cb| c.build_image_stream(&tmp, &q.join("&"), cb),
        |name, data| match (name, &pb) {
            ("step", Some(pb)) => {
                let cached = if data["cached"].as_bool() == Some(true) { " (cached)" } else { "" };
                pb.println(format!("line {}: {}{cached}", data["line"], data["instruction"].as_str().unwrap_or_default()));
                pb.set_message(data["instruction"].as_str().unwrap_or_default().to_string());
            }
            ("output", Some(pb)) => pb.println(format!("  | {}", data["line"].as_str().unwrap_or_default())),
            ("output", None) if f == Format::Text => eprintln!("  | {}", data["line"].as_str().unwrap_or_default()),
            ("step", None) if f == Format::Text => eprintln!("line {}: {}", data["line"], data["instruction"].as_str().unwrap_or_default()),
            _ => {}
        },
    );
    let _ = std::fs::remove_file(&tmp);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    res
}

pub fn push(c: &Client, f: Format, reference: &str) -> anyhow::Result<ExitCode> {
    let pb = spinner(f == Format::Text && std::io::stderr().is_terminal());
    let res = stream_result(
        |cb| c.push_image_stream(reference, cb),
        |_, data| {
            if let (Some(pb), Some("layer_done")) = (&pb, data["event"].as_str()) {
                let d = data["digest"].as_str().unwrap_or_default();
                let how = if data["cached"].as_bool() == Some(true) { "already there" } else { "pushed" };
                pb.println(format!("{} {how}", d.get(..19).unwrap_or(d)));
            }
        },
    );
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let v = res?;
    match f {
        Format::Json => output::json(&v),
        Format::Text => println!("Pushed {reference} ({})", v["digest"].as_str().unwrap_or_default()),
    }
    Ok(ExitCode::SUCCESS)
}
