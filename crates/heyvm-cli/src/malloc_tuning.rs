//! glibc malloc settings for a long-running, many-threaded process.
//!
//! With its defaults glibc keeps memory a daemon no longer uses:
//! - every thread that allocates may get its own arena (up to 8 per core),
//!   and freed memory stays in the arena it came from;
//! - the mmap threshold grows to the largest block freed so far (up to
//!   32 MiB), so after the first 256 KiB I/O buffer is freed, every later
//!   one comes from an arena instead of a fresh mapping, and is kept there.
//!
//! Under load, a 200 MB streamed upload (64 KiB to 400 KiB body chunks
//! decoded on whichever worker thread polls them) raised the daemon's peak
//! RSS by 80–105 MiB; with these settings it stays near its working set.
//! A fixed threshold sends big buffers to mmap and back to the kernel on
//! free; two arenas keep the threads from each hoarding their own.

/// Largest allocation served from an arena; larger ones are mapped.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// Arenas shared by all threads.
const ARENA_MAX: libc::c_int = 2;

/// Applies the settings. Call first thing in `main`, before any thread.
pub fn apply() {
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists. A refused setting leaves glibc's
    // default, which is still correct, only hungrier.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}
