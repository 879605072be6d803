"""Status writers: the two ways hexlane writes `.status`, both to the `/status` subresource.

- `patch_status`: a JSON merge patch `{"status": ...}` — for fields this writer alone owns
  (no read needed, no conflict possible). `null` in the patch deletes a field.
- `update_status`: read, change with a function, PUT the whole object to `/status` carrying
  its resourceVersion; on 409 Conflict (someone wrote in between) read again and re-apply
  the function, up to `attempts` times — for lists such as conditions or ingress IPs where a
  merge patch would clobber what another writer added.

No server-side apply: the embedded apiserver and a real one see the same requests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from .client import MERGE_PATCH, ApiError, KubeClient
from .resources import kind_of

Obj = dict[str, Any]
# Returns the object with its new status (the same dict changed in place is fine), or None
# when nothing needs writing.
StatusChange = Callable[[Obj], Obj | None]


async def patch_status(client: KubeClient, resource: Any, name: str, status: Mapping[str, Any],
                       *, namespace: str | None = None) -> Obj:
    """Merge-patch `status` into the object's status; returns the object as stored."""
    kind = kind_of(resource)
    path = kind.path(namespace, name, "status")
    return await client.request("PATCH", path, body={"status": dict(status)},
                                content_type=MERGE_PATCH)


async def update_status(client: KubeClient, resource: Any, name: str, change: StatusChange,
                        *, namespace: str | None = None, current: Obj | None = None,
                        attempts: int = 5) -> Obj | None:
    """Apply `change` to the object and PUT it to `/status` with its resourceVersion,
    re-reading and retrying on conflict. `current` (e.g. from an informer's cache) saves the
    first read. Returns the stored object, or None when `change` found nothing to do.

    Raises `ApiError` (404 when the object is gone, 409 after `attempts` conflicts)."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    kind = kind_of(resource)
    path = kind.path(namespace, name)
    obj = copy.deepcopy(current) if current is not None else None
    for attempt in range(attempts):
        if obj is None:
            obj = await client.request("GET", path)
        changed = change(obj)
        if changed is None:
            return None
        try:
            return await client.request("PUT", path + "/status", body=changed)
        except ApiError as e:
            if not e.conflict or attempt == attempts - 1:
                raise
            obj = None
    raise AssertionError("unreachable")  # the loop returns or raises
