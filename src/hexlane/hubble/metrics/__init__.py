"""Hubble's Prometheus metrics: Cilium's handlers, names, labels and options, counted per agent.

    hubble.metrics.enabled --config.hubble_metrics--> MetricSpec per metric
    flow --handlers.FlowMetrics.process--> series by label values (pure)
    scrape --exporter.HubbleMetrics--> hubble_* families on hubble.metrics.port (9965)

- `hexlane.config.hubble_metrics` parses and checks the list (`dns:query;ignoreAAAA`,
  `flow:sourceContext=pod|ip;labelsContext=traffic_direction`, ...), so `hexlane config`,
  `hexlane validate` and the agent's start reject a bad one with the entry named;
- `context` computes the context labels (source, destination, labelsContext), pure;
- `handlers` counts flows into families as Cilium's handlers do, and removes a deleted pod's
  series a minute later (clock given), pure;
- `exporter` is the prometheus_client side: one registry per agent, served at /metrics.

Inspect: `curl http://<node>:9965/metrics`, `hexlane status` (the Hubble line says where
metrics are served). docs/hubble.md lists every metric and option, and what is not done.
"""

from hexlane.config.hubble_metrics import MetricSpec, parse_metric_list

from .exporter import HubbleMetrics
from .handlers import FlowMetrics

__all__ = ["FlowMetrics", "HubbleMetrics", "MetricSpec", "parse_metric_list"]
