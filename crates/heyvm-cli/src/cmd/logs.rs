use std::process::ExitCode;

use heyvm_client::Client;

use crate::output::{self, Format};

pub fn show(c: &Client, f: Format, id: &str, source: Option<String>, level: Option<String>, limit: usize, offset: Option<usize>) -> anyhow::Result<ExitCode> {
    let mut q = vec![("limit", limit.to_string())];
    match offset {
        Some(o) => q.push(("offset", o.to_string())),
        None => q.push(("tail", "true".into())),
    }
    if let Some(s) = source {
        q.push(("source", s));
    }
    if let Some(l) = level {
        q.push(("level", l));
    }
    let r = c.logs(id, &q)?;
    match f {
        Format::Json => output::json(&r),
        Format::Text => {
            for l in &r.logs {
                println!("{} [{}] {}", l.timestamp, l.source, l.message);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
