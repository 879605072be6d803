"""Helm's merging of values: files in order, then defaults underneath (pure).

Two steps, as in Helm 3:

1. `merge_maps(base, overlay)` is `pkg/cli/values/options.go` mergeMaps, applied to each
   `-f` file in order: maps merge key by key, recursively; anything else (scalars, lists,
   null, a map meeting a non-map) is replaced by the later file. Lists are never merged.
2. `coalesce(defaults, user)` is `pkg/chartutil/coalesce.go`: the chart's defaults fill in
   whatever the user did not set; a user `null` deletes the key, default included (that is
   how Helm lets a user unset a default). Where a user map meets a default scalar (or the
   reverse), the user's value is kept; the schema reports it if the type is wrong.

`--set` flags are applied between the two steps, into the merged user tree (strvals).
Every function returns new trees and never mutates its arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

Tree = dict[str, Any]


def merge_maps(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> Tree:
    """`overlay` on top of `base`: maps merged recursively, everything else replaced."""
    out: Tree = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in overlay.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            out[key] = merge_maps(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def coalesce(defaults: Mapping[str, Any], user: Mapping[str, Any]) -> Tree:
    """The user's values with the defaults filled in underneath; user nulls delete keys.

    Keys come out in the defaults' order, then the user's own keys in theirs.
    """
    out: Tree = {}
    for key, default in defaults.items():
        if key not in user:
            out[key] = copy.deepcopy(default)
            continue
        value = user[key]
        if value is None:
            continue
        if isinstance(value, Mapping):
            out[key] = coalesce(default if isinstance(default, Mapping) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    for key, value in user.items():
        if key in defaults or value is None:
            continue
        out[key] = coalesce({}, value) if isinstance(value, Mapping) else copy.deepcopy(value)
    return out
