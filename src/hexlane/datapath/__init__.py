"""The kernel edge: BPF C programs, the libbpf loader, map writers and netlink."""
