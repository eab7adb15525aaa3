//! QEMU command lines for a heyvm microVM. One function turns a [`VmSpec`]
//! into argv; nothing here spawns processes, so the shape is unit-tested.
//!
//! Choices (measured on the reference machine, TCG): `-M microvm` with
//! virtio-mmio devices boots in about half the time of `q35` (no firmware,
//! no PCI enumeration); q35 stays available for hosts where microvm is
//! missing. TCG gets a 64 MiB translation buffer instead of QEMU's 1 GiB
//! default, which would otherwise be most of an idle VM's host memory.

use std::path::PathBuf;

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Microvm,
    Q35,
}

/// QEMU's id of the `i`th disk of [`VmSpec::disks`] (what QMP's
/// `block_resize` names).
pub fn drive_id(i: usize) -> String {
    format!("d{i}")
}

/// A disk the guest sees as virtio-blk; `serial` is how the guest init
/// finds it (`heyvm.root=serial:NAME`), independent of probe order.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub format: &'static str,
    pub serial: String,
    pub read_only: bool,
}

/// A host directory shared over virtio-9p under `tag`.
#[derive(Debug, Clone)]
pub struct Share {
    pub tag: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub machine: Machine,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line (the `heyvm.*` settings).
    pub cmdline: String,
    pub disks: Vec<Disk>,
    pub shares: Vec<Share>,
    /// Host paths QEMU sees read-only (bound read-only over themselves in
    /// its own mount namespace): read-only mounts that a writable share
    /// also shows, which the guest could otherwise write through it.
    pub read_only_binds: Vec<PathBuf>,
    /// Host end of the agent's virtio-serial port: a listening unix socket
    /// QEMU creates (in a directory only the host can reach).
    pub agent_socket: PathBuf,
    pub qmp_socket: PathBuf,
    /// The guest's serial console, appended to this file.
    pub console_log: PathBuf,
    /// A tap device (already created in the VM's network namespace).
    pub tap: Option<String>,
    pub mac: Option<String>,
    /// Start paused, loading a migration stream (a restore) from this
    /// inherited descriptor: QEMU may no longer be able to open the file.
    pub incoming_fd: Option<i32>,
    /// Drop to these ids once started ([`crate::confine`]).
    pub runas: Option<crate::confine::QemuUser>,
    /// Turn on QEMU's seccomp filter ([`crate::confine::SECCOMP`]).
    pub seccomp: bool,
}

/// The host's TSC frequency in kHz, for `tsc_early_khz=`: without it a TCG
/// guest calibrates against emulated timers and hangs a good share of boots.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

impl VmSpec {
    /// The full kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut c = String::from("console=ttyS0 reboot=t panic=-1 quiet loglevel=4 rdinit=/init 8250.nr_uarts=1");
        if self.machine == Machine::Microvm {
            // No PCI bus: skip the kernel's probe for one.
            c.push_str(" pci=off");
        }
        if self.accel == Accel::Tcg {
            if let Some(khz) = host_tsc_khz() {
                c.push_str(&format!(" tsc_early_khz={khz}"));
            }
        }
        if !self.cmdline.is_empty() {
            c.push(' ');
            c.push_str(&self.cmdline);
        }
        c
    }

    pub fn args(&self) -> Vec<String> {
        let (bus, mmio) = match self.machine {
            Machine::Microvm => ("device", true),
            Machine::Q35 => ("pci", false),
        };
        let dev = |kind: &str| format!("virtio-{kind}-{bus}");
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let machine = if mmio { "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on" } else { "q35" };
        let accel = match self.accel {
            Accel::Kvm => "kvm".to_string(),
            Accel::Tcg => "tcg,tb-size=64".to_string(),
        };
        push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-M", machine, "-accel", &accel]);
        let cpu = if self.accel == Accel::Kvm { "host" } else { "max" };
        push(&["-cpu", cpu, "-smp", &self.vcpus.to_string(), "-m", &format!("{}M", self.memory_mib)]);
        push(&["-kernel", &path(&self.kernel), "-initrd", &path(&self.initrd), "-append", &self.kernel_cmdline()]);
        push(&["-chardev", &format!("file,id=con,path={},append=on", path(&self.console_log)), "-serial", "chardev:con"]);
        push(&["-chardev", &format!("socket,id=agent,path={},server=on,wait=off", path(&self.agent_socket))]);
        push(&["-device", &dev("serial"), "-device", "virtserialport,chardev=agent,name=heyvm.agent"]);
        push(&["-qmp", &format!("unix:{},server=on,wait=off", path(&self.qmp_socket))]);
        push(&["-device", &dev("rng")]);
        for (i, d) in self.disks.iter().enumerate() {
            let ro = if d.read_only { ",read-only=on" } else { "" };
            let id = drive_id(i);
            // auto-read-only=off: -drive's default (on) opens an image
            // read-only while it has no writer (an incoming migration,
            // the end of an outgoing one) and reopens it by path when
            // writers come back, which QEMU, dropped to the sandbox's uid,
            // may not do ([`crate::confine`]).
            let drive =
                format!("id={id},file={},format={},if=none,cache=writeback,discard=unmap,auto-read-only=off{ro}", path(&d.path), d.format);
            push(&["-drive", &drive, "-device", &format!("{},drive={id},serial={}", dev("blk"), d.serial)]);
        }
        for (i, s) in self.shares.iter().enumerate() {
            let ro = if s.read_only { ",readonly=on" } else { "" };
            // mapped-xattr, not passthrough: the guest's owners, modes and
            // special files live in `user.virtfs.*` xattrs, host files are
            // plain 0644/0755 ones of QEMU's user. With passthrough, guest
            // root's `chmod 4755` made a setuid-root file on the host.
            let fsdev = format!("local,id=f{i},path={},security_model=mapped-xattr,fmode=0644,dmode=0755{ro}", path(&s.host_path));
            push(&["-fsdev", &fsdev, "-device", &format!("{},fsdev=f{i},mount_tag={}", dev("9p"), s.tag)]);
        }
        if let Some(tap) = &self.tap {
            push(&["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no")]);
            let mac = self.mac.as_deref().map(|m| format!(",mac={m}")).unwrap_or_default();
            push(&["-device", &format!("{},netdev=n0{mac}", dev("net"))]);
        }
        if let Some(fd) = self.incoming_fd {
            // Not `exec:cat FILE`: seccomp forbids QEMU to spawn.
            push(&["-incoming", &format!("fd:{fd}")]);
        }
        if let Some(u) = self.runas {
            push(&["-runas", &format!("{}:{}", u.uid, u.gid)]);
        }
        if self.seccomp {
            push(&["-sandbox", crate::confine::SECCOMP]);
        }
        a
    }
}

/// QEMU parses `,` inside option values as a separator; a path with a comma
/// must double it.
fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            machine: Machine::Microvm,
            accel: Accel::Tcg,
            vcpus: 1,
            memory_mib: 512,
            kernel: "/k/vmlinux".into(),
            initrd: "/k/init.cpio".into(),
            cmdline: "heyvm.root=serial:root".into(),
            disks: vec![Disk { path: "/s/a,b.qcow2".into(), format: "qcow2", serial: "root".into(), read_only: false }],
            shares: vec![Share { tag: "m0".into(), host_path: "/data".into(), read_only: true }],
            read_only_binds: vec![],
            agent_socket: "/s/run/agent".into(),
            qmp_socket: "/s/run/qmp".into(),
            console_log: "/s/console.log".into(),
            tap: None,
            mac: None,
            incoming_fd: None,
            runas: None,
            seccomp: false,
        }
    }

    #[test]
    fn microvm_tcg_command_line() {
        let a = spec().args().join(" ");
        assert!(a.contains("-M microvm,"));
        assert!(a.contains("-accel tcg,tb-size=64"));
        assert!(a.contains("-m 512M"));
        assert!(a.contains("file=/s/a,,b.qcow2,format=qcow2"), "{a}");
        assert!(a.contains("virtio-blk-device,drive=d0,serial=root"));
        assert!(a.contains("virtio-9p-device,fsdev=f0,mount_tag=m0"));
        assert!(a.contains("readonly=on"));
        assert!(a.contains("virtserialport,chardev=agent,name=heyvm.agent"));
        assert!(!a.contains("-incoming") && !a.contains("-runas") && !a.contains("-sandbox"));
    }

    #[test]
    fn q35_uses_pci_devices_and_kvm_host_cpu() {
        let mut s = spec();
        s.machine = Machine::Q35;
        s.accel = Accel::Kvm;
        s.incoming_fd = Some(7);
        s.runas = Some(crate::confine::QemuUser { uid: 1_000_065_536, gid: 1_000_065_536 });
        s.seccomp = true;
        let a = s.args().join(" ");
        assert!(a.contains("-M q35") && a.contains("virtio-blk-pci") && a.contains("-cpu host"));
        assert!(a.contains("-incoming fd:7"));
        assert!(a.contains("-runas 1000065536:1000065536"), "{a}");
        assert!(a.contains("-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"), "{a}");
        assert!(!s.kernel_cmdline().contains("tsc_early_khz"));
    }
}
