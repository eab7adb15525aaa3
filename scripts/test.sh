#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests that drive the
# real `heyvm` binary and daemon with real bubblewrap sandboxes. Needs root
# (cgroups, overlays); in CI (CI=true) missing capabilities fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Python test dependencies (the SDK suite, the MCP SDK), pinned, into target/pyenv.
scripts/python-deps.sh
# The static agent the sandboxes run (beside target/release/heyvm).
bash scripts/build-agent.sh
# A hung test fails the run after this long instead of eating the CI budget.
timeout --kill-after=30s "${HEYVM_TEST_TIMEOUT:-40m}" cargo test --release --locked --workspace -- --test-threads 4 "$@"
