#!/usr/bin/env bash
# Builds compat/heyo-sdk-check (heyo-sdk 0.1.15, the existing heyvm
# product's Rust client) and runs it against a fresh `heyvm --api` daemon
# with a temporary MVM_DATA_DIR. Not part of CI: the SDK's dependency tree
# (iroh, reqwest, rustls) takes several minutes to build on 2 cores.
#
#   compat/run-heyo-sdk-check.sh            # uses target/release/heyvm (builds it if missing)
#   compat/run-heyo-sdk-check.sh --auth     # daemon with JWT_SECRET; the SDK sends a minted token
#   HEYVM_BIN=/usr/local/bin/heyvm compat/run-heyo-sdk-check.sh
#
# Needs root and bubblewrap, like every sandbox.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
bin="${HEYVM_BIN:-$repo/target/release/heyvm}"
auth=0
[[ "${1:-}" == "--auth" ]] && auth=1
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
        for id in $(MVM_DATA_DIR="$data" HEYVM_API_URL="${url:-}" HEYVM_TOKEN="${token:-}" "$bin" list --all --format json 2>/dev/null | grep -o '"id": *"sb-[0-9a-f]*"' | grep -o 'sb-[0-9a-f]*'); do
            MVM_DATA_DIR="$data" HEYVM_API_URL="$url" HEYVM_TOKEN="${token:-}" "$bin" rm -y "$id" >/dev/null 2>&1 || true
        done
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT

token=""
secret_env=(-u JWT_SECRET)
if (( auth )); then
    secret="sdk-check-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    secret_env=(JWT_SECRET="$secret")
    token="$(JWT_SECRET="$secret" "$bin" token create --sub heyo-sdk-check --ttl 1h)"
fi
env -u HEYVM_API_URL "${secret_env[@]}" MVM_DATA_DIR="$data" "$bin" --api --host 127.0.0.1 --port 0 >"$banner" 2>"$data/daemon.err" &
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

if (( auth )); then
    HEYO_API_KEY="$token" HEYVM_API_URL="$url" "$here/heyo-sdk-check/target/debug/heyo-sdk-check"
else
    env -u HEYO_API_KEY HEYVM_API_URL="$url" "$here/heyo-sdk-check/target/debug/heyo-sdk-check"
fi
