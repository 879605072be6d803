"""The L2 announcements' kernel side: the ARP responder map, the agent's liveness stamp, and
gratuitous ARP.

`bpf/l2_responder.h` answers ARP from the LAN device's tc ingress program (`hl_from_netdev`,
in the load balancer's object, so it is loaded with it). Here:
- `ResponderTable`: `hl_l2_responder_v4` as a table for the one reconciler, keyed by
  (IPv4 address, device); the value is the device's MAC (the kernel also counts replies in
  the entry, which is not drift);
- `Liveness`: the agent stamps `hl_l2_liveness` every second; the datapath stops answering
  when the stamp is older than the lease duration (a wedged agent must not keep an IP);
- `arp_replies`: every reply sent, from `hl_l2_replies` (per CPU);
- `send_garp`: one gratuitous ARP (an ARP reply to broadcast, sender = target = the IP) out
  of a device, through an AF_PACKET socket in the caller's network namespace.

Inspect with `bpftool map dump pinned <bpf_root>/hl_l2_responder_v4` or `hexlane l2 list`.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .layout import ip4, ip4_str, u8, u16, u32, u64
from .reconcile import Table

RESPONDER_MAP = "hl_l2_responder_v4"
LIVENESS_MAP = "hl_l2_liveness"
REPLIES_MAP = "hl_l2_replies"
ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
SIOCGIFHWADDR = 0x8927


class L2ResponderKey(ctypes.Structure):
    _fields_ = [("ip4", u32), ("ifindex", u32)]


class L2ResponderEntry(ctypes.Structure):
    _fields_ = [("responses_sent", u64), ("mac", u8 * 6), ("pad", u16)]


class L2Liveness(ctypes.Structure):
    _fields_ = [("agent_ns", u64), ("max_age_ns", u64)]


MIRRORS: dict[str, type[ctypes.Structure]] = {
    "l2_responder_v4_key": L2ResponderKey,
    "l2_responder_v4_entry": L2ResponderEntry,
    "l2_liveness": L2Liveness,
}

Entry = tuple[str, str]  # (IPv4 address, device)


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def device_mac(device: str) -> str:
    """The MAC address of `device` in the calling thread's network namespace (an ioctl on a
    socket made there: /sys shows the namespace the file system was mounted in)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        info = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", device.encode()))
    return mac_str(info[18:24])


@dataclass(frozen=True, slots=True)
class ResponderState:
    """One responder entry as the kernel holds it."""

    ip: str
    device: str
    mac: str
    replies: int


class ResponderTable(Table[Entry, str]):
    """(IP, device) -> the device's MAC, in `hl_l2_responder_v4` (every entry is ours)."""

    name = "l2_responder"

    def __init__(self, bpf_map: object) -> None:
        self.map = bpf_map

    def read(self) -> Mapping[Entry, str]:
        return {(s.ip, s.device): s.mac for s in self.entries()}

    def entries(self) -> list[ResponderState]:
        """Every entry with its reply counter (entries on a gone device are skipped)."""
        out = []
        names = dict(socket.if_nameindex())
        for raw in self.map.raw_keys():  # type: ignore[attr-defined]
            value = self.map.lookup(raw)  # type: ignore[attr-defined]
            if value is None:
                continue
            key = L2ResponderKey.from_buffer_copy(raw)
            entry = L2ResponderEntry.from_buffer_copy(bytes(value))
            device = names.get(key.ifindex, f"if{key.ifindex}")
            out.append(ResponderState(ip4_str(key.ip4), device, mac_str(bytes(entry.mac)),
                                      entry.responses_sent))
        return sorted(out, key=lambda s: (s.device, socket.inet_aton(s.ip)))

    @staticmethod
    def _key(entry: Entry) -> L2ResponderKey:
        ip, device = entry
        return L2ResponderKey(ip4=ip4(ip), ifindex=socket.if_nametoindex(device))

    def update(self, key: Entry, value: str) -> None:
        entry = L2ResponderEntry(responses_sent=0)
        entry.mac[:] = list(mac_bytes(value))
        self.map.update(self._key(key), entry)  # type: ignore[attr-defined]

    def delete(self, key: Entry) -> None:
        try:
            k = self._key(key)
        except OSError:  # the device is gone, and its entries were keyed by its index:
            self._delete_by_device_name(key)
            return
        self.map.delete(k)  # type: ignore[attr-defined]

    def _delete_by_device_name(self, key: Entry) -> None:
        ip, _ = key
        names = dict(socket.if_nameindex())
        for raw in self.map.raw_keys():  # type: ignore[attr-defined]
            k = L2ResponderKey.from_buffer_copy(raw)
            if ip4_str(k.ip4) == ip and k.ifindex not in names:
                self.map.delete(raw)  # type: ignore[attr-defined]


class Liveness:
    """The agent's heartbeat to the datapath (see the module docstring)."""

    def __init__(self, bpf_map: object, max_age: float) -> None:
        self.map = bpf_map
        self.max_age_ns = int(max_age * 1e9)

    def stamp(self) -> None:
        value = L2Liveness(agent_ns=time.monotonic_ns(), max_age_ns=self.max_age_ns)
        self.map.update(ctypes.c_uint32(0), value)  # type: ignore[attr-defined]


def open_maps(obj: Any, max_age: float) -> tuple[ResponderTable, Liveness]:
    """The responder table and the liveness stamp of the loaded load balancer object
    (`LbDatapath.obj`); answers stop `max_age` seconds after the last stamp."""
    responder = obj.map(RESPONDER_MAP, key_type=L2ResponderKey, value_type=L2ResponderEntry)
    liveness = obj.map(LIVENESS_MAP, key_type=u32, value_type=L2Liveness)
    return ResponderTable(responder), Liveness(liveness, max_age)


def arp_replies(obj: Any) -> int:
    """ARP replies the responder of the loaded load balancer object sent since its maps were
    created (every entry's, summed over the CPUs)."""
    values = obj.map(REPLIES_MAP, key_type=u32, value_type=u64).lookup_percpu(u32(0))
    return sum(int(v.value) for v in values or ())


def garp_frame(ip: str, mac: str) -> bytes:
    """A gratuitous ARP: an ARP reply to broadcast, sender = target = `ip`, and target MAC =
    sender MAC. Linux treats a reply as gratuitous (overriding the 1 s `locktime` of a
    neighbour entry just confirmed by traffic) only when the target MAC is the sender's
    (`arp_is_garp`); with a broadcast target MAC a client busy talking to the dead node
    ignored the first GARP and waited for the repeat 1.1 s later."""
    src = mac_bytes(mac)
    addr = socket.inet_aton(ip)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, src, addr, src, addr)
    return BROADCAST + src + struct.pack("!H", ETH_P_ARP) + arp


def send_garp(device: str, ip: str, mac: str | None = None) -> None:
    """Send one gratuitous ARP for `ip` out of `device` (this network namespace)."""
    frame = garp_frame(ip, mac or device_mac(device))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((device, ETH_P_ARP))
        s.send(frame)
