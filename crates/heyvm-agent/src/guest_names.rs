//! A microVM's name files: `/etc/hostname` and `/etc/hosts`. A bubblewrap
//! sandbox shares the host's `/etc`; a VM's root is its image, which may
//! have no `/etc/hosts` at all (the default Debian image has none), and
//! then not even `localhost` resolves. So the guest init writes them at
//! boot and again when the VM is renamed, as container runtimes do; an
//! `/etc/hosts` the image or the user wrote (without our first line) is
//! left alone.

use std::fs;
use std::io;

/// First line of an `/etc/hosts` heyvm wrote (and may rewrite).
const MARKER: &str = "# written by heyvm at boot and on rename; remove this line to keep your own";

/// The `/etc/hosts` for `hostname`: loopback names, and the hostname on
/// 127.0.1.1 (Debian's convention for a host without a fixed address).
fn hosts(hostname: &str) -> String {
    format!("{MARKER}\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n")
}

/// Writes `/etc/hostname`, and `/etc/hosts` unless someone else's is there.
/// Errors go to the serial console; they never stop the boot.
pub fn write(hostname: &str) {
    if let Err(e) = write_in("/etc", hostname) {
        eprintln!("heyvm-init: /etc/hosts: {e}"); // stderr is the serial console
    }
}

fn write_in(etc: &str, hostname: &str) -> io::Result<()> {
    fs::write(format!("{etc}/hostname"), format!("{hostname}\n"))?;
    let path = format!("{etc}/hosts");
    let ours = match fs::read_to_string(&path) {
        Ok(s) => s.starts_with(MARKER),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if ours {
        // Replaced in one rename: a reader never sees half a file.
        let tmp = format!("{path}.heyvm-tmp");
        fs::write(&tmp, hosts(hostname))?;
        fs::rename(&tmp, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_missing_and_own_files_and_keeps_others() {
        let dir = std::env::temp_dir().join(format!("heyvm-names-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let etc = dir.to_str().unwrap();
        write_in(etc, "box-one").unwrap();
        let h = fs::read_to_string(dir.join("hosts")).unwrap();
        assert!(h.contains("127.0.0.1\tlocalhost\n") && h.contains("127.0.1.1\tbox-one\n"), "{h}");
        assert_eq!(fs::read_to_string(dir.join("hostname")).unwrap(), "box-one\n");
        // A rename rewrites our file.
        write_in(etc, "box-two").unwrap();
        let h = fs::read_to_string(dir.join("hosts")).unwrap();
        assert!(h.contains("127.0.1.1\tbox-two\n") && !h.contains("box-one"), "{h}");
        // Someone else's file stays as it is.
        fs::write(dir.join("hosts"), "10.0.0.1 mine\n").unwrap();
        write_in(etc, "box-three").unwrap();
        assert_eq!(fs::read_to_string(dir.join("hosts")).unwrap(), "10.0.0.1 mine\n");
        assert_eq!(fs::read_to_string(dir.join("hostname")).unwrap(), "box-three\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
