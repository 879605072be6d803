"""What a create, update, patch or delete does to an object, as Kubernetes' registry does it.

Each operation is a function of a write transaction (`Txn`) and the request; it runs in the
store's batch transaction (on the event loop), reads what it needs, decides, and writes. The
rules kept here:

- create: name or generateName, namespace must exist (and not be terminating), uid,
  creationTimestamp, generation 1, status dropped for kinds whose status is a subresource;
- update/patch: optimistic concurrency on metadata.resourceVersion (none given =
  unconditional), immutable metadata kept, status writes touch only status and main writes
  never touch status, generation bumped only when something outside metadata and status
  changed, no write (and no new resourceVersion) when nothing changed;
- delete: finalizers keep the object (deletionTimestamp set) until they are removed; bound
  Pods are deleted gracefully; deleting a Namespace deletes what is in it; deleting a CRD
  deletes its objects; ownerReference garbage collection is not done here (the lab does it);
- Services are defaulted and get ClusterIPs and NodePorts inside the same transaction that
  reads the taken ones; custom resources are validated against their CRD's schema.
"""

from __future__ import annotations

import random
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hexlane.apiserver import patch as patching
from hexlane.apiserver import schema as schemas
from hexlane.apiserver import services, validation
from hexlane.apiserver.resources import CRD_KEY, NAMESPACE_KEY, SERVICE_KEY, ResourceInfo
from hexlane.apiserver.status import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
)
from hexlane.apiserver.storage import Txn, clone
from hexlane.model.errors import InputError, Problem, shown
from hexlane.model.selectors import label_key_problem, label_value_problem

PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' alphabet: no vowels, no 0/1/3


def now_rfc3339(clock: Callable[[], datetime] | None = None) -> str:
    moment = clock() if clock else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything generation tracks: the object minus metadata, status and type fields."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class Target:
    """Which object a request is about."""

    info: ResourceInfo
    namespace: str  # "" for cluster-scoped
    name: str = ""

    def owner_key(self) -> str:
        return f"{self.info.storage_key}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    grace_period: int | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False


class Rules:
    """The object rules of one apiserver (its service CIDR and clock)."""

    def __init__(self, *, service_cidr: str = "10.43.0.0/16",
                 clock: Callable[[], datetime] | None = None) -> None:
        self.service_cidr = service_cidr
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- create ----------------------------------------------------------------------------

    def create(self, txn: Txn, t: Target, body: Any, *, dry_run: bool = False,
               strict: bool = False) -> dict[str, Any]:
        obj = self._body(t, body)
        required = _decode(t.info, obj, strict)
        meta = obj["metadata"]
        if t.info.namespaced:
            self._check_body_namespace(t, meta)
            meta["namespace"] = t.namespace
            self._require_namespace(txn, t.namespace)
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise invalid(t.info.group, t.info.kind, "", [Problem(
                    "name or generateName is required", "metadata.name")])
            for _ in range(10):
                name = prefix + "".join(secrets.choice(_GENERATE_CHARS) for _ in range(5))
                if txn.get(t.info.storage_key, t.namespace, name) is None:
                    break
            meta["name"] = name
        t = Target(t.info, t.namespace, name)
        self._validate_meta(t, obj, required)
        if txn.get(t.info.storage_key, t.namespace, name) is not None:
            raise already_exists(t.info.group, t.info.plural, name)
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "selfLink", "managedFields", "uid", "creationTimestamp"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339(self.clock)
        meta["generation"] = 1
        if t.info.reset_status_on_create:
            obj.pop("status", None)
        obj = self._prepare(txn, t, None, obj, strict)
        if dry_run:
            return obj
        txn.put(t.info.storage_key, t.namespace, name, obj, None)
        self._after_write(txn, t, obj)
        return obj

    # -- update and patch -------------------------------------------------------------------

    def update(self, txn: Txn, t: Target, body: Any, *, subresource: str = "",
               dry_run: bool = False, strict: bool = False) -> dict[str, Any]:
        cur = self._current(txn, t)
        obj = self._body(t, body)
        required = _decode(t.info, obj, strict)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != t.name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                              f"name on the URL ({t.name})")
        if t.info.namespaced:
            self._check_body_namespace(t, meta)
        self._check_rv(t, cur, meta.get("resourceVersion"))
        return self._write_update(txn, t, cur, obj, subresource, dry_run, strict, required)

    def patch(self, txn: Txn, t: Target, patch_body: Any, content_type: str, *,
              subresource: str = "", dry_run: bool = False,
              strict: bool = False) -> dict[str, Any]:
        cur = self._current(txn, t)
        patched = _apply_patch(clone(cur), patch_body, content_type, t.info.kind)
        if not isinstance(patched, dict):
            raise bad_request("the patch did not produce an object")
        meta = patched.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("the patched object has no metadata")
        if meta.get("name") != t.name:
            raise bad_request(f"the name of the object ({shown(str(meta.get('name')))}) does "
                              f"not match the name on the URL ({t.name})")
        if t.info.namespaced and meta.get("namespace", t.namespace) != t.namespace:
            raise bad_request("the namespace of the object "
                              f"({shown(str(meta.get('namespace')))}) does not match the "
                              f"namespace on the URL ({t.namespace})")
        rv = meta.get("resourceVersion")
        if rv != cur["metadata"].get("resourceVersion"):
            self._check_rv(t, cur, rv)
        obj = self._body(t, patched)
        required = _decode(t.info, obj, strict, cur)
        return self._write_update(txn, t, cur, obj, subresource, dry_run, strict, required)

    def _write_update(self, txn: Txn, t: Target, cur: dict[str, Any], obj: dict[str, Any],
                      subresource: str, dry_run: bool, strict: bool = False,
                      required: list[Problem] | None = None) -> dict[str, Any]:
        if subresource == "status":
            new = clone(cur)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        elif subresource == "finalize":  # namespaces: only spec.finalizers changes
            new = clone(cur)
            _spec_of(new)["finalizers"] = list(
                (obj.get("spec") or {}).get("finalizers") or [])
        else:
            new = obj
            meta = new["metadata"]
            for key in ("uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation", "namespace"):
                if key in cur["metadata"]:
                    meta[key] = cur["metadata"][key]
                else:
                    meta.pop(key, None)
            meta["name"] = t.name
            for key in ("selfLink", "managedFields"):
                meta.pop(key, None)
            if t.info.has_status:
                if "status" in cur:
                    new["status"] = cur["status"]
                else:
                    new.pop("status", None)
            self._validate_meta(t, new, required or [])
        new["metadata"]["resourceVersion"] = cur["metadata"].get("resourceVersion")
        new = self._prepare(txn, t, cur, new, strict)
        if spec_part(new) != spec_part(cur):
            new["metadata"]["generation"] = int(cur["metadata"].get("generation") or 0) + 1
        if new == cur:
            return cur  # nothing changed: Kubernetes writes nothing and keeps the rv
        if dry_run:
            return new
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                t.info.storage_key != NAMESPACE_KEY:
            if t.info.storage_key == "core/pods" and \
                    self._grace_pending(cur, meta):
                txn.put(t.info.storage_key, t.namespace, t.name, new, cur)
                return new
            txn.delete(t.info.storage_key, t.namespace, t.name, new)
            self._after_delete(txn, t, new)
            return new
        txn.put(t.info.storage_key, t.namespace, t.name, new, cur)
        if new.get("spec") != cur.get("spec"):
            self._after_write(txn, t, new)
        if t.info.storage_key == NAMESPACE_KEY and meta.get("deletionTimestamp"):
            self._finish_namespace(txn, t.name)
        return new

    @staticmethod
    def _grace_pending(cur: dict[str, Any], meta: dict[str, Any]) -> bool:
        """A bound Pod being deleted gracefully stays until the kubelet deletes it."""
        grace = meta.get("deletionGracePeriodSeconds")
        return bool(cur.get("spec", {}).get("nodeName")) and bool(grace)

    def bind(self, txn: Txn, t: Target, binding: Any) -> dict[str, Any]:
        """Set a Pod's spec.nodeName from a Binding, once (409 if it is already bound)."""
        if not isinstance(binding, dict):
            raise bad_request("the request body must be a Binding object")
        binding_kind = validation.validator("", "v1", "Binding")
        assert binding_kind is not None
        checked = binding_kind.check(binding)
        if checked.type_problems:
            raise _cannot_decode("Binding", "v1", checked)
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise invalid("", "Binding", t.name, [Problem("Required value", "target.name")])
        cur = self._current(txn, t)
        if cur.get("spec", {}).get("nodeName"):
            raise conflict("", "pods", t.name, f"pod {t.name} is already assigned to node "
                           f"\"{cur['spec']['nodeName']}\"")
        new = clone(cur)
        _spec_of(new)["nodeName"] = node
        txn.put(t.info.storage_key, t.namespace, t.name, new, cur)
        return new

    def scale(self, txn: Txn, t: Target, body: Any, content_type: str) -> dict[str, Any]:
        """Set a Deployment's spec.replicas from a Scale (PUT), or from a patch of its Scale
        (PATCH, when `content_type` is given); returns the Deployment."""
        cur = self._current(txn, t)
        scale = scale_of(cur)
        if content_type:
            # A Scale has no lists, so a strategic merge patch is a merge patch here.
            if patching.media_type(content_type) == patching.STRATEGIC_MERGE_PATCH:
                content_type = patching.MERGE_PATCH
            body = _apply_patch(scale, body, content_type, "Scale")
        if not isinstance(body, dict):
            raise bad_request("the request body must be a Scale object")
        scale_kind = validation.validator("autoscaling", "v1", "Scale")
        assert scale_kind is not None
        checked = scale_kind.check(body)
        if checked.type_problems:
            raise _cannot_decode("Scale", "v1", checked)
        self._check_rv(t, cur, (body.get("metadata") or {}).get("resourceVersion"))
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("autoscaling", "Scale", t.name, [Problem(
                f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                "spec.replicas")])
        new = clone(cur)
        _spec_of(new)["replicas"] = replicas
        return self._write_update(txn, t, cur, new, "", False)

    # -- delete ------------------------------------------------------------------------------

    def delete(self, txn: Txn, t: Target, opts: DeleteOptions) -> dict[str, Any]:
        cur = self._current(txn, t)
        meta = cur["metadata"]
        if opts.uid is not None and opts.uid != meta.get("uid"):
            raise conflict(t.info.group, t.info.plural, t.name,
                           f"Precondition failed: UID in precondition: {opts.uid}, "
                           f"UID in object meta: {meta.get('uid')}")
        if opts.resource_version is not None and opts.resource_version != \
                meta.get("resourceVersion"):
            raise conflict(t.info.group, t.info.plural, t.name,
                           "Precondition failed: ResourceVersion in precondition: "
                           f"{opts.resource_version}, ResourceVersion in object meta: "
                           f"{meta.get('resourceVersion')}")
        if t.info.storage_key == NAMESPACE_KEY and t.name in PROTECTED_NAMESPACES:
            raise ApiError(403, "Forbidden", f'namespaces "{t.name}" is forbidden: this '
                           "namespace may not be deleted",
                           {"name": t.name, "kind": "namespaces"})
        if opts.dry_run:
            return cur
        return self._delete(txn, t, cur, opts.grace_period)

    def _delete(self, txn: Txn, t: Target, cur: dict[str, Any],
                grace_period: int | None) -> dict[str, Any]:
        meta = cur["metadata"]
        key = t.info.storage_key
        if key == "core/pods" and cur.get("spec", {}).get("nodeName"):
            grace = grace_period
            if grace is None:
                grace = int(cur.get("spec", {}).get("terminationGracePeriodSeconds", 30))
            if grace > 0:
                # Only the kubelet's delete with grace 0 ends a graceful deletion.
                if meta.get("deletionTimestamp"):
                    return cur
                return self._mark_deleting(txn, t, cur, grace)
        if key == NAMESPACE_KEY:
            new = self._mark_deleting(txn, t, cur, 0) if not meta.get("deletionTimestamp") \
                else cur
            for resource in txn.resources_in_namespace(t.name):
                for item in txn.list_objects(resource, t.name):
                    item_t = Target(_storage_only(resource), t.name, item["metadata"]["name"])
                    self._delete(txn, item_t, item, 0)
            return self._finish_namespace(txn, t.name) or new
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return cur
            return self._mark_deleting(txn, t, cur, 0)
        txn.delete(key, t.namespace, t.name, cur)
        self._after_delete(txn, t, cur)
        return cur

    def _mark_deleting(self, txn: Txn, t: Target, cur: dict[str, Any],
                       grace: int) -> dict[str, Any]:
        new = clone(cur)
        new["metadata"]["deletionTimestamp"] = now_rfc3339(
            lambda: self.clock() + timedelta(seconds=grace))
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        if t.info.storage_key == NAMESPACE_KEY:
            new.setdefault("status", {})["phase"] = "Terminating"
        txn.put(t.info.storage_key, t.namespace, t.name, new, cur)
        return new

    def _finish_namespace(self, txn: Txn, name: str) -> dict[str, Any] | None:
        """Remove a terminating namespace once it is empty and has no finalizers left."""
        ns = txn.get(NAMESPACE_KEY, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        if ns["metadata"].get("finalizers") or txn.count_in_namespace(name):
            return None
        txn.delete(NAMESPACE_KEY, "", name, ns)
        return ns

    def _after_delete(self, txn: Txn, t: Target, obj: dict[str, Any]) -> None:
        if t.info.storage_key == CRD_KEY:
            spec = obj.get("spec", {})
            resource = f"{spec.get('group')}/{spec.get('names', {}).get('plural')}"
            for item in txn.list_objects(resource):
                m = item["metadata"]
                txn.delete(resource, m.get("namespace", ""), m["name"], item)
        if t.namespace:
            self._finish_namespace(txn, t.namespace)

    # -- shared pieces -----------------------------------------------------------------------

    def _current(self, txn: Txn, t: Target) -> dict[str, Any]:
        cur = txn.get(t.info.storage_key, t.namespace, t.name)
        if cur is None:
            raise not_found(t.info.group, t.info.plural, t.name)
        return cur

    @staticmethod
    def _check_rv(t: Target, cur: dict[str, Any], rv: Any) -> None:
        if rv in (None, ""):
            return
        if str(rv) != cur["metadata"].get("resourceVersion"):
            raise conflict(t.info.group, t.info.plural, t.name, STALE)

    @staticmethod
    def _check_body_namespace(t: Target, meta: dict[str, Any]) -> None:
        ns = meta.get("namespace")
        if ns and ns != t.namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")

    @staticmethod
    def _require_namespace(txn: Txn, namespace: str) -> None:
        exists, deleting = txn.deletion_of(NAMESPACE_KEY, "", namespace)
        if not exists:
            raise not_found("", "namespaces", namespace)
        if deleting:
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace "
                           f"{namespace} because it is being terminated",
                           {"name": namespace, "kind": "namespaces"})

    def _body(self, t: Target, body: Any) -> dict[str, Any]:
        """The request body (freshly decoded, so owned by this request: no copy), its
        apiVersion and kind checked and set."""
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = body
        info = t.info
        kind = obj.get("kind")
        if kind not in (None, "", info.kind):
            raise bad_request(f"the kind of the provided object ({kind}) does not match the "
                              f"kind of the resource ({info.kind})")
        api_version = obj.get("apiVersion")
        if api_version and api_version.split("/")[0] != (info.group or "v1") and \
                not (not info.group and api_version == "v1"):
            raise bad_request(f"the API version in the data ({api_version}) does not match the "
                              f"expected API version ({info.group_version})")
        obj["kind"] = info.kind
        obj["apiVersion"] = info.group_version if not info.storage_version else \
            f"{info.group}/{info.storage_version}"
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        return obj

    def _validate_meta(self, t: Target, obj: dict[str, Any],
                       found: list[Problem]) -> None:
        """422 for a bad name, labels or annotations, with the problems already `found`."""
        meta = obj["metadata"]
        problems: list[Problem] = list(found)
        name = meta.get("name", "")
        rule = _LABEL_NAME_RE if t.info.storage_key in (NAMESPACE_KEY, SERVICE_KEY) else _NAME_RE
        if not isinstance(name, str) or not rule.match(name) or len(name) > 253:
            problems.append(Problem(
                f"Invalid value: {shown(repr(name))}: a lowercase RFC 1123 "
                f"{'label' if rule is _LABEL_NAME_RE else 'subdomain'} must consist of lower "
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character", "metadata.name"))
        for field_name in ("labels", "annotations"):
            value = meta.get(field_name)
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(Problem("must be a map of string to string",
                                        f"metadata.{field_name}"))
                continue
            for k, v in value.items():
                path = f"metadata.{field_name}"
                if (why := label_key_problem(k)) is not None and field_name == "labels":
                    problems.append(Problem(why, path))
                elif not isinstance(v, str):
                    problems.append(Problem(f"Invalid value: {k!r}: must be a string", path))
                elif field_name == "labels" and (why := label_value_problem(v)) is not None:
                    problems.append(Problem(why, path))
        if problems:
            raise invalid(t.info.group, t.info.kind, shown(str(name)), problems)

    def _prepare(self, txn: Txn, t: Target, cur: dict[str, Any] | None,
                 obj: dict[str, Any], strict: bool = False) -> dict[str, Any]:
        """Kind-specific defaulting, allocation and validation before a write. With
        `strict` (the request's fieldValidation=Strict, kubectl's default), fields a custom
        resource's schema does not declare are an error instead of being pruned."""
        key = t.info.storage_key
        if key == NAMESPACE_KEY:
            spec = _spec(obj)
            if cur is None and spec is not None:
                spec.setdefault("finalizers", ["kubernetes"])
            if cur is None:
                obj["status"] = {"phase": "Active"}
            # As Kubernetes' NamespaceDefaultLabelName (1.21+): every namespace carries its
            # name as a label, so a namespaceSelector can pick one namespace by name.
            meta = obj.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("name"), str):
                labels = meta.get("labels")
                if not isinstance(labels, dict):
                    labels = meta["labels"] = {}
                labels[NAMESPACE_NAME_LABEL] = meta["name"]
        elif key == "core/pods" and cur is None:
            obj["status"] = {"phase": "Pending"}
        elif key == "core/secrets":
            obj.setdefault("type", "Opaque")
        elif key == "apps/deployments":
            spec = _spec(obj)
            if spec is not None:
                spec.setdefault("replicas", 1)
        elif key == SERVICE_KEY:
            obj = self._prepare_service(txn, t, cur, obj)
        elif key == CRD_KEY:
            _prepare_crd(t, cur, obj)
        if t.info.schema:
            # Kubernetes' order for structural schemas: prune, default, then validate.
            pruned = schemas.prune_unknown_fields(obj, t.info.schema)
            unknown = unknown_fields(obj, pruned) if strict else []
            if unknown and cur is not None:
                # Fields the stored object already had (a CRD schema changed under it) are
                # pruned quietly: strictness is about what this request sent.
                stale = set(unknown_fields(cur, schemas.prune_unknown_fields(
                    cur, t.info.schema)))
                unknown = [f for f in unknown if f not in stale]
            if unknown:
                raise _strict_unknown(t.info, unknown)
            obj = schemas.apply_schema_defaults(pruned, t.info.schema)
            problems = schemas.validate_against_schema(obj, t.info.schema)
            errors = [p for p in problems if p.severity == "error"]
            if errors:
                raise invalid(t.info.group, t.info.kind, t.name, errors)
        return obj

    def _prepare_service(self, txn: Txn, t: Target, cur: dict[str, Any] | None,
                         obj: dict[str, Any]) -> dict[str, Any]:
        if cur is not None and obj.get("spec") == cur.get("spec"):
            # A write that leaves the spec alone (status, labels, annotations) was defaulted
            # and allocated already; skipping it keeps such writes O(1) with many Services.
            return obj
        try:
            obj = services.default_service(obj)
            # The allocator counts what `cur` holds as free for this Service itself.
            taken_ips = txn.allocated("clusterip")
            taken_ports = txn.allocated("nodeport")
            # Random picks, as Kubernetes' allocators make: the lowest free value would
            # cost a scan over everything taken on every create.
            obj = services.allocate_service_addresses(
                obj, cur, service_cidr=self.service_cidr, taken_ips=taken_ips,
                taken_node_ports=taken_ports, rng_seed=random.getrandbits(63))
        except InputError as e:
            raise invalid("", "Service", t.name, e.problems) from e
        return obj

    def _after_write(self, txn: Txn, t: Target, obj: dict[str, Any]) -> None:
        if t.info.storage_key != SERVICE_KEY:
            return
        ips, ports = services.service_allocations(obj)
        owner = t.owner_key()
        txn.set_allocations(owner, "clusterip", ips)
        txn.set_allocations(owner, "nodeport", {str(p) for p in ports})


def _cannot_decode(kind: str, version: str, checked: validation.Checked) -> ApiError:
    """400 for values Kubernetes' decoder refuses, worded as it words them, each field a
    cause."""
    messages = "; ".join(p.go_message for p in checked.type_problems)
    err = bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: '
                      f"{messages}")
    err.details = {"kind": kind, "causes": [
        {"reason": "FieldValueInvalid", "message": p.problem().message, "field": p.path}
        for p in checked.type_problems]}
    return err


def _strict_unknown(info: ResourceInfo, unknown: list[str]) -> ApiError:
    return bad_request(f'{info.kind} in version "{info.version}" cannot be handled as a '
                       f"{info.kind}: strict decoding error: "
                       + ", ".join(f'unknown field "{shown(f)}"' for f in unknown))


def _decode(info: ResourceInfo, obj: dict[str, Any], strict: bool,
            cur: dict[str, Any] | None = None) -> list[Problem]:
    """What Kubernetes' decoder does to a body of a built-in kind: 400 for a value of the
    wrong type, unknown fields dropped (400 with `strict`, except those the stored object
    `cur` already had); the missing required fields, for the 422 of validation."""
    check = validation.validator(info.group, info.version, info.kind)
    if check is None:
        return []
    checked = check.check(obj)
    if checked.type_problems:
        raise _cannot_decode(info.kind, info.version, checked)
    unknown = checked.unknown
    if strict and unknown and cur is not None:
        stale = set(check.check(clone(cur)).unknown)
        unknown = [f for f in unknown if f not in stale]
    if strict and unknown:
        raise _strict_unknown(info, unknown)
    return checked.required


def _apply_patch(obj: dict[str, Any], patch_body: Any, content_type: str, kind: str) -> Any:
    """The patched object; a patch type not served is 415, a patch that fails 422."""
    try:
        return patching.apply_patch(obj, patch_body, content_type, kind=kind)
    except patching.UnsupportedPatchType as e:
        raise ApiError(415, "UnsupportedMediaType", str(e)) from e
    except patching.PatchError as e:
        raise ApiError(422, "Invalid", str(e)) from e


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale view of a Deployment."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    selector = spec.get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        terms.append({"In": f"{key} in ({','.join(values)})",
                      "NotIn": f"{key} notin ({','.join(values)})",
                      "Exists": str(key), "DoesNotExist": f"!{key}"}.get(op, str(key)))
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": ",".join(terms)},
    }


def unknown_fields(before: Any, after: Any, path: str = "") -> list[str]:
    """Field paths present in `before` and gone from `after` (what pruning removed)."""
    out: list[str] = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                out.append(sub)
            else:
                out.extend(unknown_fields(value, after[key], sub))
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out.extend(unknown_fields(b, a, f"{path}[{i}]"))
    return out


def _storage_only(storage_key: str) -> ResourceInfo:
    """A ResourceInfo that knows only a storage key (for deleting a namespace's contents)."""
    group, _, plural = storage_key.partition("/")
    return ResourceInfo("" if group == "core" else group, "", plural, plural, "", True)


def _prepare_crd(t: Target, cur: dict[str, Any] | None, obj: dict[str, Any]) -> None:
    """Check a CRD's essentials and set the status Kubernetes would (names accepted,
    established, stored versions)."""
    spec = obj.get("spec")
    problems: list[Problem] = []
    if not isinstance(spec, dict):
        raise invalid("apiextensions.k8s.io", "CustomResourceDefinition", t.name,
                      [Problem("Required value", "spec")])
    group = spec.get("group")
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    assert isinstance(names, dict)
    if not group or not isinstance(group, str) or "." not in group:
        problems.append(Problem("Invalid value: should be a domain with at least one dot",
                                "spec.group"))
    for field_name in ("plural", "kind"):
        if not names.get(field_name):
            problems.append(Problem("Required value", f"spec.names.{field_name}"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(Problem('Unsupported value: must be one of "Cluster", "Namespaced"',
                                "spec.scope"))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        problems.append(Problem("Required value: must have exactly one version marked as "
                                "storage version", "spec.versions"))
        versions = []
    elif sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        problems.append(Problem("Invalid value: must have exactly one version marked as "
                                "storage version", "spec.versions"))
    if names.get("plural") and group and t.name != f"{names['plural']}.{group}":
        problems.append(Problem(f"Invalid value: {t.name!r}: must be spec.names.plural+"
                                '"."+spec.group', "metadata.name"))
    if cur is not None and cur.get("spec", {}).get("group") != group:
        problems.append(Problem("field is immutable", "spec.group"))
    if problems:
        raise invalid("apiextensions.k8s.io", "CustomResourceDefinition", t.name, problems)
    accepted = dict(names)
    accepted.setdefault("singular", str(names["kind"]).lower())
    accepted.setdefault("listKind", f"{names['kind']}List")
    stored = list((cur or {}).get("status", {}).get("storedVersions") or [])
    storage = next(v["name"] for v in versions if isinstance(v, dict) and v.get("storage"))
    if storage not in stored:
        stored.append(storage)
    when = (cur or obj)["metadata"].get("creationTimestamp")
    obj["status"] = {
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": when},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": when},
        ],
        "storedVersions": stored,
    }


def _spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object's spec to default into: a null or absent spec is an empty one (as JSON's
    null decodes to Go's zero value); anything else not a mapping is left to validation."""
    if obj.get("spec") is None:
        obj["spec"] = {}
    spec = obj["spec"]
    return spec if isinstance(spec, dict) else None


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The spec of a stored object, to write into (a spec that is not a mapping is replaced:
    what was stored could never have been valid)."""
    spec = _spec(obj)
    if spec is None:
        spec = obj["spec"] = {}
    return spec
