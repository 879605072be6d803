"""Which eBPF programs sit on tc hooks of this node's interfaces (a netlink query).

`attached_programs(ipr)` dumps the clsact ingress and egress filters of every link in the
calling thread's network namespace and returns the BPF ones with their program names, the
same facts `bpftool net` and `tc filter show dev X ingress` print. `hexlane status` shows
them; `hexlane cleanup` removes those whose program is ours (`is_ours`: names start `hl_`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hexlane.datapath import libbpf

#: tc parents of the clsact qdisc's two hooks (TC_H_CLSACT with TC_H_MIN_INGRESS/EGRESS).
CLSACT_PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
PROGRAM_PREFIX = "hl_"


@dataclass(frozen=True, order=True)
class AttachedProgram:
    device: str
    direction: str  # "ingress" | "egress"
    name: str
    prog_id: int
    handle: int
    priority: int
    ifindex: int

    @property
    def is_ours(self) -> bool:
        return self.name.startswith(PROGRAM_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "direction": self.direction, "name": self.name,
                "id": self.prog_id, "handle": self.handle, "priority": self.priority}


def _split_name(text: str) -> tuple[str, int]:
    """libbpf names a tc filter "prog_name:[id]"; other loaders name it after the file."""
    name, sep, rest = text.rpartition(":[")
    if sep and rest.endswith("]") and rest[:-1].isdigit():
        return name, int(rest[:-1])
    return text, 0


async def attached_programs(ipr: AsyncIPRoute) -> list[AttachedProgram]:
    """Every BPF tc filter on clsact hooks of every link here, sorted by device."""
    out: list[AttachedProgram] = []
    links = [(msg["index"], msg.get_attr("IFLA_IFNAME")) async for msg in await ipr.link("dump")]
    for index, device in links:
        for direction, parent in CLSACT_PARENTS.items():
            try:
                filters = [f async for f in await ipr.get_filters(index=index, parent=parent)]
            except NetlinkError:
                continue  # no clsact on this link, or it went away meanwhile
            for f in filters:
                options = f.get_attr("TCA_OPTIONS")
                if f.get_attr("TCA_KIND") != "bpf" or options is None:
                    continue
                name, prog_id = _split_name(str(options.get_attr("TCA_BPF_NAME") or ""))
                out.append(AttachedProgram(device, direction, name, prog_id, int(f["handle"]),
                                           int(f["info"]) >> 16, index))
    return sorted(out)


def detach(program: AttachedProgram) -> None:
    """Remove one tc filter (in the calling thread's network namespace)."""
    libbpf.tc_detach(program.ifindex, program.direction, handle=program.handle,
                     priority=program.priority)
