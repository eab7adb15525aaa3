//! Token scope: the 60-second token in a shell session's `connection_url`
//! opens that sandbox's shell stream and nothing else — not the API, not a
//! private proxy endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::Daemon;

const SECRET: &str = "hostile-token-secret";

fn get(addr: &str, path: &str, bearer: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_stream_token_opens_no_private_endpoint() {
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    let out = d.cmd().args(["token", "create", "--sub", "t", "--ttl", "1h"]).env("JWT_SECRET", SECRET).output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let api = format!("127.0.0.1:{}", d.port);
    let call = |method: &str, path: &str, body: &Value| -> Value {
        let out = std::process::Command::new("curl")
            .args(["-s", "-X", method, "-H", &format!("authorization: Bearer {token}"), "-H", "content-type: application/json"])
            .args(["-d", &body.to_string(), &format!("http://{api}{path}")])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let sb = call(
        "POST",
        "/sandboxes",
        &json!({"name": "tok", "size_class": "micro", "start_command": "cd /tmp && exec python3 -m http.server 8080"}),
    );
    let id = sb["id"].as_str().unwrap().to_string();
    let ready = call("POST", &format!("/sandboxes/{id}/wait-for"), &json!({"port": 8080, "timeout_secs": 30}));
    assert_eq!(ready["ready"], true, "{ready}");
    let ep = call("POST", &format!("/sandboxes/{id}/proxy"), &json!({"port": 8080, "is_public": false}));
    let local = ep["local_url"].as_str().unwrap_or_else(|| panic!("{ep}")).trim_start_matches("http://").to_string();
    assert_eq!(get(&local, "/", &token), 200, "the full token opens the private endpoint");
    let session = call("POST", &format!("/sandboxes/{id}/shell-session"), &json!({}));
    let url = session["connection_url"].as_str().unwrap();
    let stream_token = url.split("token=").nth(1).unwrap().split('&').next().unwrap().to_string();
    assert_eq!(get(&local, "/", &stream_token), 401, "a shell-stream token opened a private endpoint");
    assert_eq!(get(&api, "/sandboxes", &stream_token), 401, "a shell-stream token opened the API");
    call("DELETE", &format!("/sandboxes/{id}"), &json!({}));
}
