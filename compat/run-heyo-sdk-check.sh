#!/usr/bin/env bash
# Builds compat/heyo-sdk-check (heyo-sdk 0.1.15, the existing heyvm
# product's Rust client) and runs it against a fresh `heyvm --api` daemon
# with a temporary MVM_DATA_DIR. Not part of CI: the SDK's dependency tree
# (iroh, reqwest, rustls) takes several minutes to build on 2 cores.
#
#   compat/run-heyo-sdk-check.sh            # uses target/release/heyvm (builds it if missing)
#   HEYVM_BIN=/usr/local/bin/heyvm compat/run-heyo-sdk-check.sh
#
# Needs root and bubblewrap, like every sandbox.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
bin="${HEYVM_BIN:-$repo/target/release/heyvm}"
if [[ ! -x "$bin" ]]; then
    (cd "$repo" && cargo build --release -p heyvm-cli)
fi

echo "== building heyo-sdk-check (own workspace, own target dir)"
start=$(date +%s)
(cd "$here/heyo-sdk-check" && cargo build --locked --quiet)
echo "== built in $(( $(date +%s) - start ))s"

data="$(mktemp -d /tmp/heyvm-sdk-check.XXXXXX)"
banner="$data/banner"
daemon_pid=""
cleanup() {
    if [[ -n "$daemon_pid" ]]; then
        # Remove whatever the check left behind, then stop the daemon.
        for id in $(MVM_DATA_DIR="$data" HEYVM_API_URL="${url:-}" "$bin" list --all --format json 2>/dev/null | grep -o '"id": *"sb-[0-9a-f]*"' | grep -o 'sb-[0-9a-f]*'); do
            MVM_DATA_DIR="$data" HEYVM_API_URL="$url" "$bin" rm -y "$id" >/dev/null 2>&1 || true
        done
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

env -u JWT_SECRET -u HEYVM_API_URL MVM_DATA_DIR="$data" "$bin" --api --port 0 >"$banner" 2>"$data/daemon.err" &
daemon_pid=$!
for _ in $(seq 100); do
    grep -q 'http://' "$banner" 2>/dev/null && break
    sleep 0.1
done
url="$(grep -o 'http://[0-9.:]*' "$banner" | head -1)"
if [[ -z "$url" ]]; then
    echo "daemon did not start:" >&2
    cat "$data/daemon.err" >&2
    exit 1
fi
echo "== daemon at $url (data dir $data)"

env -u HEYO_API_KEY HEYVM_API_URL="$url" "$here/heyo-sdk-check/target/debug/heyo-sdk-check"
