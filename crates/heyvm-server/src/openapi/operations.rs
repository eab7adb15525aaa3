//! One line per route of [`crate::router`]: method, path (axum syntax),
//! summary, body, success answer and the errors beyond the common ones.
//! `openapi::tests` fails when the router and this list disagree.

use heyvm_types::compat::{
    BindPortRequest, CompatExecRequest, DeployRequest, DeployedSandbox, InactivePage, ReadFileRequest, ReadFileResponse, ResizeRequest,
    SystemUsage, TtlRequest, WriteFileRequest,
};
use heyvm_types::*;
use serde_json::{json, Value};

use super::Doc;

const WS: &str = "WebSocket upgrade (send `Connection: Upgrade`, `Upgrade: websocket`)";

pub(crate) fn all(d: &mut Doc) {
    native(d);
    images(d);
    checkpoints(d);
    computers(d);
    files_and_streams(d);
    compat(d);
}

fn native(d: &mut Doc) {
    d.op("GET", "/health", "Liveness; never needs a token").ok::<Health>(200).add();
    d.op("GET", "/openapi.json", "This document").ok_schema(200, json!({"type": "object"})).add();
    d.op("GET", "/system/pool", "Warm pool: launched-but-unnamed sandboxes and the target size").ok::<PoolStatus>(200).add();
    d.op("GET", "/sandboxes", "List sandboxes (all states unless `status` is given)")
        .query("status", "string", "provisioning, running, stopped, paused, failed or all")
        .ok_list::<SandboxInfo>(200)
        .add();
    d.op("POST", "/sandboxes", "Create a sandbox and start it; `open_ports` are bound as public endpoints")
        .body::<CreateSandboxRequest>()
        .ok::<SandboxInfo>(201)
        .errors(&[403, 409, 413, 415, 502])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/archives", "Upload a tar.gz for `archive_id` on create (kept HEYVM_ARCHIVE_TTL_SECS)")
        .raw_body(json!({"application/gzip": {"schema": {"type": "string", "format": "binary"}}}))
        .ok::<ArchiveInfo>(201)
        .errors(&[413])
        .add();
    d.op("GET", "/api-keys", "API keys (never their secrets)").ok_list::<ApiKeyInfo>(200).add();
    d.op("POST", "/api-keys", "Create an API key; the secret is shown once")
        .body::<CreateApiKeyRequest>()
        .ok::<ApiKeyCreated>(201)
        .errors(&[409, 415])
        .add();
    d.op("DELETE", "/api-keys/{id}", "Revoke an API key").ok_schema(200, json!({"type": "object"})).add();
    d.op("GET", "/sandboxes/{id}", "One sandbox").ok::<SandboxInfo>(200).add();
    d.op("PATCH", "/sandboxes/{id}", "Change a sandbox's settings; new `open_ports` are bound (501: a running VM's size class)")
        .body::<UpdateSandboxRequest>()
        .ok::<SandboxInfo>(200)
        .errors(&[409, 415, 501])
        .add();
    d.op("DELETE", "/sandboxes/{id}", "Delete a sandbox with all its files")
        .ok_schema(
            200,
            json!({"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "deleted": {"type": "boolean"}}}),
        )
        .errors(&[409, 502])
        .add();
    for (verb, what) in [
        ("start", "Start a stopped or failed sandbox"),
        ("stop", "Stop (SIGTERM, then SIGKILL); files are kept"),
        ("restart", "Stop and start again"),
        ("force-stop", "Kill every process at once"),
    ] {
        let op = d.op("POST", &format!("/sandboxes/{{id}}/{verb}"), what).ok::<SandboxInfo>(200).errors(&[409, 502]);
        // Starting needs room under the quotas (see heyvm-core's quota.rs).
        if verb == "start" || verb == "restart" { op.may_start_sandboxes() } else { op }.add();
    }
    d.op("POST", "/sandboxes/{id}/execute", "Run a command and wait for it; a non-zero exit is a 200 with its exit_code")
        .body::<ExecRequest>()
        .ok::<ExecResponse>(200)
        .errors(&[409, 415, 502])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandboxes/{id}/exec-operations", "Start an idempotent exec operation (by operationId)")
        .body::<ExecOperationRequest>()
        .ok::<ExecOperation>(201)
        .ok::<ExecOperation>(200)
        .errors(&[409, 415, 502])
        .add();
    d.op("GET", "/sandboxes/{id}/exec-operations/{op}", "An exec operation's state and result").ok::<ExecOperation>(200).add();
    d.op("GET", "/sandboxes/{id}/logs", "Log entries (start command, setup hooks, lifecycle)")
        .query("limit", "integer", "how many entries (default 100, at most 10000)")
        .query("offset", "integer", "first entry")
        .query("tail", "boolean", "the last `limit` entries")
        .query("source", "string", "stdout, stderr, setup or system")
        .query("level", "string", "info, warn or error")
        .query("since", "integer", "only entries at or after this Unix time")
        .query("until", "integer", "only entries at or before this Unix time")
        .ok::<LogsResponse>(200)
        .add();
    d.op("GET", "/sandboxes/{id}/mounts", "A sandbox's mounts").ok_list::<MountSpec>(200).add();
    d.op("POST", "/sandboxes/{id}/mounts", "Add a mount (applies at the next start)")
        .body::<MountSpec>()
        .ok_schema(201, json!({"type": "object"}))
        .errors(&[403, 409, 415])
        .add();
    d.op("DELETE", "/sandboxes/{id}/mounts/{*path}", "Remove the mount at this sandbox path")
        .ok_schema(200, json!({"type": "object"}))
        .add();
    d.op("GET", "/sandboxes/{id}/proxy", "The sandbox's proxy endpoints").ok::<ProxyList>(200).add();
    d.op("POST", "/sandboxes/{id}/proxy", "Expose a port through the proxy")
        .body::<CreateProxyRequest>()
        .ok::<ProxyEndpoint>(201)
        .errors(&[409, 415])
        .add();
    d.op("DELETE", "/sandboxes/{id}/proxy", "Remove a proxy endpoint")
        .query("subdomain", "string", "the endpoint's subdomain")
        .ok::<ProxyEndpoint>(200)
        .add();
    d.op("POST", "/sandboxes/{id}/wait-for", "Wait until a port inside the sandbox answers (through the agent)")
        .body::<WaitForRequest>()
        .ok::<WaitForResponse>(200)
        .errors(&[409, 415])
        .add();
}

fn images(d: &mut Doc) {
    d.schema::<ImageLayer>();
    d.op("GET", "/images", "Tagged images in the store").ok_list::<ImageInfo>(200).add();
    d.op(
        "POST",
        "/images/pull",
        "Pull an image from its registry (mirrors first); `Accept: text/event-stream` streams progress, then `done` or `error`",
    )
    .body::<PullImageRequest>()
    .ok::<ImageInfo>(200)
    .errors(&[400, 415, 502])
    .add();
    d.op("POST", "/images/tag", "Give an image another reference").body::<TagImageRequest>().ok::<ImageInfo>(201).errors(&[400, 415]).add();
    d.op("POST", "/images/prune", "Delete layers and blobs no image references").ok::<PruneImagesResponse>(200).add();
    d.op("POST", "/images/login", "Keep credentials for a registry (daemon-side, 0600)")
        .body::<RegistryLoginRequest>()
        .ok_schema(200, json!({"type": "object"}))
        .errors(&[400, 415])
        .add();
    d.op("POST", "/images/push", "Push an image to its registry; `Accept: text/event-stream` streams progress")
        .body::<PushImageRequest>()
        .ok_schema(200, json!({"type": "object", "properties": {"reference": {"type": "string"}, "digest": {"type": "string"}}}))
        .errors(&[400, 415, 502])
        .add();
    d.op(
        "POST",
        "/images/build",
        "Build an image from a Dockerfile; the body is the context as tar.gz; `Accept: text/event-stream` streams steps and output",
    )
    .query("t", "string", "the reference to tag the result with")
    .query("dockerfile", "string", "the Dockerfile's path in the context (default Dockerfile)")
    .query("target", "string", "the stage to build")
    .query("no_cache", "boolean", "ignore the build cache")
    .query("build_arg", "string", "K=V, repeatable")
    .raw_body(json!({"application/gzip": {"schema": {"type": "string", "format": "binary"}}}))
    .ok_schema(200, json!({"type": "object"}))
    .errors(&[400, 413, 502])
    .add();
    d.op("GET", "/images/{reference}", "One image: config and layers (the reference is one percent-encoded segment)")
        .ok::<ImageDetails>(200)
        .add();
    d.op("DELETE", "/images/{reference}", "Remove an image's reference (409 image_in_use while sandboxes use it)")
        .ok_schema(200, json!({"type": "object"}))
        .errors(&[409])
        .add();
    d.op(
        "PUT",
        "/images/{reference}",
        "Upload an image under this name (heyo-sdk's upload_image): the body is an OCI image archive (tar or tar.gz) or an ext4 root \
         filesystem; header x-heyo-sha256 (hex) is checked; 400 invalid_image_archive for anything else",
    )
    .query("grow_gb", "integer", "accepted for heyo-sdk; layered images have no fixed size, so it changes nothing")
    .raw_body(json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}))
    .ok::<ImageInfo>(201)
    .errors(&[400, 413])
    .add();
    d.op(
        "GET",
        "/images/{reference}/archive",
        "The image as an OCI image archive (tar; `images load` and `skopeo copy oci-archive:` read it)",
    )
    .ok_other(200, "an OCI image layout as tar", Some("application/x-tar"))
    .add();
}

fn checkpoints(d: &mut Doc) {
    d.schema::<ProcessFate>();
    d.op("GET", "/system/backends", "The daemon's isolation backends, whether each works here and its accelerator")
        .ok_list::<BackendInfo>(200)
        .add();
    d.op("GET", "/sandboxes/{id}/checkpoints", "A sandbox's checkpoints, oldest first").ok_list::<CheckpointInfo>(200).add();
    d.op(
        "POST",
        "/sandboxes/{id}/checkpoints",
        "Checkpoint a sandbox: a VM's memory and disks, or a bubblewrap sandbox's files (body optional)",
    )
    .optional_body::<CheckpointRequest>()
    .ok::<CheckpointInfo>(201)
    .errors(&[409, 501])
    .add();
    d.op("DELETE", "/sandboxes/{id}/checkpoints/{name}", "Delete a checkpoint")
        .ok_schema(200, json!({"type": "object", "properties": {"name": {"type": "string"}, "deleted": {"type": "boolean"}}}))
        .add();
    d.op("POST", "/sandboxes/{id}/restore", "Put a sandbox back to a checkpoint (the latest when `name` is omitted; body optional)")
        .optional_body::<RestoreRequest>()
        .ok::<RestoreResponse>(200)
        .errors(&[409, 501])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandboxes/{id}/fork", "Create a new sandbox from a checkpoint (taken now if there is none; body optional)")
        .optional_body::<ForkRequest>()
        .ok::<RestoreResponse>(201)
        .errors(&[409, 501])
        .may_start_sandboxes()
        .add();
}

/// Seed 000's agent computers (camelCase bodies, as heyvm's agents service).
fn computers(d: &mut Doc) {
    let obj = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let run = obj(
        json!({"command": {"type": "string"}, "cwd": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}},
               "timeoutSecs": {"type": "number"}, "stdin": {"type": "string"}}),
        &["command"],
    );
    let json_body = |schema: Value| json!({"application/json": {"schema": schema}});
    let any = json!({"type": "object"});
    d.op("POST", "/api/agents/from-template", "Create an agent's computer from a template and start bootstrapping it")
        .raw_body(json_body(obj(
            json!({"agentId": {"type": "string"}, "template": {"description": "any JSON, recorded in the bootstrap's events"}}),
            &["agentId"],
        )))
        .ok_schema(202, any.clone())
        .ok_schema(200, any.clone())
        .errors(&[409, 415])
        .add();
    d.op("PUT", "/api/agents/{id}/computer", "Set an agent's computer settings (provider, mode, scope, sizeClass)")
        .raw_body(json_body(obj(
            json!({"enabled": {"type": "boolean"}, "provider": {"type": "string"}, "mode": {"type": "string"}, "scope": {"type": "string"},
                   "sizeClass": {"type": "string"}, "settings": {"type": "object"}}),
            &[],
        )))
        .ok_schema(200, any.clone())
        .errors(&[415])
        .add();
    d.op("GET", "/api/agents/{id}/computer", "An agent's computer settings").ok_schema(200, any.clone()).add();
    d.op("GET", "/api/agents/{id}/computer/status", "Whether the agent's computer is ready, and its sandbox")
        .ok_schema(200, any.clone())
        .add();
    d.op("GET", "/api/agents/{id}/computer/bootstrap/stream", "The bootstrap's progress as server-sent events")
        .ok_other(200, "server-sent events", Some("text/event-stream"))
        .add();
    d.op(
        "POST",
        "/api/agents/{id}/computer/exec",
        "Run a command on the agent-scoped computer; output as server-sent events (409 SANDBOX_NOT_READY while bootstrapping)",
    )
    .raw_body(json_body(run.clone()))
    .ok_other(200, "server-sent events: stdout, stderr, exit", Some("text/event-stream"))
    .errors(&[409, 415, 502])
    .may_start_sandboxes()
    .add();
    d.op("POST", "/api/agents/{id}/threads/{thread}/computer/run", "Run a command on the thread's computer")
        .raw_body(json_body(run))
        .ok_schema(200, any.clone())
        .errors(&[409, 415, 502])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/api/agents/{id}/threads/{thread}/computer/read-file", "Read a file on the thread's computer")
        .raw_body(json_body(obj(
            json!({"path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}}),
            &["path"],
        )))
        .ok_schema(200, any.clone())
        .errors(&[403, 409, 415])
        .may_start_sandboxes()
        .add();
    d.op(
        "POST",
        "/api/agents/{id}/threads/{thread}/computer/write-file",
        "Write a file on the thread's computer (`encoding`: utf8 or base64)",
    )
    .raw_body(json_body(obj(
        json!({"path": {"type": "string"}, "content": {"type": "string"}, "encoding": {"type": "string"}}),
        &["path", "content"],
    )))
    .ok_schema(200, any.clone())
    .errors(&[403, 409, 413, 415])
    .may_start_sandboxes()
    .add();
    d.op("DELETE", "/api/agents/{id}/threads/{thread}", "End a thread: its ephemeral computer is deleted").ok_schema(200, any).add();
}

fn files_and_streams(d: &mut Doc) {
    d.op("GET", "/sandboxes/{id}/files", "List a directory")
        .query("mount_path", "string", "a mount's sandbox path (default /workspace)")
        .query("path", "string", "relative to the mount, or absolute")
        .ok::<FileList>(200)
        .errors(&[403, 409])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandboxes/{id}/files", "Upload a file (multipart: mount_path, file_path, file)")
        .raw_body(json!({"multipart/form-data": {"schema": {"type": "object", "properties": {
            "mount_path": {"type": "string"}, "file_path": {"type": "string"}, "file": {"type": "string", "format": "binary"}}}}}))
        .ok::<UploadResponse>(201)
        .errors(&[403, 409, 413, 415])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandboxes/{id}/files/upload", "Upload a file as base64 JSON")
        .body::<UploadJsonRequest>()
        .ok::<UploadResponse>(201)
        .errors(&[403, 409, 413, 415])
        .may_start_sandboxes()
        .add();
    d.op("GET", "/sandboxes/{id}/files/{*path}", "Download a file (all of it, or `limit` bytes from `offset`)")
        .query("mount_path", "string", "a mount's sandbox path (default /workspace); omit it for an absolute path")
        .query("offset", "integer", "first byte to send (default 0)")
        .query("limit", "integer", "most bytes to send (default: to the end)")
        .ok_other(200, "the file's bytes (the range asked for)", Some("application/octet-stream"))
        .response_header(200, "x-file-size", "integer", "the whole file's size, beside the Content-Length of a range")
        .errors(&[403, 409])
        .may_start_sandboxes()
        .add();
    d.op("DELETE", "/sandboxes/{id}/files/{*path}", "Delete a file (a directory with recursive=true)")
        .query("mount_path", "string", "a mount's sandbox path (default /workspace)")
        .query("recursive", "boolean", "delete a directory with its contents")
        .ok::<DeleteFileResponse>(200)
        .errors(&[403, 409])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandboxes/{id}/exec/stream", "Run a command, streaming its output as server-sent events")
        .body::<ExecRequest>()
        .ok_other(200, "events: exec_started, stdout, stderr, exit", Some("text/event-stream"))
        .errors(&[409, 415, 502])
        .may_start_sandboxes()
        .add();
    d.op("GET", "/sandboxes/{id}/logs/stream", "Follow the log: backlog, then new entries (SSE, or a WebSocket on upgrade)")
        .query("backlog", "integer", "entries sent first (default 100)")
        .query("source", "string", "stdout, stderr, setup or system")
        .query("level", "string", "info, warn or error")
        .ok_other(200, "server-sent events `log`, then `end` when the sandbox is deleted", Some("text/event-stream"))
        .add();
    d.op("GET", "/sandboxes/{id}/exec/ws", "Run a command over a WebSocket (stdin in, output and exit out)")
        .ok_other(101, WS, None)
        .errors(&[409, 426, 502])
        .add();
    d.op("POST", "/sandboxes/{id}/shell-session", "A shell stream URL (`connection_url`), with a scoped token when auth is on")
        .ok_schema(200, json!({"type": "object", "properties": {"connection_url": {"type": "string"}}}))
        .errors(&[409])
        .add();
    for path in ["/sandboxes/{id}/shell-stream", "/deployed-sandboxes/{id}/shell-stream"] {
        d.op("GET", path, "Interactive shell on a PTY (WebSocket frames: init/ready, stdin 0x01, output 0x02+seq)")
            .ok_other(101, WS, None)
            .errors(&[409, 426])
            .add();
    }
}

/// heyo-sdk's cloud dialect.
fn compat(d: &mut Doc) {
    d.op("POST", "/sandbox-deploy", "Create a sandbox (cloud dialect)")
        .body::<DeployRequest>()
        .ok::<DeployedSandbox>(201)
        .errors(&[403, 409, 415])
        .may_start_sandboxes()
        .add();
    d.op("GET", "/deployed-sandboxes", "List sandboxes (cloud dialect; stopped ones too)")
        .query("name", "string", "exact name")
        .query("status", "string", "only this state")
        .ok_list::<DeployedSandbox>(200)
        .add();
    d.op("GET", "/deployed-sandboxes/{id}", "One sandbox (cloud dialect)").ok::<DeployedSandbox>(200).add();
    d.op("DELETE", "/deployed-sandboxes/{id}", "Delete a sandbox (cloud dialect)")
        .ok_schema(200, json!({"type": "object"}))
        .errors(&[409])
        .add();
    d.op("POST", "/deployed-sandboxes/{id}/restart", "Restart (cloud dialect)")
        .ok::<DeployedSandbox>(200)
        .errors(&[409, 502])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/deployed-sandboxes/{id}/ttl", "Set the TTL (cloud dialect)")
        .body::<TtlRequest>()
        .ok::<DeployedSandbox>(200)
        .errors(&[415])
        .add();
    d.op("POST", "/deployed-sandboxes/{id}/resize", "Change the size class (cloud dialect; 501: a running VM's size class)")
        .body::<ResizeRequest>()
        .ok::<DeployedSandbox>(200)
        .errors(&[409, 415, 501])
        .add();
    d.op("POST", "/sandbox/{id}/exec", "Run a command (cloud dialect)")
        .body::<CompatExecRequest>()
        .ok::<ExecResponse>(200)
        .errors(&[409, 415, 502])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandbox/{id}/start", "Start (cloud dialect)").ok::<DeployedSandbox>(200).errors(&[409, 502]).may_start_sandboxes().add();
    d.op("POST", "/sandbox/{id}/stop", "Stop (cloud dialect)").ok::<DeployedSandbox>(200).errors(&[409, 502]).add();
    d.op("POST", "/sandbox/{id}/read-file", "Read a file as base64 (cloud dialect)")
        .body::<ReadFileRequest>()
        .ok::<ReadFileResponse>(200)
        .errors(&[403, 409, 415])
        .may_start_sandboxes()
        .add();
    d.op("POST", "/sandbox/{id}/write-file", "Write a base64 file (cloud dialect)")
        .body::<WriteFileRequest>()
        .ok::<UploadResponse>(200)
        .errors(&[403, 409, 413, 415])
        .may_start_sandboxes()
        .add();
    d.op("GET", "/sandboxes/inactive", "Stopped and failed sandboxes, paged")
        .query("count", "integer", "page size")
        .query("cursor", "string", "a previous page's next_cursor")
        .ok::<InactivePage>(200)
        .add();
    d.op("GET", "/system/usage", "Host and per-sandbox CPU, memory and pids").ok::<SystemUsage>(200).add();
    d.op("POST", "/proxy-endpoints/for-deployed", "Expose a port (cloud dialect)")
        .body::<BindPortRequest>()
        .ok::<ProxyEndpoint>(201)
        .errors(&[409, 415])
        .add();
    d.op(
        "GET",
        "/public-images",
        "Images a deploy may name, per backend that works here (default first): host or the VM image, then the store's OCI images",
    )
    .query("backend", "string", "backend name")
    .ok_schema(200, json!({"type": "object"}))
    .add();
    d.op("POST", "/deployed-sandboxes/{id}/checkpoint", "Checkpoint a sandbox (cloud dialect of POST /sandboxes/{id}/checkpoints)")
        .optional_body::<CheckpointRequest>()
        .ok::<CheckpointInfo>(201)
        .errors(&[409, 501])
        .add();
    d.op("POST", "/deployed-sandboxes/{id}/restore", "Restore a sandbox's latest (or named) checkpoint (cloud dialect)")
        .optional_body::<RestoreRequest>()
        .ok::<RestoreResponse>(200)
        .errors(&[409, 501])
        .may_start_sandboxes()
        .add();
    for path in ["/deployed-sandboxes/{id}/replace-mount", "/sandboxes/{id}/tcp-tunnel"] {
        d.op("POST", path, "Not available on this daemon (501)").errors(&[501]).add();
    }
}
