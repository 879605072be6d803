"""What hexlane's BPF map layouts are made of, seen from Python.

The C integer types as ctypes, by the kernel's names (for the mirrors of `bpf/hexlane_maps.h`
in `hexlane.datapath.lb.maps`, of `bpf/l2_responder.h` in `hexlane.datapath.l2` and of
`bpf/masq.h` in `hexlane.datapath.masq`, where `__be32` and `__be16` are `u32` and `u16`, and
for libbpf's structs), and addresses and ports as a map holds them: in network byte order, as
the programs read them from packets.
"""

from __future__ import annotations

import ctypes
import functools
import socket
from ipaddress import IPv4Address

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


@functools.lru_cache(maxsize=131072)
def ip4(address: str | IPv4Address) -> int:
    """An IPv4 address as the u32 a BPF map holds: its network-order bytes on this host."""
    try:
        # inet_pton is strict (dotted quad only) and far cheaper than ipaddress for thousands
        return int.from_bytes(socket.inet_pton(socket.AF_INET, str(address)), "little")
    except OSError:
        raise ValueError(f"invalid IPv4 address {address!r}") from None


def ip4_address(value: int) -> IPv4Address:
    """The address a BPF map's u32 holds."""
    return IPv4Address(value.to_bytes(4, "little"))


def ip4_str(value: int) -> str:
    return str(ip4_address(value))


def port16(port: int) -> int:
    """A port as the u16 a BPF map holds (network order)."""
    return socket.htons(port)


def port_int(value: int) -> int:
    """The port a BPF map's u16 holds."""
    return socket.ntohs(value)
