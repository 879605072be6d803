"""A leader-election candidate in its own process, so a test can kill it with SIGKILL (no
release, no goodbye): `python elector_child.py KUBECONFIG NAMESPACE NAME IDENTITY DURATION
RENEW RETRY`. Prints "leading" / "stopped" on stdout as its leadership changes."""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import CollectorRegistry

from hexlane.k8s.client import make_client
from hexlane.k8s.election import LeaseTiming
from hexlane.k8s.elector import LeaderElector


async def main(argv: list[str]) -> None:
    kubeconfig, namespace, name, identity = argv[:4]
    timing = LeaseTiming.sanitised(*(float(x) for x in argv[4:7]))
    async with make_client(None, kubeconfig, registry=CollectorRegistry()) as client:
        elector = LeaderElector(client, name, namespace, identity, timing,
                                on_started_leading=lambda: print("leading", flush=True),
                                on_stopped_leading=lambda: print("stopped", flush=True))
        await elector.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
