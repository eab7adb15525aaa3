//! The document against the router: every routed (method, path) is
//! documented and nothing else is. The routes are read from the router's
//! own source (`.route("PATH", get(..).post(..))` calls), so a new route
//! fails this test until it is described in `operations.rs`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (METHOD, path) pairs routed in `src/` (the openapi module aside).
fn routed() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files = Vec::new();
    collect_rs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
        let calls = src.matches(".route(").count();
        let parsed = parse_routes(&src);
        assert_eq!(parsed.len(), calls, "{}: could not read every .route(…) call (path must be a string literal)", file.display());
        for (path, methods) in parsed {
            assert!(!methods.is_empty(), "{}: route {path} has no method this test recognises", file.display());
            for m in methods {
                out.insert((m.to_ascii_uppercase(), super::openapi_path(&path)));
            }
        }
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "openapi") {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Each `.route("PATH", EXPR)`: the path and the method functions called at
/// the top level of EXPR (`get(..).post(..).layer(..)` -> get, post).
fn parse_routes(src: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (at, _) in src.match_indices(".route(") {
        let rest = &src[at + ".route(".len()..];
        let Some(rest) = rest.trim_start().strip_prefix('"') else { continue };
        let Some(end) = rest.find('"') else { continue };
        let path = rest[..end].to_string();
        let expr = rest[end + 1..].trim_start().trim_start_matches(',');
        let (mut depth, mut methods, mut ident) = (0i32, Vec::new(), String::new());
        for c in expr.chars() {
            match c {
                '(' | '{' | '[' => {
                    if depth == 0 && METHODS.contains(&ident.as_str()) {
                        methods.push(ident.clone());
                    }
                    depth += 1;
                }
                ')' | '}' | ']' if depth == 0 => break,
                ')' | '}' | ']' => depth -= 1,
                _ => {}
            }
            if c.is_ascii_alphanumeric() || c == '_' {
                ident.push(c);
            } else {
                ident.clear();
            }
        }
        out.push((path, methods));
    }
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            out.insert((m.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let routes = routed();
    assert!(routes.len() > 40, "the source scan found only {} routes", routes.len());
    let doc = super::document();
    let documented = documented(&doc);
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(missing.is_empty(), "routes without an OpenAPI operation (add them to openapi/operations.rs): {missing:?}");
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[test]
fn the_scanner_reads_method_chains() {
    let src = r#".route("/a/{id}", get(x::y).post(|s: S| async move { s.get(1) }).layer(L::max(3)))
        .route("/b/{*path}", axum::routing::delete(z))"#;
    let got = parse_routes(src);
    assert_eq!(got, [("/a/{id}".to_string(), vec!["get".to_string(), "post".to_string()]), ("/b/{*path}".into(), vec!["delete".into()])]);
}

#[test]
fn operations_have_errors_and_every_reference_resolves() {
    let doc = super::document();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["SandboxInfo", "CreateSandboxRequest", "ExecResponse", "ErrorBody", "DeployedSandbox"] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|s| s.starts_with('4')), "{method} {path} lists no client errors");
            assert!(op["operationId"].is_string(), "{method} {path}");
            for p in path.split('{').skip(1) {
                let name = &p[..p.find('}').unwrap()];
                assert!(op["parameters"].as_array().unwrap().iter().any(|x| x["name"] == name && x["in"] == "path"), "{method} {path}");
            }
        }
    }
}

/// Answers the microVM tier really gives (found by `fuzz::` on kvm): the
/// file routes of a stopped VM answer 409 `invalid_state` (only the guest
/// sees its disks), and changing a running VM's size class 501.
#[test]
fn the_vm_tiers_answers_are_documented() {
    let doc = super::document();
    for (method, path, status) in [
        ("get", "/sandboxes/{id}/files", "409"),
        ("get", "/sandboxes/{id}/files/{path}", "409"),
        ("post", "/sandbox/{id}/read-file", "409"),
        ("post", "/sandboxes/{id}/files", "409"),
        ("delete", "/sandboxes/{id}/files/{path}", "409"),
        ("post", "/deployed-sandboxes/{id}/resize", "501"),
        ("patch", "/sandboxes/{id}", "501"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "no operation {method} {path}");
        assert!(op["responses"][status].is_object(), "{method} {path} does not document {status}");
    }
}

/// Every operation that can create or start a sandbox documents the
/// quota's 429 (`quota_exceeded`), and no read-only one does.
#[test]
fn the_quota_answer_is_documented_where_sandboxes_start() {
    let doc = super::document();
    for (method, path) in [
        ("post", "/sandboxes"),
        ("post", "/sandboxes/{id}/start"),
        ("post", "/sandboxes/{id}/restart"),
        ("post", "/sandboxes/{id}/restore"),
        ("post", "/sandboxes/{id}/fork"),
        ("post", "/sandboxes/{id}/execute"),
        ("post", "/sandbox-deploy"),
        ("post", "/sandbox/{id}/start"),
        ("post", "/api/agents/{id}/threads/{thread}/computer/run"),
    ] {
        let answer = &doc["paths"][path][method]["responses"]["429"];
        assert!(answer["description"].as_str().is_some_and(|d| d.contains("quota_exceeded")), "{method} {path}: {answer}");
    }
    for (method, path) in [("get", "/sandboxes"), ("post", "/sandboxes/{id}/stop"), ("delete", "/sandboxes/{id}")] {
        assert!(doc["paths"][path][method]["responses"]["429"].is_null(), "{method} {path} documents 429");
    }
}
