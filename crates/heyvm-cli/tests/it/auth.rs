//! JWT auth over HTTP, `token create`, the CLI's token sources (`--token`,
//! `HEYO_ARCHIVE_TOKEN`, `heyvm login`), remote servers (`--server`,
//! `HEYO_CLOUD_URL`) with two daemons, and the non-loopback refusal.

use std::process::{Command, Stdio};
use std::time::Duration;

use heyvm_server::auth::{sign, Audience, Claims};
use serde_json::{json, Value};

use crate::support::{sandbox_support, Daemon, BIN};

const SECRET: &str = "test-secret-0123456789";
const AUD: &str = "heyvm-tests";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(exp_in: i64, aud: Option<&str>) -> Claims {
    Claims { sub: Some("tester".into()), exp: now() + exp_in, iat: Some(now()), nbf: None, aud: aud.map(|a| Audience::One(a.into())) }
}

/// A daemon with JWT_SECRET and JWT_AUDIENCE, cleaned up with a valid token
/// (the shared fixture's cleanup has none).
struct AuthDaemon {
    d: Daemon,
    token: String,
}

impl AuthDaemon {
    fn start() -> Option<AuthDaemon> {
        let d = Daemon::start_with(&[("JWT_SECRET", SECRET), ("JWT_AUDIENCE", AUD)])?;
        Some(AuthDaemon { d, token: sign(SECRET.as_bytes(), &claims(3600, Some(AUD))) })
    }

    /// A request with an optional Authorization header value.
    fn call(&self, method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> (u16, Value, Option<String>) {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
        let url = format!("{}{path}", self.d.url);
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = agent.delete(&url);
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, b) => {
                let mut r = agent.post(&url);
                if let Some(a) = auth {
                    r = r.header("Authorization", a);
                }
                r.content_type("application/json").send(b.cloned().unwrap_or(json!({})).to_string().as_bytes())
            }
        }
        .expect("HTTP request");
        let status = resp.status().as_u16();
        let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().read_to_vec().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), www)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

impl Drop for AuthDaemon {
    fn drop(&mut self) {
        let bearer = self.bearer();
        if let (200, Value::Array(items), _) = self.call("GET", "/sandboxes", Some(&bearer), None) {
            for sb in items {
                self.call("DELETE", &format!("/sandboxes/{}", sb["id"].as_str().unwrap_or("")), Some(&bearer), None);
            }
        }
    }
}

fn mint_cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(["token", "create"]).args(args).env_remove("JWT_SECRET").stdin(Stdio::null()).output().unwrap()
}

#[test]
fn auth_matrix_over_http() {
    let Some(a) = AuthDaemon::start() else { return };
    let key = SECRET.as_bytes();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing_token"),
        ("empty bearer", Some("Bearer ".into()), "missing_token"),
        ("not a JWT", Some("Bearer not-a-jwt".into()), "invalid_token"),
        ("garbage parts", Some("Bearer a.b.c".into()), "invalid_token"),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".into()), "invalid_token"),
        ("wrong signature", Some(format!("Bearer {}", sign(b"another-secret", &claims(3600, Some(AUD))))), "invalid_signature"),
        ("expired", Some(format!("Bearer {}", sign(key, &claims(-3600, Some(AUD))))), "token_expired"),
        ("wrong audience", Some(format!("Bearer {}", sign(key, &claims(3600, Some("someone-else"))))), "wrong_audience"),
        ("no audience", Some(format!("Bearer {}", sign(key, &claims(3600, None)))), "wrong_audience"),
    ];
    for (what, header, code) in &cases {
        for (method, path) in [("GET", "/sandboxes"), ("POST", "/sandboxes"), ("GET", "/no/such/route"), ("POST", "/archives")] {
            let (s, v, www) = a.call(method, path, header.as_deref(), Some(&json!({"name": "nope"})));
            assert_eq!(s, 401, "{what}: {method} {path} -> {v}");
            assert_eq!(v["error"], *code, "{what}: {v}");
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
            assert_eq!(www.as_deref(), Some("Bearer"), "{what}");
        }
    }
    // Nothing was created by the rejected POSTs.
    let (s, v, _) = a.call("GET", "/sandboxes", Some(&a.bearer()), None);
    assert_eq!((s, v), (200, json!([])));
    // /health stays open.
    let (s, v, _) = a.call("GET", "/health", None, None);
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    // A valid token (audience in a list works too) reaches the routes.
    let mut c = claims(3600, None);
    c.aud = Some(Audience::Many(vec!["x".into(), AUD.into()]));
    let (s, _, _) = a.call("GET", "/sandboxes", Some(&format!("Bearer {}", sign(key, &c))), None);
    assert_eq!(s, 200);
    let (s, v, _) = a.call("POST", "/sandboxes", Some(&a.bearer()), Some(&json!({"name": "authed", "size_class": "micro"})));
    assert_eq!(s, 201, "{v}");
    let (s, v, _) = a.call("POST", "/sandboxes/authed/execute", Some(&a.bearer()), Some(&json!({"command": "echo", "args": ["in"]})));
    assert_eq!((s, v["stdout"].as_str()), (200, Some("in\n")), "{v}");
    let (s, v, _) = a.call("POST", "/sandboxes/authed/execute", None, Some(&json!({"command": "echo"})));
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_token")));
}

#[test]
fn token_create_mints_tokens_the_server_accepts() {
    // Works without any daemon.
    let out = mint_cli(&["--sub", "ci", "--ttl", "1h", "--aud", AUD, "--secret", SECRET, "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(token.split('.').count(), 3);
    let exp = v["expires_at"].as_i64().unwrap();
    assert!((exp - (now() + 3600)).abs() < 60, "expires_at {exp}");
    // Text mode prints just the token; JWT_SECRET is read from the environment.
    let out = Command::new(BIN).args(["token", "create", "--sub", "x", "--ttl", "30m"]).env("JWT_SECRET", SECRET).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().split('.').count(), 3);
    // No secret, or a bad ttl: a clear error, non-zero exit.
    let out = mint_cli(&["--sub", "x", "--format", "json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));
    let out = mint_cli(&["--sub", "x", "--ttl", "soon", "--secret", "s"]);
    assert!(!out.status.success());

    let Some(a) = AuthDaemon::start() else { return };
    let (s, _, _) = a.call("GET", "/sandboxes", Some(&format!("Bearer {token}")), None);
    assert_eq!(s, 200);
    // Same secret, no --aud: this server requires its audience.
    let out = mint_cli(&["--sub", "ci", "--secret", SECRET]);
    let no_aud = String::from_utf8(out.stdout).unwrap();
    let (s, v, _) = a.call("GET", "/sandboxes", Some(&format!("Bearer {}", no_aud.trim())), None);
    assert_eq!((s, v["error"].as_str()), (401, Some("wrong_audience")));
}

/// The CLI against an auth-enabled daemon, with each way of giving a token.
#[test]
fn cli_token_sources() {
    let Some(a) = AuthDaemon::start() else { return };
    let home = tempfile::tempdir().unwrap();
    // A client machine: its own data dir (for token.json), no token env.
    let cli = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("MVM_DATA_DIR", home.path())
            .env("HEYVM_API_URL", &a.d.url)
            .env_remove("HEYO_ARCHIVE_TOKEN")
            .env_remove("HEYVM_TOKEN")
            .env_remove("HEYO_CLOUD_URL")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let json_err = |o: &std::process::Output| -> Value { serde_json::from_slice(&o.stderr).unwrap_or(Value::Null) };

    let out = cli(&["list", "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_err(&out)["error"], "missing_token", "{}", String::from_utf8_lossy(&out.stderr));

    let out = cli(&["create", "--name", "via-flag", "--size-class", "micro", "--token", &a.token, "--format", "json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = cli(&["exec", "via-flag", "--format", "json", "--", "echo", "env-token"], &[("HEYO_ARCHIVE_TOKEN", &a.token)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["stdout"], "env-token\n");
    let out = cli(&["list", "--format", "json"], &[("HEYVM_TOKEN", &a.token)]);
    assert!(out.status.success());

    // A bad token in the environment is reported as such.
    let expired = sign(SECRET.as_bytes(), &claims(-600, Some(AUD)));
    let out = cli(&["list", "--format", "json"], &[("HEYO_ARCHIVE_TOKEN", &expired)]);
    assert_eq!(json_err(&out)["error"], "token_expired");

    // heyvm login stores the token; later commands use it.
    let out = cli(&["login", "--token", &a.token, "--format", "json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value = serde_json::from_slice(&std::fs::read(home.path().join("token.json")).unwrap()).unwrap();
    assert_eq!(stored["access_token"], a.token.as_str());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("token.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "token.json must be private, mode {mode:o}");
    let out = cli(&["list", "--format", "json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap().into_iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("via-flag")]);
    // The flag wins over the stored token.
    let out = cli(&["list", "--format", "json", "--token", "bogus"], &[]);
    assert_eq!(json_err(&out)["error"], "invalid_token");
    // Refuses an already expired token.
    let out = cli(&["login", "--token", &expired], &[]);
    assert!(!out.status.success());

    let out = cli(&["logout", "--format", "json"], &[]);
    assert!(out.status.success());
    assert!(!home.path().join("token.json").exists());
    let out = cli(&["list", "--format", "json"], &[]);
    assert_eq!(json_err(&out)["error"], "missing_token");

    // HEYO_CLOUD_URL names the server when --server/HEYVM_API_URL do not.
    let out = Command::new(BIN)
        .args(["get", "via-flag", "--format", "json"])
        .env("MVM_DATA_DIR", home.path())
        .env_remove("HEYVM_API_URL")
        .env("HEYO_CLOUD_URL", &a.d.url)
        .env("HEYO_ARCHIVE_TOKEN", &a.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["name"], "via-flag");
}

/// Two daemons on loopback, each with its own data dir: the CLI's default
/// server is one, `--server` reaches the other.
#[test]
fn two_servers_via_server_flag() {
    let Some(local) = Daemon::start() else { return };
    let Some(remote) = AuthDaemon::start() else { return };
    let run = |args: &[&str]| {
        let mut c = local.cmd();
        c.args(args).env("HEYO_ARCHIVE_TOKEN", &remote.token);
        c.output().unwrap()
    };
    let ok = |o: std::process::Output| -> Value {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // Machine A creates on the remote server.
    let created = ok(run(&["--server", &remote.d.url, "create", "--name", "shared", "--size-class", "micro", "--format", "json"]));
    // Something local too, so the lists differ.
    ok(run(&["create", "--name", "local-only", "--size-class", "micro", "--format", "json"]));
    // Machine B (another client, no shared state but the server URL) finds and uses it.
    let other_client = tempfile::tempdir().unwrap();
    let b = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("MVM_DATA_DIR", other_client.path())
            .env_remove("HEYVM_API_URL")
            .env("HEYO_ARCHIVE_TOKEN", &remote.token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let list = ok(b(&["--server", &remote.d.url, "list", "--format", "json"]));
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shared"]);
    assert_eq!(list[0]["id"], created["id"]);
    let out = ok(b(&["--server", &remote.d.url, "exec", "shared", "--format", "json", "--", "uname", "-n"]));
    assert_eq!(out["stdout"], "shared\n");
    // The local server has only its own sandbox.
    let local_list = ok(run(&["list", "--format", "json"]));
    let names: Vec<&str> = local_list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["local-only"]);
    let out = run(&["exec", "shared", "--format", "json", "--", "true"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stderr).unwrap()["error"], "sandbox_not_found");
}

#[test]
fn non_loopback_needs_jwt_secret() {
    if !sandbox_support() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--api", "--host", "0.0.0.0", "--port", "0"])
        .env("MVM_DATA_DIR", data.path())
        .env_remove("JWT_SECRET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0") && err.contains("JWT_SECRET"), "{err}");
    // With a secret it listens there (and still guards the routes).
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    assert!(d.url.starts_with("http://0.0.0.0:"), "{}", d.url);
    let (s, v) = d.get("/sandboxes");
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_token")));
}
