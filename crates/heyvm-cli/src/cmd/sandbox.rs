//! create, list, get, start/stop/restart/force-stop, rm, update.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use heyvm_client::Client;
use heyvm_types::{CreateSandboxRequest, MountSpec, SandboxInfo, SandboxStatus, SizeClass, StatusResponse, UpdateSandboxRequest};

use super::parse_env;
use crate::args::{CreateArgs, UpdateArgs};
use crate::output::{self, human_bytes, human_duration, Format};

/// `--mount`: `HOST:SANDBOX[:ro]`, or `s3://PREFIX:SANDBOX[:ro]` for a
/// mount whose files live in the server's S3 bucket.
pub fn parse_mount(s: &str) -> anyhow::Result<MountSpec> {
    if let Some(rest) = s.strip_prefix("s3://") {
        let parts: Vec<&str> = rest.split(':').collect();
        let (prefix, sandbox, ro) = match parts.as_slice() {
            [p, s] => (p, s, false),
            [p, s, "ro"] => (p, s, true),
            [p, s, "rw"] => (p, s, false),
            _ => bail!("--mount expects s3://PREFIX:SANDBOX or s3://PREFIX:SANDBOX:ro, got '{s}'"),
        };
        if prefix.trim_matches('/').is_empty() {
            bail!("--mount '{s}': the S3 prefix is empty");
        }
        return Ok(MountSpec {
            sandbox_path: sandbox.to_string(),
            read_only: ro,
            s3_prefix: Some(prefix.to_string()),
            ..Default::default()
        });
    }
    let parts: Vec<&str> = s.split(':').collect();
    let (host, sandbox, ro) = match parts.as_slice() {
        [h, s] => (h, s, false),
        [h, s, "ro"] => (h, s, true),
        [h, s, "rw"] => (h, s, false),
        _ => bail!("--mount expects HOST:SANDBOX, HOST:SANDBOX:ro or s3://PREFIX:SANDBOX, got '{s}'"),
    };
    let host = std::fs::canonicalize(host).with_context(|| format!("mount source '{host}'"))?;
    Ok(MountSpec::host(host.display().to_string(), *sandbox, ro))
}

fn size_class(s: Option<String>) -> anyhow::Result<Option<SizeClass>> {
    s.map(|s| s.parse::<SizeClass>().map_err(|e| anyhow::anyhow!(e))).transpose()
}

/// `--idle-timeout`: a duration (`30m`, `2h`), or `0`/`off` for never.
fn idle_secs(s: &str) -> anyhow::Result<u64> {
    if matches!(s.trim(), "0" | "off" | "never") {
        return Ok(0);
    }
    Ok(super::parse_duration(s)?.ceil() as u64)
}

pub fn create(c: &Client, f: Format, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let req = CreateSandboxRequest {
        name: a.name,
        sandbox_type: a.sandbox_type,
        image: a.image,
        backend_type: a.backend,
        size_class: size_class(a.size_class)?,
        ttl_seconds: if a.no_ttl { None } else { a.ttl_seconds },
        start_command: a.start_command,
        working_directory: a.workdir,
        open_ports: (!a.open_ports.is_empty()).then_some(a.open_ports),
        env_vars: Some(parse_env(&a.env)?).filter(|e| !e.is_empty()),
        setup_hooks: (!a.setup_hooks.is_empty()).then_some(a.setup_hooks),
        mounts: Some(
            a.mounts
                .iter()
                .map(|m| {
                    let mut m = parse_mount(m)?;
                    if m.s3_prefix.is_some() {
                        m.s3_sync_seconds = a.s3_sync_seconds;
                    }
                    Ok(m)
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
        .filter(|m| !m.is_empty()),
        no_start: a.no_start.then_some(true),
        network: a.network,
        allow_out: (!a.allow_out.is_empty()).then_some(a.allow_out),
        deny_out: (!a.deny_out.is_empty()).then_some(a.deny_out),
        idle_timeout_seconds: a.idle_timeout.as_deref().map(idle_secs).transpose()?,
        auto_resume: a.auto_resume.then_some(true),
        disk_size_gb: a.disk_size_gb,
        ..Default::default()
    };
    let info = c.create(&req)?;
    match f {
        Format::Json => output::json(&info),
        Format::Text => println!("Created {} ({}) — {}", info.id, info.name, info.status),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(c: &Client, f: Format, all: bool, status: Option<String>) -> anyhow::Result<ExitCode> {
    let filter = status.as_deref().or(if all { None } else { Some("running") });
    let items = c.list(filter)?;
    match f {
        Format::Json => output::json(&items),
        Format::Text => {
            if items.is_empty() {
                println!("No {}sandboxes.", if all || status.is_some() { "" } else { "running " });
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = items.iter().map(row).collect();
            output::table(&["ID", "NAME", "STATUS", "SIZE", "UPTIME", "CPU", "MEMORY", "TTL LEFT"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(i: &SandboxInfo) -> Vec<String> {
    let running = i.status == SandboxStatus::Running;
    vec![
        i.id.clone(),
        i.name.clone(),
        i.status.to_string(),
        i.size_class.to_string(),
        if running { human_duration(i.uptime.secs) } else { "-".into() },
        if running { format!("{:.1}%", i.cpu_usage) } else { "-".into() },
        if running { human_bytes(i.memory_usage) } else { "-".into() },
        i.ttl_remaining_seconds.map(human_duration).unwrap_or_else(|| "-".into()),
    ]
}

pub fn get(c: &Client, f: Format, id: &str) -> anyhow::Result<ExitCode> {
    let i = c.get_sandbox(id)?;
    match f {
        Format::Json => output::json(&i),
        Format::Text => print_info(&i),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_info(i: &SandboxInfo) {
    let l = i.size_class.limits();
    let mut kv: Vec<(&str, String)> = vec![
        ("id", i.id.clone()),
        ("name", i.name.clone()),
        ("status", i.status.to_string()),
        ("size", format!("{} ({} vCPU, {})", i.size_class, l.millicpu as f64 / 1000.0, human_bytes(l.memory_bytes))),
        ("backend", i.backend_type.clone()),
        ("image", i.image.clone()),
        ("uptime", human_duration(i.uptime.secs)),
        ("cpu", format!("{:.1}%", i.cpu_usage)),
        ("memory", human_bytes(i.memory_usage)),
        (
            "disk",
            match (i.disk_usage, i.disk_limit) {
                (Some(used), Some(limit)) => format!("{} of {}", human_bytes(used), human_bytes(limit)),
                _ => format!("{} GiB (not limited on this host)", i.disk_size_gb),
            },
        ),
        ("workdir", i.working_directory.clone()),
    ];
    kv.push((
        "network",
        match &i.guest_ip {
            Some(ip) => format!("{} ({ip})", i.network),
            None => i.network.clone(),
        },
    ));
    if !i.allow_out.is_empty() {
        kv.push(("allow out", i.allow_out.join(", ")));
    }
    if !i.deny_out.is_empty() {
        kv.push(("deny out", i.deny_out.join(", ")));
    }
    if let Some(t) = i.ttl_seconds {
        kv.push(("ttl", format!("{t}s ({}s left)", i.ttl_remaining_seconds.unwrap_or(0))));
    }
    if let Some(c) = &i.start_command {
        kv.push(("start command", c.clone()));
    }
    for m in &i.mounts {
        kv.push(("mount", format!("{} -> {}{}", m.host_path, m.sandbox_path, if m.read_only { " (ro)" } else { "" })));
    }
    if !i.open_ports.is_empty() {
        kv.push(("ports", i.open_ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")));
    }
    for u in &i.urls {
        kv.push(("url", format!("{} -> :{}", u.url, u.port)));
    }
    if let Some(e) = &i.error_message {
        kv.push(("error", e.clone()));
    }
    for (k, v) in kv {
        println!("{k:<14} {v}");
    }
}

pub fn action(c: &Client, f: Format, id: &str, action: &str) -> anyhow::Result<ExitCode> {
    let info = c.action(id, action)?;
    match f {
        Format::Json => output::json(&StatusResponse { id: info.id, status: info.status }),
        Format::Text => println!("{} {}", info.id, info.status),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(c: &Client, f: Format, ids: &[String], yes: bool) -> anyhow::Result<ExitCode> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to delete without confirmation: pass -y (stdin is not a terminal)");
        }
        eprint!("Delete {} and all its files? [y/N] ", ids.join(", "));
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Nothing deleted.");
            return Ok(ExitCode::from(1));
        }
    }
    let mut results = Vec::new();
    for id in ids {
        let r = c.delete_sandbox(id)?;
        if f == Format::Text {
            println!("Deleted {}", r["id"].as_str().unwrap_or(id));
        }
        results.push(r);
    }
    if f == Format::Json {
        output::json(&if results.len() == 1 { results.remove(0) } else { serde_json::Value::Array(results) });
    }
    Ok(ExitCode::SUCCESS)
}

pub fn update(c: &Client, f: Format, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let req = UpdateSandboxRequest {
        name: a.name,
        start_command: a.start_command,
        working_directory: a.workdir,
        env_vars: Some(parse_env(&a.env)?).filter(|e| !e.is_empty()),
        open_ports: (!a.open_ports.is_empty()).then_some(a.open_ports),
        ttl_seconds: a.ttl_seconds,
        clear_ttl: a.no_ttl.then_some(true),
        size_class: size_class(a.size_class)?,
        idle_timeout_seconds: a.idle_timeout.as_deref().map(idle_secs).transpose()?,
        auto_resume: a.auto_resume,
        disk_size_gb: a.disk_size_gb,
    };
    let info = c.update(&a.id, &req)?;
    match f {
        Format::Json => output::json(&info),
        Format::Text => print_info(&info),
    }
    Ok(ExitCode::SUCCESS)
}
