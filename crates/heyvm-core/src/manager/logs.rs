//! The sandbox log: JSON lines in `sandboxes/<id>/logs.jsonl`, a file only
//! the host can reach. The daemon writes lifecycle events and setup hooks
//! itself, and copies in what the agent sends (start command output) after
//! bounding it: that part comes from inside the sandbox.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
        if let Err(e) = append_line(&path, &line) {
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

/// Longest message kept from a line the agent sent.
const MAX_AGENT_LINE: usize = 16 * 1024;

/// Bounds a line that came from the agent: its message to
/// [`MAX_AGENT_LINE`] bytes, its source and level to the known words.
pub(crate) fn sanitize(mut line: LogLine) -> LogLine {
    if line.message.len() > MAX_AGENT_LINE {
        let mut end = MAX_AGENT_LINE;
        while !line.message.is_char_boundary(end) {
            end -= 1;
        }
        line.message.truncate(end);
    }
    if !matches!(line.source.as_str(), "stdout" | "stderr" | "system") {
        line.source = "stdout".into();
    }
    if !matches!(line.level.as_str(), "info" | "warn" | "error") {
        line.level = heyvm_protocol::log_level(&line.message).into();
    }
    line
}

/// Appends one line. `O_NOFOLLOW`: the log file is never a link.
pub(crate) fn append_line(path: &Path, line: &LogLine) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    f.write_all(&line.to_jsonl())
}
