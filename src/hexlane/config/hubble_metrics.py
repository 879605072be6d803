"""`hubble.metrics.enabled`: Hubble's metric list and its option syntax, parsed and checked (pure).

Each entry is `name` or `name:option;option;...`, an option `key=value` or a bare flag, as
Cilium's Hubble reads `--hubble-metrics` (pkg/hubble/metrics/api: ParseMetricList,
ParseOptions, ParseContextOptions). Keys are matched without regard to case, as Cilium does.

Context options, accepted by every metric:
- `sourceContext=`, `destinationContext=` (and the `Egress`/`Ingress` variants, which take
  precedence for flows of that direction): identifiers separated by `|`, the first that gives a
  non-empty value is the `source` / `destination` label (`dns|ip`: the DNS name, else the IP);
- `labelsContext=`: a comma-separated list of labels, each its own label of the metric.

What Cilium would only log, or would accept and ignore, is an error here, with the entry, the
option and what is accepted: an unknown metric, an unknown option or context, a context
option without a value, a flag given a value, the same metric twice, `http` with `httpV2`.
`kafka` is a Cilium metric hexlane has no flows for (no Kafka parsing): a warning, and it is
left out.

`parse_metric_list(entries)` returns one `MetricSpec` per metric plus the warnings, and raises
`MetricOptionError` (with the index of the entry) at the first problem. The handlers that
count flows are in `hexlane.hubble.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: Cilium v1.16's metric handlers (pkg/hubble/metrics/*)
CILIUM_METRICS = ("dns", "drop", "flow", "flows-to-world", "http", "httpV2", "icmp", "kafka",
                  "policy", "port-distribution", "tcp")
#: those hexlane has no flows for: accepted with a warning, left out
WITHOUT_FLOWS = {"kafka": "hexlane parses no Kafka"}
#: the metric-specific options of each metric (besides the context options); flags take no
#: value, `exemplars` takes true or false
FLAGS = {"dns": ("query", "ignoreAAAA"), "flows-to-world": ("any-drop", "port", "syn-only")}
VALUED = {"http": ("exemplars",), "httpV2": ("exemplars",)}
#: metrics that cannot be enabled together (Cilium's PluginConflicts)
CONFLICTS = (("http", "httpV2"),)

#: sourceContext / destinationContext identifiers (pkg/hubble/metrics/api/context.go and the
#: metrics documentation: `workload` is namespace/workload-name)
CONTEXT_IDENTIFIERS = ("identity", "namespace", "pod", "pod-short", "pod-name", "dns", "ip",
                       "reserved-identity", "workload", "workload-name", "app")
#: labelsContext labels, in the order the labels appear on a metric
CONTEXT_LABELS = ("source_ip", "source_pod", "source_namespace", "source_workload",
                  "source_workload_kind", "source_app", "destination_ip", "destination_pod",
                  "destination_namespace", "destination_workload", "destination_workload_kind",
                  "destination_app", "traffic_direction")
CONTEXT_OPTIONS = ("sourceContext", "sourceEgressContext", "sourceIngressContext",
                   "destinationContext", "destinationEgressContext",
                   "destinationIngressContext", "labelsContext")


class MetricOptionError(ValueError):
    """A problem in one entry of the list; `index` is the entry's position."""

    def __init__(self, message: str, index: int = 0) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class ContextOptions:
    """Which context labels a metric carries, and how their values are found."""

    source: tuple[str, ...] = ()
    source_egress: tuple[str, ...] = ()
    source_ingress: tuple[str, ...] = ()
    destination: tuple[str, ...] = ()
    destination_egress: tuple[str, ...] = ()
    destination_ingress: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # in CONTEXT_LABELS order

    @property
    def has_source(self) -> bool:
        """Whether the metric has a `source` label (Cilium: only when sourceContext is set;
        the Egress/Ingress variants alone override nothing)."""
        return bool(self.source)

    @property
    def has_destination(self) -> bool:
        return bool(self.destination)

    def label_names(self) -> tuple[str, ...]:
        """The context's label names, in the order their values come (labels, source,
        destination)."""
        return (*self.labels, *(("source",) if self.has_source else ()),
                *(("destination",) if self.has_destination else ()))


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One enabled metric: its name, its flags and valued options, its context."""

    name: str
    text: str  # the entry as given
    flags: frozenset[str] = frozenset()  # canonical spelling (`ignoreAAAA`)
    values: tuple[tuple[str, str], ...] = ()  # (canonical key, value)
    context: ContextOptions = field(default_factory=ContextOptions)

    def value(self, key: str, default: str = "") -> str:
        return dict(self.values).get(key, default)


def parse_options(text: str) -> list[tuple[str, str | None]]:
    """`a=1;b;c=x=y` as [("a", "1"), ("b", None), ("c", "x=y")] (empty parts skipped)."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        out.append((key, value if eq else None))
    return out


def _canonical(names: Sequence[str]) -> dict[str, str]:
    return {n.lower(): n for n in names}


_CONTEXT_KEYS = _canonical(CONTEXT_OPTIONS)
_IDENTIFIERS = _canonical(CONTEXT_IDENTIFIERS)


def _identifiers(key: str, value: str) -> tuple[str, ...]:
    out = []
    for part in value.split("|"):
        ident = _IDENTIFIERS.get(part.lower())
        if ident is None:
            raise ValueError(f"unknown context {part!r} in {key} (expected "
                             f"{' | '.join(CONTEXT_IDENTIFIERS)}, several separated by '|')")
        out.append(ident)
    return tuple(out)


def _labels(value: str) -> tuple[str, ...]:
    wanted = value.split(",")
    unknown = [label for label in wanted if label not in CONTEXT_LABELS]
    if unknown:
        raise ValueError(f"unknown label {unknown[0]!r} in labelsContext (expected "
                         f"{', '.join(CONTEXT_LABELS)}, separated by ',')")
    return tuple(label for label in CONTEXT_LABELS if label in wanted)


def parse_metric(text: str) -> MetricSpec:
    """One entry; ValueError saying what is wrong."""
    name, _, options = text.partition(":")
    if name not in CILIUM_METRICS:
        close = [m for m in CILIUM_METRICS if m.lower() == name.lower()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown Hubble metric {name!r} (Cilium has "
                         f"{', '.join(CILIUM_METRICS)}){hint}")
    flags_known = _canonical(FLAGS.get(name, ()))
    valued_known = _canonical(VALUED.get(name, ()))
    context: dict[str, str] = {}
    flags: set[str] = set()
    values: list[tuple[str, str]] = []
    for key, value in parse_options(options):
        low = key.lower()
        if low in _CONTEXT_KEYS:
            if not value:
                raise ValueError(f"option {key} of {name} needs a value ({key}=...)")
            context[_CONTEXT_KEYS[low]] = value
        elif low in flags_known:
            if value is not None:
                raise ValueError(f"option {key} of {name} takes no value, got {key}={value}")
            flags.add(flags_known[low])
        elif low in valued_known:
            if value not in ("true", "false"):
                raise ValueError(f"option {key} of {name} takes true or false, got "
                                 f"{key}={value if value is not None else ''}")
            values.append((valued_known[low], value))
        else:
            accepted = [*FLAGS.get(name, ()), *(f"{v}=" for v in VALUED.get(name, ())),
                        *(f"{c}=" for c in CONTEXT_OPTIONS)]
            raise ValueError(f"unknown option {key!r} of metric {name} (accepted: "
                             f"{', '.join(accepted)})")
    ctx = ContextOptions(
        **{attr: _identifiers(key, context[key]) for key, attr in (
            ("sourceContext", "source"), ("sourceEgressContext", "source_egress"),
            ("sourceIngressContext", "source_ingress"),
            ("destinationContext", "destination"),
            ("destinationEgressContext", "destination_egress"),
            ("destinationIngressContext", "destination_ingress")) if key in context},
        labels=_labels(context["labelsContext"]) if "labelsContext" in context else ())
    return MetricSpec(name=name, text=text, flags=frozenset(flags), values=tuple(values),
                      context=ctx)


def parse_metric_list(entries: Sequence[str]) -> tuple[list[MetricSpec], list[str]]:
    """Every metric to count, and warnings (metrics hexlane has no flows for); raises
    MetricOptionError naming the entry at the first problem."""
    specs: list[MetricSpec] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for i, text in enumerate(entries):
        try:
            spec = parse_metric(text)
        except ValueError as e:
            raise MetricOptionError(f"{text!r}: {e}", i) from None
        if spec.name in seen:
            raise MetricOptionError(f"{text!r}: metric {spec.name} is already enabled by "
                                    f"entry {seen[spec.name]} ({entries[seen[spec.name]]!r})",
                                    i)
        for a, b in CONFLICTS:
            other = b if spec.name == a else a if spec.name == b else None
            if other in seen:
                raise MetricOptionError(f"{text!r}: metrics {a} and {b} cannot be enabled "
                                        "together (they count the same series)", i)
        seen[spec.name] = i
        if spec.name in WITHOUT_FLOWS:
            warnings.append(f"Hubble metric {spec.name!r} is left out: "
                            f"{WITHOUT_FLOWS[spec.name]}, so it would never count")
            continue
        specs.append(spec)
    return specs, warnings
