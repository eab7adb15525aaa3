//! The router in-process (`oneshot`) over the fake backend: routes, auth
//! and bad input without root, sockets or bubblewrap.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use heyvm_core::fake::FakeBackend;
use heyvm_core::manager::ManagerConfig;
use heyvm_core::{DataDir, SandboxManager};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{auth::AuthConfig, proxy::ProxyHub, router, AppState};

async fn app(dir: &std::path::Path, secret: Option<&str>) -> axum::Router {
    let config = ManagerConfig { pool_size: 0, ..ManagerConfig::default() };
    let mgr = SandboxManager::open(DataDir::new(dir.to_path_buf()), vec![Arc::new(FakeBackend)], config).await.unwrap();
    let keys = Arc::new(heyvm_core::api_keys::ApiKeyStore::open(&DataDir::new(dir.to_path_buf()).db_path()).unwrap());
    let auth = secret.map(|s| Arc::new(AuthConfig::new(s, None).with_api_keys(keys.clone())));
    let proxy = ProxyHub::new(mgr.clone(), auth.clone(), None, 0);
    let computers = Arc::new(crate::routes::computers::Computers::open(&DataDir::new(dir.to_path_buf()).db_path()).unwrap());
    router(AppState { mgr, auth, proxy, keys, computers })
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<Value>, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_exec_and_errors_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None).await;
    let (s, v) = call(&app, "POST", "/sandboxes", Some(json!({"name": "r1"})), None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(&app, "POST", "/sandboxes/r1/execute", Some(json!({"command": "echo hi", "cwd": "/tmp"})), None).await;
    assert_eq!((s, v["stdout"].as_str()), (StatusCode::OK, Some("hi\n")), "{v}");
    let (s, v) = call(&app, "POST", "/sandboxes/r1/execute", Some(json!({"command": "x", "timeout_secs": -5})), None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let (s, v) = call(&app, "POST", "/sandboxes/r1/execute", Some(json!({"command": 5})), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].is_string(), "errors are JSON with a code: {v}");
    let (s, v) = call(&app, "GET", "/sandboxes/nope", None, None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("sandbox_not_found")));
    let (s, _) = call(&app, "POST", "/sandboxes/r1/stop", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&app, "POST", "/sandboxes/r1/shell-session", None, None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_rejects_missing_and_forged_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), Some("s3cret")).await;
    let (s, v) = call(&app, "GET", "/sandboxes", None, None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));
    let forged = AuthConfig::new("other", None).mint("x", 60);
    let (s, v) = call(&app, "GET", "/sandboxes", None, Some(&forged)).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_signature")));
    let good = AuthConfig::new("s3cret", None).mint("x", 60);
    let (s, _) = call(&app, "GET", "/sandboxes", None, Some(&good)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "GET", "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
}
