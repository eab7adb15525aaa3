//! The sandbox's seccomp filter: a default profile written for heyvm,
//! handed to bwrap (`--seccomp FD`), which installs it (with
//! `no_new_privs`) right before the agent starts, so it binds every process
//! of the sandbox. Like Docker's default it refuses what a container has no
//! business doing with the host's shared kernel; unlike a plain allow-list
//! it keeps ordinary software (package managers, compilers, browsers
//! without their own sandbox) working.
//!
//! Refused with `EPERM` unless noted:
//! * kernel modules, kexec, reboot, swap, accounting, clocks, `syslog`,
//!   `iopl`/`ioperm`: host-wide state a sandbox must never change;
//! * keyrings (`add_key`, `keyctl`, `request_key`): not namespaced;
//! * `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`: large kernel
//!   attack surface, the source of many container escapes;
//! * `open_by_handle_at`/`name_to_handle_at`: reach files outside the
//!   sandbox's mounts by inode handle (the "shocker" escape);
//! * every mount API and `pivot_root`, `setns`, `unshare`, and `clone` with
//!   namespace flags: the sandbox's mounts and namespaces are fixed at
//!   launch (`clone3` gets `ENOSYS`: its flags cannot be inspected, and libc
//!   falls back to `clone`);
//! * setuid/setgid bits: `chmod`-family calls and file-creating calls whose
//!   mode carries `S_ISUID` or `S_ISGID`. Root inside may write to host
//!   directories (mounts) whose owner can be host root; a setuid-root file
//!   planted there would give any host user root. (`openat2` gets `ENOSYS`:
//!   its mode sits in a struct the filter cannot read; libc falls back.)
//! * foreign syscall ABIs (x32, 32-bit): they would bypass the checks.

use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K
const ALLOW: u32 = 0x7fff_0000;
const ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_BIT: u32 = 0x4000_0000;
const SUID_SGID: u32 = 0o6000;
/// `O_CREAT | __O_TMPFILE`: the open flags under which the mode is used.
const CREATING: u32 = 0o100 | 0o20000000;
const NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | 0x80) as u32; // CLONE_NEWTIME

#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Offset of the low 32 bits of syscall argument `i` in `seccomp_data`.
fn arg(i: u32) -> u32 {
    16 + 8 * i
}

const NR: u32 = 0;
const ARCH: u32 = 4;

#[cfg(target_arch = "x86_64")]
fn denied() -> Vec<i64> {
    use libc::*;
    vec![
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_reboot,
        SYS_swapon,
        SYS_swapoff,
        SYS_acct,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_syslog,
        SYS_iopl,
        SYS_ioperm,
        SYS_add_key,
        SYS_keyctl,
        SYS_request_key,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_lookup_dcookie,
        SYS_quotactl,
        SYS_fanotify_init,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_move_mount,
        SYS_open_tree,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
        SYS_mount_setattr,
        SYS_setns,
        SYS_unshare,
        SYS_vhangup,
        SYS_uselib,
        SYS_ustat,
        SYS_sysfs,
    ]
}

/// Syscalls whose argument `mode` must not carry setuid/setgid bits, with
/// the `flags` argument that says whether the mode is used at all.
#[cfg(target_arch = "x86_64")]
fn mode_checked() -> Vec<(i64, u32, Option<u32>)> {
    use libc::*;
    vec![
        (SYS_chmod, 1, None),
        (SYS_fchmod, 1, None),
        (SYS_fchmodat, 2, None),
        (452, 2, None), // fchmodat2
        (SYS_creat, 1, None),
        (SYS_mkdir, 1, None),
        (SYS_mkdirat, 2, None),
        (SYS_mknod, 1, None),
        (SYS_mknodat, 2, None),
        (SYS_open, 2, Some(1)),
        (SYS_openat, 3, Some(2)),
    ]
}

/// The filter program, or None on architectures without a profile.
fn program() -> Option<Vec<Insn>> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let eperm = ERRNO | libc::EPERM as u32;
        let enosys = ERRNO | libc::ENOSYS as u32;
        let mut p = vec![
            stmt(LD_ABS, ARCH),
            jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
            stmt(RET, eperm),
            stmt(LD_ABS, NR),
            jump(JGE, X32_BIT, 0, 1),
            stmt(RET, eperm),
        ];
        for nr in denied() {
            p.push(jump(JEQ, nr as u32, 0, 1));
            p.push(stmt(RET, eperm));
        }
        for nr in [libc::SYS_clone3, libc::SYS_openat2] {
            p.push(jump(JEQ, nr as u32, 0, 1));
            p.push(stmt(RET, enosys));
        }
        // clone(flags, ...): no new namespaces.
        p.extend([
            jump(JEQ, libc::SYS_clone as u32, 0, 4),
            stmt(LD_ABS, arg(0)),
            jump(JSET, NS_FLAGS, 0, 1),
            stmt(RET, eperm),
            stmt(RET, ALLOW),
        ]);
        for (nr, mode, flags) in mode_checked() {
            match flags {
                None => p.extend([
                    jump(JEQ, nr as u32, 0, 4),
                    stmt(LD_ABS, arg(mode)),
                    jump(JSET, SUID_SGID, 0, 1),
                    stmt(RET, eperm),
                    stmt(RET, ALLOW),
                ]),
                Some(f) => p.extend([
                    jump(JEQ, nr as u32, 0, 7),
                    stmt(LD_ABS, arg(f)),
                    jump(JSET, CREATING, 1, 0),
                    stmt(RET, ALLOW),
                    stmt(LD_ABS, arg(mode)),
                    jump(JSET, SUID_SGID, 0, 1),
                    stmt(RET, eperm),
                    stmt(RET, ALLOW),
                ]),
            }
        }
        p.push(stmt(RET, ALLOW));
        Some(p)
    }
}

/// The compiled filter in a sealed-size memfd, positioned at its start and
/// inheritable (bwrap reads it by descriptor number).
pub fn filter_fd() -> std::io::Result<Option<OwnedFd>> {
    let Some(prog) = program() else { return Ok(None) };
    let name = c"heyvm-seccomp";
    // SAFETY: memfd_create with a valid name; no CLOEXEC on purpose.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(fd);
    let bytes: Vec<u8> =
        prog.iter().flat_map(|i| [i.code.to_ne_bytes().to_vec(), vec![i.jt, i.jf], i.k.to_ne_bytes().to_vec()].concat()).collect();
    f.write_all(&bytes)?;
    f.rewind()?;
    let fd: OwnedFd = f.into();
    debug_assert!(fd.as_raw_fd() > 2);
    Ok(Some(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_stay_in_range_and_the_program_ends_in_allow() {
        let Some(p) = program() else { return };
        assert!(p.len() < 4096, "BPF programs are limited to 4096 instructions");
        for (i, insn) in p.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                assert!(i + 1 + (insn.jt.max(insn.jf) as usize) < p.len(), "jump out of range at {i}");
            }
        }
        assert_eq!(p.last().map(|i| (i.code, i.k)), Some((RET, ALLOW)));
    }

    /// Runs the program on one syscall (enough of classic BPF for ours).
    fn run(p: &[Insn], nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_ABS => acc = u32::from_ne_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap()),
                RET => return i.k,
                JEQ | JGE | JSET => {
                    let hit = match i.code {
                        JEQ => acc == i.k,
                        JGE => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn refuses_what_it_should_and_allows_the_rest() {
        use libc::*;
        let p = program().unwrap();
        let eperm = ERRNO | EPERM as u32;
        let creat = (O_CREAT | O_WRONLY) as u64;
        for (nr, args, want) in [
            (SYS_openat, [0, 0, creat, 0o4755, 0, 0], eperm),
            (SYS_openat, [0, 0, creat, 0o644, 0, 0], ALLOW),
            (SYS_openat, [0, 0, O_RDONLY as u64, 0o7777, 0, 0], ALLOW),
            (SYS_open, [0, creat, 0o2755, 0, 0, 0], eperm),
            (SYS_chmod, [0, 0o4755, 0, 0, 0, 0], eperm),
            (SYS_fchmodat, [0, 0, 0o755, 0, 0, 0], ALLOW),
            (SYS_mkdirat, [0, 0, 0o2775, 0, 0, 0], eperm),
            (SYS_mkdir, [0, 0o755, 0, 0, 0, 0], ALLOW),
            (SYS_unshare, [CLONE_NEWUSER as u64, 0, 0, 0, 0, 0], eperm),
            (SYS_clone, [CLONE_NEWUSER as u64, 0, 0, 0, 0, 0], eperm),
            (SYS_clone, [(CLONE_VM | CLONE_THREAD) as u64, 0, 0, 0, 0, 0], ALLOW),
            (SYS_clone3, [0; 6], ERRNO | ENOSYS as u32),
            (SYS_mount, [0; 6], eperm),
            (SYS_write, [1, 0, 5, 0, 0, 0], ALLOW),
            (SYS_execve, [0; 6], ALLOW),
            (0x4000_0001, [0; 6], eperm),
        ] {
            assert_eq!(run(&p, nr, args), want, "syscall {nr} {args:?}");
        }
    }
}
