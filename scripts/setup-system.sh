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
  debootstrap podman                       # building hexlane's image (scripts/build-image.sh), running it
  sqlite3 openssl                          # the apiserver's storage (inspection), TLS test certs
  util-linux procps psmisc                 # nsenter, ps, fuser
  prometheus                               # a real Prometheus and promtool scraping the lab
  chromium chromium-driver fonts-dejavu-core  # headless Chromium (selenium) testing the Hubble UI
)

# Debian's prometheus package starts its daemon (on :9090 of the machine's own namespace)
# where services may start. Tests run their own Prometheus in a lab namespace: none may run
# here. Stopped and disabled after every setup, installed under a policy that starts nothing.
quiet_prometheus() {
  [ -e /usr/bin/prometheus ] || return 0
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  [ "$(id -u)" -ne 0 ] || quiet_prometheus
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run make setup as root)" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# invoke-rc.d asks policy-rc.d whether a package may start its service: 101 says no.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
quiet_prometheus
