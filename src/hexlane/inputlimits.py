"""The limits on what hexlane reads from others, and a JSON decoder that keeps them.

Every reader of input the project owns (the apiserver's request bodies and continue tokens,
the agent's API, the CNI plugin's stdin, the CLI's manifests and values files) refuses input
beyond these limits with a message saying which limit, instead of a RecursionError, a
MemoryError or invalid JSON later on:

- `MAX_DEPTH`: objects and lists nested at most 100 levels deep. Kubernetes' decoders allow
  10,000; Python's recursion would not, and no real object comes near 100 (Cilium's deepest
  CRD is 27 levels);
- `MAX_REQUEST_BYTES`: an apiserver request body of at most 3 MiB, Kubernetes' own limit;
- `MAX_CNI_INPUT_BYTES`: the CNI plugin's stdin, at most 1 MiB (a network configuration with
  its prevResult is a few KiB);
- `MAX_YAML_DOCUMENTS`: at most 10,000 documents in one YAML file (`model.manifests` reads
  them one at a time and stops there);
- `MAX_ALIAS_NODES`: YAML aliases may add at most 100,000 nodes to one document (each alias
  counts the size of what it repeats), so a "billion laughs" file is refused, not expanded;
  an alias to its own anchor is refused too;
- numbers are finite: JSON's `NaN`, `Infinity` and literals that overflow a float
  (`1e999`) are refused, since no JSON reader can take them back.

`loads_json` is the decoder. Standard library only: the CNI plugin imports this module on
every call.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 100
MAX_REQUEST_BYTES = 3 * 1024 * 1024
MAX_CNI_INPUT_BYTES = 1024 * 1024
MAX_YAML_DOCUMENTS = 10_000
MAX_ALIAS_NODES = 100_000

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class LimitError(ValueError):
    """Input beyond one of the limits above (a ValueError, like any other bad JSON)."""


def too_deep(limit: int = MAX_DEPTH) -> LimitError:
    return LimitError(f"nested more than {limit} levels deep (hexlane's limit)")


def check_json_depth(data: str | bytes, limit: int = MAX_DEPTH) -> None:
    """Raise LimitError if the JSON text nests objects and lists deeper than `limit`.

    Counts brackets outside strings without decoding anything; text with no more brackets
    than the limit is let through at once (most bodies)."""
    if isinstance(data, bytes):
        if data.count(b"[") + data.count(b"{") <= limit:
            return
        text = data.decode("utf-8", "replace")
    else:
        if data.count("[") + data.count("{") <= limit:
            return
        text = data
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                raise too_deep(limit)
        elif len(token) == 1:
            depth -= 1


def _refuse_constant(name: str) -> float:
    raise LimitError(f"{name} is not a number JSON allows (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise LimitError(f"the number {text[:40]} is too large for a float (numbers must be "
                         "finite)")
    return value


# One decoder for every call: json.loads with hooks would build a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_json(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` within the limits: ValueError (LimitError for a limit) for bad input.
    Bytes must be UTF-8, as JSON on the wire is."""
    check_json_depth(data, max_depth)
    return _DECODER.decode(data.decode() if isinstance(data, bytes) else data)
