"""The Cilium-Helm-values-compatible configuration: defaults, merging, normalisation (pure).

`load_values(files, set_flags)` gives what `helm -f ... --set ...` would give Cilium v1.16:
Cilium's defaults, the files merged in order, the `--set` flags on top, normalised and
validated, as a typed immutable `Values` and a list of `Problem`s naming file and key.
Inspect the result with `hexlane config show [-f FILE]... [--set K=V]... [-o yaml|json]`.
Every accepted key, its default and its effect is listed in docs/configuration.md.
"""

from hexlane.config.duration import format_duration, parse_duration
from hexlane.config.loader import load_values, require_values
from hexlane.config.merge import coalesce, merge_maps
from hexlane.config.schema import MAGLEV_TABLE_SIZES, SPECS, KeySpec
from hexlane.config.strvals import StrvalsError, parse_set, parse_set_into
from hexlane.config.values import (
    Cluster,
    Hubble,
    HubbleTls,
    Ipam,
    K8sClientRateLimit,
    L2Announcements,
    LoadBalancer,
    Maglev,
    Operator,
    Prometheus,
    Values,
    ValuesDocument,
    default_tree,
    defaults,
    parse_values_document,
    resolve_values,
)

__all__ = [
    "MAGLEV_TABLE_SIZES", "SPECS", "Cluster", "Hubble", "HubbleTls", "Ipam", "K8sClientRateLimit",
    "KeySpec",
    "L2Announcements", "LoadBalancer", "Maglev", "Operator", "Prometheus", "StrvalsError",
    "Values", "ValuesDocument", "coalesce", "default_tree", "defaults", "format_duration",
    "load_values", "merge_maps", "parse_duration", "parse_set", "parse_set_into",
    "parse_values_document", "require_values", "resolve_values",
]
