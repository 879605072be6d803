#!/usr/bin/env bash
# Installs the Debian packages hexlane needs. Idempotent: installs only what is missing and
# runs `apt-get update` only when something is.
set -euo pipefail
PACKAGES=(
  clang llvm libbpf-dev bpftool           # building and loading the eBPF datapath
  iproute2 iptables nftables conntrack     # netlink, and checking that no rule of ours exists
  arping tcpdump curl wrk iperf3 iputils-ping  # real clients in tests, lab and benchmarks
  bind9-dnsutils                           # dig: queries to the lab's cluster DNS in tests
  containerd busybox-static                # containerd calling hexlane-cni in tests
  sqlite3 openssl                          # the apiserver's storage (inspection), TLS test certs
  util-linux procps psmisc                 # nsenter, ps, fuser
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run make setup as root)" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
