//! Every environment variable heyvm reads, named once, with its default and
//! meaning. Code reads the environment only through this module, and the
//! README's table is checked against [`ALL`] by a test, so the two cannot
//! drift apart. `Default` impls elsewhere never read the environment.

use std::path::PathBuf;
use std::str::FromStr;

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

macro_rules! env_vars {
    ($($ident:ident = $name:literal, $default:literal, $doc:literal;)*) => {
        $(#[doc = $doc] pub const $ident: &str = $name;)*
        /// All variables, in README order.
        pub const ALL: &[EnvVar] = &[$(EnvVar { name: $name, default: $default, doc: $doc }),*];
    };
}

env_vars! {
    DATA_DIR = "MVM_DATA_DIR", "~/.heyo", "State directory: heyvm.db, sandboxes/, archives/, token.json.";
    JWT_SECRET = "JWT_SECRET", "unset", "HS256 secret; turns Bearer auth on (and allows non-loopback listening).";
    JWT_AUDIENCE = "JWT_AUDIENCE", "unset", "Required `aud` claim of tokens, when set.";
    API_HOSTNAME = "API_HOSTNAME", "unset", "Proxy endpoints also answer at `<subdomain>.<API_HOSTNAME>` on the API port.";
    API_URL = "HEYVM_API_URL", "unset", "Server the CLI talks to (else the local daemon).";
    CLOUD_URL = "HEYO_CLOUD_URL", "unset", "Server the CLI talks to when HEYVM_API_URL and --server are unset.";
    ARCHIVE_TOKEN = "HEYO_ARCHIVE_TOKEN", "unset", "Token the CLI sends (after --token).";
    TOKEN = "HEYVM_TOKEN", "unset", "Token the CLI sends (after HEYO_ARCHIVE_TOKEN).";
    API_KEY = "HEYVM_API_KEY", "unset", "API key the CLI sends (after --token).";
    HEYO_API_KEY = "HEYO_API_KEY", "unset", "Deprecated spelling of HEYVM_API_KEY (works, with a warning).";
    IDLE_TIMEOUT_SECS = "HEYVM_IDLE_TIMEOUT_SECS", "off", "Default idle timeout: a sandbox unused this long is stopped (resumed on next use).";
    LOG = "HEYVM_LOG", "info", "Daemon log filter (tracing env-filter syntax).";
    MAX_UPLOAD_BYTES = "HEYVM_MAX_UPLOAD_BYTES", "1073741824", "Largest accepted file upload (413 beyond).";
    MAX_IMAGE_UPLOAD_BYTES = "HEYVM_MAX_IMAGE_UPLOAD_BYTES", "17179869184", "Largest accepted image upload (`PUT /images/:name`: an OCI archive or an ext4 rootfs; 413 beyond).";
    SHELL_IDLE_SECS = "HEYVM_SHELL_IDLE_SECS", "300", "A shell session with no client for this long is hung up.";
    POOL_SIZE = "HEYVM_POOL_SIZE", "1", "Warm sandboxes kept launched for fast creates at least; 0 turns the pool off.";
    POOL_MAX = "HEYVM_POOL_MAX", "1/16 of RAM at 12 MiB each (4–256)", "Most warm sandboxes kept when creates come fast (the pool holds as many as creates in the last 2 minutes, within POOL_SIZE..POOL_MAX): the pool's memory budget.";
    MAX_SANDBOXES = "HEYVM_MAX_SANDBOXES", "1 per 16 MiB of RAM (256–4096)", "Most sandboxes (any state, warm ones aside) one daemon holds; a create past it answers 429 `quota_exceeded`.";
    MAX_RUNNING_VMS = "HEYVM_MAX_RUNNING_VMS", "1 per 2 GiB of RAM, at most 4 per core (at least 2)", "Most microVMs running or starting at once (warm ones included, stopped ones not); a create, start, restore or fork past it answers 429 `quota_exceeded`.";
    ARCHIVE_TTL_SECS = "HEYVM_ARCHIVE_TTL_SECS", "86400", "Uploaded deploy archives older than this are deleted.";
    NET_POOL = "HEYVM_NET_POOL", "10.89.0.0/16", "Address pool for `nat` sandboxes (/30 each).";
    SPARES = "HEYVM_SPARES", "4", "Launch resources a root daemon keeps ready for sandboxes' first starts, this many of each: network namespaces (veth, address, guard table), cgroups with a parked owner process (cgroup v1), default-size disks; 0 = make each on demand.";
    SUBIDS = "HEYVM_SUBIDS", "1000000000:1073741824", "Host uids/gids given to sandboxes (START:COUNT, like /etc/subuid); each sandbox gets its own 65536.";
    AGENT_BIN = "HEYVM_AGENT_BIN", "heyvm-agent beside heyvm", "The static agent binary placed in sandboxes.";
    COMPUTER_IDLE_SECS = "HEYVM_COMPUTER_IDLE_SECS", "7200", "Agent computers (seed 000) unused this long are stopped; the next call resumes them.";
    MAX_CONNECTIONS = "HEYVM_MAX_CONNECTIONS", "4096", "API connections served at once; more wait in the accept queue.";
    HEADER_TIMEOUT_SECS = "HEYVM_HEADER_TIMEOUT_SECS", "10", "A client must send its request headers within this many seconds.";
    ALLOW_USERS = "HEYVM_ALLOW_USERS", "unset", "Without JWT_SECRET: local users besides the daemon's own allowed on the API (names or uids, comma-separated; `*` for any).";
    MOUNT_ROOTS = "HEYVM_MOUNT_ROOTS", "unset", "Host directories (`:` or `,` separated) that token-authenticated remote callers may mount from.";
    ALLOW_HOST_PORTS = "HEYVM_ALLOW_HOST_PORTS", "unset", "Host ports `nat` sandboxes may reach (comma-separated); every other host port is blocked.";
    REGISTRY_MIRRORS = "HEYVM_REGISTRY_MIRRORS", "unset", "Comma-separated `REGISTRY=MIRROR` pairs; mirrors are tried first (e.g. `docker.io=127.0.0.1:5000`).";
    INSECURE_REGISTRIES = "HEYVM_INSECURE_REGISTRIES", "unset", "Comma-separated `host:port` registries reached over plain HTTP (loopback ones always are).";
    DOCKER_CONFIG = "DOCKER_CONFIG", "`~/.docker`", "Directory of Docker's `config.json`, read for registry credentials (`auths`).";
    DEFAULT_BACKEND = "HEYVM_DEFAULT_BACKEND", "bubblewrap", "Backend of sandboxes created without `backend_type` (e.g. `kvm`).";
    VM_DIR = "HEYVM_VM_DIR", "/var/cache/heyvm/vm", "kvm backend: guest kernel, VM images, initramfs cache (built by scripts/vm-assets.sh).";
    VM_ACCEL = "HEYVM_VM_ACCEL", "probed", "kvm backend: force `kvm` or `tcg` (default: KVM only if a test boot with it works).";
    QEMU = "HEYVM_QEMU", "qemu-system-x86_64", "kvm backend: the QEMU binary.";
    VM_BOOT_TIMEOUT = "HEYVM_VM_BOOT_TIMEOUT", "120", "kvm backend: seconds a VM has to boot and answer (TCG is slow).";
    VM_ROOT_DISK_MB = "HEYVM_VM_ROOT_DISK_MB", "the disk limit", "kvm backend: most MiB a VM's root overlay (writes outside `/workspace`) may take on the host; past it the VM is stopped as failed.";
    FILES_VIA_AGENT = "HEYVM_FILES_VIA_AGENT", "0", "`1`: file routes of running bubblewrap sandboxes go through the in-sandbox agent too (VMs always do).";
    S3_ENABLED = "S3_ENABLED", "unset", "`true` or `1`: mounts may live in S3 (`s3_prefix`); needs S3_BUCKET and AWS credentials.";
    S3_BUCKET = "S3_BUCKET", "unset", "Bucket of S3-backed mounts (must exist).";
    AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL", "AWS S3", "S3-compatible server (path-style requests), e.g. `http://127.0.0.1:9000`.";
    AWS_REGION = "AWS_REGION", "us-east-1", "Region requests are signed for.";
    AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION", "us-east-1", "Region, when AWS_REGION is unset.";
    AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID", "unset", "S3 access key (with S3_ENABLED).";
    AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY", "unset", "S3 secret key (with S3_ENABLED).";
    AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN", "unset", "S3 session token for temporary credentials.";
    S3_LEASE_SECS = "HEYVM_S3_LEASE_SECS", "300", "How long a mount's lease on its S3 prefix lasts unless renewed (a crashed server's lapses after this).";
    MSB_API_KEY = "MSB_API_KEY", "unset", "Not supported (heyvm has no microsandbox backend): a warning at startup.";
    MSB_SERVER_HOST = "MSB_SERVER_HOST", "unset", "Not supported (heyvm has no microsandbox backend): a warning at startup.";
    AUTH_SERVER_URL = "AUTH_SERVER_URL", "unset", "Not supported (auth endpoints are not proxied): a warning at startup.";
}

/// A variable's value, trimmed; unset and empty are the same.
pub fn string(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// A variable parsed as `T`; unset, empty or unparsable is `None` (with a
/// warning for the last, so a typo does not pass silently).
pub fn parse<T: FromStr>(name: &str) -> Option<T> {
    let raw = string(name)?;
    match raw.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::warn!(variable = name, value = %raw, "ignoring an unparsable value");
            None
        }
    }
}

/// One line per setting in the environment that this server does not
/// support (`MSB_*`: there is no microsandbox server; `AUTH_SERVER_URL`:
/// auth endpoints are not proxied), so they are not silently ignored.
pub fn unsupported_settings() -> Vec<String> {
    let mut out: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("MSB_"))
        .map(|k| format!("{k} is set, but heyvm has no microsandbox (msb) backend: ignoring it"))
        .collect();
    out.sort();
    if string(AUTH_SERVER_URL).is_some() {
        out.push(format!("{AUTH_SERVER_URL} is set, but this server does not proxy auth endpoints: ignoring it"));
    }
    out
}

pub fn agent_bin() -> Option<PathBuf> {
    string(AGENT_BIN).map(PathBuf::from)
}

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_file() -> Option<PathBuf> {
    string(DOCKER_CONFIG)
        .map(PathBuf::from)
        .or_else(|| string("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ALL.iter().map(|v| v.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    /// The README's environment table lists every variable, and nothing
    /// this module does not know.
    #[test]
    fn readme_table_matches() {
        let readme = include_str!("../../../README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("## Environment variables"))
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect();
        for v in ALL {
            assert!(table.contains(&v.name), "README's environment table lacks {}", v.name);
        }
        for name in &table {
            assert!(ALL.iter().any(|v| v.name == *name), "README lists {name}, which config.rs does not define");
        }
    }
}
