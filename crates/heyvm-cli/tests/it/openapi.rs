//! `GET /openapi.json` from a real daemon: an OpenAPI 3.1 document whose
//! operations include the routes clients use, behind auth like the rest.

use crate::support::Daemon;

#[test]
fn the_daemon_serves_its_openapi_document() {
    let Some(d) = Daemon::start() else { return };
    let (s, doc) = d.get("/openapi.json");
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/sandboxes", "post"),
        ("/sandboxes/{id}/execute", "post"),
        ("/sandboxes/{id}/files/{path}", "get"),
        ("/images/{reference}", "put"),
        ("/images/{reference}/archive", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    // Ranged downloads: the parameters and the whole-file size header.
    let download = &doc["paths"]["/sandboxes/{id}/files/{path}"]["get"];
    let params: Vec<&str> = download["parameters"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["offset", "limit", "mount_path"] {
        assert!(params.contains(&name), "download lacks {name}: {params:?}");
    }
    assert!(download["responses"]["200"]["headers"]["x-file-size"].is_object(), "{download}");
    let created = &doc["paths"]["/sandboxes"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(created, "#/components/schemas/SandboxInfo");
    assert!(doc["components"]["schemas"]["SandboxInfo"]["properties"]["urls"].is_object());
}

#[test]
fn with_auth_the_document_needs_a_token_too() {
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", "openapi-secret")]) else { return };
    let (s, v) = d.get("/openapi.json");
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_token")), "{v}");
}
