"""The LB-IPAM behaviour table: one named row per behaviour, each asserting exact IPs and the
exact `cilium.io/IPAMRequestSatisfied` condition (and pool status where it matters).

Rows named after Cilium's own tests (operator/pkg/lbipam/lbipam_test.go) replay the same
scenario: the steps a test drives through the API become successive `allocate` calls, each
starting from the ingress IPs the previous one wrote. Rows marked hexlane pin down where
hexlane deliberately differs (see docs/lb-ipam.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from lbipam_helpers import (
    NO_MATCH,
    OUT,
    SAT,
    Step,
    at,
    incompatible,
    mismatch,
    no_pool,
    outcome,
    pool,
    run,
    svc,
    taken,
)

from hexlane.ipam.lbipam import Options

V6 = Options(ipv4_enabled=True, ipv6_enabled=True)
V6_ONLY = Options(ipv4_enabled=False, ipv6_enabled=True)
NO_FAMILY = Options(ipv4_enabled=False, ipv6_enabled=False)

Expect = dict[str, tuple[tuple[str, ...], tuple[str, str, str] | None]]
# pool name -> (conflicting, conflict message or "", total, available, used)
PoolExpect = dict[str, tuple[bool, str, int, int, int]]


@dataclass
class Row:
    steps: list[Step]
    services: Expect
    pools: PoolExpect = field(default_factory=dict)
    options: Options | None = None
    idle: bool = False


POOL_A = pool("pool-a", "10.0.10.0/24")
SK = "lbipam.cilium.io/sharing-key"
SK_ALIAS = "io.cilium/lb-ipam-sharing-key"
IPS = "lbipam.cilium.io/ips"
IPS_ALIAS = "io.cilium/lb-ipam-ips"
XNS = "lbipam.cilium.io/sharing-cross-namespace"
RED = {"matchLabels": {"color": "red"}}
BLUE = {"matchLabels": {"color": "blue"}}


def conflict(target: str, other: str, pool_name: str) -> str:
    return (f"Pool conflicts since range '{target}' overlaps range '{other}' from IP Pool "
            f"'{pool_name}'")


ROWS: dict[str, Row] = {
    # ---- pool conflicts (TestConflictResolution, TestPoolInternalConflict)
    "conflict_resolution_newer_pool_disabled": Row(
        [([pool("pool-a", "10.0.10.0/24", created=at(1)),
           pool("pool-b", "10.0.10.0/24", "ff::/48", created=at(2))],
          [svc("a")])],
        {"default/a": (("10.0.10.0",), SAT)},
        {"pool-a": (False, "", 256, 255, 1),
         "pool-b": (True, conflict("10.0.10.0 - 10.0.10.255", "10.0.10.0 - 10.0.10.255",
                                   "pool-a"), 256 + 2**80, 256 + 2**80, 0)}),
    "conflict_resolution_newer_by_timestamp_not_file_order": Row(
        [([pool("pool-b", "10.0.10.0/25", created=at(2)),
           pool("pool-a", "10.0.10.0/24", created=at(1))], [])],
        {},
        {"pool-a": (False, "", 256, 256, 0),
         "pool-b": (True, conflict("10.0.10.0 - 10.0.10.127", "10.0.10.0 - 10.0.10.255",
                                   "pool-a"), 128, 128, 0)}),
    "conflict_without_timestamps_later_in_file_is_newer": Row(
        [([pool("pool-x", "10.0.10.0/24"), pool("pool-y", "10.0.10.128/25")], [])],
        {},
        {"pool-x": (False, "", 256, 256, 0),
         "pool-y": (True, conflict("10.0.10.128 - 10.0.10.255", "10.0.10.0 - 10.0.10.255",
                                   "pool-x"), 128, 128, 0)}),
    "conflict_resolved_when_range_removed": Row(
        [([pool("pool-a", "10.0.10.0/24", created=at(1)),
           pool("pool-b", "10.0.10.0/24", "ff::/48", created=at(2))], []),
         ([pool("pool-a", "10.0.10.0/24", created=at(1)),
           pool("pool-b", "ff::/48", created=at(2))], [svc("a", families=["IPv6"])])],
        {"default/a": (("ff::",), SAT)},
        {"pool-b": (False, "", 2**80, 2**80 - 1, 1)}, options=V6),
    "conflict_mark_sticky_while_overlapping_a_conflicting_pool": Row(
        [([pool("pool-a", "10.0.10.0/24", created=at(1)),
           pool("pool-b", "10.0.10.128/25", "10.0.20.0/24", created=at(2)),
           pool("pool-c", "10.0.20.128/25", created=at(3))], []),
         ([pool("pool-b", "10.0.10.128/25", "10.0.20.0/24", created=at(2)),
           pool("pool-c", "10.0.20.128/25", created=at(3))], [svc("a", lbip="10.0.10.200")])],
        {"default/a": ((), no_pool("10.0.10.200"))},
        {"pool-b": (True, conflict("10.0.10.128 - 10.0.10.255", "10.0.10.0 - 10.0.10.255",
                                   "pool-a"), 384, 384, 0),
         "pool-c": (False, "", 128, 128, 0)}),
    "conflict_mark_cleared_when_nothing_overlaps": Row(
        [([pool("pool-a", "10.0.10.0/24", created=at(1)),
           pool("pool-b", "10.0.10.128/25", "10.0.20.0/24", created=at(2)),
           pool("pool-c", "10.0.20.128/25", created=at(3))], []),
         ([pool("pool-b", "10.0.10.128/25", "10.0.20.0/24", created=at(2))],
          [svc("a", lbip="10.0.10.200")])],
        {"default/a": (("10.0.10.200",), SAT)},
        {"pool-b": (False, "", 384, 383, 1)}),
    "internal_conflict_disables_pool": Row(
        [([pool("pool-a", "10.0.10.0/24", "10.0.10.64/28")], [svc("a")])],
        {"default/a": ((), NO_MATCH)},
        {"pool-a": (True, conflict("10.0.10.0 - 10.0.10.255", "10.0.10.64 - 10.0.10.79",
                                   "pool-a"), 272, 272, 0)}),
    "internal_conflict_resolved_when_range_removed": Row(
        [([pool("pool-a", "10.0.10.0/24", "10.0.10.64/28")], [svc("a")]),
         ([pool("pool-a", "10.0.10.0/24")], [svc("a")])],
        {"default/a": (("10.0.10.0",), SAT)},
        {"pool-a": (False, "", 256, 255, 1)}),
    # ---- families (TestAllocHappyPath)
    "happy_path_ipv4": Row(
        [([pool("pool-a", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="SingleStack", families=["IPv4"])])],
        {"default/a": (("10.0.10.0",), SAT)}, options=V6),
    "happy_path_family_switch_to_ipv6_frees_ipv4": Row(
        [([pool("pool-a", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="SingleStack", families=["IPv4"])]),
         ([pool("pool-a", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="SingleStack", families=["IPv6"]),
           svc("b", policy="SingleStack", families=["IPv4"])])],
        {"default/a": (("ff::",), SAT), "default/b": (("10.0.10.0",), SAT)},
        {"pool-a": (False, "", 256 + 2**80, 256 + 2**80 - 2, 2)}, options=V6),
    "happy_path_family_switch_back_to_ipv4": Row(
        [([pool("pool-a", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="SingleStack", families=["IPv4"])]),
         ([pool("pool-a", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="SingleStack", families=["IPv6"])]),
         ([pool("pool-a", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="SingleStack", families=["IPv4"])])],
        {"default/a": (("10.0.10.0",), SAT)}, options=V6),
    # ---- sharing (TestSharedServiceUpdatedSharingKey, ...UpdatedPorts, TestSharingKey)
    "sharing_key_same_ip": Row(
        [([POOL_A], [svc("a", ann={SK: "key-1"}, ports=["80"]),
                     svc("b", ann={SK: "key-1"}, ports=["81"])])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.0",), SAT)},
        {"pool-a": (False, "", 256, 255, 1)}),
    "sharing_key_update_moves_only_that_service": Row(
        [([POOL_A], [svc("a", ann={SK: "key-1"}, ports=["80"]),
                     svc("b", ann={SK: "key-1"}, ports=["81"])]),
         ([POOL_A], [svc("a", ann={SK: "key-1"}, ports=["80"]),
                     svc("b", ann={SK: "key-2"}, ports=["81"])])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.1",), SAT)}),
    "sharing_ports_update_to_overlap_moves_service": Row(
        [([POOL_A], [svc("a", ann={SK: "key-1"}, ports=["80"]),
                     svc("b", ann={SK: "key-1"}, ports=["81"])]),
         ([POOL_A], [svc("a", ann={SK: "key-1"}, ports=["80"]),
                     svc("b", ann={SK: "key-1"}, ports=["80"])])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.1",), SAT)}),
    "sharing_key_alias_and_other_key": Row(
        [([POOL_A], [svc("a", ann={SK_ALIAS: "key-a"}), svc("b", ann={SK_ALIAS: "key-a"}),
                     svc("c", ann={SK_ALIAS: "key-b"}, ports=["80"])])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.0",), SAT),
         "default/c": (("10.0.10.1",), SAT)}),
    "sharing_ip_stays_while_one_user_remains": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"]),
                     svc("b", ann={SK: "k"}, ports=["81"])]),
         ([POOL_A], [svc("b", ann={SK: "k"}, ports=["81"]), svc("e")])],
        {"default/b": (("10.0.10.0",), SAT), "default/e": (("10.0.10.1",), SAT)}),
    "sharing_ip_freed_when_last_user_goes": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"]),
                     svc("b", ann={SK: "k"}, ports=["81"])]),
         ([POOL_A], [svc("b", ann={SK: "k"}, ports=["81"]), svc("e")]),
         ([POOL_A], [svc("e"), svc("f")])],
        {"default/e": (("10.0.10.1",), SAT), "default/f": (("10.0.10.0",), SAT)}),
    "sharing_requested_ip_same_port_and_protocol_refused": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"], lbip="10.0.10.5"),
                     svc("b", ann={SK: "k"}, ports=["80"], lbip="10.0.10.5")])],
        {"default/a": (("10.0.10.5",), SAT),
         "default/b": ((), incompatible("10.0.10.5", "same port and protocol"))}),
    "sharing_tcp_and_udp_on_same_port_share_hexlane": Row(
        [([POOL_A], [svc("dns-tcp", ann={SK: "dns"}, ports=["53/TCP"]),
                     svc("dns-udp", ann={SK: "dns"}, ports=["53/UDP"])])],
        {"default/dns-tcp": (("10.0.10.0",), SAT), "default/dns-udp": (("10.0.10.0",), SAT)}),
    "sharing_without_key_requested_ip_already_allocated": Row(
        [([POOL_A], [svc("a", lbip="10.0.10.5"), svc("b", lbip="10.0.10.5", ports=["81"])])],
        {"default/a": (("10.0.10.5",), SAT), "default/b": ((), taken("10.0.10.5"))}),
    "sharing_older_service_wins_contended_ip": Row(
        [([POOL_A], [svc("a", created=at(2), lbip="10.0.10.5"),
                     svc("b", created=at(1), lbip="10.0.10.5")])],
        {"default/a": ((), taken("10.0.10.5")), "default/b": (("10.0.10.5",), SAT)}),
    "sharing_join_needs_pool_selecting_service_hexlane": Row(
        [([pool("red", "10.0.10.0/24", select=RED), pool("all", "10.0.20.0/24")],
          [svc("a", labels={"color": "red"}, ann={SK: "k"}, ports=["80"]),
           svc("b", ann={SK: "k"}, ports=["81"])])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.20.0",), SAT)}),
    # ---- cross-namespace sharing
    "cross_namespace_both_permit": Row(
        [([POOL_A], [svc("a", "ns-a", ann={SK: "k", XNS: "ns-b"}, ports=["80"]),
                     svc("b", "ns-b", ann={SK: "k", XNS: "ns-a"}, ports=["81"])])],
        {"ns-a/a": (("10.0.10.0",), SAT), "ns-b/b": (("10.0.10.0",), SAT)}),
    "cross_namespace_wildcard": Row(
        [([POOL_A], [svc("a", "ns-a", ann={SK: "k", XNS: "*"}, ports=["80"]),
                     svc("b", "ns-b", ann={SK: "k", XNS: "ns-x, *"}, ports=["81"])])],
        {"ns-a/a": (("10.0.10.0",), SAT), "ns-b/b": (("10.0.10.0",), SAT)}),
    "cross_namespace_one_side_refused": Row(
        [([POOL_A], [svc("a", "ns-a", ann={SK: "k", XNS: "ns-b"}, ports=["80"],
                         lbip="10.0.10.5"),
                     svc("b", "ns-b", ann={SK: "k"}, ports=["81"], lbip="10.0.10.5")])],
        {"ns-a/a": (("10.0.10.5",), SAT),
         "ns-b/b": ((), incompatible("10.0.10.5", "different and not permitted namespace"))}),
    "cross_namespace_unpermitted_generic_gets_own_ip": Row(
        [([POOL_A], [svc("a", "ns-a", ann={SK: "k"}, ports=["80"]),
                     svc("b", "ns-b", ann={SK: "k"}, ports=["81"])])],
        {"ns-a/a": (("10.0.10.0",), SAT), "ns-b/b": (("10.0.10.1",), SAT)}),
    "sharing_different_external_traffic_policy": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"], lbip="10.0.10.5"),
                     svc("b", ann={SK: "k"}, ports=["81"], lbip="10.0.10.5", etp="Local",
                         selector={"app": "x"})])],
        {"default/a": (("10.0.10.5",), SAT),
         "default/b": ((), incompatible("10.0.10.5", "different ExternalTrafficPolicy"))}),
    "sharing_local_same_selector": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"], etp="Local", selector={"app": "x"}),
                     svc("b", ann={SK: "k"}, ports=["81"], etp="Local",
                         selector={"app": "x"})])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.0",), SAT)}),
    "sharing_local_different_selector": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"], etp="Local", selector={"app": "x"},
                         lbip="10.0.10.5"),
                     svc("b", ann={SK: "k"}, ports=["81"], etp="Local", selector={"app": "y"},
                         lbip="10.0.10.5")])],
        {"default/a": (("10.0.10.5",), SAT),
         "default/b": ((), incompatible(
             "10.0.10.5",
             "compatible ExternalTrafficPolicy local but selecting different set of pods"))}),
    # ---- delete, init (TestServiceDelete, TestReallocOnInit, TestAllocOnInit)
    "delete_frees_ip": Row(
        [([POOL_A], [svc("a")]), ([POOL_A], [svc("b")])],
        {"default/b": (("10.0.10.0",), SAT)}, {"pool-a": (False, "", 256, 255, 1)}),
    "realloc_on_init_outside_pool": Row(
        [([POOL_A], [svc("a", policy="SingleStack", families=["IPv4"],
                         ingress=["192.168.1.12"])])],
        {"default/a": (("10.0.10.0",), SAT)}),
    "keep_on_init": Row(
        [([POOL_A], [svc("a", policy="SingleStack", families=["IPv4"], ingress=["10.0.10.123"]),
                     svc("b", lbip="10.0.10.124", ingress=["10.0.10.124"]), svc("c")])],
        {"default/a": (("10.0.10.123",), SAT), "default/b": (("10.0.10.124",), SAT),
         "default/c": (("10.0.10.0",), SAT)},
        {"pool-a": (False, "", 256, 253, 3)}),
    "keep_on_init_drops_unrequested_ingress": Row(
        [([POOL_A], [svc("a", lbip="10.0.10.7", ingress=["10.0.10.5", "10.0.10.7"])])],
        {"default/a": (("10.0.10.7",), SAT)}),
    # ---- pool selectors (TestPoolSelectorBasic, TestPoolSelectorNamespace)
    "pool_selector_basic": Row(
        [([pool("pool-a", "10.0.10.0/24", select=RED)],
          [svc("red-service", labels={"color": "red"}, policy="SingleStack"),
           svc("blue-service", labels={"color": "blue"}, policy="SingleStack")])],
        {"default/red-service": (("10.0.10.0",), SAT), "default/blue-service": ((), NO_MATCH)}),
    "pool_selector_namespace_cannot_be_spoofed": Row(
        [([pool("pool-a", "10.0.10.0/24",
                select={"matchLabels": {"io.kubernetes.service.namespace": "tenant-one"}})],
          [svc("red-service", "tenant-one"),
           svc("blue-service", "tenant-two",
               labels={"io.kubernetes.service.namespace": "tenant-one"})])],
        {"tenant-one/red-service": (("10.0.10.0",), SAT),
         "tenant-two/blue-service": ((), NO_MATCH)}),
    "pool_selector_service_name_label": Row(
        [([pool("pool-a", "10.0.10.0/24",
                select={"matchLabels": {"io.kubernetes.service.name": "web"}})],
          [svc("web"), svc("db")])],
        {"default/web": (("10.0.10.0",), SAT), "default/db": ((), NO_MATCH)}),
    "pool_selector_changed_strips_ip": Row(
        [([pool("pool-a", "10.0.10.0/24", select=RED)], [svc("a", labels={"color": "red"})]),
         ([pool("pool-a", "10.0.10.0/24", select={"matchLabels": {"color": "green"}})],
          [svc("a", labels={"color": "red"})])],
        {"default/a": ((), NO_MATCH)}),
    # ---- which Services are handled (TestChangeServiceType, TestNonMatchingLBClass)
    "change_service_type_cluster_ip_ignored": Row(
        [([POOL_A], [svc("a", type="ClusterIP")])], {"default/a": ((), None)}),
    "change_service_type_to_nodeport_strips_and_frees": Row(
        [([POOL_A], [svc("a")]), ([POOL_A], [svc("a", type="NodePort"), svc("b")])],
        {"default/a": ((), None), "default/b": (("10.0.10.0",), SAT)}),
    "lb_class_other_ignored": Row(
        [([POOL_A], [svc("a", cls="net.example/some-other-class")])],
        {"default/a": ((), None)}),
    "lb_class_l2_and_bgp_handled": Row(
        [([POOL_A], [svc("a", cls="io.cilium/l2-announcer"),
                     svc("b", cls="io.cilium/bgp-control-plane")])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.1",), SAT)}),
    # ---- allowFirstLastIPs (TestAllowFirstLastIPs, TestUpdateAllowFirstAndLastIPs)
    "allow_first_last_yes_gives_network_address": Row(
        [([pool("pool-a", "10.0.10.16/30", allow="Yes")],
          [svc("a", policy="SingleStack", families=["IPv4"], lbip="10.0.10.16")])],
        {"default/a": (("10.0.10.16",), SAT)}),
    "allow_first_last_no_reserves_network_address": Row(
        [([pool("pool-a", "10.0.10.16/30", allow="No")],
          [svc("a", policy="SingleStack", families=["IPv4"], lbip="10.0.10.16")])],
        {"default/a": ((), taken("10.0.10.16"))}, {"pool-a": (False, "", 4, 2, 2)}),
    "allow_first_last_toggle_no_to_yes": Row(
        [([pool("pool-a", "10.0.10.16/30", allow="No")], [svc("a", lbip="10.0.10.16")]),
         ([pool("pool-a", "10.0.10.16/30", allow="Yes")], [svc("a", lbip="10.0.10.16")])],
        {"default/a": (("10.0.10.16",), SAT)}, {"pool-a": (False, "", 4, 3, 1)}),
    "allow_first_last_toggle_yes_to_no_keeps_holder": Row(
        [([pool("pool-a", "10.0.10.16/30", allow="Yes")], [svc("a", lbip="10.0.10.16")]),
         ([pool("pool-a", "10.0.10.16/30", allow="No")], [svc("a", lbip="10.0.10.16")])],
        {"default/a": (("10.0.10.16",), SAT)}, {"pool-a": (False, "", 4, 2, 2)}),
    "allow_first_last_unset_allocates_first": Row(
        [([POOL_A], [svc("a")])], {"default/a": (("10.0.10.0",), SAT)}),
    "allow_first_last_no_generic_starts_at_one_and_counts_reserved": Row(
        [([pool("pool-a", "10.0.10.0/24", allow="No")], [svc("a")])],
        {"default/a": (("10.0.10.1",), SAT)}, {"pool-a": (False, "", 256, 253, 3)}),
    "allow_first_last_no_ignored_for_two_addresses": Row(
        [([pool("pool-a", "10.0.10.0/31", allow="No")], [svc("a"), svc("b")])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.1",), SAT)}),
    "allow_first_last_no_ignored_for_start_stop": Row(
        [([pool("pool-a", "10.0.10.0-10.0.10.3", allow="No")], [svc("a")])],
        {"default/a": (("10.0.10.0",), SAT)}),
    "allow_first_last_lowercase_no_does_not_reserve": Row(
        [([pool("pool-a", "10.0.10.0/24", allow="no")], [svc("a")])],
        {"default/a": (("10.0.10.0",), SAT)}),
    "reserved_ip_with_sharing_key_no_crash": Row(
        [([pool("pool-a", "10.0.10.16/30", allow="No")],
          [svc("a", ann={SK_ALIAS: "key-1"}, lbip="10.0.10.16")])],
        {"default/a": ((), taken("10.0.10.16"))}),
    # ---- requested IPs (TestRequestIPs)
    "request_ip_via_load_balancer_ip": Row(
        [([POOL_A], [svc("a", lbip="10.0.10.20")])], {"default/a": (("10.0.10.20",), SAT)}),
    "request_ips_load_balancer_ip_and_annotation_merged": Row(
        [([POOL_A], [svc("a", lbip="10.0.10.20"),
                     svc("b", ann={IPS_ALIAS: "10.0.10.22,10.0.10.23"}, lbip="10.0.10.21")])],
        {"default/a": (("10.0.10.20",), SAT),
         "default/b": (("10.0.10.21", "10.0.10.22", "10.0.10.23"), SAT)}),
    "request_ip_already_allocated": Row(
        [([POOL_A], [svc("b", ann={IPS_ALIAS: "10.0.10.22,10.0.10.23"}, lbip="10.0.10.21"),
                     svc("c", lbip="10.0.10.21")])],
        {"default/b": (("10.0.10.21", "10.0.10.22", "10.0.10.23"), SAT),
         "default/c": ((), taken("10.0.10.21"))}),
    "request_ips_partially_satisfied": Row(
        [([POOL_A], [svc("a", ann={IPS: "10.0.10.5,20.0.0.1"})])],
        {"default/a": (("10.0.10.5",), no_pool("20.0.0.1"))}),
    "request_ips_last_failure_is_reported": Row(
        [([POOL_A], [svc("a", ann={IPS: "20.0.0.1,10.0.10.5,20.0.0.2"})])],
        {"default/a": (("10.0.10.5",), no_pool("20.0.0.2"))}),
    "request_ips_trimmed_and_primary_annotation_wins": Row(
        [([POOL_A], [svc("a", ann={IPS: " 10.0.10.7 , 10.0.10.8", IPS_ALIAS: "10.0.10.9"})])],
        {"default/a": (("10.0.10.7", "10.0.10.8"), SAT)}),
    "request_ips_bad_entries_skipped": Row(
        [([POOL_A], [svc("a", ann={IPS: "10.0.10.7,not-an-ip"})])],
        {"default/a": (("10.0.10.7",), SAT)}),
    "remove_requested_ip_frees_it": Row(
        [([POOL_A], [svc("a", ann={IPS_ALIAS: "10.0.10.124,10.0.10.125"}, lbip="10.0.10.123")]),
         ([POOL_A], [svc("a", ann={IPS_ALIAS: "10.0.10.124"}, lbip="10.0.10.123"),
                     svc("b", lbip="10.0.10.125")])],
        {"default/a": (("10.0.10.123", "10.0.10.124"), SAT),
         "default/b": (("10.0.10.125",), SAT)}),
    # ---- pools coming and going (TestAddPool, TestAddRange, TestDisablePool, ...)
    "pending_until_pool_added_idle": Row(
        [([], [svc("a", lbip="10.0.20.10")])], {}, idle=True),
    "pending_until_pool_added_then_satisfied": Row(
        [([], [svc("a", lbip="10.0.20.10")]),
         ([POOL_A, pool("pool-b", "10.0.20.0/24")], [svc("a", lbip="10.0.20.10")])],
        {"default/a": (("10.0.20.10",), SAT)}),
    "add_pool_request_outside_every_pool_is_no_pool": Row(
        [([POOL_A], [svc("a", lbip="10.0.20.10")])], {"default/a": ((), no_pool("10.0.20.10"))}),
    "add_pool_satisfies_pending_request": Row(
        [([POOL_A], [svc("a", lbip="10.0.20.10")]),
         ([POOL_A, pool("pool-b", "10.0.20.0/24")], [svc("a", lbip="10.0.20.10")])],
        {"default/a": (("10.0.20.10",), SAT)}),
    "add_range_satisfies_pending_request": Row(
        [([POOL_A], [svc("a", lbip="10.0.20.10")]),
         ([pool("pool-a", "10.0.10.0/24", "10.0.20.0/24")], [svc("a", lbip="10.0.20.10")])],
        {"default/a": (("10.0.20.10",), SAT)}),
    "disable_pool_keeps_existing_gives_no_new": Row(
        [([POOL_A], [svc("a")]),
         ([pool("pool-a", "10.0.10.0/24", disabled=True)], [svc("a"), svc("b")])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": ((), NO_MATCH)},
        {"pool-a": (False, "", 256, 255, 1)}),
    "disable_pool_then_reenable_resumes": Row(
        [([POOL_A], [svc("a")]),
         ([pool("pool-a", "10.0.10.0/24", disabled=True)], [svc("a"), svc("b")]),
         ([POOL_A], [svc("a"), svc("b")])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.1",), SAT)}),
    "disabled_pool_ip_kept_across_restart_hexlane": Row(
        [([pool("pool-a", "10.0.10.0/24", disabled=True)],
          [svc("a", ingress=["10.0.10.5"]), svc("b")])],
        {"default/a": (("10.0.10.5",), SAT), "default/b": ((), NO_MATCH)}),
    "disabled_pool_requested_ip_is_no_pool": Row(
        [([pool("pool-a", "10.0.10.0/24", disabled=True)], [svc("a", lbip="10.0.10.5")])],
        {"default/a": ((), no_pool("10.0.10.5"))}),
    "conflicting_pool_ip_kept_across_restart_hexlane": Row(
        [([pool("pool-a", "10.0.10.0/24", created=at(1)),
           pool("pool-b", "10.0.10.128/25", "10.0.20.0/24", created=at(2))],
          [svc("a", ingress=["10.0.20.5"]), svc("b")])],
        {"default/a": (("10.0.20.5",), SAT), "default/b": (("10.0.10.0",), SAT)},
        {"pool-a": (False, "", 256, 255, 1),
         "pool-b": (True, conflict("10.0.10.128 - 10.0.10.255", "10.0.10.0 - 10.0.10.255",
                                   "pool-a"), 384, 383, 1)}),
    "pool_delete_reallocates_from_other_pool": Row(
        [([POOL_A, pool("pool-b", "10.0.20.0/24")], [svc("a")]),
         ([pool("pool-b", "10.0.20.0/24")], [svc("a")])],
        {"default/a": (("10.0.20.0",), SAT)}),
    "range_add_moves_nothing": Row(
        [([POOL_A], [svc("a", ingress=["10.0.10.9"])]),
         ([pool("pool-a", "10.0.10.0/24", "10.0.20.0/24")], [svc("a")])],
        {"default/a": (("10.0.10.9",), SAT)}),
    "range_delete_reallocates_from_remaining_range": Row(
        [([POOL_A], [svc("a")]),
         ([pool("pool-a", "10.0.10.0/24", "10.0.20.0/24")], [svc("a")]),
         ([pool("pool-a", "10.0.20.0/24")], [svc("a")])],
        {"default/a": (("10.0.20.0",), SAT)}),
    "pool_shrunk_moves_only_outside_services": Row(
        [([pool("pool-a", "10.0.10.0-10.0.10.9")], [svc("a"), svc("b"), svc("c")]),
         ([pool("pool-a", "10.0.10.1-10.0.10.9")], [svc("a"), svc("b"), svc("c")])],
        {"default/a": (("10.0.10.3",), SAT), "default/b": (("10.0.10.1",), SAT),
         "default/c": (("10.0.10.2",), SAT)}),
    "pool_widened_satisfies_waiting_service": Row(
        [([pool("pool-a", "10.0.10.0")], [svc("a"), svc("b")]),
         ([pool("pool-a", "10.0.10.0-10.0.10.1")], [svc("a"), svc("b")])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.1",), SAT)}),
    # ---- families (TestLBIPAM_serviceIPFamilyRequest as allocations)
    "family_no_policy_no_families_ipv4_cluster": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")], [svc("a")])],
        {"default/a": (("10.0.10.0",), SAT)}),
    "family_no_policy_no_families_ipv6_cluster": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")], [svc("a")])],
        {"default/a": (("ff::",), SAT)}, options=V6_ONLY),
    "family_no_policy_no_families_dual_cluster_prefers_ipv4": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")], [svc("a")])],
        {"default/a": (("10.0.10.0",), SAT)}, options=V6),
    "family_no_policy_ipv6_requested_even_if_disabled": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")], [svc("a", families=["IPv6"])])],
        {"default/a": (("ff::",), SAT)}),
    "family_no_policy_first_listed_family": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")],
          [svc("a", families=["IPv6", "IPv4"]), svc("b", families=["IPv4", "IPv6"])])],
        {"default/a": (("ff::",), SAT), "default/b": (("10.0.10.0",), SAT)},
        options=NO_FAMILY),
    "family_prefer_dual_both": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")], [svc("a", policy="PreferDualStack")])],
        {"default/a": (("10.0.10.0", "ff::"), SAT)}, options=V6),
    "family_prefer_dual_listed_family_disabled_requests_nothing": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="PreferDualStack", families=["IPv4"])])],
        {"default/a": ((), SAT)}, options=V6_ONLY),
    "family_require_dual_takes_enabled_families": Row(
        [([pool("p", "10.0.10.0/24", "ff::/48")],
          [svc("a", policy="RequireDualStack", families=["IPv4"])])],
        {"default/a": (("ff::",), SAT)}, options=V6_ONLY),
    "family_require_dual_needs_both": Row(
        [([pool("p", "10.0.10.0/24")], [svc("a", policy="RequireDualStack")])],
        {"default/a": (("10.0.10.0",), NO_MATCH)}, options=V6),
    "family_prefer_dual_takes_what_it_can_hexlane": Row(
        [([pool("p", "10.0.10.0/24")], [svc("a", policy="PreferDualStack")])],
        {"default/a": (("10.0.10.0",), SAT)}, options=V6),
    # ---- labels (TestRemoveServiceLabel, TestRequestIPWithMismatchedLabel)
    "label_removal_strips_ip": Row(
        [([pool("pool-a", "10.0.10.0/24", select=BLUE)], [svc("a", labels={"color": "blue"})]),
         ([pool("pool-a", "10.0.10.0/24", select=BLUE)], [svc("a", labels={"color": "green"})])],
        {"default/a": ((), NO_MATCH)}),
    "selector_mismatch_reason": Row(
        [([pool("pool-a", "10.0.10.0/24", select=BLUE)],
          [svc("a", labels={"color": "red"}, lbip="10.0.10.123")])],
        {"default/a": ((), mismatch("10.0.10.123"))}),
    # ---- ranges and choice of address (TestRangeFromPrefix, allocator order)
    "range_from_prefix_masks_host_bits": Row(
        [([pool("pool-a", "10.0.0.12/24")], [svc("a")])],
        {"default/a": (("10.0.0.0",), SAT)}, {"pool-a": (False, "", 256, 255, 1)}),
    "range_from_prefix_ipv6": Row(
        [([pool("pool-a", "::/112")], [svc("a", families=["IPv6"])])],
        {"default/a": (("::",), SAT)}, {"pool-a": (False, "", 65536, 65535, 1)}),
    "start_alone_is_one_address_then_out_of_ips": Row(
        [([pool("pool-a", "10.0.10.7")], [svc("a"), svc("b")])],
        {"default/a": (("10.0.10.7",), SAT), "default/b": ((), OUT)},
        {"pool-a": (False, "", 1, 0, 1)}),
    "choice_smallest_free_block_first": Row(
        [([POOL_A], [svc("a", lbip="10.0.10.2"), svc("b"), svc("c"), svc("d")])],
        {"default/a": (("10.0.10.2",), SAT), "default/b": (("10.0.10.0",), SAT),
         "default/c": (("10.0.10.1",), SAT), "default/d": (("10.0.10.3",), SAT)}),
    "choice_equal_blocks_follow_cilium_heap_order": Row(
        [([POOL_A], [svc("a", lbip="10.0.10.20"), svc("b", lbip="10.0.10.30"),
                     svc("c", lbip="10.0.10.9"), svc("d")])],
        {"default/a": (("10.0.10.20",), SAT), "default/b": (("10.0.10.30",), SAT),
         "default/c": (("10.0.10.9",), SAT), "default/d": (("10.0.10.21",), SAT)}),
    "choice_first_matching_range_in_pool_age_order": Row(
        [([pool("new", "10.0.30.0/24", created=at(5)), pool("old", "10.0.20.0/24",
                                                            created=at(1))], [svc("a")])],
        {"default/a": (("10.0.20.0",), SAT)}),
    "choice_next_range_when_first_full": Row(
        [([pool("pool-a", "10.0.10.0", "10.0.20.0/24")], [svc("a"), svc("b")])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.20.0",), SAT)}),
    # ---- restarts (the Cilium issues #41147 #43131 #39033 #46262)
    "restart_no_reshuffle_with_full_pool": Row(
        [([pool("pool-a", "10.0.10.0/30")],
          [svc("s1", ingress=["10.0.10.3"]), svc("s2", ingress=["10.0.10.1"]),
           svc("s3", ingress=["10.0.10.0"]), svc("s4", ingress=["10.0.10.2"]), svc("s5")])],
        {"default/s1": (("10.0.10.3",), SAT), "default/s2": (("10.0.10.1",), SAT),
         "default/s3": (("10.0.10.0",), SAT), "default/s4": (("10.0.10.2",), SAT),
         "default/s5": ((), OUT)}, {"pool-a": (False, "", 4, 0, 4)}),
    "restart_keeps_shared_ip": Row(
        [([POOL_A], [svc("a", ann={SK: "k"}, ports=["80"], ingress=["10.0.10.9"]),
                     svc("b", ann={SK: "k"}, ports=["81"], ingress=["10.0.10.9"])])],
        {"default/a": (("10.0.10.9",), SAT), "default/b": (("10.0.10.9",), SAT)}),
    "restart_same_ip_without_key_older_keeps_it": Row(
        [([POOL_A], [svc("a", created=at(2), ingress=["10.0.10.9"]),
                     svc("b", created=at(1), ingress=["10.0.10.9"])])],
        {"default/a": (("10.0.10.0",), SAT), "default/b": (("10.0.10.9",), SAT)}),
    # ---- MetalLB migration annotations (hexlane)
    "metallb_annotations_honoured_dns_tcp_udp": Row(
        [([pool("default-pool", "192.168.1.128/25")],
          [svc("dns-tcp", ann={"metallb.universe.tf/loadBalancerIPs": "192.168.1.153",
                               "metallb.universe.tf/allow-shared-ip": "pi-hole"},
               ports=["53/TCP"]),
           svc("dns-udp", ann={"metallb.universe.tf/loadBalancerIPs": "192.168.1.153",
                               "metallb.universe.tf/allow-shared-ip": "pi-hole"},
               ports=["53/UDP"])])],
        {"default/dns-tcp": (("192.168.1.153",), SAT),
         "default/dns-udp": (("192.168.1.153",), SAT)}),
    "metallb_io_spelling_honoured": Row(
        [([pool("default-pool", "192.168.1.128/25")],
          [svc("a", ann={"metallb.io/loadBalancerIPs": "192.168.1.140",
                         "metallb.io/allow-shared-ip": "k"}, ports=["80"]),
           svc("b", ann={"metallb.io/allow-shared-ip": "k"}, ports=["81"])])],
        {"default/a": (("192.168.1.140",), SAT), "default/b": (("192.168.1.140",), SAT)}),
    "metallb_annotations_yield_to_cilium_ones": Row(
        [([pool("default-pool", "192.168.1.128/25")],
          [svc("a", ann={IPS_ALIAS: "192.168.1.140",
                         "metallb.universe.tf/loadBalancerIPs": "192.168.1.153"})])],
        {"default/a": (("192.168.1.140",), SAT)}),
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_behaviour(row: Row) -> None:
    plan = run(row.steps, row.options)
    assert plan.idle == row.idle
    got = outcome(plan)
    for key, want in row.services.items():
        assert got[key] == want, key
    for name, (conflicting, message, total, available, used) in row.pools.items():
        st = plan.pools[name]
        assert (st.conflicting, st.conflict_message, st.total, st.available, st.used) == (
            conflicting, message, total, available, used), name


def test_table_is_large_enough() -> None:
    assert len(ROWS) >= 40
