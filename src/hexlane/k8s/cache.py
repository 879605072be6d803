"""An informer's local cache: objects by "namespace/name" with extra indexes (pure).

Keys are client-go's: "ns/name" for namespaced objects, "name" for cluster-scoped ones. An
index is a function from an object to the values it is filed under (`by_label("app")`,
`by_field("spec.nodeName")`); `by_index(name, value)` answers from the index without a scan.
The namespace index is always there. Objects are the API's JSON as plain dicts; callers
treat them as read-only (parse them with `hexlane.model.parse_object` for a typed view).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]
NAMESPACE_INDEX = "namespace"


def object_key(obj: Mapping[str, Any]) -> str:
    """client-go's cache key: "namespace/name", or "name" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    """"ns/name" -> ("ns", "name"); "name" -> (None, "name")."""
    namespace, sep, name = key.rpartition("/")
    return (namespace if sep else None), name


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def by_label(label: str) -> IndexFunc:
    """Index by the value of one label (objects without it are not filed)."""
    def index(obj: Obj) -> Iterable[str]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return [labels[label]] if label in labels else []
    return index


def by_field(path: str) -> IndexFunc:
    """Index by a dotted field such as "spec.nodeName" (absent or empty: not filed)."""
    parts = path.split(".")

    def index(obj: Obj) -> Iterable[str]:
        value: Any = obj
        for part in parts:
            if not isinstance(value, Mapping):
                return []
            value = value.get(part)
        return [str(value)] if value not in (None, "") else []
    return index


def _namespace(obj: Obj) -> Iterable[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [namespace] if namespace else []


class Cache:
    """Objects by key, plus `{index name: {value: keys}}`."""

    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self.indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: _namespace, **(indexers or {})}
        self._objects: dict[str, Obj] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self.indexers}

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def get(self, key: str) -> Obj | None:
        return self._objects.get(key)

    def get_object(self, name: str, namespace: str | None = None) -> Obj | None:
        return self._objects.get(f"{namespace}/{name}" if namespace else name)

    def keys(self) -> list[str]:
        return list(self._objects)

    def objects(self, namespace: str | None = None) -> list[Obj]:
        """Every cached object, or those of one namespace."""
        if namespace is None:
            return list(self._objects.values())
        return self.by_index(NAMESPACE_INDEX, namespace)

    def by_index(self, index: str, value: str) -> list[Obj]:
        try:
            keys = self._indexes[index].get(value, ())
        except KeyError:
            raise KeyError(f"no index {index!r}; known: {sorted(self._indexes)}") from None
        return [self._objects[k] for k in sorted(keys)]

    def index_values(self, index: str) -> list[str]:
        return sorted(v for v, keys in self._indexes[index].items() if keys)

    def put(self, obj: Obj) -> Obj | None:
        """Store (or replace) an object; returns the one it replaced."""
        key = object_key(obj)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        for name, func in self.indexers.items():
            for value in func(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        return old

    def remove(self, key: str) -> Obj | None:
        """Drop an object; returns it (None if it was not there)."""
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, func in self.indexers.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def replace(self, objects: Iterable[Obj]) -> tuple[list[Obj], list[tuple[Obj, Obj]],
                                                       list[Obj]]:
        """Make the cache hold exactly `objects` (a relist). Returns what changed:
        (added, [(old, new) updated], deleted); an object whose resourceVersion is unchanged
        does not count as updated."""
        fresh = {object_key(o): o for o in objects}
        deleted = [old for key in list(self._objects) if key not in fresh
                   if (old := self.remove(key)) is not None]
        added: list[Obj] = []
        updated: list[tuple[Obj, Obj]] = []
        for obj in fresh.values():
            old = self.put(obj)
            if old is None:
                added.append(obj)
            elif resource_version(old) != resource_version(obj):
                updated.append((old, obj))
        return added, updated, deleted
