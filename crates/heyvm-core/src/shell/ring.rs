//! Bounded, sequence-numbered output buffer of one shell session.

use std::collections::VecDeque;

/// Output chunks numbered from 1, oldest first, at most `cap` bytes.
#[derive(Debug)]
pub struct OutputRing {
    chunks: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    cap: usize,
    last_seq: u64,
}

/// What [`OutputRing::after`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Slice {
    pub chunks: Vec<(u64, Vec<u8>)>,
    /// Chunks after the requested sequence number that were already evicted.
    pub lost: u64,
    /// More chunks are available beyond `max_bytes`.
    pub more: bool,
}

impl OutputRing {
    pub fn new(cap: usize) -> Self {
        OutputRing { chunks: VecDeque::new(), bytes: 0, cap, last_seq: 0 }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Bytes held in chunks numbered above `seq`.
    pub fn bytes_after(&self, seq: u64) -> usize {
        self.chunks.iter().rev().take_while(|(s, _)| *s > seq).map(|(_, d)| d.len()).sum()
    }

    /// Appends a chunk, evicting the oldest ones beyond the bound (the newest
    /// chunk always stays, even when larger than the bound).
    pub fn push(&mut self, data: Vec<u8>) -> u64 {
        self.last_seq += 1;
        self.bytes += data.len();
        self.chunks.push_back((self.last_seq, data));
        while self.bytes > self.cap && self.chunks.len() > 1 {
            self.pop_front();
        }
        self.last_seq
    }

    /// Frees chunks up to and including `seq`: the client has them.
    pub fn discard_through(&mut self, seq: u64) {
        while self.chunks.front().is_some_and(|(s, _)| *s <= seq) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, d)) = self.chunks.pop_front() {
            self.bytes -= d.len();
        }
    }

    /// Chunks numbered above `seq`, up to about `max_bytes` (at least one).
    pub fn after(&self, seq: u64, max_bytes: usize) -> Slice {
        let first_held = self.chunks.front().map(|(s, _)| *s).unwrap_or(self.last_seq + 1);
        let lost = first_held.saturating_sub(seq + 1);
        let mut out = Slice { lost, ..Slice::default() };
        let mut size = 0;
        for (s, d) in self.chunks.iter().filter(|(s, _)| *s > seq) {
            if !out.chunks.is_empty() && size + d.len() > max_bytes {
                out.more = true;
                break;
            }
            size += d.len();
            out.chunks.push((*s, d.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_one_and_replays_after_a_seq() {
        let mut r = OutputRing::new(100);
        assert_eq!(r.push(b"a".to_vec()), 1);
        assert_eq!(r.push(b"b".to_vec()), 2);
        assert_eq!(r.push(b"c".to_vec()), 3);
        let s = r.after(1, 1000);
        assert_eq!(s.chunks, vec![(2, b"b".to_vec()), (3, b"c".to_vec())]);
        assert_eq!((s.lost, s.more), (0, false));
        assert!(r.after(3, 1000).chunks.is_empty());
    }

    #[test]
    fn evicts_oldest_beyond_the_bound_and_reports_the_gap() {
        let mut r = OutputRing::new(10);
        for _ in 0..5 {
            r.push(vec![b'x'; 4]);
        }
        // 20 bytes pushed, 8 kept: chunks 4 and 5.
        let s = r.after(0, 1000);
        assert_eq!(s.chunks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(s.lost, 3);
        assert_eq!(r.after(3, 1000).lost, 0);
        assert_eq!(r.bytes_after(4), 4);
    }

    #[test]
    fn pages_by_size_and_discards_acked() {
        let mut r = OutputRing::new(1000);
        for _ in 0..4 {
            r.push(vec![0; 100]);
        }
        let s = r.after(0, 250);
        assert_eq!((s.chunks.len(), s.more), (2, true));
        r.discard_through(2);
        let s = r.after(2, 1000);
        assert_eq!((s.chunks.len(), s.lost), (2, 0));
        assert_eq!(r.bytes_after(0), 200);
    }
}
