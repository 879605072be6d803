"""Typed, immutable views of Kubernetes and cilium.io objects.

Parsing, validation and label selectors (pure). Every `X.parse(obj, path="")` checks the
whole object and raises one `InputError` naming every bad field; warnings (things Kubernetes
or Cilium accept but that are probably mistakes) are kept on the parsed view's `warnings`.
`parse_object` picks the type from kind and apiVersion; `load_manifests` reads YAML files.
"""

from hexlane.model.cilium import IPBlock, L2AnnouncementPolicy, LBIPPool
from hexlane.model.endpointslice import (
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectReference,
)
from hexlane.model.errors import InputError, Problem
from hexlane.model.manifests import (
    Manifest,
    expand_paths,
    load_manifests,
    load_mapping_file,
    parse_manifests,
    parse_mapping,
    scan_manifests,
)
from hexlane.model.meta import Condition, ObjectMeta, OwnerReference
from hexlane.model.netpol import (
    CIDRBlock,
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    CiliumPolicyRule,
    CiliumPolicySpec,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyRule,
    PolicyPort,
    PortRule,
)
from hexlane.model.node import Container, ContainerPort, Lease, Node, NodeAddress, Pod
from hexlane.model.reader import FrozenMap
from hexlane.model.registry import KINDS, TypedObject, Unread, parse_object
from hexlane.model.selectors import LabelSelector
from hexlane.model.service import LoadBalancerIngress, Service, ServicePort

__all__ = [
    "KINDS",
    "CIDRBlock",
    "CiliumClusterwideNetworkPolicy",
    "CiliumNetworkPolicy",
    "CiliumPolicyRule",
    "CiliumPolicySpec",
    "Condition",
    "Container",
    "ContainerPort",
    "Endpoint",
    "EndpointConditions",
    "EndpointPort",
    "EndpointSlice",
    "FrozenMap",
    "IPBlock",
    "InputError",
    "L2AnnouncementPolicy",
    "LBIPPool",
    "LabelSelector",
    "Lease",
    "LoadBalancerIngress",
    "Manifest",
    "NetworkPolicy",
    "NetworkPolicyPeer",
    "NetworkPolicyRule",
    "Node",
    "NodeAddress",
    "ObjectMeta",
    "ObjectReference",
    "OwnerReference",
    "Pod",
    "PolicyPort",
    "PortRule",
    "Problem",
    "Service",
    "ServicePort",
    "TypedObject",
    "Unread",
    "expand_paths",
    "load_manifests",
    "load_mapping_file",
    "parse_manifests",
    "parse_mapping",
    "parse_object",
    "scan_manifests",
]
