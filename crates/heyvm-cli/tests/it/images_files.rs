//! Images beyond pull and build, end to end: the image config's `User` as
//! the default user of exec, shells (requests win) and the start command,
//! `images save|load` and heyo-sdk's `PUT /images/:name` (OCI archives from
//! us and from skopeo, ext4 root filesystems), hostile uploads, `images upload` to a
//! second daemon with and without a token, and `images prune` while a
//! pull is half-way through a layer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::registry::{busybox_layout, Registry};
use crate::support::{enc, on_vm, Daemon, BIN};

fn setup() -> Option<(Daemon, &'static Registry)> {
    let reg = Registry::shared()?;
    let d = Daemon::start()?;
    Some((d, reg.with_busybox()))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(300))).build().into()
}

/// `PUT /images/:name` with `body`, optional checksum header and token.
fn put_image(d: &Daemon, name: &str, body: &[u8], sha: Option<&str>, token: Option<&str>) -> (u16, Value) {
    let mut r = agent().put(format!("{}/images/{}", d.url, enc(name))).header("content-type", "application/octet-stream");
    if let Some(s) = sha {
        r = r.header("x-heyo-sha256", s);
    }
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = r.send(body).expect("PUT");
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn sha256_hex(b: &[u8]) -> String {
    let out =
        Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        });
    String::from_utf8_lossy(&out.unwrap().stdout).split_whitespace().next().unwrap().to_string()
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Host uid of the file named `name` in a sandbox's writable storage.
fn host_uid(d: &Daemon, id: &str, name: &str) -> u32 {
    let out = Command::new("find").arg(d.storage(id)).args(["-name", name, "-printf", "%U\n"]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.lines().next().unwrap_or_else(|| panic!("{name} not found under {}", d.storage(id).display())).parse().unwrap()
}

#[test]
fn image_user_is_the_default_user_and_requests_win() {
    let Some((d, reg)) = setup() else { return };
    let ctx = tempfile::tempdir_in("/tmp").unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM {}\n\
             RUN echo 'app:x:1234:1234:app:/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1234:' > /etc/group && \\\n\
                 echo 'extra:x:777:app' >> /etc/group && mkdir -p /home/app /shared && chown 1234:1234 /home/app && chmod 1777 /shared\n\
             USER app\n\
             WORKDIR /home/app\n\
             RUN id -u > built-by && id -G >> built-by\n",
            reg.image("busybox:1")
        ),
    );
    d.heyvm_json(&["images", "build", "-t", "withuser:1", ctx.path().to_str().unwrap()]);
    let info = d.heyvm_json(&["create", "--name", "u", "--image", "withuser:1", "--size-class", "micro"]);
    let id = info["id"].as_str().unwrap().to_string();
    // RUN after USER ran as that user (Docker's rule).
    assert_eq!(d.heyvm_json(&["exec", "u", "--", "cat", "/home/app/built-by"])["stdout"], "1234\n1234 777\n");

    // exec: the image's User by default (groups from the image's /etc/group,
    // HOME and USER from its passwd); -u wins, numeric or by name.
    let v = d.heyvm_json(&["exec", "u", "--", "sh", "-c", "id -u; id -g; id -G; echo $HOME $USER; pwd; touch as-user"]);
    assert_eq!(v["stdout"], "1234\n1234\n1234 777\n/home/app app\n/home/app\n", "{v}");
    let v = d.heyvm_json(&["exec", "u", "-u", "root", "--", "sh", "-c", "id -u; echo $HOME; touch /home/app/as-root"]);
    assert_eq!(v["stdout"], "0\n/root\n", "{v}");
    let v = d.heyvm_json(&["exec", "u", "--user", "4321:55", "--", "sh", "-c", "id -u; id -g; touch /shared/as-numeric"]);
    assert_eq!(v["stdout"], "4321\n55\n", "{v}");
    // The API field too.
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "id -u", "user": "0"}));
    assert_eq!((s, v["stdout"].as_str()), (200, Some("0\n")), "{v}");
    // The user's rights are the user's: root's files are not theirs.
    let v = d.heyvm(&["exec", "u", "--", "sh", "-c", "echo x > /etc/passwd"]);
    assert!(!v.status.success(), "the image user cannot write /etc/passwd");

    // Files made by exec belong to that user inside the sandbox's uid range.
    let ls = d.heyvm_json(&["exec", "u", "--", "stat", "-c", "%u:%g %n", "/home/app/as-user", "/home/app/as-root", "/shared/as-numeric"]);
    assert_eq!(ls["stdout"], "1234:1234 /home/app/as-user\n0:0 /home/app/as-root\n4321:55 /shared/as-numeric\n", "{ls}");
    if on_vm() {
        eprintln!("SKIP on kvm (host uids of the files): a VM's files are in its own disk, owned by the guest kernel's uids (checked above); no host file carries them");
    } else {
        let root_host = host_uid(&d, &id, "as-root");
        assert!(root_host >= 1_000_000, "the sandbox's root is a high host uid: {root_host}");
        assert_eq!(host_uid(&d, &id, "as-user"), root_host + 1234, "inside the sandbox's range");
        assert_eq!(host_uid(&d, &id, "as-numeric"), root_host + 4321);
    }

    // Shells: the image's User by default, the request's `user` wins.
    let shell = |user: Option<&str>| {
        let mut args = vec!["sh", "u"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        let mut child = d.cmd().args(&args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"echo who=$(id -u)\nexit\n").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(shell(None).contains("who=1234"), "{}", shell(None));
    assert!(shell(Some("root")).contains("who=0"));

    // Bad users: a clear error, never a root fallback.
    let out = d.heyvm(&["exec", "u", "-u", "nosuchuser", "--", "id", "-u"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchuser"), "{}", String::from_utf8_lossy(&out.stderr));
    for bad in ["../x", "a b", "-rf", "a:b:c"] {
        let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "id", "user": bad}));
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{bad}: {v}");
    }

    // A host-rootfs sandbox still runs as root by default.
    d.heyvm_json(&["create", "--name", "h", "--size-class", "micro"]);
    assert_eq!(d.heyvm_json(&["exec", "h", "--", "id", "-u"])["stdout"], "0\n");
}

/// The start command runs as the image config's `User` too (named or
/// numeric), at every start; setup hooks stay root's; an image whose `User`
/// the sandbox cannot resolve fails to start, naming it, instead of
/// running the start command as root.
#[test]
fn the_start_command_runs_as_the_image_user() {
    let Some((d, reg)) = setup() else { return };
    let ctx = tempfile::tempdir_in("/tmp").unwrap();
    let dockerfile = |user: &str| {
        format!(
            "FROM {}\n\
             RUN echo 'svc:x:1000:1000:svc:/home/svc:/bin/sh' >> /etc/passwd && echo 'svc:x:1000:' >> /etc/group && \\\n\
                 mkdir -p /home/svc /out && chown 1000:1000 /home/svc && chmod 1777 /out\n\
             USER {user}\n",
            reg.image("busybox:1")
        )
    };
    for (tag, user) in [("startas:named", "svc"), ("startas:numeric", "2000"), ("startas:ghost", "ghost")] {
        write(ctx.path(), "Dockerfile", &dockerfile(user));
        d.heyvm_json(&["images", "build", "-t", tag, ctx.path().to_str().unwrap()]);
    }
    // Records who it runs as (the file's owner too), then keeps running.
    let start = "{ id -u; id -g; echo $HOME $USER; } > /out/start.$$; mv /out/start.$$ /out/started; exec sleep 1000";
    let started = |name: &str| {
        let mut out = String::new();
        d.wait_until("the start command wrote /out/started", Duration::from_secs(60), || {
            let o = d.heyvm(&["exec", name, "-u", "root", "--", "sh", "-c", "cat /out/started && stat -c %u /out/started"]);
            out = String::from_utf8_lossy(&o.stdout).to_string();
            o.status.success()
        });
        d.heyvm_json(&["exec", name, "-u", "root", "--", "rm", "-f", "/out/started"]);
        out
    };

    d.heyvm_json(&[
        "create",
        "--name",
        "named",
        "--image",
        "startas:named",
        "--size-class",
        "micro",
        "--start-command",
        start,
        "--setup-hook",
        "id -u > /out/hook",
    ]);
    assert_eq!(started("named"), "1000\n1000\n/home/svc svc\n1000\n", "as the image's named user, with its HOME and USER");
    assert_eq!(d.heyvm_json(&["exec", "named", "--", "cat", "/out/hook"])["stdout"], "0\n", "setup hooks run as root");
    // Again after a restart (the start command is relaunched then).
    d.heyvm_json(&["stop", "named"]);
    d.heyvm_json(&["start", "named"]);
    assert_eq!(started("named"), "1000\n1000\n/home/svc svc\n1000\n", "after a restart");

    d.heyvm_json(&["create", "--name", "numeric", "--image", "startas:numeric", "--size-class", "micro", "--start-command", start]);
    assert_eq!(started("numeric"), "2000\n2000\n/ 2000\n2000\n", "a numeric User need not be in /etc/passwd");

    // A User the image does not have: an error naming it, never root.
    let out = d.heyvm(&["create", "--name", "ghost", "--image", "startas:ghost", "--size-class", "micro", "--start-command", start]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no user 'ghost'") && !err.contains("did not answer"), "{err}");
    let list = d.heyvm_json(&["list", "--all"]);
    let ghost = list.as_array().unwrap().iter().find(|s| s["name"] == "ghost").cloned().unwrap_or_default();
    assert_ne!(ghost["status"], "running", "{list}");
}

#[test]
fn save_load_and_put_archives_round_trip() {
    let Some((d, reg)) = setup() else { return };
    let image = reg.image("busybox:1");
    let pulled = d.heyvm_json(&["images", "pull", &image]);
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tar = dir.path().join("bb.tar");
    let saved = d.heyvm_json(&["images", "save", &image, "-o", tar.to_str().unwrap()]);
    assert_eq!(saved["size_bytes"], std::fs::metadata(&tar).unwrap().len());
    // skopeo reads it: it is a real OCI archive.
    let out = Command::new("skopeo").args(["inspect", "--raw", &format!("oci-archive:{}", tar.display())]).output().unwrap();
    assert!(out.status.success(), "skopeo could not read the saved archive: {}", String::from_utf8_lossy(&out.stderr));
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1), "{manifest}");

    // Into a fresh daemon by the name it records, same digest, and it runs.
    let Some(d2) = Daemon::start() else { return };
    let loaded = d2.heyvm_json(&["images", "load", tar.to_str().unwrap()]);
    assert_eq!((loaded["name"].as_str(), loaded["digest"].as_str()), (Some(image.as_str()), pulled["digest"].as_str()), "{loaded}");
    d2.heyvm_json(&["create", "--name", "b", "--image", &image, "--size-class", "micro"]);
    assert_eq!(d2.sh("b", "cat /app/hello.txt; echo $GREETING")["stdout"], "hello from the image\nhello-from-config\n");

    // heyo-sdk's PUT with its checksum header; an archive skopeo wrote.
    let layout = busybox_layout();
    let sk = dir.path().join("skopeo.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", &format!("oci:{}:1", layout.display()), &format!("oci-archive:{}:sk", sk.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = std::fs::read(&sk).unwrap();
    let (s, v) = put_image(&d2, "from-skopeo:1", &body, Some(&sha256_hex(&body)), None);
    assert_eq!(s, 201, "{v}");
    for k in ["name", "path", "size_bytes", "modified_at"] {
        assert!(!v[k].is_null(), "heyo-sdk's ImageInfo needs {k}: {v}");
    }
    assert_eq!(v["name"], "from-skopeo:1");
    let c = d2.create(json!({"name": "sk", "image": "from-skopeo:1"}));
    assert_eq!(c["status"], "running", "{c}");
    assert_eq!(d2.sh("sk", "pwd")["stdout"], "/app\n", "the config came along");
    // `images load --name` for an archive that names no full reference.
    let loaded = d2.heyvm_json(&["images", "load", sk.to_str().unwrap(), "--name", "named:2"]);
    assert_eq!(loaded["name"], "named:2");
    let out = d2.heyvm(&["images", "load", sk.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--name"));
    // GET /images/:ref/archive answers 404 for an unknown image.
    let (s, v) = d2.get(&format!("/images/{}/archive", enc("never:1")));
    assert_eq!((s, v["error"].as_str()), (404, Some("image_not_found")));
}

/// A tar whose entries have raw names (tar(1) and the tar crate refuse to
/// write `..`), so the server sees exactly what an attacker sends.
fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn hostile_uploads_are_refused_and_nothing_escapes() {
    let Some(d) = Daemon::start_with(&[("HEYVM_MAX_IMAGE_UPLOAD_BYTES", "5000000")]) else { return };
    let victim = std::env::temp_dir().join(format!("heyvm-escape-{}", std::process::id()));
    let _ = std::fs::remove_file(&victim);
    let layout = b"{\"imageLayoutVersion\":\"1.0.0\"}";
    let blob_name = format!("blobs/sha256/{}", "a".repeat(64));
    let victim_s = victim.display().to_string();
    let up = format!("../../../../../../..{victim_s}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw_tar(&[("oci-layout", b'0', "", layout), (&up, b'0', "", b"pwned")]), "points outside"),
        (raw_tar(&[("oci-layout", b'0', "", layout), (&victim_s, b'0', "", b"pwned")]), "points outside"),
        (raw_tar(&[("oci-layout", b'0', "", layout), (&blob_name, b'2', &victim_s, b"")]), "regular files"),
        (raw_tar(&[("oci-layout", b'0', "", layout), (&blob_name, b'1', "/etc/shadow", b"")]), "regular files"),
        (raw_tar(&[("oci-layout", b'0', "", layout), ("blobs/sha256/x/../../../../x", b'0', "", b"pwned")]), "points outside"),
        (raw_tar(&[("oci-layout", b'0', "", layout), (&blob_name, b'0', "", b"not what the name says")]), "does not match"),
        (raw_tar(&[("oci-layout", b'0', "", layout)]), "no index.json"),
        (raw_tar(&[("oci-layout", b'0', "", layout), ("index.json", b'0', "", b"{\"manifests\":[]}")]), "no image"),
        (b"garbage that is neither a tar nor ext4".repeat(64), "neither"),
    ];
    for (body, want) in &cases {
        let (s, v) = put_image(&d, "evil:1", body, None, None);
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_image_archive")), "{want}: {v}");
        assert!(v["message"].as_str().unwrap().contains(want), "{want}: {v}");
        assert!(!victim.exists(), "{want}: a file escaped the store");
    }
    // A blob that does not match: nothing of it stays.
    let blobs = std::fs::read_dir(d.data.path().join("images/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "no unverified blob in the store");
    assert_eq!(std::fs::read_dir(d.data.path().join("images/tmp")).unwrap().count(), 0, "no temp leftovers");
    // Checksum, size limit, bad names, empty bodies.
    let body = raw_tar(&[("oci-layout", b'0', "", layout)]);
    let (s, v) = put_image(&d, "evil:1", &body, Some(&"0".repeat(64)), None);
    assert_eq!((s, v["error"].as_str()), (400, Some("checksum_mismatch")), "{v}");
    let (s, v) = put_image(&d, "evil:1", &vec![0u8; 6_000_000], None, None);
    assert_eq!((s, v["error"].as_str()), (413, Some("payload_too_large")), "{v}");
    let (s, v) = put_image(&d, "Bad Name!", &body, None, None);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_reference")), "{v}");
    let (s, v) = put_image(&d, "evil:1", b"", None, None);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_image_archive")), "{v}");
    assert!(d.heyvm_json(&["images", "list"]).as_array().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(d.data.path().join("images/tmp")).unwrap().count(), 0, "no temp leftovers");
}

fn debugfs(img: &Path, cmds: &str) {
    let out = Command::new("debugfs").args(["-w", "-f", "-"]).arg(img).stdin(std::process::Stdio::piped()).spawn().and_then(|mut c| {
        c.stdin.take().unwrap().write_all(cmds.as_bytes())?;
        c.wait_with_output()
    });
    assert!(out.unwrap().status.success());
}

#[test]
fn ext4_rootfs_uploads_become_images_and_cannot_escape() {
    if Command::new("debugfs").arg("-V").output().is_err() {
        eprintln!("SKIP: debugfs (e2fsprogs) is not installed");
        return;
    }
    let Some(d) = Daemon::start() else { return };
    // A busybox root filesystem as an ext4 image, as heyo-sdk uploads it.
    let layout = busybox_layout();
    let rootfs = layout.parent().unwrap().join("rootfs");
    std::os::unix::fs::chown(rootfs.join("app/hello.txt"), Some(1000), Some(1000)).unwrap();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let img = dir.path().join("root.ext4");
    let ok = Command::new("mke2fs").args(["-q", "-t", "ext4", "-d"]).arg(&rootfs).arg(&img).arg("16M").status().unwrap();
    assert!(ok.success());
    let body = std::fs::read(&img).unwrap();
    let (s, v) = put_image(&d, "rootfs:1", &body, Some(&sha256_hex(&body)), None);
    assert_eq!(s, 201, "{v}");
    let c = d.create(json!({"name": "r", "image": "rootfs:1", "size_class": "micro"}));
    assert_eq!(c["status"], "running", "{c}");
    let v = d.sh("r", "cat /app/hello.txt; stat -c %u /app/hello.txt; test -e /lost+found && echo LF");
    assert_eq!(v["stdout"], "hello from the image\n1000\n", "ownership kept, lost+found dropped: {v}");

    // A crafted filesystem: a symlink to a host path, then a regular file
    // under the same name (ext4 directories can hold duplicate names).
    let victim = std::env::temp_dir().join(format!("heyvm-ext4-escape-{}", std::process::id()));
    let _ = std::fs::remove_file(&victim);
    let evil = dir.path().join("evil.ext4");
    std::fs::copy(&img, &evil).unwrap();
    let payload = dir.path().join("payload");
    std::fs::write(&payload, "pwned\n").unwrap();
    debugfs(&evil, &format!("symlink /app/x {}\nwrite {} /app/y\n", victim.display(), payload.display()));
    // Rename y's directory entry to x: now "x" names the symlink, then the file.
    debugfs(&evil, "ln /app/y /app/x\nunlink /app/y\n");
    let body = std::fs::read(&evil).unwrap();
    let (s, v) = put_image(&d, "evil-rootfs:1", &body, None, None);
    assert!(s == 201 || s == 400, "{s} {v}");
    assert!(!victim.exists(), "the upload wrote through a symlink onto the host");
    // A corrupt filesystem is a 400, not a 500.
    let mut broken = std::fs::read(&img).unwrap();
    for b in broken.iter_mut().skip(2048).take(64 * 1024) {
        *b = 0xff;
    }
    let (s, v) = put_image(&d, "broken:1", &broken, None, None);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_image_archive")), "{v}");
    assert_eq!(std::fs::read_dir(d.data.path().join("images/tmp")).unwrap().count(), 0, "no temp leftovers");
}

const SECRET: &str = "images-upload-secret";

fn token() -> String {
    let out = Command::new(BIN).args(["token", "create", "--sub", "img-test", "--ttl", "10m", "--secret", SECRET]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn upload_to_a_second_daemon_needs_a_token() {
    let Some((d, reg)) = setup() else { return };
    let Some(cloud) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    let image = reg.image("busybox:1");
    let pulled = d.heyvm_json(&["images", "pull", &image]);
    // No token: one clear line, not a broken pipe mid-stream.
    let out = d
        .cmd()
        .env_remove("HEYO_ARCHIVE_TOKEN")
        .args(["images", "upload", &image, "--server", &cloud.url, "--as", "bb:up"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err, "heyvm: Not authenticated: run heyvm login or set HEYO_ARCHIVE_TOKEN");
    let out = d.cmd().args(["--token", "garbage", "images", "upload", &image, "--server", &cloud.url]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"), "{}", String::from_utf8_lossy(&out.stderr));
    // An unauthenticated PUT is a plain 401 JSON answer.
    let (s, v) = put_image(&cloud, "bb:up", b"x", None, None);
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_token")), "{v}");

    let tok = token();
    let out = d
        .cmd()
        .env("HEYO_ARCHIVE_TOKEN", &tok)
        .args(["images", "upload", &image, "--server", &cloud.url, "--as", "bb:up", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["name"].as_str(), v["digest"].as_str()), (Some("bb:up"), pulled["digest"].as_str()), "{v}");
    // The cloud runs it without any registry.
    let (s, c) = {
        let r = agent()
            .post(format!("{}/sandboxes", cloud.url))
            .header("authorization", format!("Bearer {tok}"))
            .header("content-type", "application/json")
            .send(json!({"name": "up", "image": "bb:up", "size_class": "micro"}).to_string())
            .unwrap();
        (r.status().as_u16(), r.into_body().read_to_string().unwrap())
    };
    assert_eq!(s, 201, "{c}");
}

/// A TCP relay to the registry that holds the first large response (a
/// layer) after 64 KiB until told to go on, so a test can act while a pull
/// is half-way through a blob.
fn stalling_proxy(upstream: String) -> (String, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (stalled_tx, stalled_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(go_rx)));
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let up = TcpStream::connect(&upstream).unwrap();
            let (mut c_read, mut u_write) = (client.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut u_write);
            });
            let (mut u_read, mut c_write) = (up, client);
            let (stalled_tx, go_rx) = (stalled_tx.clone(), go_rx.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut sent = 0usize;
                loop {
                    let n = match u_read.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if c_write.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    sent += n;
                    if sent > 64 * 1024 {
                        // Only the first connection to get this far waits.
                        let waiter = go_rx.lock().unwrap().take();
                        if let Some(rx) = waiter {
                            let _ = stalled_tx.send(());
                            let _ = rx.recv();
                        }
                    }
                }
            });
        }
    });
    (addr, stalled_rx, go_tx)
}

#[test]
fn prune_spares_a_pull_in_progress() {
    let Some((d, reg)) = setup() else { return };
    let (proxy, stalled, go) = stalling_proxy(reg.addr.clone());
    let image = format!("{proxy}/busybox:1");
    let pull = {
        let mut c = d.cmd();
        c.args(["images", "pull", &image, "--format", "json"]);
        std::thread::spawn(move || c.output().unwrap())
    };
    stalled.recv_timeout(Duration::from_secs(120)).expect("the pull reached the layer");
    // Half a layer in tmp/, the config blob fetched but nothing tagged yet.
    let tmp_dir = d.data.path().join("images/tmp");
    let partials = || -> Vec<PathBuf> {
        std::fs::read_dir(&tmp_dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".partial")).collect()
    };
    d.wait_until("a partial layer download", Duration::from_secs(30), || {
        partials().iter().any(|p| p.metadata().is_ok_and(|m| m.len() > 0))
    });
    let tmp = partials();
    let pruned = d.heyvm_json(&["images", "prune"]);
    assert_eq!((pruned["blobs_removed"].as_u64(), pruned["layers_removed"].as_u64()), (Some(0), Some(0)), "{pruned}");
    assert!(tmp.iter().all(|p| p.exists()), "the partial download is still there");
    go.send(()).unwrap();
    let out = pull.join().unwrap();
    assert!(out.status.success(), "the pull survived the prune: {}", String::from_utf8_lossy(&out.stderr));
    let c = d.create(json!({"name": "p", "image": image, "size_class": "micro"}));
    assert_eq!(d.sh("p", "cat /app/hello.txt")["stdout"], "hello from the image\n", "{c}");
    // Once nothing runs, prune still removes what nothing references.
    d.heyvm_json(&["rm", "-y", "p"]);
    d.heyvm_json(&["images", "rm", &image]);
    let pruned = d.heyvm_json(&["images", "prune"]);
    assert_eq!(pruned["layers_removed"], 1, "{pruned}");
    assert_eq!(std::fs::read_dir(d.data.path().join("images/tmp")).unwrap().count(), 0);
}
