"""The heartbeat key of hexlane's L2 election: one Secret, shared by every agent.

The operator creates `kube-system/hexlane-l2-heartbeat` once (32 random bytes under
`data.key`); agents read it, cache it 0600 in their state directory (so an agent restarted
while the API server is away still authenticates its heartbeats), and sign every heartbeat
with it. A host on the LAN without the key cannot forge membership. Rotating: delete the
Secret; the operator makes a new one and agents pick it up at their next read (heartbeats
with the old key are dropped meanwhile, as from an unknown host).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

SECRET_NAME = "hexlane-l2-heartbeat"
SECRET_NAMESPACE = "kube-system"
KEY_BYTES = 32


def new_secret() -> dict[str, Any]:
    """A Secret object holding a fresh random key."""
    key = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET_NAME, "namespace": SECRET_NAMESPACE,
                         "labels": {"app.kubernetes.io/part-of": "hexlane"}},
            "data": {"key": key}}


def key_of(secret: Mapping[str, Any]) -> bytes:
    """The key in a Secret object; ValueError when it holds none (or a short one)."""
    raw = (secret.get("data") or {}).get("key")
    if not isinstance(raw, str):
        raise ValueError(f"Secret {SECRET_NAMESPACE}/{SECRET_NAME} has no data.key")
    key = base64.b64decode(raw, validate=True)
    if len(key) < 16:
        raise ValueError(f"Secret {SECRET_NAMESPACE}/{SECRET_NAME}: the key is "
                         f"{len(key)} bytes; at least 16 are needed")
    return key
