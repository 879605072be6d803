"""IP addresses and prefixes parsed the way Go's `net/netip` (and so Cilium) parses them.

Python's `ipaddress` is laxer in places (netmask notation `10.0.0.0/255.255.255.0`, zones,
leading zeros in the prefix length), so the text is checked first and only then handed to
`ipaddress`. Like Cilium's `netip.ParsePrefix` followed by `Masked()`, a prefix with host bits
set (`10.0.0.5/24`) is accepted and means its network (`10.0.0.0/24`); callers get told so
they can warn.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BITS_RE = re.compile(r"^(0|[1-9][0-9]{0,2})$")


def parse_ip(text: Any) -> IPAddress:
    """An IPv4 or IPv6 address (no zone, no leading zeros), or ValueError saying why."""
    if not isinstance(text, str):
        raise ValueError(f"expected an IP address string, got {type(text).__name__}")
    if "%" in text:
        raise ValueError(f"invalid IP address {text!r}: expected an address without a zone")
    if "/" in text:
        raise ValueError(f"invalid IP address {text!r}: expected a single address, "
                         "not a CIDR")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid IP address {text!r}: expected an IPv4 address such as "
                         "10.0.0.100 or an IPv6 address such as fd00::100") from None


def parse_cidr(text: Any) -> tuple[IPNetwork, bool]:
    """(network, host_bits_were_set) for `addr/bits`, or ValueError saying why."""
    if not isinstance(text, str):
        raise ValueError(f"expected a CIDR string, got {type(text).__name__}")
    addr_text, sep, bits_text = text.partition("/")
    expect = "expected an address/prefix-length such as 10.0.0.0/24 or fd00::/112"
    if not sep:
        raise ValueError(f"invalid CIDR {text!r}: no prefix length; {expect}")
    if not _BITS_RE.match(bits_text):
        raise ValueError(f"invalid CIDR {text!r}: bad prefix length {bits_text!r}; {expect}")
    try:
        addr = parse_ip(addr_text)
    except ValueError:
        raise ValueError(f"invalid CIDR {text!r}: {addr_text!r} is not an IP address; "
                         f"{expect}") from None
    bits = int(bits_text)
    if bits > addr.max_prefixlen:
        raise ValueError(f"invalid CIDR {text!r}: prefix length {bits} is longer than "
                         f"{addr.max_prefixlen}; {expect}")
    net = ipaddress.ip_network((addr, bits), strict=False)
    return net, net.network_address != addr


def parse_ip_or_cidr(text: Any) -> IPNetwork:
    """A CIDR, or a bare address meaning its /32 or /128 (Cilium's toCIDR accepts both)."""
    if isinstance(text, str) and "/" not in text:
        addr = parse_ip(text)
        return ipaddress.ip_network(addr)
    return parse_cidr(text)[0]


def family(addr: IPAddress | IPNetwork) -> str:
    """'IPv4' or 'IPv6' (Kubernetes' ipFamilies spelling)."""
    return "IPv4" if addr.version == 4 else "IPv6"
