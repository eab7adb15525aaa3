//! API keys: create/list/revoke over HTTP and the CLI, a key as Bearer
//! token (HTTP and `HEYVM_API_KEY`), `HEYO_API_KEY` with its deprecation
//! warning, and the 401s for unknown, revoked and expired keys.

use std::process::Stdio;

use heyvm_server::auth::{sign, Claims};
use serde_json::{json, Value};

use crate::support::Daemon;

const SECRET: &str = "api-key-test-secret-42";

fn admin_token() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    sign(SECRET.as_bytes(), &Claims { sub: Some("admin".into()), exp: now + 3600, iat: Some(now), nbf: None, aud: None })
}

fn call(d: &Daemon, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}{path}", d.url);
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" { agent.get(&url) } else { agent.delete(&url) };
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.content_type("application/json").send(body.unwrap_or(json!({})).to_string().as_bytes())
        }
    }
    .unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.into_body().read_to_vec().unwrap()).unwrap_or(Value::Null))
}

/// The CLI against `d` with the given environment and no other credentials.
fn cli(d: &Daemon, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = d.cmd();
    c.env_remove("HEYVM_API_KEY").env_remove("HEYO_API_KEY").env_remove("HEYO_ARCHIVE_TOKEN").env_remove("HEYVM_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn keys_work_as_bearer_until_revoked() {
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    let admin = admin_token();
    // Creating a key needs auth like every route.
    assert_eq!(call(&d, "POST", "/api-keys", None, Some(json!({"name": "ci"}))).0, 401);
    let (s, k) = call(&d, "POST", "/api-keys", Some(&admin), Some(json!({"name": "ci"})));
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("hvk_") && k["id"].as_str().unwrap().starts_with("key-"));
    assert_eq!(k["expires_at"], Value::Null);
    // The key works as a Bearer token, including on routes of its own kind.
    let (s, v) = call(&d, "POST", "/sandboxes", Some(&key), Some(json!({"name": "keyed", "size_class": "micro"})));
    assert_eq!(s, 201, "{v}");
    let (s, list) = call(&d, "GET", "/api-keys", Some(&key), None);
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("key").is_none(), "a listing never shows the secret: {list}");
    assert!(key.starts_with(list[0]["prefix"].as_str().unwrap()));
    // The CLI with HEYVM_API_KEY.
    let out = cli(&d, &[("HEYVM_API_KEY", &key)], &["exec", "keyed", "echo", "via-key"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-key\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty());
    // HEYO_API_KEY works with a one-line deprecation warning.
    let out = cli(&d, &[("HEYO_API_KEY", &key)], &["exec", "keyed", "echo", "legacy"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "legacy\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("HEYO_API_KEY is deprecated") && err.contains("HEYVM_API_KEY"), "{err}");
    // HEYVM_API_KEY wins over HEYO_API_KEY (no warning then) and --token over both.
    let out = cli(&d, &[("HEYVM_API_KEY", &key), ("HEYO_API_KEY", "hvk_wrong")], &["list"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&d, &[("HEYVM_API_KEY", "hvk_wrong")], &["--token", &key, "list"]);
    assert!(out.status.success());
    // Unknown key.
    let (s, v) = call(&d, "GET", "/sandboxes", Some("hvk_0000000000000000000000000000000000000000000000000000000000000000"), None);
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_api_key")));
    // Revoke through the CLI: the key stops working at once.
    let out = cli(&d, &[("HEYVM_API_KEY", &key)], &["api-keys", "revoke", k["id"].as_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (s, v) = call(&d, "GET", "/sandboxes", Some(&key), None);
    assert_eq!((s, v["error"].as_str()), (401, Some("api_key_revoked")));
    let out = cli(&d, &[("HEYVM_API_KEY", &key)], &["list", "--format", "json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_key_revoked"));
    let (s, v) = call(&d, "DELETE", &format!("/api-keys/{}", k["id"].as_str().unwrap()), Some(&admin), None);
    assert_eq!((s, v["error"].as_str()), (404, Some("api_key_not_found")));
    // Bad input.
    let (s, v) = call(&d, "POST", "/api-keys", Some(&admin), Some(json!({"name": ""})));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    let (s, _) = call(&d, "POST", "/api-keys", Some(&admin), Some(json!({"name": "x", "ttl_seconds": 0})));
    assert_eq!(s, 400);
    let (s, _) = call(&d, "POST", "/api-keys", Some(&admin), Some(json!({"nom": "x"})));
    assert_eq!(s, 400);
    let (_, v) = call(&d, "DELETE", "/sandboxes/keyed", Some(&admin), None);
    assert_eq!(v["id"].as_str().map(|s| s.starts_with("sb-")), Some(true));
}

#[test]
fn expired_keys_are_refused_and_cli_manages_keys() {
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    let admin = admin_token();
    let out = cli(&d, &[], &["--token", &admin, "api-keys", "create", "--name", "short", "--ttl", "1s", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let k: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(k["expires_at"].as_i64().unwrap() - k["created_at"].as_i64().unwrap(), 1);
    let key = k["key"].as_str().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (s, v) = call(&d, "GET", "/sandboxes", Some(key), None);
    assert_eq!((s, v["error"].as_str()), (401, Some("api_key_expired")));
    // Text listing shows id, name and prefix, never the key.
    let out = cli(&d, &[], &["--token", &admin, "api-keys", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(k["id"].as_str().unwrap()) && text.contains("short") && !text.contains(key), "{text}");
}
