#!/usr/bin/env bash
# Installs what heyvm needs on Debian/Ubuntu, builds it, installs `heyvm`
# on PATH and runs a short demo. Run as root (or with sudo available).
#   scripts/setup.sh            install + demo
#   scripts/setup.sh --no-demo  install only (what CI uses)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# e2fsprogs: each sandbox's disk is an ext4 image (mkfs.ext4, e2fsck, resize2fs).
packages=(bubblewrap procps tmux curl python3 python3-venv git ca-certificates build-essential iproute2 nftables slirp4netns jq nodejs e2fsprogs)
# The microVM tier: QEMU, qcow2 overlays, and what scripts/vm-assets.sh uses
# to build the guest kernel and the default VM image.
packages+=(qemu-system-x86 qemu-utils mmdebstrap xz-utils e2fsprogs)
# Image tests: a loopback OCI registry and test images made offline.
packages+=(docker-registry skopeo umoci busybox-static)
# The seed's Bash automation runs `npm start` / `npm test` in a deployed
# sandbox. Hosts with NodeSource's nodejs already have npm (and conflict
# with Debian's package), so only ask for it when missing.
command -v npm >/dev/null || packages+=(npm)
# Two passes: installing one package can remove another that was there
# (measured: Debian's qemu-system-x86 7.2 removed a backported qemu-utils
# 10.0, leaving no qemu-img), so whatever is missing afterwards is
# installed again, from the same release as the rest.
for pass in 1 2; do
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && break
  echo "==> installing ${missing[*]}"
  [ "$pass" = 1 ] && $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
done

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

echo "==> building heyvm (release)"
cargo build --release --locked -p heyvm-cli
bash scripts/build-agent.sh
$SUDO install -m 0755 target/release/heyvm /usr/local/bin/heyvm
$SUDO install -m 0755 target/release/heyvm-agent /usr/local/bin/heyvm-agent
echo "==> installed $(command -v heyvm) and heyvm-agent beside it"

# Guest kernel + default VM image for the microVM tier, built once and cached
# in $HEYVM_VM_DIR (default /var/cache/heyvm/vm). HEYVM_SKIP_VM_ASSETS=1 skips.
if [ "${HEYVM_SKIP_VM_ASSETS:-}" != 1 ]; then
  $SUDO env HEYVM_VM_DIR="${HEYVM_VM_DIR:-/var/cache/heyvm/vm}" bash scripts/vm-assets.sh
fi

if [ "${1:-}" = "--no-demo" ]; then exit 0; fi

echo "==> demo: create a sandbox, run a command in it, delete it"
name="demo-$$"
heyvm create --name "$name" --size-class micro
heyvm exec "$name" -- sh -c 'echo "hello from $(hostname): $(uname -sr), pid $$ in its own namespace"'
heyvm exec "$name" --format json -- python3 -c 'print(6 * 7)'
heyvm list
heyvm rm -y "$name"
