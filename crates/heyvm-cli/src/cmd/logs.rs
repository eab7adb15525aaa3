use std::process::ExitCode;

use heyvm_client::Client;
use heyvm_types::LogEntry;

use crate::output::{self, Format};

pub struct Query {
    pub source: Option<String>,
    pub level: Option<String>,
    pub limit: usize,
    pub offset: Option<usize>,
}

fn filters(q: &Query) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(s) = &q.source {
        v.push(("source", s.clone()));
    }
    if let Some(l) = &q.level {
        v.push(("level", l.clone()));
    }
    v
}

fn print_line(l: &LogEntry) {
    println!("{} [{}] {}", l.timestamp, l.source, l.message);
}

pub fn show(c: &Client, f: Format, id: &str, q: Query) -> anyhow::Result<ExitCode> {
    let mut params = vec![("limit", q.limit.to_string())];
    match q.offset {
        Some(o) => params.push(("offset", o.to_string())),
        None => params.push(("tail", "true".into())),
    }
    params.extend(filters(&q));
    let r = c.logs(id, &params)?;
    match f {
        Format::Json => output::json(&r),
        Format::Text => r.logs.iter().for_each(print_line),
    }
    Ok(ExitCode::SUCCESS)
}

/// The last `limit` entries, then new ones as they arrive. JSON mode prints
/// one entry per line.
pub fn follow(c: &Client, f: Format, id: &str, q: Query) -> anyhow::Result<ExitCode> {
    let mut params = vec![("backlog", q.limit.to_string())];
    params.extend(filters(&q));
    c.follow_logs(id, &params, |name, data| {
        if name != "log" {
            return name != "end";
        }
        match f {
            Format::Json => println!("{data}"),
            Format::Text => {
                if let Ok(l) = serde_json::from_value::<LogEntry>(data.clone()) {
                    print_line(&l);
                }
            }
        }
        true
    })?;
    Ok(ExitCode::SUCCESS)
}
