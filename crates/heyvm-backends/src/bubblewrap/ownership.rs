//! The sandbox's writable layers (its `/`, the copy-on-write upper layers
//! and `/workspace`) belong to its uid range on the host. They are chowned
//! into it once: at the first launch of a new sandbox, and at the first
//! launch of one made before ranges existed (its files were owned by host
//! root and host ids equal to the inside ids). A marker in the sandbox's
//! directory, which the sandbox cannot see, records the range done; the
//! shift itself is idempotent, so an interrupted one is simply redone.

use std::fs;

use heyvm_core::id_ranges::{shift_tree, IdRange};
use heyvm_core::LaunchSpec;

use crate::layout::OverlayPaths;

pub(super) fn ensure(spec: &LaunchSpec, range: &IdRange) -> std::io::Result<()> {
    let p = &spec.paths;
    let marker = p.ids_marker();
    let want = marker_text(range);
    if fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut files = 0;
    for d in [p.root(), p.upper(), p.workspace()] {
        if d.is_dir() {
            files += shift_tree(&d, range)?;
        }
    }
    let tmp = marker.with_extension("tmp");
    fs::write(&tmp, &want)?;
    fs::rename(&tmp, &marker)?;
    tracing::info!(sandbox = %spec.id, base = range.base, files, ms = started.elapsed().as_millis() as u64, "layers owned by the sandbox's uid range");
    Ok(())
}

/// A fork's files, copied from a sandbox with range `from`, move into the
/// fork's own range `to` (inside ids kept) and the marker says so. Without
/// a range yet (allocated at the fork's first launch) they move back to
/// their inside ids, which that launch's [`ensure`] shifts into it.
pub(super) fn moved(spec: &LaunchSpec, from: &IdRange, to: Option<&IdRange>) -> std::io::Result<()> {
    let p = &spec.paths;
    let inside = IdRange { base: 0, size: from.size };
    let target = to.unwrap_or(&inside);
    if target == from {
        return Ok(());
    }
    for d in [p.root(), p.upper(), p.workspace()] {
        if d.is_dir() {
            heyvm_core::id_ranges::move_tree(&d, from, target)?;
        }
    }
    match to {
        Some(r) => {
            let tmp = p.ids_marker().with_extension("tmp");
            fs::write(&tmp, marker_text(r))?;
            fs::rename(&tmp, p.ids_marker())
        }
        None => match fs::remove_file(p.ids_marker()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

fn marker_text(range: &IdRange) -> String {
    format!("{} {}\n", range.base, range.size)
}
