#!/usr/bin/env bash
# Builds hexlane's container image with podman, pulling from no container registry:
#   1. a Debian bookworm base made here with debootstrap (--variant=minbase and only the
#      packages below), kept as a tarball in .cache/image/ keyed by the hash of its inputs
#      (suite, arch, mirror, package list), imported with `podman import`;
#   2. hexlane's wheel built from this checkout and its runtime dependencies at the versions
#      requirements.lock pins (wheels from PyPI, kept in .cache/image/wheels-<arch>/);
#   3. image/Containerfile: a venv in /opt/hexlane from those wheels (--no-index), and the BPF
#      objects of the default values built into the agent's object cache.
# Usage: scripts/build-image.sh [--arch amd64|arm64] [--tag IMAGE] [--mirror URL]
#        scripts/build-image.sh --print-tag   (the default tag, and nothing built)
#   default tag localhost/hexlane:<version> (what `hexlane manifests` names by default).
#   arm64 (Raspberry Pi) needs qemu-user-static and binfmt-support; it is not tested here.
# Prints the image's name last, and each step's time and the image's size on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=amd64
TAG=""
MIRROR=http://deb.debian.org/debian
SUITE=bookworm
PYTHON=${PYTHON:-.venv/bin/python}
PRINT_TAG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --print-tag) PRINT_TAG=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$ARCH" in
  amd64) PYPLAT=x86_64 ;;
  arm64) PYPLAT=aarch64 ;;
  *) echo "--arch: amd64 or arm64, not $ARCH" >&2; exit 2 ;;
esac
VERSION=$("$PYTHON" -c 'import hexlane; print(hexlane.__version__)')
TAG=${TAG:-localhost/hexlane:$VERSION}
if [ -n "$PRINT_TAG" ]; then echo "$TAG"; exit 0; fi

# What the image needs at run time, from Debian:
#   python3, python3-venv   the daemons (bookworm's python3 is 3.11, the project's)
#   libbpf1                 loading the BPF objects (ctypes, libbpf.so.1)
#   clang, libbpf-dev       building lb.c for values other than the defaults (maglev.tableSize
#                           and maglev.hashSeed are compiled in); libbpf-dev has bpf_helpers.h
#   (minbase has mount and grep for the DaemonSet's mount-bpf-fs init container)
PACKAGES=(python3 python3-venv libbpf1 clang libbpf-dev)
CACHE=.cache/image
mkdir -p "$CACHE"
log() { echo "build-image: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
t_all=$(now)

# --- 1. the base -----------------------------------------------------------------------------
key=$(printf '%s\n' "$SUITE" "$ARCH" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
base_tar=$CACHE/base-$SUITE-$ARCH-$key.tar
base_image=localhost/hexlane-base:$SUITE-$ARCH-$key
if [ ! -s "$base_tar" ]; then
  t=$(now)
  root=$(realpath "$(mktemp -d "$CACHE/rootfs.XXXXXX")")
  # debootstrap mounts /proc and /sys in the target while it installs: never delete through
  # a mount left by an interrupted run.
  drop_root() {
    awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r \
      | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$root"
  }
  trap drop_root EXIT
  include=$(IFS=,; echo "${PACKAGES[*]}")
  log "debootstrap $SUITE $ARCH (minbase + $include)"
  debootstrap --variant=minbase --arch="$ARCH" --include="$include" \
      "$SUITE" "$root" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # What a run never reads: downloaded packages, package lists, documentation, man pages.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
         "$root"/var/log/* "$root"/dev/*
  tar --numeric-owner --xattrs --one-file-system -C "$root" -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
  drop_root
  trap - EXIT
  log "base built in $(since "$t") s: $base_tar"
fi
if ! podman image exists "$base_image"; then
  t=$(now)
  podman import --arch "$ARCH" --message "debootstrap $SUITE minbase: ${PACKAGES[*]}" \
      "$base_tar" "$base_image" > /dev/null
  log "base imported in $(since "$t") s: $base_image"
fi

# --- 2. the wheels ---------------------------------------------------------------------------
t=$(now)
wheels=$CACHE/wheels-$ARCH
mkdir -p "$wheels"
ctx=$(mktemp -d "$CACHE/context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/wheels"
"$PYTHON" -m pip wheel -q --disable-pip-version-check --no-deps -w "$ctx/wheels" . >&2
hexlane_whl=$(ls "$ctx"/wheels/hexlane-*.whl)
# Resolved by pip with requirements.lock as constraints: exactly the pinned versions hexlane
# needs go into the context; the cache ($wheels) spares PyPI on the next build.
if [ "$ARCH" = amd64 ] && [ "$(uname -m)" = x86_64 ]; then
  # This machine's Python is the image's (3.11, x86_64): pip resolves as it will there.
  "$PYTHON" -m pip wheel -q --disable-pip-version-check -c requirements.lock \
      --find-links "$wheels" -w "$ctx/wheels" "$hexlane_whl" >&2
else
  "$PYTHON" -m pip download -q --disable-pip-version-check -c requirements.lock \
      --only-binary=:all: --python-version 3.11 --implementation cp \
      --platform "manylinux2014_$PYPLAT" --platform "manylinux_2_17_$PYPLAT" \
      --platform "manylinux_2_28_$PYPLAT" \
      --find-links "$wheels" -d "$ctx/wheels" "$hexlane_whl" >&2
fi
for whl in "$ctx"/wheels/*.whl; do
  case "$(basename "$whl")" in hexlane-*) ;; *) cp -n "$whl" "$wheels"/ ;; esac
done
log "wheels ready in $(since "$t") s ($(ls "$ctx/wheels" | wc -l) wheels)"

# --- 3. the image ----------------------------------------------------------------------------
t=$(now)
podman build --pull=never --arch "$ARCH" --build-arg "BASE=$base_image" \
    --label "org.opencontainers.image.version=$VERSION" \
    -f image/Containerfile -t "$TAG" "$ctx" > "$CACHE/build.log" 2>&1 \
  || { tail -30 "$CACHE/build.log" >&2; exit 1; }
log "image built in $(since "$t") s"
size=$(podman image inspect --format '{{.Size}}' "$TAG")
log "$TAG: $((size / 1000000)) MB, built in $(since "$t_all") s"
echo "$TAG"
