//! The sandbox log as the agent keeps it: lines of the start command (and
//! the agent's own notes) queue here until the host's log subscription
//! (`Request::Logs`) takes them. Nothing is written to a file the daemon
//! reads: the daemon stores what arrives over the agent stream.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use heyvm_protocol::LogLine;

/// Longer lines are split so a runaway line cannot grow one entry without
/// bound.
pub const MAX_LINE: usize = 16 * 1024;
/// Lines kept while no host listens; the oldest go first beyond this.
const MAX_QUEUED: usize = 10_000;

#[derive(Default)]
pub struct LogSink {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    lines: VecDeque<LogLine>,
    dropped: u64,
    /// Bumped by each new subscription; an older subscriber sees the change
    /// and leaves.
    generation: u64,
}

impl LogSink {
    pub fn append(&self, source: &str, message: &str) {
        let mut start = 0;
        let bytes = message.as_bytes();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut end = (start + MAX_LINE).min(bytes.len());
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            if st.lines.len() >= MAX_QUEUED {
                st.lines.pop_front();
                st.dropped += 1;
            }
            st.lines.push_back(LogLine::new(source, &message[start..end]));
            if end == bytes.len() {
                break;
            }
            start = end;
        }
        drop(st);
        self.ready.notify_all();
    }

    pub fn system(&self, message: &str) {
        self.append("system", message);
    }

    /// Starts a subscription; returns its generation.
    pub fn subscribe(&self) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.generation += 1;
        let g = st.generation;
        drop(st);
        self.ready.notify_all();
        g
    }

    /// Waits for the next line for subscription `generation`; `None` once a
    /// newer subscription exists. The line stays queued until [`Self::pop`],
    /// so a line whose send failed goes to the next subscriber.
    pub fn peek(&self, generation: u64) -> Option<LogLine> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.generation != generation {
                return None;
            }
            if st.dropped > 0 {
                let n = std::mem::take(&mut st.dropped);
                st.lines.push_front(LogLine::new("system", &format!("{n} log lines were dropped while nobody was reading")));
            }
            if let Some(l) = st.lines.front() {
                return Some(l.clone());
            }
            st = self.ready.wait_timeout(st, Duration::from_secs(60)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn pop(&self, generation: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.generation == generation {
            st.lines.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_long_lines_and_bounds_the_queue() {
        let sink = LogSink::default();
        sink.append("stdout", &"x".repeat(MAX_LINE * 2 + 5));
        let g = sink.subscribe();
        for want in [MAX_LINE, MAX_LINE, 5] {
            assert_eq!(sink.peek(g).unwrap().message.len(), want);
            sink.pop(g);
        }
        for i in 0..MAX_QUEUED + 3 {
            sink.append("stdout", &i.to_string());
        }
        let first = sink.peek(g).unwrap();
        assert!(first.message.contains("3 log lines were dropped"), "{first:?}");
        sink.pop(g);
        assert_eq!(sink.peek(g).unwrap().message, "3");
        assert!(sink.peek(sink.subscribe() - 1).is_none(), "an older subscription must end");
    }
}
