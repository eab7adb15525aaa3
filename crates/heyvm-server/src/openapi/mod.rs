//! The OpenAPI 3.1 document served at `GET /openapi.json`.
//!
//! Request and response schemas are generated from the wire types in
//! `heyvm-types` (their `utoipa::ToSchema` derives, feature `openapi`); the
//! operations are listed in [`operations`], one line per route, with the
//! error statuses each can answer. A unit test reads the router's source and
//! fails when a route is missing here (or listed here but not routed).

mod operations;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use utoipa::openapi::ComponentsBuilder;
use utoipa::ToSchema;

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| serde_json::to_string(&document()).unwrap_or_else(|_| "{}".into()));
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = Doc { paths: Map::new(), components: ComponentsBuilder::new() };
    operations::all(&mut doc);
    // Every wire type, so nested references (enums inside options) resolve.
    doc.components = std::mem::take(&mut doc.components)
        .schema_from::<heyvm_types::ArchiveInfo>()
        .schema_from::<heyvm_types::ApiKeyInfo>()
        .schema_from::<heyvm_types::ApiKeyCreated>()
        .schema_from::<heyvm_types::CreateApiKeyRequest>()
        .schema_from::<heyvm_types::compat::DeployRequest>()
        .schema_from::<heyvm_types::compat::DeployMount>()
        .schema_from::<heyvm_types::compat::PortMapping>()
        .schema_from::<heyvm_types::compat::DeployedSandbox>()
        .schema_from::<heyvm_types::compat::CompatExecRequest>()
        .schema_from::<heyvm_types::compat::ReadFileRequest>()
        .schema_from::<heyvm_types::compat::ReadFileResponse>()
        .schema_from::<heyvm_types::compat::WriteFileRequest>()
        .schema_from::<heyvm_types::compat::BindPortRequest>()
        .schema_from::<heyvm_types::compat::TtlRequest>()
        .schema_from::<heyvm_types::compat::ResizeRequest>()
        .schema_from::<heyvm_types::compat::InactivePage>()
        .schema_from::<heyvm_types::compat::SystemUsage>()
        .schema_from::<heyvm_types::compat::UsageSnapshot>()
        .schema_from::<heyvm_types::compat::HostUsage>()
        .schema_from::<heyvm_types::compat::SandboxUsage>()
        .schema_from::<heyvm_types::ErrorBody>()
        .schema_from::<heyvm_types::ExecRequest>()
        .schema_from::<heyvm_types::ExecResponse>()
        .schema_from::<heyvm_types::CommandLine>()
        .schema_from::<heyvm_types::ExecOperationRequest>()
        .schema_from::<heyvm_types::OperationStatus>()
        .schema_from::<heyvm_types::OperationResult>()
        .schema_from::<heyvm_types::ExecOperation>()
        .schema_from::<heyvm_types::FileEntry>()
        .schema_from::<heyvm_types::FileList>()
        .schema_from::<heyvm_types::UploadJsonRequest>()
        .schema_from::<heyvm_types::UploadResponse>()
        .schema_from::<heyvm_types::DeleteFileResponse>()
        .schema_from::<heyvm_types::LogEntry>()
        .schema_from::<heyvm_types::LogsResponse>()
        .schema_from::<heyvm_types::CreateProxyRequest>()
        .schema_from::<heyvm_types::ProxyEndpoint>()
        .schema_from::<heyvm_types::DeleteProxyQuery>()
        .schema_from::<heyvm_types::WaitForRequest>()
        .schema_from::<heyvm_types::WaitForResponse>()
        .schema_from::<heyvm_types::ProxyList>()
        .schema_from::<heyvm_types::SandboxStatus>()
        .schema_from::<heyvm_types::SizeClass>()
        .schema_from::<heyvm_types::MountSpec>()
        .schema_from::<heyvm_types::UrlInfo>()
        .schema_from::<heyvm_types::Uptime>()
        .schema_from::<heyvm_types::SandboxInfo>()
        .schema_from::<heyvm_types::NetworkMode>()
        .schema_from::<heyvm_types::CreateSandboxRequest>()
        .schema_from::<heyvm_types::UpdateSandboxRequest>()
        .schema_from::<heyvm_types::StatusResponse>()
        .schema_from::<heyvm_types::Health>()
        .schema_from::<heyvm_types::PoolStatus>();
    let components = serde_json::to_value(std::mem::take(&mut doc.components).build()).unwrap_or_default();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "heyvm API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Isolated Linux sandboxes over HTTP. Every `{id}` accepts the sandbox id, slug or name. \
                Errors are JSON `{\"error\": <stable code>, \"message\": <sentence>}`. With JWT_SECRET set on the \
                server every route but /health needs `Authorization: Bearer <token>`.",
        },
        "paths": doc.paths,
        "components": {
            "schemas": components.get("schemas").cloned().unwrap_or_else(|| json!({})),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}, {}],
    })
}

/// The stable error codes behind each status, for the responses' descriptions.
fn error_codes(status: u16) -> &'static str {
    match status {
        400 => {
            "invalid_request, invalid_json, invalid_query, invalid_path, invalid_mount, invalid_multipart, invalid_archive, backend_unavailable, \
            websocket_required, s3_disabled"
        }
        401 => "missing_token, invalid_token, invalid_signature, token_expired, token_not_yet_valid, wrong_audience",
        403 => "read_only_mount, permission_denied, forbidden",
        404 => "sandbox_not_found, file_not_found, endpoint_not_found, archive_not_found, operation_not_found, route_not_found",
        405 => "method_not_allowed",
        409 => "name_taken, invalid_state, conflict, agent_outdated, s3_prefix_in_use",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        426 => "websocket_required",
        429 => "quota_exceeded",
        500 => "sandbox_failed, backend_error, store_error, io_error",
        501 => "unsupported",
        502 => "agent_unreachable, port_unreachable, s3_unreachable, s3_error, s3_checksum_mismatch",
        507 => "no_space",
        _ => "error",
    }
}

/// Statuses every route can answer: bad input, auth, unknown sandbox, a
/// method the route lacks, an internal failure.
const COMMON_ERRORS: [u16; 5] = [400, 401, 404, 405, 500];

pub(crate) struct Doc {
    paths: Map<String, Value>,
    components: ComponentsBuilder,
}

impl Doc {
    /// Starts an operation; `path` uses axum's syntax (`{id}`, `{*path}`).
    pub(crate) fn op(&mut self, method: &str, path: &str, summary: &str) -> Op<'_> {
        Op { doc: self, method: method.to_ascii_lowercase(), path: openapi_path(path), v: json!({"summary": summary, "responses": {}}) }
    }

    /// Registers a schema that `schema_from` does not pick up by itself
    /// (types nested inside a flattened or listed field).
    pub(crate) fn schema<T: ToSchema>(&mut self) {
        self.components = std::mem::take(&mut self.components).schema_from::<T>();
    }

    fn schema_ref<T: ToSchema>(&mut self) -> Value {
        self.components = std::mem::take(&mut self.components).schema_from::<T>();
        json!({"$ref": format!("#/components/schemas/{}", T::name())})
    }
}

/// `{*path}` (axum's catch-all) is an ordinary `{path}` parameter in OpenAPI.
pub(crate) fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

pub(crate) struct Op<'a> {
    doc: &'a mut Doc,
    method: String,
    path: String,
    v: Value,
}

impl Op<'_> {
    /// A JSON request body of type `T`.
    pub fn body<T: ToSchema>(mut self) -> Self {
        let schema = self.doc.schema_ref::<T>();
        self.v["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        self
    }

    /// A JSON body the operation also accepts absent.
    pub fn optional_body<T: ToSchema>(mut self) -> Self {
        let schema = self.doc.schema_ref::<T>();
        self.v["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": schema}}});
        self
    }

    /// A request body given as content type -> schema.
    pub fn raw_body(mut self, content: Value) -> Self {
        self.v["requestBody"] = json!({"required": true, "content": content});
        self
    }

    /// The success answer: `status` with a JSON `T`.
    pub fn ok<T: ToSchema>(self, status: u16) -> Self {
        let schema = self.doc.schema_ref::<T>();
        self.ok_schema(status, schema)
    }

    /// The success answer: `status` with a JSON array of `T`.
    pub fn ok_list<T: ToSchema>(self, status: u16) -> Self {
        let schema = self.doc.schema_ref::<T>();
        self.ok_schema(status, json!({"type": "array", "items": schema}))
    }

    /// The success answer with an inline JSON schema.
    pub fn ok_schema(mut self, status: u16, schema: Value) -> Self {
        self.v["responses"][status.to_string()] = json!({"description": "success", "content": {"application/json": {"schema": schema}}});
        self
    }

    /// A success answer that is not JSON (a file, a stream, an upgrade).
    pub fn ok_other(mut self, status: u16, description: &str, content_type: Option<&str>) -> Self {
        let mut r = json!({"description": description});
        match content_type {
            // Server-sent events: the description names the events; a
            // `schema` here would be applied to each parsed event object.
            Some(ct) if ct == "text/event-stream" => r["content"] = json!({ct: {}}),
            Some(ct) => r["content"] = json!({ct: {"schema": {"type": "string", "format": "binary"}}}),
            None => {}
        }
        self.v["responses"][status.to_string()] = r;
        self
    }

    /// A header on the `status` answer (set that answer first).
    pub fn response_header(mut self, status: u16, name: &str, ty: &str, description: &str) -> Self {
        self.v["responses"][status.to_string()]["headers"][name] = json!({"description": description, "schema": {"type": ty}});
        self
    }

    /// A query parameter (`ty` is a JSON Schema type name).
    pub fn query(mut self, name: &str, ty: &str, description: &str) -> Self {
        let p = json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": ty}});
        self.params().push(p);
        self
    }

    /// The operation may create or start a sandbox (also by resuming an
    /// idle-stopped one on use), so it answers 429 `quota_exceeded` when the
    /// daemon's sandbox or running-VM quota is full.
    pub fn may_start_sandboxes(self) -> Self {
        self.errors(&[429])
    }

    /// Error statuses beyond [`COMMON_ERRORS`].
    pub fn errors(mut self, statuses: &[u16]) -> Self {
        for &s in statuses {
            self.error(s);
        }
        self
    }

    fn error(&mut self, status: u16) {
        let schema = self.doc.schema_ref::<heyvm_types::ErrorBody>();
        self.v["responses"][status.to_string()] = json!({
            "description": format!("error; `error` is one of: {}", error_codes(status)),
            "content": {"application/json": {"schema": schema}},
        });
    }

    fn params(&mut self) -> &mut Vec<Value> {
        if !self.v["parameters"].is_array() {
            self.v["parameters"] = json!([]);
        }
        self.v["parameters"].as_array_mut().expect("just set")
    }

    /// Adds the path parameters and common errors, and files the operation.
    pub fn add(mut self) {
        let names: Vec<String> = self.path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(n, _)| n.to_string()).collect();
        for name in names {
            let description = if name == "id" { "sandbox id, slug or name" } else { "path parameter" };
            let p = json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}});
            self.params().push(p);
        }
        for s in COMMON_ERRORS {
            if self.v["responses"].get(s.to_string()).is_none() {
                self.error(s);
            }
        }
        let id = format!("{}{}", self.method, self.path.replace(['/', '{', '}', '-', '.'], "_"));
        self.v["operationId"] = json!(id.trim_end_matches('_'));
        let item = self.doc.paths.entry(self.path.clone()).or_insert_with(|| json!({}));
        item[self.method.as_str()] = self.v;
    }
}
