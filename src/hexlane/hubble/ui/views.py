"""What the Hubble UI's JSON API asks and answers (pure): the page's filters as Hubble
FlowFilters, and Observer answers as the JSON the page reads.

The page's filters are query parameters, the same in the page's URL and in the API's:
`namespace`, `verdict`, `pod`, `ip`, `port`, `protocol`. A flow is listed when it matches
every filter given; `namespace`, `pod`, `ip` and `port` match either end of the flow (the
source or the destination), independently of each other. As FlowFilters that is one filter
per choice of ends, OR-ed in the whitelist (at most 8: `pod` takes the place of
`namespace`, which it completes when it has no namespace of its own: `namespace=bar&pod=echo`
is `bar/echo`, a pod prefix as `hubble observe --pod` takes it). Values are checked as the
Observer checks them (`hexlane.hubble.filters`), and a bad one is a `ViewError` naming the
parameter.

A flow in the API is its GetFlowsResponse's flow as protobuf JSON with the proto field names
(as `hubble observe -o json` prints it) under `flow`, beside the columns `hubble observe -o
table` prints and the compact line (`hexlane.hubble.format`). Live flows go to the page as
Server-Sent Events (`sse_event`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from google.protobuf import json_format

from hexlane.hubble import format as fmt
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_pb2
from hexlane.hubble.filters import FilterError, compile_filters

DEFAULT_LAST = 100
MAX_LAST = 2000


class ViewError(ValueError):
    """A filter or parameter the page sent that cannot mean anything; names the parameter."""


@dataclass(frozen=True)
class FlowView:
    """The page's filters ("" = not filtered)."""

    namespace: str = ""
    verdict: str = ""
    pod: str = ""
    ip: str = ""
    port: str = ""
    protocol: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FlowView:
        """The filters among query parameters (others are left to their readers)."""
        return cls(**{f.name: params.get(f.name, "").strip() for f in fields(cls)})


FILTER_PARAMS = tuple(f.name for f in fields(FlowView))


def _checked(param: str, ff: flow_pb2.FlowFilter) -> None:
    try:
        compile_filters([ff])
    except FilterError as e:  # "source_ip: ...": the page knows the parameter, not the field
        raise ViewError(f"{param}: {str(e).partition(': ')[2] or e}") from None


def _pod_value(view: FlowView) -> str:
    if "/" in view.pod:
        ns = view.pod.split("/", 1)[0]
        if view.namespace and ns and ns != view.namespace:
            raise ViewError(f"pod: {view.pod!r} is not in namespace {view.namespace!r}")
        return view.pod if ns or not view.namespace else f"{view.namespace}{view.pod}"
    # no namespace of its own: the selected one, else any ("/name", Hubble's syntax)
    return f"{view.namespace}/{view.pod}"


def whitelist(view: FlowView) -> list[flow_pb2.FlowFilter]:
    """The FlowFilters that list what `view` selects ([] = every flow)."""
    common = flow_pb2.FlowFilter()
    if view.verdict:
        try:
            common.verdict.append(flow_pb2.Verdict.Value(view.verdict.upper()))
        except ValueError:
            names = ", ".join(n for n, _ in flow_pb2.Verdict.items()
                              if not n.endswith("UNKNOWN"))
            raise ViewError(f"verdict: {view.verdict!r} is not one of {names}") from None
    if view.protocol:
        common.protocol.append(view.protocol.lower())
        _checked("protocol", common)
    # (source field, destination field, value) of the filters about either end
    either: list[tuple[str, str, str]] = []
    if view.pod:
        either.append(("source_pod", "destination_pod", _pod_value(view)))
    elif view.namespace:
        either.append(("source_pod", "destination_pod", f"{view.namespace}/"))
    if view.ip:
        either.append(("source_ip", "destination_ip", view.ip))
    if view.port:
        either.append(("source_port", "destination_port", view.port))
    for src, _, value in either:
        alone = flow_pb2.FlowFilter()
        getattr(alone, src).append(value)
        _checked(src.removeprefix("source_"), alone)
    if not either:
        return [common] if view.verdict or view.protocol else []
    out = []
    for ends in itertools.product((0, 1), repeat=len(either)):
        ff = flow_pb2.FlowFilter()
        ff.CopyFrom(common)
        for (src, dst, value), end in zip(either, ends, strict=True):
            getattr(ff, dst if end else src).append(value)
        out.append(ff)
    return out


def parse_last(text: str) -> int:
    """How many stored flows to send first: 1 to MAX_LAST (DEFAULT_LAST when empty)."""
    if not text:
        return DEFAULT_LAST
    if not text.isdigit() or not 1 <= int(text) <= MAX_LAST:
        raise ViewError(f"last: {text!r} is not a number from 1 to {MAX_LAST}")
    return int(text)


def flows_request(view: FlowView, *, last: int, follow: bool
                  ) -> observer_pb2.GetFlowsRequest:
    """The last `last` flows `view` selects (and with `follow`, new ones as they come)."""
    return observer_pb2.GetFlowsRequest(number=last, follow=follow,
                                        whitelist=whitelist(view))


def proto_dict(message: Any) -> dict[str, Any]:
    """Protobuf JSON with the proto field names, as `hubble observe -o json`."""
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def flow_item(response: observer_pb2.GetFlowsResponse) -> dict[str, Any]:
    """One flow of GetFlows for the page: the table's columns, the compact line, the flow."""
    flow = response.flow
    time, source, destination, kind, verdict, summary = fmt.table_row(flow)
    return {"uuid": flow.uuid, "time": time, "node_name": response.node_name or
            flow.node_name, "source": source, "destination": destination, "type": kind,
            "verdict": verdict, "summary": summary,
            "is_reply": flow.is_reply.value if flow.HasField("is_reply") else None,
            "compact": fmt.compact(flow, node_name=True), "flow": proto_dict(flow)}


def lost_item(response: observer_pb2.GetFlowsResponse) -> dict[str, Any]:
    """A loss notice in the stream: how many flows, and hubble's line for it."""
    return {"lost": response.lost_events.num_events_lost,
            "text": fmt.lost_events_text(response)}


def status_item(address: str, status: observer_pb2.ServerStatusResponse,
                nodes: Iterable[observer_pb2.Node]) -> dict[str, Any]:
    """ServerStatus and GetNodes as the page shows them (and `hubble status` prints)."""
    return {"server": address, "status": proto_dict(status),
            "nodes": [proto_dict(n) for n in nodes]}


def sse_event(event: str, data: object) -> bytes:
    """One Server-Sent Event whose data is JSON (one line: compact JSON has no newline)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
