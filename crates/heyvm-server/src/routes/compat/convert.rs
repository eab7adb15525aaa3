//! Native [`SandboxInfo`] to the cloud dialect's [`DeployedSandbox`].

use heyvm_core::SandboxManager;
use heyvm_types::compat::{rfc3339, DeployedSandbox};
use heyvm_types::SandboxInfo;

pub fn deployed(mgr: &SandboxManager, info: SandboxInfo) -> DeployedSandbox {
    let changed = mgr.resolve(&info.id).map(|r| mgr.status_changed_at(&r)).unwrap_or(info.created_at);
    let limits = info.size_class.limits();
    // Includes the /workspace mount every sandbox has.
    let mounts = mgr.list_mounts(&info.id).unwrap_or_else(|_| info.mounts.clone());
    DeployedSandbox {
        status_changed_at: rfc3339(changed),
        created_at: rfc3339(info.created_at),
        // The SDK reads `cpus` as an integer; micro and mini are fractional.
        cpus: limits.millicpu.is_multiple_of(1000).then_some(limits.millicpu / 1000),
        vcpus: f64::from(limits.millicpu) / 1000.0,
        memory: limits.memory_bytes,
        uptime_secs: info.uptime.secs,
        size_class: Some(info.size_class.to_string()),
        working_directory: Some(info.working_directory),
        env_vars: Some(info.env_vars),
        setup_hooks: Some(info.setup_hooks),
        region: info.region,
        archive_id: info.archive_id,
        disk_size_gb: Some(info.disk_size_gb),
        metadata: None,
        account_id: None,
        port_mappings: Vec::new(),
        is_deployed: info.is_deployed,
        id: info.id,
        name: info.name,
        slug: info.slug,
        status: info.status,
        image: info.image,
        start_command: info.start_command,
        ttl_seconds: info.ttl_seconds,
        error_message: info.error_message,
        urls: info.urls,
        guest_ip: info.guest_ip,
        backend_type: info.backend_type,
        sandbox_type: info.sandbox_type,
        cpu_usage: info.cpu_usage,
        memory_usage: info.memory_usage,
        mounts,
        open_ports: info.open_ports,
        ignored_fields: Vec::new(),
    }
}
