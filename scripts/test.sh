#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests that drive the
# real `heyvm` binary and daemon with real bubblewrap sandboxes, then the VM
# subset: the same end-to-end tests on microVMs. Needs root (cgroups,
# overlays); in CI (CI=true) missing capabilities fail the run.
#   scripts/test.sh              everything (bubblewrap suite, then the VM subset)
#   scripts/test.sh FILTER...    the suite filtered, on bubblewrap only
#   scripts/test.sh --vm-subset  only the VM subset
set -euo pipefail
cd "$(dirname "$0")/.."

# The VM subset (issue 10): representative end-to-end tests run again with
# HEYVM_TEST_BACKEND=kvm, so every sandbox they create without a
# backend_type is a microVM (QEMU under TCG where KVM cannot boot a guest).
# Kept small: a TCG boot costs seconds. lifecycle; exec (ten concurrent
# beside an endless `yes` flood over the one agent channel); files through
# the guest agent; the shell protocol; proxy endpoints with stop/start;
# persistence across stop/start and a daemon kill -9; checkpoint -> restore
# -> fork with a surviving process; an OCI image from the store booted
# through a qcow2 overlay.
vm_subset=(
  lifecycle::start_command_output_is_logged_and_restarted
  streams::ten_concurrent_execs_finish_beside_an_endless_yes_flood
  files_agent::vm_files_go_through_the_agent
  shell::shell_stream_protocol_output_resize_and_exit
  proxy::local_mode_http_streaming_websocket_stop_start_and_delete
  persistence::kill9_of_the_daemon_loses_nothing
  vm::vm_checkpoint_restore_and_fork_keep_a_running_process
  vm::vm_boots_an_oci_image_built_for_kvm_through_a_qcow2_overlay
  # The one attack on a VM's host mount (9p): setuid/capability plants.
  hostile_kernel::setuid_and_capability_plants_never_reach_a_host_mount
  # QEMU is no host root: the sandbox's uid, no capabilities, seccomp;
  # files written into a mount are its host owner's.
  vm_confine::qemu_runs_unprivileged_in_the_sandbox_range_and_mounts_keep_their_owner
  # The guest's root configures IPv6 in its own kernel; its namespace
  # forwards none (about 10 s).
  net_ipv6::attack_ipv6_is_no_way_around_the_egress_policy
)
# Those that boot VMs whatever the backend parameter run once, in the VM pass.
vm_only=(files_agent::vm_ vm::vm_checkpoint_ vm::vm_boots_an_oci_)

# Python test dependencies (the SDK suite, the MCP SDK), pinned, into target/pyenv.
scripts/python-deps.sh
# The static agent the sandboxes run (beside target/release/heyvm).
bash scripts/build-agent.sh

vm_pass() {
  echo "==> the VM subset (HEYVM_TEST_BACKEND=kvm)"
  local t0=$SECONDS
  HEYVM_TEST_BACKEND=kvm timeout --kill-after=30s "${HEYVM_TEST_VM_TIMEOUT:-15m}" \
    cargo test --release --locked -p heyvm-cli --test it -- --test-threads 2 --exact "${vm_subset[@]}"
  echo "==> the VM subset took $((SECONDS - t0)) s"
}

if [ "${1:-}" = "--vm-subset" ]; then
  vm_pass
  exit 0
fi
skip=()
if [ "$#" -eq 0 ]; then
  for t in "${vm_only[@]}"; do skip+=(--skip "$t"); done
fi
# A hung test fails the run after this long instead of eating the CI budget.
timeout --kill-after=30s "${HEYVM_TEST_TIMEOUT:-40m}" cargo test --release --locked --workspace -- --test-threads 4 "${skip[@]}" "$@"
if [ "$#" -eq 0 ]; then
  vm_pass
fi
