"""Object metadata and status conditions shared by every kind hexlane reads.

`ObjectMeta.parse` checks what Kubernetes checks on every object: a name (DNS subdomain, or
for Services and namespaces a DNS label), a namespace that is a DNS label, valid label keys
and values, owner references with kind and name. Cluster-scoped kinds ignore
`metadata.namespace` (the seeds put `namespace: kube-system` on cluster-scoped pools).

`ObjectView` is the part every top-level kind shares: `meta`, `api_version` and `warnings`,
and `name`, `namespace`, `labels` and `annotations` read from `meta`. `read_object` is how
each kind's `parse` begins (the object checked to be a mapping of the right kind and
apiVersion, then its metadata).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from hexlane.model.errors import Problem, shown
from hexlane.model.reader import EMPTY, FrozenMap, Problems, Reader, format_time

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CONDITION_STATUSES = ("True", "False", "Unknown")


def dns_label_problem(name: str) -> str | None:
    if len(name) > 63 or not _DNS_LABEL_RE.match(name):
        return (f"invalid name '{shown(name)}': expected a DNS label (at most 63 characters, "
                "lowercase letters, digits and '-', starting and ending alphanumeric)")
    return None


def dns1035_problem(name: str) -> str | None:
    if len(name) > 63 or not _DNS1035_RE.match(name):
        return (f"invalid name '{shown(name)}': expected a DNS-1035 label (at most 63 characters, "
                "lowercase letters, digits and '-', starting with a letter and ending "
                "alphanumeric)")
    return None


def subdomain_problem(name: str) -> str | None:
    if len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        return (f"invalid name '{shown(name)}': expected a DNS subdomain (at most 253 characters, "
                "lowercase letters, digits, '-' and '.', starting and ending alphanumeric)")
    return None


def omit_empty(**fields: Any) -> dict[str, Any]:
    """The fields whose value is not empty ("", 0, False, None, [], {}): Go's `omitempty`,
    which is how Kubernetes leaves unset fields out of an object."""
    return {k: v for k, v in fields.items() if v}


def omit_none(**fields: Any) -> dict[str, Any]:
    """The fields that are set (not None), whatever their value: Go's nil pointers left out."""
    return {k: v for k, v in fields.items() if v is not None}


METADATA_FIELDS = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation",
                   "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                   "labels", "annotations", "ownerReferences", "finalizers", "managedFields",
                   "selfLink")

# The top level of a kind with a spec and a status (the others are warned about).
SPEC_STATUS_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")

NAME_RULES = {"subdomain": subdomain_problem, "label": dns_label_problem,
              "dns1035": dns1035_problem, "any": lambda _n: None}


@dataclass(frozen=True, slots=True)
class OwnerReference:
    api_version: str
    kind: str
    name: str
    uid: str = ""
    controller: bool = False
    block_owner_deletion: bool = False

    @classmethod
    def parse_from(cls, r: Reader) -> OwnerReference:
        return cls(
            api_version=r.string("apiVersion", required=True),
            kind=r.string("kind", required=True),
            name=r.string("name", required=True),
            uid=r.string("uid"),
            controller=r.boolean("controller"),
            block_owner_deletion=r.boolean("blockOwnerDeletion"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name,
                **omit_empty(uid=self.uid, controller=self.controller,
                             blockOwnerDeletion=self.block_owner_deletion)}


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """The parts of `metadata` hexlane uses; `namespace` is "" for cluster-scoped kinds."""

    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: FrozenMap[str, str] = EMPTY
    annotations: FrozenMap[str, str] = EMPTY
    owner_references: tuple[OwnerReference, ...] = ()

    @classmethod
    def parse_from(cls, parent: Reader, *, namespaced: bool,
                   name_rule: str = "subdomain") -> ObjectMeta:
        """Read `metadata` under `parent` (the object), recording problems."""
        r = parent.mapping("metadata", required=True,
                           what="an object with at least a name")
        if r is None:
            return cls(name="")
        r.unknown_fields(METADATA_FIELDS, what="metadata")
        name = r.string("name", what="a name")
        if not name:
            # A name of the wrong type has its problem already: one problem, one message.
            if r.get("name") in (None, "") and not r.has("generateName"):
                r.error("name", "required field is missing: expected the object's name")
        elif (why := NAME_RULES[name_rule](name)) is not None:
            r.error("name", why)
        namespace = ""
        if namespaced:
            namespace = r.string("namespace", what="a namespace name")
            if namespace and (why := dns_label_problem(namespace)) is not None:
                r.error("namespace", why)
        else:
            r.opt_string("namespace")  # type-checked, then ignored: the kind is cluster-scoped
        rv = r.get("resourceVersion")
        owners = tuple(OwnerReference.parse_from(o)
                       for o in r.objects("ownerReferences", what="an owner reference"))
        return cls(
            name=name,
            namespace=namespace,
            uid=r.string("uid"),
            resource_version=str(rv) if isinstance(rv, int | str) else r.string(
                "resourceVersion"),
            generation=r.integer("generation", lo=0),
            creation_timestamp=r.opt_time("creationTimestamp"),
            deletion_timestamp=r.opt_time("deletionTimestamp"),
            labels=r.labels("labels"),
            annotations=r.string_map("annotations", what="a map of annotation to string"),
            owner_references=owners,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **omit_empty(
            namespace=self.namespace,
            uid=self.uid,
            resourceVersion=self.resource_version,
            generation=self.generation,
            creationTimestamp=_opt_time(self.creation_timestamp),
            deletionTimestamp=_opt_time(self.deletion_timestamp),
            labels=self.labels.to_dict(),
            annotations=self.annotations.to_dict(),
            ownerReferences=[o.to_dict() for o in self.owner_references],
        )}


@dataclass(frozen=True, slots=True)
class ObjectView:
    """What every top-level kind shares: its `meta`, read through `name`, `labels`, ...

    The kinds are frozen dataclasses that inherit this and set `KIND`, `API_VERSIONS` (the
    first is the default apiVersion), `NAMESPACED` and, when their names are not DNS
    subdomains, `NAME_RULE`. Their own fields follow `meta`; `api_version` and `warnings`
    (what `parse` accepted but thinks a mistake) are keyword-only, so they stay last.
    """

    KIND: ClassVar[str]
    API_VERSIONS: ClassVar[tuple[str, ...]]
    NAMESPACED: ClassVar[bool]
    NAME_RULE: ClassVar[str] = "subdomain"  # a key of NAME_RULES

    meta: ObjectMeta
    api_version: str = field(default="", kw_only=True)
    warnings: tuple[Problem, ...] = field(default=(), compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        if not self.api_version:  # not given: the kind's first version
            object.__setattr__(self, "api_version", self.API_VERSIONS[0])

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def namespace(self) -> str:
        """"" for cluster-scoped kinds."""
        return self.meta.namespace

    @property
    def labels(self) -> FrozenMap[str, str]:
        return self.meta.labels

    @property
    def annotations(self) -> FrozenMap[str, str]:
        return self.meta.annotations

    def object_dict(self, **body: Any) -> dict[str, Any]:
        """apiVersion, kind and metadata, then `body`: how every kind's `to_dict` begins."""
        return {"apiVersion": self.api_version, "kind": self.KIND,
                "metadata": self.meta.to_dict(), **body}


@dataclass(frozen=True, slots=True)
class Condition:
    """A `metav1.Condition` (or the older node/pod condition, which has the same core)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None

    @classmethod
    def parse_from(cls, r: Reader) -> Condition:
        return cls(
            type=r.string("type", required=True, what="a condition type"),
            status=r.string("status", required=True, choices=_CONDITION_STATUSES,
                            default="Unknown"),
            reason=r.string("reason"),
            message=r.string("message"),
            last_transition_time=r.opt_time("lastTransitionTime"),
            observed_generation=r.opt_integer("observedGeneration", lo=0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, **omit_empty(reason=self.reason),
                "message": self.message,
                **omit_none(lastTransitionTime=_opt_time(self.last_transition_time),
                            observedGeneration=self.observed_generation)}


def parse_conditions(parent: Reader | None, key: str = "conditions") -> tuple[Condition, ...]:
    if parent is None:
        return ()
    return tuple(Condition.parse_from(c) for c in parent.objects(key, what="a condition"))


def find_condition(conditions: tuple[Condition, ...], type_: str) -> Condition | None:
    for c in conditions:
        if c.type == type_:
            return c
    return None


def split_api_version(api_version: str) -> tuple[str, str]:
    """`cilium.io/v2alpha1` -> ("cilium.io", "v2alpha1"); `v1` -> ("", "v1")."""
    group, _, version = api_version.rpartition("/")
    return group, version


def check_type(r: Reader, kind: str, api_versions: tuple[str, ...]) -> str:
    """The object's apiVersion (the first accepted one when absent), checking kind too.

    A parser called directly may be given an object without apiVersion/kind (tests, API
    bodies whose type comes from the URL); when they are there they must agree.
    """
    got_kind = r.opt_string("kind")
    if got_kind is not None and got_kind != kind:
        r.error("kind", f"expected kind {kind!r}, got {got_kind!r}")
    api_version = r.opt_string("apiVersion")
    if api_version is None:
        return api_versions[0]
    if api_version not in api_versions:
        r.error("apiVersion", f"unsupported apiVersion {api_version!r} for {kind}: expected "
                              f"{' or '.join(api_versions)}")
        return api_versions[0]
    return api_version


def read_object(cls: type[ObjectView], obj: Any, path: str) -> tuple[Reader, str, ObjectMeta]:
    """How every kind's `parse` begins: a reader on `obj` (collecting problems in
    `r.problems`), the object's apiVersion (kind checked too) and its metadata."""
    article = "an" if cls.KIND[:1] in "AEIOU" else "a"
    r = Reader.root(obj, path, Problems(), what=f"{article} {cls.KIND} object")
    api_version = check_type(r, cls.KIND, cls.API_VERSIONS)
    meta = ObjectMeta.parse_from(r, namespaced=cls.NAMESPACED, name_rule=cls.NAME_RULE)
    return r, api_version, meta


def _opt_time(dt: datetime | None) -> str | None:
    return None if dt is None else format_time(dt)
