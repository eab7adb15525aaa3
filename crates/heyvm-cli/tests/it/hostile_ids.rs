//! Unprivileged identity: each sandbox runs in a user namespace mapping its
//! own recorded range of 65,536 host ids (root inside is not host root),
//! ranges never overlap, they survive stop/start and daemon restarts, files
//! the sandbox writes carry its range on the host, package managers work
//! (setgroups, other inside users) and their installs stay in the sandbox's
//! layer; a sandbox made before ranges existed is shifted into one once.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::{not_on_vm, on_vm, Daemon};

/// Why host id ranges do not apply to a VM.
const VM_IDS: &str = "a VM's uids and gids are its own kernel's (no host user namespace maps them) and the files its guest writes live inside its disk images, not as host files carrying host ids";

/// A small pool of our own, so the test also checks that `HEYVM_SUBIDS`
/// is honoured (4 ranges).
const POOL_START: u32 = 1_500_000_000;
const POOL: &str = "1500000000:262144";

fn daemon() -> Option<Daemon> {
    Daemon::start_with(&[("HEYVM_SUBIDS", POOL)])
}

fn start(d: &Daemon, name: &str) -> String {
    d.create(json!({"name": name, "size_class": "micro"}))["id"].as_str().unwrap().to_string()
}

/// The sandbox's uid and gid maps, as (inside, host, count) triples.
fn maps(d: &Daemon, id: &str) -> (Vec<(u32, u32, u32)>, Vec<(u32, u32, u32)>) {
    let v = d.sh(id, "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map");
    let out = v["stdout"].as_str().unwrap().to_string();
    let (u, g) = out.split_once("--").unwrap_or_else(|| panic!("{v}"));
    let parse = |s: &str| -> Vec<(u32, u32, u32)> {
        s.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let n: Vec<u32> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
                (n[0], n[1], n[2])
            })
            .collect()
    };
    (parse(u), parse(g))
}

/// The range recorded for the sandbox in the daemon's database.
fn recorded(d: &Daemon, id: &str) -> Option<(u32, u32)> {
    let db = rusqlite::Connection::open(d.data.path().join("heyvm.db")).unwrap();
    db.query_row("SELECT base, size FROM id_ranges WHERE sandbox_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).ok()
}

/// Where the sandbox's writable files live on the host: its own disk when
/// it has one, else its directory.
fn sandbox_dir(d: &Daemon, id: &str) -> PathBuf {
    let dir = d.data.path().join("sandboxes").join(id);
    if dir.join("disk.img").exists() {
        dir.join("disk")
    } else {
        dir
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.uid(), md.gid())
}

/// The range a sandbox runs with, checked against what the store recorded.
fn range_of(d: &Daemon, id: &str) -> u32 {
    let (uid, gid) = maps(d, id);
    assert_ne!(uid, [(0, 0, 1)], "root inside is host root");
    assert_eq!(uid.len(), 1, "one range: {uid:?}");
    let (inside, base, count) = uid[0];
    assert_eq!((inside, count), (0, 65_536), "root inside maps to the range's first id: {uid:?}");
    assert_eq!(gid, uid, "gids map like uids");
    assert_eq!(recorded(d, id), Some((base, count)), "the running map is the recorded range");
    assert!(base >= POOL_START && base - POOL_START < 262_144, "{base} is outside HEYVM_SUBIDS");
    base
}

#[test]
fn each_sandbox_runs_in_its_own_recorded_uid_range() {
    if not_on_vm(VM_IDS) {
        return;
    }
    let Some(mut d) = daemon() else { return };
    let a = start(&d, "ids-a");
    let b = start(&d, "ids-b");
    let (ra, rb) = (range_of(&d, &a), range_of(&d, &b));
    assert!(ra.abs_diff(rb) >= 65_536, "ranges overlap: {ra} and {rb}");

    // Files the sandbox writes, as root and as another inside user (which
    // needs setgroups), belong to its range on the host.
    let script = "id -u; touch /workspace/w /etc/ids-test /root/r && \
                  setpriv --reuid=1000 --regid=1000 --clear-groups touch /tmp/u && \
                  chown 42:43 /workspace/w && ls -ln /workspace/w";
    let v = d.sh(&a, script);
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(v["stdout"].as_str().unwrap().starts_with("0\n"), "{v}");
    assert!(v["stdout"].as_str().unwrap().contains(" 42 43 "), "chown to inside ids works: {v}");
    let dir = sandbox_dir(&d, &a);
    assert_eq!(owner(&dir.join("upper/etc/ids-test")), (ra, ra), "copy-on-write layer");
    assert_eq!(owner(&dir.join("root/root/r")), (ra, ra), "the sandbox's /");
    assert_eq!(owner(&dir.join("root/tmp/u")), (ra + 1000, ra + 1000), "inside uid 1000");
    assert_eq!(owner(&dir.join("workspace/w")), (ra + 42, ra + 43));
    assert_eq!(owner(&dir.join("workspace")), (ra, ra), "/workspace is the sandbox root's");
    // The host's system files keep their ownership and still look like root's inside.
    assert_eq!(owner(Path::new("/etc/passwd")), (0, 0));
    assert_eq!(d.sh(&a, "stat -c '%u %g' /etc/passwd /usr/bin")["stdout"], "0 0\n0 0\n");
    // The host's root-only files stay unreadable.
    let v = d.sh(&a, "cat /etc/shadow /proc/1/root/etc/shadow 2>/dev/null | head -c 1 | wc -c");
    assert_eq!(v["stdout"], "0\n", "{v}");

    // Stop/start and a daemon restart keep the range.
    d.heyvm(&["stop", &a]);
    d.heyvm(&["start", &a]);
    assert_eq!(range_of(&d, &a), ra, "range changed across stop/start");
    d.restart();
    assert_eq!(range_of(&d, &a), ra, "range changed across a daemon restart (attached)");
    d.heyvm(&["stop", &a]);
    d.heyvm(&["start", &a]);
    assert_eq!(range_of(&d, &a), ra, "range changed across a restart and stop/start");
    assert_eq!(range_of(&d, &b), rb);

    // A deleted sandbox's range is free again, and only then.
    let (s, _) = d.delete(&format!("/sandboxes/{b}"));
    assert_eq!(s, 200);
    assert_eq!(recorded(&d, &b), None, "the range of a deleted sandbox stays recorded");
    let c = start(&d, "ids-c");
    let rc = range_of(&d, &c);
    assert_ne!(rc, ra);
}

#[test]
fn pool_exhaustion_is_a_clear_error_not_host_root() {
    if not_on_vm(VM_IDS) {
        return;
    }
    // One range only: the second sandbox has none and must not start.
    let Some(d) = Daemon::start_with(&[("HEYVM_SUBIDS", "1600000000:65536")]) else { return };
    let a = start(&d, "only");
    assert_eq!(maps(&d, &a).0, [(0, 1_600_000_000, 65_536)]);
    let (s, v) = d.post("/sandboxes", &json!({"name": "second", "size_class": "micro"}));
    assert_ne!(s, 201, "a sandbox started without a range: {v}");
    assert!(v["message"].as_str().unwrap_or("").contains("uid/gid range"), "{v}");
}

#[test]
fn a_sandbox_from_before_ranges_is_shifted_into_one_once() {
    if not_on_vm(VM_IDS) {
        return;
    }
    let Some(mut d) = daemon() else { return };
    let id = start(&d, "legacy");
    let v = d.sh(&id, "echo hi > /workspace/mine && mkdir -p /var/lib/legacy && touch /var/lib/legacy/f");
    assert_eq!(v["exit_code"], 0, "{v}");
    d.heyvm(&["stop", &id]);
    d.kill9();
    // What an older heyvm left: no range recorded, no marker, files owned
    // by host root and by host ids equal to the inside ids.
    let dir = sandbox_dir(&d, &id);
    let db = rusqlite::Connection::open(d.data.path().join("heyvm.db")).unwrap();
    db.execute("DELETE FROM id_ranges WHERE sandbox_id = ?1", [&id]).unwrap();
    drop(db);
    std::fs::remove_file(d.data.path().join("sandboxes").join(&id).join("ids")).unwrap();
    for sub in ["root", "upper", "workspace"] {
        let ok = std::process::Command::new("chown").args(["-R", "-h", "0:0"]).arg(dir.join(sub)).status().unwrap().success();
        assert!(ok);
    }
    std::os::unix::fs::lchown(dir.join("workspace/mine"), Some(42), Some(42)).unwrap();
    // A link planted by the sandbox must not make the shift chown host files.
    let victim = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    std::os::unix::fs::symlink(victim.path(), dir.join("workspace/link")).unwrap();

    d.restart();
    d.heyvm(&["start", &id]);
    let base = range_of(&d, &id);
    assert_eq!(owner(&dir.join("workspace/mine")), (base + 42, base + 42));
    assert_eq!(owner(&dir.join("upper/var/lib/legacy/f")), (base, base));
    assert_eq!(owner(&dir.join("root/tmp")), (base, base));
    assert_eq!(owner(&dir.join("workspace/link")), (base, base), "the link itself moves");
    assert_eq!(owner(victim.path()), (0, 0), "the shift followed a planted symlink");
    let v = d.sh(&id, "stat -c '%u' /workspace/mine; cat /workspace/mine; touch /var/lib/legacy/f && echo ok");
    assert_eq!(v["stdout"], "42\nhi\nok\n", "{v}");
}

/// `apt-get install` works as root inside (setgroups, the `_apt` user) and
/// the package lands in the sandbox's layer only.
#[test]
fn apt_get_install_works_and_stays_inside() {
    let Some(d) = daemon() else { return };
    if Path::new("/usr/games/sl").exists() {
        return eprintln!("SKIP: the host already has sl installed");
    }
    let id = d.create(json!({"name": "apt", "size_class": "small", "network": "nat"}))["id"].as_str().unwrap().to_string();
    let body = json!({"command": "/bin/sh", "args": ["-c", "apt-get update -q && apt-get install -y -q sl && test -x /usr/games/sl && echo INSTALLED"], "timeout_secs": 600});
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &body);
    assert_eq!(s, 200, "{v}");
    let out = v["stdout"].as_str().unwrap_or("");
    assert!(out.contains("INSTALLED"), "apt-get failed inside: {}\n{}", &out[out.len().saturating_sub(2000)..], v["stderr"]);
    assert!(!Path::new("/usr/games/sl").exists(), "the install reached the host");
    if !on_vm() {
        // (A VM's install is inside its root overlay, in its guest's ids.)
        let base = range_of(&d, &id);
        let layer = sandbox_dir(&d, &id).join("upper/usr/games/sl");
        assert_eq!(owner(&layer), (base, base), "the installed file belongs to the sandbox's range");
    }
    let other = start(&d, "apt-other");
    assert_eq!(d.sh(&other, "test -e /usr/games/sl && echo LEAK; true")["stdout"], "", "another sandbox sees the install");
}

/// Image layers are shared: mapped into each sandbox's range by idmapped
/// mounts, never chowned; the sandbox's writes land in its own layer,
/// owned by its range.
#[test]
fn image_layers_are_idmapped_not_chowned() {
    let Some(reg) = crate::registry::Registry::shared() else { return };
    let Some(d) = daemon() else { return };
    let image = reg.with_busybox().image("busybox:1");
    let info = d.heyvm_json(&["create", "--name", "img-ids", "--image", &image, "--size-class", "micro"]);
    assert_eq!(info["status"], "running", "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    let v = d.sh(&id, "stat -c '%u %g' /bin; echo x > /etc/mine && stat -c '%u' /etc/mine");
    assert_eq!(v["stdout"], "0 0\n0\n", "{v}");
    let layers = d.data.path().join("images/layers");
    if on_vm() {
        // A VM boots a qcow2 overlay of a base disk made from the layers:
        // its writes stay in the overlay, the shared layers are untouched.
        let out = std::process::Command::new("find").arg(&layers).args(["-name", "mine", "-print", "-quit"]).output().unwrap();
        assert!(out.stdout.is_empty(), "the guest's write reached a shared layer: {}", String::from_utf8_lossy(&out.stdout));
        return;
    }
    let base = range_of(&d, &id);
    assert_eq!(owner(&sandbox_dir(&d, &id).join("upper/rootfs/etc/mine")), (base, base));
    let out = std::process::Command::new("find").arg(&layers).args(["-uid", &base.to_string(), "-print", "-quit"]).output().unwrap();
    assert!(out.stdout.is_empty(), "an image layer was chowned: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(owner(&layers).0, 0);
}
