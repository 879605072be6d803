"""Typed, immutable views of Kubernetes and cilium.io objects.

Parsing, validation and label selectors (pure). Every `X.parse(obj, path="")` checks the
whole object and raises one `InputError` naming every bad field; warnings (things Kubernetes
or Cilium accept but that are probably mistakes) are kept on the parsed view's `warnings`.
"""

from hexlane.model.cilium import IPBlock, L2AnnouncementPolicy, LBIPPool
from hexlane.model.errors import InputError, Problem
from hexlane.model.meta import Condition, ObjectMeta, OwnerReference
from hexlane.model.reader import FrozenMap
from hexlane.model.selectors import LabelSelector
from hexlane.model.service import LoadBalancerIngress, Service, ServicePort

__all__ = [
    "Condition",
    "FrozenMap",
    "IPBlock",
    "InputError",
    "L2AnnouncementPolicy",
    "LBIPPool",
    "LabelSelector",
    "LoadBalancerIngress",
    "ObjectMeta",
    "OwnerReference",
    "Problem",
    "Service",
    "ServicePort",
]
