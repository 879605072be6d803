"""`hexlane cleanup`: remove everything hexlane made on a node (Cilium's "uninstall", done).

`find_leftovers(paths)` lists, in the calling thread's network namespace and on the file
system, what hexlane made:

- tc filters whose program is ours (`hl_*`) on any interface, and a clsact qdisc left empty;
- links `hexlane_host`/`hexlane_net`, `hexlane_vxlan` and the endpoints' `lxc<12 hex>` veths;
- routes with hexlane's protocol number (104) in the main table;
- the BPF pins under the bpf root (the whole directory; only `hl_*` pins when the root is a
  bpffs mount point itself, which other programs share);
- the CNI config `05-hexlane.conflist`, the plugin wrapper and the bundled plugin
  `hexlane-cni.pyz` (each only if hexlane's) in the given directories and in those the agent
  recorded in its state dir;
- the sysctls the agent recorded before setting them (`net.ipv4.conf.lo.accept_local`), set
  back to the recorded value where they differ; then the state dir.

`remove(items)` removes them in that order (programs first, so no packet meets a half-gone
datapath) and reports each; a second run finds nothing, so cleanup is idempotent. Stopping
the agent first is the caller's job: a running agent would put everything back.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hexlane.datapath import libbpf, netlink, sysctl
from hexlane.datapath.bpffs import is_bpffs, on_bpffs
from hexlane.routing.routes import HOST_DEVICE, HOST_PEER_DEVICE

from . import cniconf
from .programs import (
    CLSACT_PARENTS,
    PROGRAM_PREFIX,
    AttachedProgram,
    attached_programs,
    detach,
)


@dataclass(frozen=True)
class CleanupPaths:
    state_dir: Path
    bpf_root: Path
    cni_conf_dir: Path
    cni_bin_dir: Path


@dataclass(frozen=True)
class Leftover:
    """One thing hexlane made: its kind ("tc", "link", "route", "pin", "file", "sysctl" as
    `name=value before`, "dir")."""

    kind: str
    name: str
    program: AttachedProgram | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def _check_dir(path: Path, what: str) -> Path:
    resolved = path.resolve()
    # A mistyped flag must never remove /, /run or /var/run wholesale.
    if len(resolved.parts) < 3:
        raise ValueError(f"{what} {path} is too close to / to be removed; give hexlane's own "
                         "directory")
    return resolved


async def find_leftovers(paths: CleanupPaths) -> list[Leftover]:
    """Everything hexlane made here (see the module docstring), in removal order."""
    found: list[Leftover] = []
    async with netlink.iproute_in() as ipr:
        for prog in await attached_programs(ipr):
            if prog.is_ours:
                found.append(Leftover("tc", f"{prog.device} {prog.direction} {prog.name}",
                                      prog))
        links = [str(msg.get_attr("IFLA_IFNAME")) async for msg in await ipr.link("dump")]
        # hexlane_net goes with its peer hexlane_host; list it only when alone.
        for name in sorted(links):
            if netlink.owns_link(name):
                if name == HOST_PEER_DEVICE and HOST_DEVICE in links:
                    continue
                found.append(Leftover("link", name))
        for dst in sorted(await netlink.owned_routes(ipr)):
            found.append(Leftover("route", str(dst)))
    root = paths.bpf_root
    if root.exists() and on_bpffs(root):
        if is_bpffs(root):
            found += [Leftover("pin", str(p)) for p in sorted(root.iterdir())
                      if p.name.startswith(PROGRAM_PREFIX)]
        else:
            found.append(Leftover("dir", str(_check_dir(root, "--bpf-root"))))
    dirs = [(paths.cni_conf_dir, paths.cni_bin_dir)]
    recorded = cniconf.recorded_dirs(paths.state_dir)
    if recorded is not None and recorded not in dirs:
        dirs.append(recorded)
    for conf_dir, bin_dir in dirs:
        found += [Leftover("file", str(p)) for p in cniconf.installed_files(conf_dir, bin_dir)]
    for name, before in sorted(sysctl.recorded_before(paths.state_dir).items()):
        now = sysctl.read_sysctl(name)
        if now is not None and now != before:
            found.append(Leftover("sysctl", f"{name}={before}"))
    if paths.state_dir.exists():
        found.append(Leftover("dir", str(_check_dir(paths.state_dir, "--state-dir"))))
    return found


async def _remove_one(ipr: AsyncIPRoute, item: Leftover) -> bool:
    if item.kind == "tc":
        assert item.program is not None
        try:
            detach(item.program)
        except libbpf.BpfError as err:
            if err.errno in (errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True
    if item.kind == "link":
        return await netlink.delete_link(ipr, item.name)
    if item.kind == "route":
        return await netlink.remove_route(ipr, IPv4Network(item.name))
    if item.kind == "sysctl":
        name, before = item.name.split("=", 1)
        if sysctl.read_sysctl(name) in (None, before):
            return False
        sysctl.write_sysctl(name, before)
        return True
    path = Path(item.name)
    if item.kind == "dir":
        if not path.exists():
            return False
        shutil.rmtree(path)
        return True
    if not (path.exists() or path.is_symlink()):
        return False
    path.unlink()
    return True


async def _drop_empty_clsact(ipr: AsyncIPRoute, ifindexes: set[int]) -> None:
    """Remove the clsact qdisc from links where we took the last filter (of any kind) away."""
    for index in sorted(ifindexes):
        remaining = 0
        for parent in CLSACT_PARENTS.values():
            with contextlib.suppress(NetlinkError):
                remaining += len([f async for f in await ipr.get_filters(index=index,
                                                                         parent=parent)])
        if not remaining:
            with contextlib.suppress(libbpf.BpfError):
                libbpf.tc_hook_destroy(index)


async def remove(items: list[Leftover]) -> list[tuple[Leftover, str]]:
    """Remove `items` in order; each with "removed", "gone" or the error."""
    results: list[tuple[Leftover, str]] = []
    detached: set[int] = set()
    async with netlink.iproute_in() as ipr:
        for item in items:
            try:
                done = await _remove_one(ipr, item)
                results.append((item, "removed" if done else "gone"))
                if done and item.program is not None:
                    detached.add(item.program.ifindex)
            except (OSError, NetlinkError, ValueError) as err:
                results.append((item, f"failed: {err}"))
        if detached:
            await _drop_empty_clsact(ipr, detached)
    return results
