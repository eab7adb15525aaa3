use std::process::ExitCode;

use heyvm_client::Client;
use heyvm_types::MountSpec;

use super::sandbox::parse_mount;
use crate::output::{self, Format};

pub fn run(c: &Client, f: Format, id: &str, add: Option<String>, remove: Option<String>) -> anyhow::Result<ExitCode> {
    let (mounts, note) = if let Some(spec) = add {
        let r = c.add_mount(id, &parse_mount(&spec)?)?;
        (serde_json::from_value::<Vec<MountSpec>>(r["mounts"].clone())?, r["applies_on_restart"].as_bool().unwrap_or(false))
    } else if let Some(p) = remove {
        let r = c.remove_mount(id, &p)?;
        (serde_json::from_value::<Vec<MountSpec>>(r["mounts"].clone())?, r["applies_on_restart"].as_bool().unwrap_or(false))
    } else {
        (c.mounts(id)?, false)
    };
    match f {
        Format::Json => output::json(&mounts),
        Format::Text => {
            let rows: Vec<Vec<String>> = mounts
                .iter()
                .map(|m| vec![m.sandbox_path.clone(), m.host_path.clone(), if m.read_only { "ro" } else { "rw" }.into()])
                .collect();
            output::table(&["SANDBOX PATH", "HOST PATH", "MODE"], &rows);
            if note {
                println!("(the change applies when the sandbox next starts or restarts)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
