//! The shortest path: create, exec through CLI and API, delete.

use serde_json::json;

use crate::support::Daemon;

#[test]
fn create_exec_delete() {
    let Some(d) = Daemon::start() else { return };
    let info = d.create(json!({"name": "smoke", "size_class": "micro"}));
    assert_eq!(info["status"], "running");
    assert!(info["id"].as_str().unwrap().starts_with("sb-"));
    let out = d.heyvm_json(&["exec", "smoke", "--", "echo", "hi"]);
    assert_eq!(out["stdout"], "hi\n");
    assert_eq!(out["exit_code"], 0);
    let st = d.heyvm(&["exec", "smoke", "--", "sh", "-c", "exit 7"]);
    assert_eq!(st.status.code(), Some(7));
    let (s, _) = d.delete("/sandboxes/smoke");
    assert_eq!(s, 200);
    let (s, v) = d.get("/sandboxes/smoke");
    assert_eq!(s, 404);
    assert_eq!(v["error"], "sandbox_not_found");
}
