use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use heyvm_protocol::LogLine;

/// The sandbox log: JSON lines appended with O_APPEND, one write per line,
/// so the daemon can append to the same file concurrently.
pub struct LogFile {
    file: Mutex<File>,
}

/// Longer lines are split so a runaway line cannot grow one entry without
/// bound.
const MAX_LINE: usize = 16 * 1024;

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogFile { file: Mutex::new(file) })
    }

    pub fn append(&self, source: &str, message: &str) {
        let mut start = 0;
        let bytes = message.as_bytes();
        while start < bytes.len() || start == 0 {
            let mut end = (start + MAX_LINE).min(bytes.len());
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let line = LogLine::new(source, &message[start..end]).to_jsonl();
            if let Ok(mut f) = self.file.lock() {
                let _ = f.write_all(&line);
            }
            if end == bytes.len() {
                break;
            }
            start = end;
        }
    }

    pub fn system(&self, message: &str) {
        self.append("system", message);
    }
}
