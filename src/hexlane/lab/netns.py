"""Network namespace helpers for the lab and the namespace tests.

Named namespaces are made and removed with `ip netns add|del` (a bind mount under
/run/netns). Commands run in a namespace through `nsenter --net=/run/netns/NAME`, never
`ip netns exec`: that one remounts /sys, which hides bpffs and cgroups from daemons. Python
code runs in a namespace on a thread that calls setns(2) (`run_in_netns`), which moves only
that thread. Every helper refuses names that are not ours to take (`check_name`).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hexlane.datapath.netlink import setns

NETNS_DIR = Path("/run/netns")
RESOLV_CONF = Path("/etc/resolv.conf")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")

T = TypeVar("T")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"network namespace name {name!r}: want [a-z0-9-], at most 41 chars")
    return name


def unique_name(prefix: str) -> str:
    """`prefix` plus a random suffix, so parallel and leftover runs never collide."""
    return check_name(f"{prefix}-{secrets.token_hex(3)}")


def netns_path(name: str) -> str:
    return str(NETNS_DIR / check_name(name))


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def create(name: str) -> str:
    """Create the named namespace (with `lo` up); returns its path."""
    subprocess.run(["ip", "netns", "add", check_name(name)], check=True, capture_output=True,
                   text=True)
    run(name, ["ip", "link", "set", "lo", "up"])
    return netns_path(name)


def delete(name: str) -> None:
    """Remove the named namespace; nothing happens when it is already gone."""
    if exists(name):
        subprocess.run(["ip", "netns", "del", check_name(name)], check=False,
                       capture_output=True)


def nsenter(name: str, argv: Sequence[str]) -> list[str]:
    """The command line running `argv` in the named namespace (keeping the machine's mounts)."""
    return ["nsenter", f"--net={netns_path(name)}", "--", *argv]


def with_resolv_conf(resolv_conf: str | Path | None, argv: Sequence[str]) -> list[str]:
    """The command line running `argv` with the file `resolv_conf` seen at /etc/resolv.conf:
    in a mount namespace of its own with that file bind-mounted over it, as `ip netns exec`
    does with /etc/netns/NAME/resolv.conf. The machine's file is never changed, and the
    copies of its mounts are its slaves: what it unmounts later (a lab's own bpffs) goes
    from them too, and a network namespace removed under /run/netns is released in them
    (the kernel detaches a mount whose file is removed, in every mount namespace).
    `resolv_conf` None: `argv` unchanged."""
    if resolv_conf is None:
        return list(argv)
    return ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
            f'mount --bind "$0" {RESOLV_CONF} && exec "$@"', str(resolv_conf), *argv]


def run(name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
        input: str | None = None, env: dict[str, str] | None = None, text: bool = True
        ) -> subprocess.CompletedProcess[Any]:
    """Run a command in the named namespace and wait for it; output captured (as text)."""
    result = subprocess.run(nsenter(name, argv), capture_output=True, text=text,
                            timeout=timeout, input=input, env=env, check=False)
    if check and result.returncode != 0:
        err = subprocess.CalledProcessError(result.returncode, result.args, result.stdout,
                                            result.stderr)
        stderr = result.stderr if text else result.stderr.decode(errors="replace")
        err.add_note(f"stderr: {stderr.strip()}")
        raise err
    return result


def popen(name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a command in the named namespace (the caller owns and stops the process)."""
    return subprocess.Popen(nsenter(name, argv), **kwargs)


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call `fn` on a fresh thread that has entered the namespace at `path`; return its value."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            setns(path)
            result["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            result["error"] = err

    thread = threading.Thread(target=target, name=f"netns-{os.path.basename(path)}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with `if_a` in namespace `ns_a` and `if_b` in `ns_b`, both up."""
    run(ns_a, ["ip", "link", "add", if_a, "type", "veth", "peer", "name", if_b,
               "netns", check_name(ns_b)])
    run(ns_a, ["ip", "link", "set", if_a, "up"])
    run(ns_b, ["ip", "link", "set", if_b, "up"])


class Topology:
    """The namespaces and processes one test, bench or lab run made; `close()` removes all.

    Names get a random suffix (`unique_name`), processes are stopped by their own pid, and
    namespaces are deleted in reverse order of creation, also after a failure half-way.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.namespaces: dict[str, str] = {}  # role -> namespace name (the latest one)
        self.created: list[str] = []  # every namespace made, for close()
        self.processes: list[subprocess.Popen[Any]] = []
        self._links = 0

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, role: str) -> str:
        """A new namespace for `role` (`lan`, `node1`, `pod-a`); returns its name."""
        name = unique_name(f"{self.prefix}-{role}")
        self.created.append(name)
        create(name)
        self.namespaces[role] = name
        return name

    def __getitem__(self, role: str) -> str:
        return self.namespaces[role]

    def lan(self, role: str = "lan", bridge: str = "br0") -> str:
        """A namespace holding a bridge: the LAN switch."""
        name = self.add(role)
        run(name, ["ip", "link", "add", bridge, "type", "bridge"])
        run(name, ["ip", "link", "set", bridge, "up"])
        return name

    def plug(self, lan_role: str, role: str, address: str, *, ifname: str = "eth0",
             bridge: str = "br0", mtu: int = 1500) -> None:
        """Connect namespace `role` to the LAN bridge with `address` (CIDR) on `ifname`."""
        self._links += 1
        port = f"p{self._links}-{secrets.token_hex(2)}"
        veth(self[lan_role], port, self[role], ifname)
        run(self[lan_role], ["ip", "link", "set", port, "master", bridge, "mtu", str(mtu)])
        run(self[role], ["ip", "link", "set", ifname, "mtu", str(mtu)])
        run(self[role], ["ip", "addr", "add", address, "dev", ifname])

    def start(self, role: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process in the namespace of `role`; it is stopped by `close()`."""
        proc = popen(self[role], argv, **kwargs)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            stop_process(proc)
        self.processes.clear()
        for name in reversed(self.created):
            delete(name)
        self.created.clear()
        self.namespaces.clear()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL after `timeout`; only this process, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
