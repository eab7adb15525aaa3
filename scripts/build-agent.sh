#!/usr/bin/env bash
# Builds the static `heyvm-agent` (the process inside every sandbox and VM)
# and puts it beside the heyvm binary in target/release/, where the daemon
# looks for it. Static (`+crt-static` on the gnu target), so it runs in any
# root filesystem: images without a C library, a VM's initramfs.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p heyvm-agent --features bin --target "$triple"
mkdir -p target/release
install -m 0755 "target/$triple/release/heyvm-agent" target/release/heyvm-agent
if ldd target/release/heyvm-agent 2>&1 | grep -q '=>'; then
  echo "heyvm-agent is not static" >&2
  exit 1
fi
echo "==> built target/release/heyvm-agent (static)"
