//! The terminal UI (`heyvm` with no arguments) driven under tmux: a sandbox
//! created through the API from "another terminal" appears, and the stop,
//! start, logs and delete keys act on it; the n key creates one.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Daemon, BIN};

/// A detached tmux session on a private server socket, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        let ok = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        if !ok {
            assert!(std::env::var("CI").is_err(), "tmux is required in CI (scripts/setup.sh installs it)");
            eprintln!("SKIP: tmux is not installed");
        }
        ok
    }

    /// Runs `heyvm` (no arguments) against the daemon in a 150x40 pane. The
    /// pane stays after it exits so its exit status can be read.
    fn start_tui(d: &Daemon) -> Tmux {
        let t = Tmux { socket: format!("heyvm-it-tui-{}-{}", std::process::id(), d.port) };
        let script = format!("'{BIN}'; echo TUI-EXITED-$?; sleep 600");
        let st = Command::new("tmux")
            .args(["-L", &t.socket, "-f", "/dev/null", "new-session", "-d", "-s", "tui", "-x", "150", "-y", "40"])
            .args(["-e", &format!("HEYVM_API_URL={}", d.url), "-e", &format!("MVM_DATA_DIR={}", d.data.path().display())])
            .args(["-e", "TERM=xterm-256color", "sh", "-c", &script])
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p", "-t", "tui"]).output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "tui"]).args(keys).status().expect("tmux send-keys");
        assert!(st.success());
    }

    /// Waits until `f` holds for the pane's text; panics showing the screen.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The table row of sandbox `id`, if shown.
fn row_of<'a>(screen: &'a str, id: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(id) && !l.contains("logs:"))
}

fn status_in_row(screen: &str, id: &str, status: &str) -> bool {
    row_of(screen, id).is_some_and(|l| l.split_whitespace().any(|w| w == status))
}

#[test]
fn tui_lists_and_controls_a_sandbox_created_elsewhere() {
    let Some(d) = Daemon::start() else { return };
    if !Tmux::available() {
        return;
    }
    let t = Tmux::start_tui(&d);
    // A capture can land mid-frame: wait for the whole first frame (the
    // help line is drawn last) or for the TUI to have exited.
    let screen = t.wait_for("the TUI to start", |s| (s.contains("0 sandboxes") && s.contains("x stop")) || s.contains("TUI-EXITED"));
    assert!(screen.contains("q quit") && screen.contains("x stop"), "help line missing:\n{screen}");
    assert!(screen.contains(&d.url), "API address not shown:\n{screen}");

    // "Another terminal" creates a sandbox through the API.
    let sb = d.create(json!({"name": "tui-demo", "size_class": "micro"}));
    let id = sb["id"].as_str().unwrap().to_string();
    let screen = t.wait_for("the new sandbox to appear as running", |s| status_in_row(s, &id, "running"));
    let row = row_of(&screen, &id).unwrap();
    assert!(row.contains("tui-demo") && row.contains("micro"), "row lacks name or size: {row}");

    // Follow its logs.
    t.keys(&["l"]);
    t.wait_for("the logs pane", |s| s.contains("logs: tui-demo"));

    // Stop key.
    t.keys(&["x"]);
    t.wait_for("the row to show stopped", |s| status_in_row(s, &id, "stopped"));
    assert_eq!(d.get(&format!("/sandboxes/{id}")).1["status"], "stopped");
    t.wait_for("the stop to show in the logs pane", |s| s.contains("sandbox stopped"));

    // Start key.
    t.keys(&["s"]);
    t.wait_for("the row to show running again", |s| status_in_row(s, &id, "running"));
    assert_eq!(d.get(&format!("/sandboxes/{id}")).1["status"], "running");

    // Shell key: suspends the list and runs `heyvm sh` when this build has it.
    t.keys(&["Escape", "c"]);
    if d.heyvm(&["sh", "--help"]).status.success() {
        t.wait_for("the shell prompt", |s| s.contains(&format!("shell in {id}")));
        t.keys(&["echo inside-$((40+2))", "Enter"]);
        t.wait_for("the command's output", |s| s.contains("inside-42"));
        t.keys(&["exit", "Enter"]);
        t.wait_for("the list to come back", |s| s.contains(&format!("shell in {id} closed")) && status_in_row(s, &id, "running"));
    } else {
        t.wait_for("the no-shell notice", |s| s.contains("not available"));
    }

    // Delete asks first; "n" keeps the sandbox.
    t.keys(&["d"]);
    t.wait_for("the delete confirmation", |s| s.contains("delete tui-demo") && s.contains("y/n"));
    t.keys(&["n"]);
    t.wait_for("the cancel notice", |s| s.contains("delete cancelled"));
    assert_eq!(d.get(&format!("/sandboxes/{id}")).0, 200);
    t.keys(&["d"]);
    t.wait_for("the delete confirmation", |s| s.contains("y/n"));
    t.keys(&["y"]);
    t.wait_for("the row to disappear", |s| row_of(s, &id).is_none() && s.contains("0 sandboxes"));
    assert_eq!(d.get(&format!("/sandboxes/{id}")).0, 404);

    t.keys(&["q"]);
    t.wait_for("the TUI to exit cleanly", |s| s.contains("TUI-EXITED-0"));
}

#[test]
fn tui_creates_a_sandbox_with_the_n_key() {
    let Some(d) = Daemon::start() else { return };
    if !Tmux::available() {
        return;
    }
    let t = Tmux::start_tui(&d);
    let screen = t.wait_for("the TUI to start", |s| (s.contains("0 sandboxes") && s.contains("x stop")) || s.contains("TUI-EXITED"));
    assert!(screen.contains("n new"), "help line lacks the create key:\n{screen}");
    // n opens the name prompt; typed letters are the name (x is not "stop").
    t.keys(&["n"]);
    t.wait_for("the name prompt", |s| s.contains("new sandbox name"));
    t.keys(&["made-in-tuix", "BSpace", "Enter"]);
    let screen = t.wait_for("the created sandbox to show as running", |s| {
        s.lines().any(|l| l.contains("made-in-tui") && l.split_whitespace().any(|w| w == "running"))
    });
    assert!(screen.contains("made-in-tui: created"), "no confirmation:\n{screen}");
    let (s, info) = d.get("/sandboxes/made-in-tui");
    assert_eq!((s, info["status"].as_str()), (200, Some("running")), "{info}");
    // An empty name gets a generated one; Esc cancels a prompt.
    t.keys(&["n", "Enter"]);
    t.wait_for("a second sandbox", |s| s.contains("2 sandboxes —"));
    t.keys(&["n", "Escape"]);
    t.wait_for("the cancel notice", |s| s.contains("create cancelled"));
    // A name the API refuses is shown as the API's error.
    t.keys(&["n", "made-in-tui", "Enter"]);
    t.wait_for("the refusal", |s| s.contains("create failed") && s.contains("made-in-tui"));
    assert_eq!(d.get("/sandboxes").1.as_array().map(Vec::len), Some(2));
    t.keys(&["q"]);
    t.wait_for("the TUI to exit cleanly", |s| s.contains("TUI-EXITED-0"));
}

#[test]
fn no_arguments_without_a_terminal_explains_itself() {
    let Some(d) = Daemon::start() else { return };
    let out = d.heyvm(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal") && err.contains("heyvm --help"), "stderr: {err}");
}
