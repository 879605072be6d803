"""Crafting and reading Ethernet/IPv4/TCP/UDP packets for BPF_PROG_TEST_RUN, with checksums."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_HLEN = 14
TCP = 6
UDP = 17


#: The MAC test frames are sent to (the program namespace's device has it: frames for it are
#: this host's, not another host's).
NODE_MAC = "02:00:00:00:00:02"

def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def build(src: str, dst: str, sport: int, dport: int, proto: int = TCP, payload: bytes = b"hi",
          *, tcp_flags: int = 0x02, ip_options: bytes = b"", udp_csum: bool = True) -> bytes:
    """An Ethernet frame carrying IPv4 + TCP/UDP with valid checksums."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    if proto == TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, tcp_flags, 65535, 0, 0)
        l4 += payload
        csum = inet_checksum(_pseudo(s, d, proto, len(l4)) + l4)
        l4 = l4[:16] + struct.pack("!H", csum) + l4[18:]
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        if udp_csum:
            csum = inet_checksum(_pseudo(s, d, proto, len(l4)) + l4) or 0xFFFF
            l4 = l4[:6] + struct.pack("!H", csum) + l4[8:]
    ihl = 5 + len(ip_options) // 4
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 1, 0, 64, proto, 0, s, d)
    ip += ip_options
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    eth = bytes.fromhex(NODE_MAC.replace(":", "")) + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + l4


@dataclass(frozen=True)
class Parsed:
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    ip_csum_ok: bool
    l4_csum_ok: bool
    l4_csum: int

    @property
    def flow(self) -> tuple[str, int, str, int]:
        """(source address, source port, destination address, destination port)."""
        return self.src, self.sport, self.dst, self.dport

    @property
    def checksums_ok(self) -> bool:
        return self.ip_csum_ok and self.l4_csum_ok


def parse(frame: bytes) -> Parsed:
    ip = frame[ETH_HLEN:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    proto = ip[9]
    s, d = ip[12:16], ip[16:20]
    l4 = ip[ihl:total]
    sport, dport = struct.unpack("!HH", l4[:4])
    if proto == TCP:
        csum = struct.unpack("!H", l4[16:18])[0]
        l4_ok = inet_checksum(_pseudo(s, d, proto, len(l4)) + l4) == 0
    else:
        csum = struct.unpack("!H", l4[6:8])[0]
        l4_ok = csum == 0 or inet_checksum(_pseudo(s, d, proto, len(l4)) + l4) == 0
    return Parsed(
        src=str(ipaddress.IPv4Address(s)), dst=str(ipaddress.IPv4Address(d)),
        sport=sport, dport=dport, proto=proto,
        ip_csum_ok=inet_checksum(ip[:ihl]) == 0, l4_csum_ok=l4_ok, l4_csum=csum,
    )
