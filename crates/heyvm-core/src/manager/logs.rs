//! The sandbox log: JSON lines written by the agent (start command output)
//! and by the daemon (lifecycle events, setup hooks).

use std::io::{BufRead, BufReader, Write};

use heyvm_protocol::LogLine;
use heyvm_types::{LogEntry, LogsResponse};

use super::SandboxManager;
use crate::error::Result;
use crate::record::SandboxRecord;

pub const DEFAULT_LOG_LIMIT: usize = 100;
pub const MAX_LOG_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// Return the last `limit` matching entries instead of the first.
    pub tail: bool,
    pub source: Option<String>,
    pub level: Option<String>,
    /// Only entries at or after this time (seconds since the Unix epoch).
    pub since: Option<i64>,
    /// Only entries at or before this time (seconds since the Unix epoch).
    pub until: Option<i64>,
}

impl SandboxManager {
    pub fn append_log(&self, rec: &SandboxRecord, source: &str, message: &str) {
        self.write_log_line(rec, LogLine::new(source, message));
    }

    pub(crate) fn log_system(&self, rec: &SandboxRecord, message: &str) {
        self.append_log(rec, "system", message);
    }

    pub(crate) fn log_system_level(&self, rec: &SandboxRecord, level: &str, message: &str) {
        let mut line = LogLine::new("system", message);
        line.level = level.into();
        self.write_log_line(rec, line);
    }

    fn write_log_line(&self, rec: &SandboxRecord, line: LogLine) {
        let path = self.data.sandbox(&rec.id).log_file();
        let res = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| f.write_all(&line.to_jsonl()));
        if let Err(e) = res {
            tracing::warn!(sandbox = %rec.id, error = %e, "cannot append to sandbox log");
        }
    }

    pub fn logs(&self, key: &str, q: &LogQuery) -> Result<LogsResponse> {
        let rec = self.store.resolve(key)?;
        let limit = q.limit.unwrap_or(DEFAULT_LOG_LIMIT).min(MAX_LOG_LIMIT);
        let path = self.data.sandbox(&rec.id).log_file();
        let mut matching: Vec<LogEntry> = Vec::new();
        if let Ok(f) = std::fs::File::open(&path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Ok(l) = serde_json::from_str::<LogLine>(&line) else { continue };
                if q.source.as_deref().is_some_and(|s| s != l.source)
                    || q.level.as_deref().is_some_and(|s| s != l.level)
                    || q.since.is_some_and(|t| l.timestamp < t)
                    || q.until.is_some_and(|t| l.timestamp > t)
                {
                    continue;
                }
                matching.push(LogEntry { timestamp: l.timestamp, source: l.source, level: l.level, message: l.message });
            }
        }
        let total = matching.len();
        let offset = match (q.offset, q.tail) {
            (Some(o), _) => o.min(total),
            (None, true) => total.saturating_sub(limit),
            (None, false) => 0,
        };
        let logs = matching.into_iter().skip(offset).take(limit).collect();
        Ok(LogsResponse { logs, total, limit, offset })
    }
}
