//! OOM kills inside a VM. The guest kernel reports each one on the serial
//! console ("Out of memory: Killed process N (cmd)"), which QEMU writes to
//! the VM's console log; the manager compares the count before and after a
//! command, as it does with a cgroup's `oom_kill` counter. A guest can
//! print that text itself: it can only misreport its own commands.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MARKER: &[u8] = b"Out of memory: Killed process";
/// Only the log's tail is read, so a guest flooding its console cannot make
/// every usage query expensive.
const WINDOW: u64 = 1 << 20;

pub fn count(console_log: &Path) -> u64 {
    let Ok(mut f) = std::fs::File::open(console_log) else { return 0 };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(WINDOW))).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = f.take(WINDOW).read_to_end(&mut buf);
    buf.windows(MARKER.len()).filter(|w| *w == MARKER).count() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_kernel_oom_lines() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("console.log");
        assert_eq!(super::count(&p), 0);
        std::fs::write(
            &p,
            "boot\n[ 5.1] Out of memory: Killed process 77 (python3) total-vm:1kB\nok\n[ 9.0] Out of memory: Killed process 80 (x)\n",
        )
        .unwrap();
        assert_eq!(super::count(&p), 2);
    }
}
