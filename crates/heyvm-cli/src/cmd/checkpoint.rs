//! `heyvm checkpoint`, `checkpoints`, `restore`, `fork` and `backends`.

use std::process::ExitCode;

use heyvm_client::Client;
use heyvm_types::{CheckpointInfo, ForkRequest, RestoreResponse};

use crate::output::{self, human_bytes, Format};

pub fn create(c: &Client, f: Format, id: &str, name: Option<String>) -> anyhow::Result<ExitCode> {
    let ck = c.checkpoint(id, name)?;
    match f {
        Format::Json => output::json(&ck),
        Format::Text => println!("Checkpoint {} of {id} ({}, {})", ck.name, human_bytes(ck.size_bytes), what(&ck)),
    }
    Ok(ExitCode::SUCCESS)
}

fn what(ck: &CheckpointInfo) -> &'static str {
    if ck.memory {
        "memory + disks"
    } else {
        "files only"
    }
}

pub fn list(c: &Client, f: Format, id: &str) -> anyhow::Result<ExitCode> {
    let items = c.checkpoints(id)?;
    match f {
        Format::Json => output::json(&items),
        Format::Text => {
            let rows: Vec<Vec<String>> =
                items.iter().map(|ck| vec![ck.name.clone(), ck.created_at.clone(), human_bytes(ck.size_bytes), what(ck).into()]).collect();
            output::table(&["NAME", "CREATED", "SIZE", "CONTENT"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(c: &Client, f: Format, id: &str, name: &str) -> anyhow::Result<ExitCode> {
    let r = c.delete_checkpoint(id, name)?;
    match f {
        Format::Json => output::json(&r),
        Format::Text => println!("Deleted checkpoint {name} of {id}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_restored(f: Format, verb: &str, r: &RestoreResponse) {
    match f {
        Format::Json => output::json(r),
        Format::Text => {
            let fate = match r.processes {
                heyvm_types::ProcessFate::Kept => "processes kept",
                heyvm_types::ProcessFate::Restarted => "files restored, processes restarted",
            };
            println!("{verb} {} ({}) from checkpoint {}: {fate}", r.sandbox.name, r.sandbox.id, r.checkpoint.name);
        }
    }
}

pub fn restore(c: &Client, f: Format, id: &str, name: Option<String>) -> anyhow::Result<ExitCode> {
    print_restored(f, "Restored", &c.restore(id, name)?);
    Ok(ExitCode::SUCCESS)
}

pub fn fork(c: &Client, f: Format, id: &str, from: Option<String>, name: Option<String>) -> anyhow::Result<ExitCode> {
    print_restored(f, "Forked", &c.fork(id, &ForkRequest { checkpoint: from, name })?);
    Ok(ExitCode::SUCCESS)
}

pub fn backends(c: &Client, f: Format) -> anyhow::Result<ExitCode> {
    let items = c.backends()?;
    match f {
        Format::Json => output::json(&items),
        Format::Text => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|b| {
                    vec![
                        b.name.clone(),
                        if b.available { "yes" } else { "no" }.into(),
                        b.accel.clone().unwrap_or_else(|| "-".into()),
                        b.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(&["BACKEND", "AVAILABLE", "ACCEL", "NOTE"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
