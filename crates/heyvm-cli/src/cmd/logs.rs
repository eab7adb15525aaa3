use std::process::ExitCode;

use heyvm_client::Client;
use heyvm_types::LogEntry;

use crate::output::{self, Format};

pub struct Query {
    pub source: Option<String>,
    pub level: Option<String>,
    pub limit: usize,
    pub offset: Option<usize>,
    /// Seconds since the Unix epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
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
    println!("{} [{}] {}", crate::localtime::format(l.timestamp), l.source, l.message);
}

fn in_window(q: &Query, l: &LogEntry) -> bool {
    q.since.is_none_or(|t| l.timestamp >= t) && q.until.is_none_or(|t| l.timestamp <= t)
}

pub fn show(c: &Client, f: Format, id: &str, q: Query) -> anyhow::Result<ExitCode> {
    let mut params = vec![("limit", q.limit.to_string())];
    match q.offset {
        Some(o) => params.push(("offset", o.to_string())),
        None => params.push(("tail", "true".into())),
    }
    params.extend(filters(&q));
    if let Some(t) = q.since {
        params.push(("since", t.to_string()));
    }
    if let Some(t) = q.until {
        params.push(("until", t.to_string()));
    }
    let r = c.logs(id, &params)?;
    match f {
        Format::Json => output::json(&r),
        Format::Text => r.logs.iter().for_each(print_line),
    }
    Ok(ExitCode::SUCCESS)
}

/// The last `limit` entries, then new ones as they arrive. JSON mode prints
/// one entry per line. `--since`/`--until` are applied here (the stream has
/// no time filter); past `--until` the follow ends.
pub fn follow(c: &Client, f: Format, id: &str, q: Query) -> anyhow::Result<ExitCode> {
    let mut params = vec![("backlog", q.limit.to_string())];
    params.extend(filters(&q));
    c.follow_logs(id, &params, |name, data| {
        if name != "log" {
            return name != "end";
        }
        let Ok(l) = serde_json::from_value::<LogEntry>(data.clone()) else { return true };
        if q.until.is_some_and(|t| l.timestamp > t) {
            return false;
        }
        if in_window(&q, &l) {
            match f {
                Format::Json => println!("{data}"),
                Format::Text => print_line(&l),
            }
        }
        true
    })?;
    Ok(ExitCode::SUCCESS)
}
