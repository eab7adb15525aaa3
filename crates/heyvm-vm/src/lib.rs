//! The microVM tier's host side: guest kernel assets and initramfs (whose
//! init is the static `heyvm-agent`), QEMU command lines (`-M microvm`,
//! virtio-serial agent port, qcow2 overlays), the accelerator probe (KVM only
//! when a test boot succeeds, else TCG) and QMP.

pub mod assets;
pub mod backend;
pub mod cgroup;
pub mod confine;
pub mod cpio;
pub mod disk;
pub mod error;
pub mod image_disk;
pub mod image_prune;
pub mod initramfs;
pub mod launch;
pub mod modules;
pub mod net;
pub mod oom;
pub mod probe;
pub mod qemu;
pub mod qmp;
pub mod rootcap;
pub mod snapshot;
pub mod vmproc;
pub use backend::KvmBackend;
pub use error::{QmpError, VmError};
