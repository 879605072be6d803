"""The operator's Prometheus metrics, in one registry per operator (tests run several).

Served with the client layer's metrics (`hexlane_k8s_client_*`: rate-limiter waits, API calls
by method and code) and the process's (`cilium_operator_process_*`, Cilium's operator's names
for them) on `--metrics-addr` (Cilium's operator port, 9963), beside `/healthz`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0)


class OperatorMetrics:
    """Everything the operator's controllers report."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(namespace="cilium_operator", registry=r)
        self.is_leader = Gauge(
            "hexlane_operator_is_leader",
            "1 while this operator holds the cilium-operator-resource-lock Lease", registry=r)
        self.services_satisfied = Gauge(
            "hexlane_operator_lbipam_services_satisfied",
            "LoadBalancer Services whose cilium.io/IPAMRequestSatisfied is True", registry=r)
        self.services_unsatisfied = Gauge(
            "hexlane_operator_lbipam_services_unsatisfied",
            "LoadBalancer Services LB-IPAM handles that are not satisfied", registry=r)
        self.pool_ips = Gauge(
            "hexlane_operator_lbipam_pool_ips",
            "IPs of a CiliumLoadBalancerIPPool by state (total, available, used)",
            ["pool", "state"], registry=r)
        self.pool_conflicting = Gauge(
            "hexlane_operator_lbipam_pool_conflicting",
            "1 when the pool conflicts with an older one (cilium.io/PoolConflict)", ["pool"],
            registry=r)
        self.reconcile_seconds = Histogram(
            "hexlane_operator_reconcile_duration_seconds",
            "Seconds one controller run took (parse, allocate, plan writes)", ["controller"],
            buckets=RECONCILE_BUCKETS, registry=r)
        self.reconcile_batch = Histogram(
            "hexlane_operator_reconcile_batch_events",
            "Informer events one controller run covered", ["controller"],
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000), registry=r)
        self.writes = Counter(
            "hexlane_operator_writes",
            "API writes by controller, kind and result (ok, conflict, gone, error)",
            ["controller", "kind", "result"], registry=r)
        self.write_queue = Gauge(
            "hexlane_operator_write_queue_length",
            "Objects with a write waiting (queued, in flight or backing off)", ["controller"],
            registry=r)
        self.invalid_objects = Gauge(
            "hexlane_operator_invalid_objects",
            "Watched objects skipped because they do not parse (logged with field paths)",
            ["controller", "kind"], registry=r)
        self.node_cidrs = Gauge(
            "hexlane_operator_podcidr_nodes",
            "Nodes by pod CIDR state under ipam.mode cluster-pool (assigned, unassigned)",
            ["state"], registry=r)
