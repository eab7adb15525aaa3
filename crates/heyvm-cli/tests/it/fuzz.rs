//! Fuzzing the API from its own OpenAPI document with schemathesis (pinned
//! in scripts/python-requirements.txt): no 5xx, answers that match the
//! document (status, content type, schema), and every error the stable
//! `{error, message}` JSON (fuzz_hooks.py).
//!
//! The fuzzer is a remote token caller: the daemon has JWT_SECRET and
//! listens on a non-loopback address of this machine, so it cannot tell
//! the fuzzer's uid, and generated mounts are confined to
//! HEYVM_MOUNT_ROOTS (a temp dir). Each run has its own throwaway daemon,
//! and a fixed number of examples per operation (and a fixed seed) keeps
//! its time bounded and its failures reproducible.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::support::{Daemon, BIN};

const SECRET: &str = "fuzz-secret";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips the test, or fails it in CI.
fn missing(why: &str) -> Option<PathBuf> {
    if in_ci() {
        panic!("fuzz tests cannot run in CI: {why}");
    }
    eprintln!("SKIP: {why}");
    None
}

/// The test venv's `st` (schemathesis), if installed.
fn schemathesis() -> Option<PathBuf> {
    let py = crate::python_sdk::python()?;
    let ok = Command::new(&py).args(["-c", "import schemathesis"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        return missing("schemathesis is not installed in the test venv (run scripts/python-deps.sh)");
    }
    Some(py)
}

/// An IPv4 address of this machine that is not loopback (nor a sandbox's
/// veth), so a connection to it is a remote caller's for the daemon.
fn outside_address() -> Option<String> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let iface = f.nth(1)?;
        let addr = f.skip_while(|w| *w != "inet").nth(1)?;
        (!iface.starts_with("hv-")).then(|| addr.split('/').next().unwrap_or(addr).to_string())
    });
    if found.is_none() {
        missing("this machine has no non-loopback IPv4 address to fuzz through");
    }
    found
}

struct Target {
    daemon: Daemon,
    token: String,
    _roots: tempfile::TempDir,
    work: tempfile::TempDir,
}

/// A throwaway daemon the fuzzer reaches as a remote token caller.
fn target() -> Option<(PathBuf, Target)> {
    let py = schemathesis()?;
    let addr = outside_address()?;
    let roots = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let docker = work.path().join("docker");
    let vm_dir = work.path().join("no-vm-assets");
    let mut env = vec![
        ("JWT_SECRET", SECRET),
        ("HEYVM_MOUNT_ROOTS", roots.path().to_str().unwrap()),
        // `images login` writes credentials here, never to the host's.
        ("DOCKER_CONFIG", docker.to_str().unwrap()),
    ];
    if !crate::support::on_vm() {
        // No microVM boots on the bubblewrap pass: the kvm backend reports
        // itself unavailable. On the VM pass sandboxes are VMs.
        env.push(("HEYVM_VM_DIR", vm_dir.to_str().unwrap()));
    } else {
        // Generated creates would boot a VM each, dozens in a run under
        // TCG (59 QEMUs once took the machine down): past two running VMs
        // they answer 429 quota_exceeded, which the document lists.
        env.push(("HEYVM_MAX_RUNNING_VMS", "2"));
    }
    let daemon = Daemon::start_on(&addr, &env)?;
    let out = Command::new(BIN).args(["token", "create", "--sub", "fuzzer", "--ttl", "1h", "--secret", SECRET]).output().unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some((py, Target { daemon, token, _roots: roots, work }))
}

/// Settings of every run. 501 is the API's deliberate, documented answer
/// `unsupported` (an operation this daemon or backend does not offer), not
/// a failure; every other 5xx is.
const BASE_CONFIG: &str = "[checks.not_a_server_error]\nexpected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"501\"]\n";

/// `wait-for` waits up to a minute for a port by design; fuzzing it would
/// only spend the time budget.
const ALWAYS_SKIPPED: &str = "^POST /sandboxes/\\{id\\}/wait-for$";

/// How long one request may take, given what it takes on bubblewrap. On
/// the VM pass a generated create (POST /sandboxes, /sandbox-deploy, an
/// agent computer) boots a microVM, 20-40 s under TCG on these shared
/// cores and more when the fuzzer's workers boot two at once: those get a
/// boot's budget rather than being excluded, as a client would wait that
/// long too.
fn request_timeout(bubblewrap_secs: u32) -> String {
    let secs = if crate::support::on_vm() { bubblewrap_secs.max(VM_BOOT_SECS) } else { bubblewrap_secs };
    secs.to_string()
}

/// A microVM create under TCG, with room for a loaded machine.
const VM_BOOT_SECS: u32 = 150;

/// Runs schemathesis against the daemon; panics with its report on failure.
/// `timeout_secs` bounds each request on bubblewrap (see [`request_timeout`]).
fn fuzz(py: &Path, t: &Target, config: &str, timeout_secs: u32, args: &[&str]) {
    let config_file = t.work.path().join("schemathesis.toml");
    std::fs::write(&config_file, format!("{BASE_CONFIG}{config}")).unwrap();
    let schema = format!("{}/openapi.json", t.daemon.url);
    let auth = format!("Authorization: Bearer {}", t.token);
    let started = Instant::now();
    let out = Command::new(py)
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config_file)
        .args(["run", &schema, "-H", &auth, "--checks", "all", "--exclude-checks", "ignored_auth,positive_data_acceptance"])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "13",
            "--no-color",
            "--request-timeout",
            &request_timeout(timeout_secs),
            "--max-response-time",
            &request_timeout(120),
        ])
        .args(["--workers", "2", "--suppress-health-check", "all", "--generation-database", "none"])
        .args(args)
        .env("SCHEMATHESIS_HOOKS", repo().join("crates/heyvm-cli/tests/it/fuzz_hooks.py"))
        .current_dir(t.work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("schemathesis took {:.0?}", started.elapsed());
    assert!(out.status.success(), "schemathesis found failures:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("passed"), "schemathesis ran no test:\n{stdout}");
}

/// Every operation with generated (mostly unknown) ids and bodies,
/// including the destructive ones.
#[test]
fn fuzz_every_operation_as_a_remote_caller() {
    let Some((py, t)) = target() else { return };
    fuzz(&py, &t, "", 60, &["--max-examples", "8", "--exclude-name-regex", ALWAYS_SKIPPED]);
}

/// Every operation on one real running sandbox (its id in every `{id}`),
/// except those that would end it for the rest of the run.
#[test]
fn fuzz_operations_on_a_running_sandbox() {
    let Some((py, t)) = target() else { return };
    let created = t.daemon.heyvm_json(&["create", "--name", "fuzzbox", "--size-class", "micro", "--token", &t.token]);
    assert_eq!(created["status"], "running", "{created}");
    let config = "[parameters]\n\"path.id\" = \"fuzzbox\"\n";
    // Also skipped: streams that follow a live sandbox until the client
    // gives up (each example would cost the whole request timeout).
    let mut skip = "^(DELETE /(sandboxes|deployed-sandboxes)/\\{id\\}$|PATCH /sandboxes/\\{id\\}$|\
                POST /(sandboxes|deployed-sandboxes|sandbox)/\\{id\\}/(stop|force-stop|restart|restore|checkpoints?|fork|wait-for|ttl|resize)$|\
                GET /sandboxes/\\{id\\}/logs/stream$|GET /api/agents/\\{id\\}/computer/bootstrap/stream$)"
        .to_string();
    if crate::support::on_vm() {
        // Operations that create sandboxes of their own boot a VM each
        // (dozens in a run: a load of 50 on two cores); they have nothing
        // to do with this sandbox and are fuzzed by the test above.
        skip.push_str("|^(POST /sandboxes|POST /sandbox-deploy|POST /api/agents/from-template|POST /api/agents/\\{id\\}/threads/.*)$");
    }
    fuzz(&py, &t, config, 20, &["--max-examples", "5", "--exclude-name-regex", &skip]);
    let info = t.daemon.heyvm_json(&["get", "fuzzbox", "--token", &t.token]);
    assert_eq!(info["status"], "running", "the fuzzed sandbox: {info}");
}
