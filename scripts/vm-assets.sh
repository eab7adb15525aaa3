#!/usr/bin/env bash
# Prepares the microVM tier's guest assets, once, in $HEYVM_VM_DIR
# (default /var/cache/heyvm/vm). Idempotent: what exists is kept, so CI and
# repeated test runs pay for it once.
#
#   scripts/vm-assets.sh kernel   kernel/vmlinux + kernel/modules/ from Debian's
#                                 linux-image package (apt-get download + dpkg -x;
#                                 nothing is installed into the host's /boot)
#   scripts/vm-assets.sh image    images/debian.current -> debian-<recipe>.ext4: the
#                                 default VM image, a Debian minbase (+ python3,
#                                 curl, Node and npm) built with mmdebstrap and
#                                 turned into a read-only base disk (mkfs.ext4 -d)
#   scripts/vm-assets.sh          both
#
# Needs: apt-get, dpkg, xz-utils, mmdebstrap, e2fsprogs; root for the image.
set -euo pipefail

dir="${HEYVM_VM_DIR:-/var/cache/heyvm/vm}"
what="${1:-all}"
mkdir -p "$dir"

# The modules the guest loads, with their dependencies (heyvm-vm checks the
# closure again from each module's .modinfo when it builds the initramfs).
modules=(virtio virtio_ring virtio_mmio virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
  virtio_console virtio_blk virtio_net net_failover failover virtio-rng
  crc16 crc32c_generic jbd2 mbcache ext4 9pnet 9pnet_virtio netfs fscache 9p)

# Reads a little-endian integer of $3 bytes at offset $2 of file $1.
le() { od -An -t "u$3" -j "$2" -N "$3" --endian=little "$1" | tr -d ' '; }

# bzImage -> uncompressed vmlinux: the boot header (Documentation/x86/boot)
# gives the setup size and the compressed payload's offset and length.
extract_vmlinux() {
  local bz="$1" out="$2" setup off len start magic
  setup=$(le "$bz" $((0x1f1)) 1); [ "$setup" = 0 ] && setup=4
  off=$(le "$bz" $((0x248)) 4)
  len=$(le "$bz" $((0x24c)) 4)
  start=$(( (setup + 1) * 512 + off ))
  magic=$(od -An -t x1 -j "$start" -N 4 "$bz" | tr -d ' ')
  payload() { dd if="$bz" iflag=skip_bytes,count_bytes skip="$start" count="$len" bs=1M status=none; }
  case "$magic" in
    fd377a58) payload | xz -dc --single-stream >"$out" ;;
    1f8b*) payload | gzip -dc >"$out" 2>/dev/null || true ;; # trailing size bytes make gzip warn
    28b52ffd) payload | zstd -dc >"$out" ;;
    *) echo "unknown kernel compression (magic $magic)" >&2; return 1 ;;
  esac
  [ "$(od -An -c -j 1 -N 3 "$out" | tr -d ' ')" = ELF ] || { echo "extracted kernel is not ELF" >&2; return 1; }
}

kernel() {
  if [ -s "$dir/kernel/vmlinux" ] && [ -d "$dir/kernel/modules" ]; then
    echo "==> VM kernel: $(cat "$dir/kernel/version" 2>/dev/null) (cached)"; return
  fi
  local pkg tmp
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || { echo "cannot find Debian's kernel package (apt-get update?)" >&2; exit 1; }
  echo "==> VM kernel: $pkg (apt-get download + dpkg -x)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && apt-get download -q "$pkg" 2>/dev/null && dpkg -x ./*.deb x)
  mkdir -p "$tmp/out/modules"
  extract_vmlinux "$(ls "$tmp"/x/boot/vmlinuz-*)" "$tmp/out/vmlinux"
  local tree; tree=$(ls -d "$tmp"/x/lib/modules/*/kernel)
  for m in "${modules[@]}"; do
    f=$(find "$tree" -name "$m.ko" -print -quit)
    [ -n "$f" ] || { echo "module $m missing from $pkg" >&2; exit 1; }
    mkdir -p "$tmp/out/modules/$(dirname "${f#"$tree"/}")"
    cp "$f" "$tmp/out/modules/${f#"$tree"/}"
  done
  basename "$(dirname "$tree")" >"$tmp/out/version"
  rm -rf "$dir/kernel.new"; mv "$tmp/out" "$dir/kernel.new"
  rm -rf "$dir/kernel"; mv "$dir/kernel.new" "$dir/kernel"
}

# The default image's packages. Changing this list (or the suite) changes
# the recipe's hash, so the next run builds a new base disk beside the old
# one instead of replacing it: qcow2 overlays of existing VMs name their
# base disk's file (resolved), which must never change under them.
# curl: scripts and tests fetch with it inside sandboxes; nodejs + npm: seed
# 001's Bash automation runs `npm start` / `npm test` in a deployed sandbox.
suite=bookworm
image_packages=(python3 procps iproute2 ca-certificates curl nodejs npm)
# Documentation, manual pages and translations are not needed in a sandbox.
image_dpkg_excludes=('/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*')

image() {
  local recipe; recipe=$(printf '%s\n' "$suite" "${image_packages[@]}" "${image_dpkg_excludes[@]}" | sha256sum | cut -c1-12)
  local name="debian-$recipe.ext4" link="$dir/images/debian.current"
  if [ -s "$dir/images/$name" ] && [ "$(readlink "$link" 2>/dev/null)" = "$name" ]; then
    echo "==> VM image: $dir/images/$name (cached)"; return
  fi
  echo "==> VM image: mmdebstrap $suite minbase + ${image_packages[*]}"
  local tmp t0 opts=(); tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  for x in "${image_dpkg_excludes[@]}"; do opts+=(--dpkgopt="path-exclude=$x"); done
  t0=$(date +%s)
  # No Recommends: what is listed and its dependencies only.
  mmdebstrap --quiet --variant=minbase --aptopt='APT::Install-Recommends "false"' "${opts[@]}" \
    --include="$(IFS=,; echo "${image_packages[*]}")" \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    "$suite" "$tmp/root" </dev/null
  mkdir -p "$tmp/root/workspace"
  mkdir -p "$dir/images"
  local used; used=$(du -sm "$tmp/root" | cut -f1)
  # A sparse 4 GiB file system: the guest's root, of which a VM's overlay
  # only stores what it changes.
  mkfs.ext4 -q -F -L heyvm-root -d "$tmp/root" "$tmp/image.ext4" 4G
  chmod 0444 "$tmp/image.ext4"
  mv "$tmp/image.ext4" "$dir/images/$name"
  # Switch the default atomically; older base disks stay for the VMs on them.
  ln -sfn "$name" "$link.new" && mv -T "$link.new" "$link"
  echo "==> VM image built in $(( $(date +%s) - t0 )) s: $name, ${used} MiB of files"
}

case "$what" in
  kernel) kernel ;;
  image) image ;;
  all) kernel; image ;;
  *) echo "usage: $0 [kernel|image]" >&2; exit 2 ;;
esac
