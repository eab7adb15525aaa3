//! Where a lifecycle operation's time goes, at debug level
//! (`HEYVM_LOG=heyvm_core=debug`): microseconds since the start at each
//! named step, logged once at the end.

use std::time::Instant;

pub(crate) struct Phases {
    t0: Instant,
    marks: Vec<(&'static str, u64)>,
}

impl Phases {
    pub fn start() -> Self {
        Phases { t0: Instant::now(), marks: Vec::new() }
    }

    pub fn mark(&mut self, name: &'static str) {
        self.marks.push((name, self.t0.elapsed().as_micros() as u64));
    }

    /// Logs the steps of `what` on sandbox `id`.
    pub fn log(&self, id: &str, what: &'static str) {
        tracing::debug!(sandbox = %id, phases = ?self.marks, "{what} phases (µs since start)");
    }
}
