//! `heyvm images …`: pull (with progress bars in human mode), list,
//! inspect, rm, prune, tag, login.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::bail;
use heyvm_client::Client;
use heyvm_types::{ImageInfo, RegistryLoginRequest};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::args::ImagesCommand;
use crate::output::{self, human_bytes, Format};

pub fn run(c: &Client, f: Format, cmd: ImagesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImagesCommand::Pull { reference } => pull(c, f, &reference),
        ImagesCommand::List => list(c, f),
        ImagesCommand::Build(a) => super::images_build::build(c, f, a),
        ImagesCommand::Push { reference } => super::images_build::push(c, f, &reference),
        ImagesCommand::Inspect { reference } => {
            let d = c.image(&reference)?;
            output::json(&d);
            Ok(ExitCode::SUCCESS)
        }
        ImagesCommand::Rm { references } => {
            let mut out = Vec::new();
            for r in &references {
                out.push(c.remove_image(r)?);
                if f == Format::Text {
                    println!("Removed {r}");
                }
            }
            if f == Format::Json {
                output::json(&out);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImagesCommand::Save { reference, output } => super::images_files::save(c, f, &reference, &output),
        ImagesCommand::Load { file, name } => super::images_files::load(c, f, &file, name),
        ImagesCommand::Upload { .. } => unreachable!("dispatched before a client is made"),
        ImagesCommand::Prune => {
            let r = c.prune_images()?;
            match f {
                Format::Json => output::json(&r),
                Format::Text => println!(
                    "Removed {} blobs and {} unpacked layers, freed {}",
                    r.blobs_removed,
                    r.layers_removed,
                    human_bytes(r.bytes_freed)
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        ImagesCommand::Tag { source, target } => {
            let info = c.tag_image(&source, &target)?;
            show_one(f, &info, "Tagged");
            Ok(ExitCode::SUCCESS)
        }
        ImagesCommand::Login { registry, username, password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    if std::io::stdin().is_terminal() {
                        eprint!("Password for {username}@{registry}: ");
                    }
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let v = c.registry_login(&RegistryLoginRequest { registry: registry.clone(), username, password })?;
            match f {
                Format::Json => output::json(&v),
                Format::Text => println!("Logged in to {registry}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show_one(f: Format, info: &ImageInfo, verb: &str) {
    match f {
        Format::Json => output::json(info),
        Format::Text => println!("{verb} {} ({})", info.name, info.digest),
    }
}

fn list(c: &Client, f: Format) -> anyhow::Result<ExitCode> {
    let items = c.list_images()?;
    match f {
        Format::Json => output::json(&items),
        Format::Text => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![i.name.clone(), i.digest[..19.min(i.digest.len())].to_string(), human_bytes(i.size_bytes), i.in_use_by.join(",")]
                })
                .collect();
            output::table(&["NAME", "DIGEST", "SIZE", "USED BY"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON mode: no bars, one object. Human mode: a bar per layer.
fn pull(c: &Client, f: Format, reference: &str) -> anyhow::Result<ExitCode> {
    if f == Format::Json || !std::io::stderr().is_terminal() {
        let info = c.pull_image(reference)?;
        show_one(f, &info, "Pulled");
        return Ok(ExitCode::SUCCESS);
    }
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut by_digest: HashMap<String, ProgressBar> = HashMap::new();
    let mut result: Option<anyhow::Result<ImageInfo>> = None;
    c.pull_image_stream(reference, |name, data| {
        match name {
            "progress" => match data["event"].as_str() {
                Some("resolved") => {
                    for l in data["layers"].as_array().into_iter().flatten() {
                        let d = l["digest"].as_str().unwrap_or_default().to_string();
                        let pb = bars.add(ProgressBar::new(l["size"].as_u64().unwrap_or(0)));
                        pb.set_style(style.clone());
                        pb.set_prefix(d.get(7..19).unwrap_or(&d).to_string());
                        by_digest.insert(d, pb);
                    }
                }
                Some("progress") => {
                    if let Some(pb) = data["digest"].as_str().and_then(|d| by_digest.get(d)) {
                        pb.set_position(data["downloaded"].as_u64().unwrap_or(0));
                    }
                }
                Some("layer_done") => {
                    if let Some(pb) = data["digest"].as_str().and_then(|d| by_digest.get(d)) {
                        let msg = if data["cached"].as_bool() == Some(true) { "already present" } else { "done" };
                        pb.set_position(pb.length().unwrap_or(0));
                        pb.finish_with_message(msg);
                    }
                }
                _ => {}
            },
            "done" => result = Some(serde_json::from_value(data.clone()).map_err(Into::into)),
            "error" => {
                let msg = data["message"].as_str().unwrap_or("pull failed").to_string();
                result = Some(Err(anyhow::Error::new(heyvm_client::ClientError::Api {
                    status: 0,
                    code: data["error"].as_str().unwrap_or("error").to_string(),
                    message: msg,
                })));
            }
            _ => {}
        }
        true
    })?;
    let _ = bars.clear();
    match result {
        Some(Ok(info)) => {
            show_one(f, &info, "Pulled");
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) => Err(e),
        None => bail!("the server ended the pull without a result"),
    }
}
