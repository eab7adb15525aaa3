//! The range of host ids a sandbox owns, as the backends see it. A leaf:
//! allocating ranges ([`crate::id_ranges`]) needs the store, describing one
//! (part of every [`crate::backend::LaunchSpec`]) needs nothing.

/// A sandbox's ids: inside id `n` is host id `base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub base: u32,
    pub size: u32,
}

impl IdRange {
    /// The host id of inside id `inside`, if the range has it.
    pub fn host(&self, inside: u32) -> Option<u32> {
        (inside < self.size).then(|| self.base + inside)
    }

    pub fn contains(&self, host: u32) -> bool {
        host >= self.base && host - self.base < self.size
    }

    /// The `uid_map`/`gid_map` line.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.size)
    }
}
