"""A thin ctypes binding to libbpf 1.1 (``libbpf.so.1``): objects, programs, maps, tc, test runs.

Only what hexlane needs, close to libbpf's own names. Every failure raises `BpfError` with the
errno text and the object, program or map it concerns; a failed load carries libbpf's log,
which includes the verifier's. The opts structs below follow libbpf 1.1's headers
(``/usr/include/bpf/bpf.h``, ``libbpf.h``) field for field; each passes its own size in `sz`,
which is how libbpf keeps them compatible across versions.

libbpf's tc calls act in the calling thread's network namespace: enter the namespace first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from hexlane.datapath.layout import u8, u32, u64

_c_void_p = ctypes.c_void_p

# enum bpf_map_type (linux/bpf.h), the ones hexlane creates or inspects
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_MAP_TYPE_RINGBUF = 27
# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
# enum bpf_tc_attach_point
BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1
# tc verdicts (linux/pkt_cls.h), as a test run's (unsigned) retval gives them
TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: on to the next filter
TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7


class BpfError(OSError):
    """A libbpf or bpf(2) call failed; `errno` is set, the message says what and on what."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        text = f"{what}: {os.strerror(err)} (errno {errno_mod.errorcode.get(err, err)})"
        if log:
            text += "\nlibbpf log:\n" + log.rstrip()
        super().__init__(err, text)
        self.log = log

    def __str__(self) -> str:
        return str(self.args[1])


# The opts structs as libbpf 1.1 declares them (`sz` first), and the heads of the kernel's info
# structs.
size_t, ptr = ctypes.c_size_t, _c_void_p


class _TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", size_t), ("data_in", ptr), ("data_out", ptr), ("data_size_in", u32),
                ("data_size_out", u32), ("ctx_in", ptr), ("ctx_out", ptr), ("ctx_size_in", u32),
                ("ctx_size_out", u32), ("retval", u32), ("repeat", ctypes.c_int),
                ("duration", u32), ("flags", u32), ("cpu", u32), ("batch_size", u32)]


class _TcHook(ctypes.Structure):
    _fields_ = [("sz", size_t), ("ifindex", ctypes.c_int), ("attach_point", ctypes.c_int),
                ("parent", u32)]


class _TcOpts(ctypes.Structure):
    _fields_ = [("sz", size_t), ("prog_fd", ctypes.c_int), ("flags", u32), ("prog_id", u32),
                ("handle", u32), ("priority", u32)]


class _MapCreateOpts(ctypes.Structure):
    _fields_ = [("sz", size_t), ("btf_fd", u32), ("btf_key_type_id", u32),
                ("btf_value_type_id", u32), ("btf_vmlinux_value_type_id", u32),
                ("inner_map_fd", u32), ("map_flags", u32), ("map_extra", u64),
                ("numa_node", u32), ("map_ifindex", u32)]


class _MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (linux/bpf.h); the kernel fills what fits."""

    _fields_ = [("type", u32), ("id", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("name", ctypes.c_char * 16)]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, _c_void_p)
#: ring_buffer_sample_fn: (ctx, data, size) -> 0 to go on
RING_BUFFER_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, _c_void_p, _c_void_p, ctypes.c_size_t)


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    sig: dict[str, tuple[Any, list[Any]]] = {
        "bpf_object__open_file": (_c_void_p, [ctypes.c_char_p, _c_void_p]),
        "bpf_object__load": (ctypes.c_int, [_c_void_p]),
        "bpf_object__close": (None, [_c_void_p]),
        "bpf_object__find_program_by_name": (_c_void_p, [_c_void_p, ctypes.c_char_p]),
        "bpf_object__find_map_by_name": (_c_void_p, [_c_void_p, ctypes.c_char_p]),
        "bpf_object__next_map": (_c_void_p, [_c_void_p, _c_void_p]),
        "bpf_object__next_program": (_c_void_p, [_c_void_p, _c_void_p]),
        "bpf_program__fd": (ctypes.c_int, [_c_void_p]),
        "bpf_program__name": (ctypes.c_char_p, [_c_void_p]),
        "bpf_program__pin": (ctypes.c_int, [_c_void_p, ctypes.c_char_p]),
        "bpf_program__unpin": (ctypes.c_int, [_c_void_p, ctypes.c_char_p]),
        "bpf_map__fd": (ctypes.c_int, [_c_void_p]),
        "bpf_map__name": (ctypes.c_char_p, [_c_void_p]),
        "bpf_map__set_pin_path": (ctypes.c_int, [_c_void_p, ctypes.c_char_p]),
        "bpf_map__unpin": (ctypes.c_int, [_c_void_p, ctypes.c_char_p]),
        "bpf_map__key_size": (ctypes.c_uint32, [_c_void_p]),
        "bpf_map__value_size": (ctypes.c_uint32, [_c_void_p]),
        "bpf_map__max_entries": (ctypes.c_uint32, [_c_void_p]),
        "bpf_map__type": (ctypes.c_int, [_c_void_p]),
        "bpf_map_update_elem": (ctypes.c_int,
                                [ctypes.c_int, _c_void_p, _c_void_p, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p]),
        "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _c_void_p]),
        "bpf_map_update_batch": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p,
                                                ctypes.POINTER(ctypes.c_uint32), _c_void_p]),
        "bpf_map_delete_batch": (ctypes.c_int, [ctypes.c_int, _c_void_p,
                                                ctypes.POINTER(ctypes.c_uint32), _c_void_p]),
        "bpf_map_lookup_batch": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p, _c_void_p,
                                                _c_void_p, ctypes.POINTER(ctypes.c_uint32),
                                                _c_void_p]),
        "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p]),
        "bpf_map_create": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32,
                                          ctypes.c_uint32, ctypes.c_uint32, _c_void_p]),
        "bpf_obj_pin": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p]),
        "bpf_obj_get": (ctypes.c_int, [ctypes.c_char_p]),
        "bpf_map_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
        "bpf_prog_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
        "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _c_void_p,
                                                  ctypes.POINTER(ctypes.c_uint32)]),
        "bpf_prog_test_run_opts": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]),
        "bpf_tc_hook_create": (ctypes.c_int, [ctypes.POINTER(_TcHook)]),
        "bpf_tc_hook_destroy": (ctypes.c_int, [ctypes.POINTER(_TcHook)]),
        "bpf_tc_attach": (ctypes.c_int, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        "bpf_tc_detach": (ctypes.c_int, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        "bpf_tc_query": (ctypes.c_int, [ctypes.POINTER(_TcHook), ctypes.POINTER(_TcOpts)]),
        "libbpf_set_print": (_c_void_p, [_PRINT_FN]),
        "libbpf_num_possible_cpus": (ctypes.c_int, []),
        "ring_buffer__new": (_c_void_p, [ctypes.c_int, RING_BUFFER_SAMPLE_FN, _c_void_p,
                                         _c_void_p]),
        "ring_buffer__consume": (ctypes.c_int, [_c_void_p]),
        "ring_buffer__epoll_fd": (ctypes.c_int, [_c_void_p]),
        "ring_buffer__free": (None, [_c_void_p]),
    }
    for fname, (restype, argtypes) in sig.items():
        fn = getattr(lib, fname)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


_lib = _load_library()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _c_void_p]
_libc.vsnprintf.restype = ctypes.c_int

# libbpf prints through one process-wide callback; collect per thread so a failed load can
# show its own log (the verifier's explanation).
_log_state = threading.local()


_log = logging.getLogger("hexlane.libbpf")
# enum libbpf_print_level: LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG
_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def _collect(level: int, fmt: bytes | None, args: int | None) -> int:
    if fmt is None:
        return 0
    lines: list[str] | None = getattr(_log_state, "lines", None)
    py_level = _LEVELS.get(level, logging.DEBUG)
    if lines is None and not _log.isEnabledFor(py_level):
        return 0
    buf = ctypes.create_string_buffer(1 << 18)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace")
    if lines is not None:
        lines.append(text)  # shown in the BpfError of a failed load
    else:
        _log.log(py_level, "%s", text.rstrip())
    return 0


_print_cb = _PRINT_FN(_collect)
_lib.libbpf_set_print(_print_cb)


def _err(ret: int) -> int:
    """The errno of a failed libbpf call (1.x returns -errno and also sets errno)."""
    return -ret if ret < -1 else (ctypes.get_errno() or errno_mod.EINVAL)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise BpfError(_err(ret), what)
    return ret


def _null_err() -> int:
    return ctypes.get_errno() or errno_mod.EINVAL


def _as_buffer(data: bytes | bytearray | ctypes.Structure | ctypes.Array[Any], size: int,
               what: str) -> ctypes.Array[ctypes.c_char]:
    raw = bytes(data)
    if len(raw) != size:
        raise ValueError(f"{what}: {len(raw)} bytes given, the map holds {size}")
    return ctypes.create_string_buffer(raw, size)


@dataclass(eq=False)
class Map:
    """A BPF map by file descriptor: update, lookup, delete and iterate raw or typed entries.

    With `key_type`/`value_type` (ctypes types) keys and values come back as those types;
    without, as bytes. Maps opened from a pin own their fd (`close`); maps of a loaded object
    belong to the object.
    """

    fd: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    map_type: int
    _: KW_ONLY
    owned: bool = False
    key_type: Any = None
    value_type: Any = None

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str], *, key_type: Any = None,
                 value_type: Any = None) -> Map:
        """Open a pinned map (``bpf_obj_get``)."""
        fd = _lib.bpf_obj_get(os.fsencode(path))
        if fd < 0:
            raise BpfError(_err(fd), f"open pinned map {os.fspath(path)}")
        return cls._from_fd(fd, os.fspath(path), key_type, value_type)

    @classmethod
    def from_id(cls, map_id: int, *, key_type: Any = None, value_type: Any = None) -> Map:
        """Open a map by kernel id, e.g. the inner map a map-of-maps entry names."""
        fd = _lib.bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            raise BpfError(_err(fd), f"open map id {map_id}")
        return cls._from_fd(fd, f"map id {map_id}", key_type, value_type)

    @classmethod
    def _from_fd(cls, fd: int, what: str, key_type: Any, value_type: Any) -> Map:
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        ret = _lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
        if ret < 0:
            os.close(fd)
            raise BpfError(_err(ret), f"read map info of {what}")
        m = cls(fd, info.name.decode(errors="replace"), info.key_size, info.value_size,
                info.max_entries, info.type, owned=True, key_type=key_type,
                value_type=value_type)
        try:
            m._check_types()
        except ValueError:
            m.close()
            raise
        return m

    def typed(self, key_type: Any, value_type: Any) -> Map:
        """The same map, speaking ctypes `key_type` and `value_type`."""
        m = Map(self.fd, self.name, self.key_size, self.value_size, self.max_entries,
                self.map_type, key_type=key_type, value_type=value_type)
        m._check_types()
        return m

    def _check_types(self) -> None:
        for kind, t, size in (("key", self.key_type, self.key_size),
                              ("value", self.value_type, self.value_size)):
            if t is not None and ctypes.sizeof(t) != size:
                raise ValueError(f"map {self.name}: {kind} type {t.__name__} is "
                                 f"{ctypes.sizeof(t)} bytes, the map's {kind} is {size}")

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _value(self, raw: bytes) -> Any:
        return self.value_type.from_buffer_copy(raw) if self.value_type is not None else raw

    def _key(self, raw: bytes) -> Any:
        return self.key_type.from_buffer_copy(raw) if self.key_type is not None else raw

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        k = _as_buffer(key, self.key_size, f"map {self.name} key")
        v = _as_buffer(value, self.value_size, f"map {self.name} value")
        ret = _lib.bpf_map_update_elem(self.fd, k, v, flags)
        if ret < 0:
            raise BpfError(_err(ret), f"update map {self.name}")

    def update_batch(self, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Update many entries in one syscall (``BPF_MAP_UPDATE_BATCH``). For maps of maps
        this is what makes bulk writes affordable: the kernel waits for an RCU grace period
        after each update call, so one call per batch instead of one per entry."""
        if not pairs:
            return
        keys = b"".join(_as_buffer(k, self.key_size, f"map {self.name} key").raw
                        for k, _ in pairs)
        values = b"".join(_as_buffer(v, self.value_size, f"map {self.name} value").raw
                          for _, v in pairs)
        count = ctypes.c_uint32(len(pairs))
        kbuf = ctypes.create_string_buffer(keys, len(keys))
        vbuf = ctypes.create_string_buffer(values, len(values))
        ret = _lib.bpf_map_update_batch(self.fd, kbuf, vbuf, ctypes.byref(count), None)
        if ret < 0:
            raise BpfError(_err(ret), f"batch update of map {self.name} "
                                      f"({count.value} of {len(pairs)} done)")

    def delete_batch(self, keys: Sequence[Any]) -> None:
        """Delete many entries in one syscall (``BPF_MAP_DELETE_BATCH``); all must exist."""
        if not keys:
            return
        raw = b"".join(_as_buffer(k, self.key_size, f"map {self.name} key").raw for k in keys)
        count = ctypes.c_uint32(len(keys))
        kbuf = ctypes.create_string_buffer(raw, len(raw))
        ret = _lib.bpf_map_delete_batch(self.fd, kbuf, ctypes.byref(count), None)
        if ret < 0:
            raise BpfError(_err(ret), f"batch delete from map {self.name} "
                                      f"({count.value} of {len(keys)} done)")

    def lookup(self, key: Any) -> Any:
        """The value under `key`, or None."""
        k = _as_buffer(key, self.key_size, f"map {self.name} key")
        v = ctypes.create_string_buffer(self.value_size)
        ret = _lib.bpf_map_lookup_elem(self.fd, k, v)
        if ret < 0:
            err = _err(ret)
            if err == errno_mod.ENOENT:
                return None
            raise BpfError(err, f"lookup in map {self.name}")
        return self._value(v.raw)

    def lookup_percpu(self, key: Any) -> list[Any] | None:
        """A per-CPU map's values under `key`, one per possible CPU (each as the value type),
        or None."""
        k = _as_buffer(key, self.key_size, f"map {self.name} key")
        stride = (self.value_size + 7) & ~7
        cpus = num_possible_cpus()
        v = ctypes.create_string_buffer(stride * cpus)
        ret = _lib.bpf_map_lookup_elem(self.fd, k, v)
        if ret < 0:
            err = _err(ret)
            if err == errno_mod.ENOENT:
                return None
            raise BpfError(err, f"lookup in map {self.name}")
        raw = v.raw
        return [self._value(raw[i * stride:i * stride + self.value_size]) for i in range(cpus)]

    def delete(self, key: Any) -> bool:
        """Delete `key`; False if it was not there."""
        k = _as_buffer(key, self.key_size, f"map {self.name} key")
        ret = _lib.bpf_map_delete_elem(self.fd, k)
        if ret < 0:
            err = _err(ret)
            if err == errno_mod.ENOENT:
                return False
            raise BpfError(err, f"delete from map {self.name}")
        return True

    def count(self, batch: int = 4096) -> int:
        """How many entries the map holds now, read `batch` at a time with
        ``BPF_MAP_LOOKUP_BATCH`` (a syscall per batch, not per key: a full conntrack map is
        counted in a few milliseconds). Hash maps, LRU ones too; not per-CPU ones."""
        if self.map_type not in (BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH):
            raise ValueError(f"map {self.name}: counting needs a (LRU) hash map, "
                             f"not type {self.map_type}")
        keys = ctypes.create_string_buffer(self.key_size * batch)
        values = ctypes.create_string_buffer(self.value_size * batch)
        # The position between calls: for hash maps a bucket number the kernel hands back.
        token_size = max(self.key_size, 8)
        position: ctypes.Array[ctypes.c_char] | None = None
        total = 0
        while True:
            after = ctypes.create_string_buffer(token_size)
            count = ctypes.c_uint32(batch)
            ret = _lib.bpf_map_lookup_batch(self.fd, position, after, keys, values,
                                            ctypes.byref(count), None)
            if ret < 0:
                err = _err(ret)
                if err == errno_mod.ENOENT:  # the last batch (maybe empty)
                    return total + count.value
                if err == errno_mod.ENOSPC:  # one bucket holds more than a batch: grow
                    batch *= 2
                    keys = ctypes.create_string_buffer(self.key_size * batch)
                    values = ctypes.create_string_buffer(self.value_size * batch)
                    continue
                raise BpfError(err, f"count the entries of map {self.name}")
            total += count.value
            position = after

    def raw_keys(self) -> Iterator[bytes]:
        """Every key, as bytes (a snapshot walk: entries changed meanwhile may be missed)."""
        prev: ctypes.Array[ctypes.c_char] | None = None
        while True:
            nxt = ctypes.create_string_buffer(self.key_size)
            ret = _lib.bpf_map_get_next_key(self.fd, prev, nxt)
            if ret < 0:
                err = _err(ret)
                if err == errno_mod.ENOENT:
                    return
                raise BpfError(err, f"iterate map {self.name}")
            yield nxt.raw
            prev = nxt

    def iter_keys(self) -> Iterator[Any]:
        for raw in self.raw_keys():
            yield self._key(raw)

    def iter_items(self) -> Iterator[tuple[Any, Any]]:
        for raw in self.raw_keys():
            value = self.lookup(raw)
            if value is not None:
                yield self._key(raw), value


def create_map(map_type: int, name: str, key_size: int, value_size: int, max_entries: int,
               *, inner_map_fd: int = 0, map_flags: int = 0) -> Map:
    """A new map owned by the caller (``bpf_map_create``), e.g. a Maglev inner table."""
    opts = _MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), inner_map_fd=inner_map_fd,
                          map_flags=map_flags)
    fd = _lib.bpf_map_create(map_type, name.encode()[:15], key_size, value_size, max_entries,
                             ctypes.byref(opts))
    if fd < 0:
        raise BpfError(_err(fd), f"create map {name}")
    return Map(fd, name, key_size, value_size, max_entries, map_type, owned=True)


def pin_object(fd: int, path: str | os.PathLike[str]) -> None:
    _check(_lib.bpf_obj_pin(fd, os.fsencode(path)), f"pin to {os.fspath(path)}")


def get_pinned(path: str | os.PathLike[str]) -> int:
    """The fd of any pinned BPF object (caller closes it)."""
    fd = _lib.bpf_obj_get(os.fsencode(path))
    if fd < 0:
        raise BpfError(_err(fd), f"open pinned object {os.fspath(path)}")
    return fd


class _ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info, up to the name (the kernel fills what fits)."""

    _fields_ = [("type", u32), ("id", u32), ("tag", u8 * 8), ("jited_prog_len", u32),
                ("xlated_prog_len", u32), ("jited_prog_insns", u64), ("xlated_prog_insns", u64),
                ("load_time", u64), ("created_by_uid", u32), ("nr_map_ids", u32),
                ("map_ids", u64), ("name", ctypes.c_char * 16)]


def _prog_info(fd: int, what: str) -> _ProgInfo:
    info = _ProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(_lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
           f"read program info of {what}")
    return info


def program_id(fd: int) -> int:
    """The kernel id of the program behind `fd` (what tc_query reports)."""
    return int(_prog_info(fd, f"fd {fd}").id)


def program_name(prog_id: int) -> str | None:
    """The name of a loaded program by id (None: no such program any more)."""
    fd = _lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        return _prog_info(fd, f"program id {prog_id}").name.decode(errors="replace")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Program:
    """A loaded program of a `BpfObject`."""

    name: str
    fd: int
    _ptr: int

    def pin(self, path: str | os.PathLike[str]) -> None:
        _check(_lib.bpf_program__pin(self._ptr, os.fsencode(path)),
               f"pin program {self.name} at {os.fspath(path)}")


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    data: bytes
    duration_ns: int


def test_run(prog_fd: int, data: bytes, *, repeat: int = 1, out_room: int = 512) -> TestRunResult:
    """Run a loaded program once on `data` with ``BPF_PROG_TEST_RUN`` (no device needed)."""
    data_in = ctypes.create_string_buffer(bytes(data), len(data))
    data_out = ctypes.create_string_buffer(len(data) + out_room)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, _c_void_p),
        data_out=ctypes.cast(data_out, _c_void_p),
        data_size_in=len(data),
        data_size_out=len(data_out),
        repeat=repeat,
    )
    ret = _lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if ret < 0:
        raise BpfError(_err(ret), f"test run of program fd {prog_fd} on {len(data)} bytes")
    return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)


# Keep test_run from being collected as a test when imported into a test module.
test_run.__test__ = False  # type: ignore[attr-defined]


class BpfObject:
    """An ELF object opened and loaded through libbpf; maps are pinned by name under `pin_root`.

    With a `pin_root`, every map's pin path is ``pin_root/<map name>`` before loading: libbpf
    reuses a map already pinned there (so state survives a restart) and pins new ones.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        ptr = _lib.bpf_object__open_file(os.fsencode(path), None)
        if not ptr:
            raise BpfError(_null_err(), f"open BPF object {self.path}")
        self._ptr: int | None = ptr
        self.loaded = False

    def _obj(self) -> int:
        if self._ptr is None:
            raise ValueError(f"BPF object {self.path} is closed")
        return self._ptr

    def _map_ptrs(self) -> Iterator[int]:
        cur = _lib.bpf_object__next_map(self._obj(), None)
        while cur:
            yield cur
            cur = _lib.bpf_object__next_map(self._obj(), cur)

    def map_names(self) -> list[str]:
        return [(_lib.bpf_map__name(p) or b"").decode() for p in self._map_ptrs()]

    def program_names(self) -> list[str]:
        names = []
        cur = _lib.bpf_object__next_program(self._obj(), None)
        while cur:
            names.append((_lib.bpf_program__name(cur) or b"").decode())
            cur = _lib.bpf_object__next_program(self._obj(), cur)
        return names

    def set_pin_root(self, root: str | os.PathLike[str]) -> None:
        for p in self._map_ptrs():
            name = (_lib.bpf_map__name(p) or b"").decode()
            if name.startswith("."):
                continue  # internal maps (.rodata, .bss) are not shared state
            _check(_lib.bpf_map__set_pin_path(p, os.fsencode(os.path.join(root, name))),
                   f"set pin path of map {name} in {self.path}")

    def _find(self, kind: str, name: str, *, loaded: bool = True) -> tuple[int, int]:
        """The libbpf pointer of the object's `kind` ("map" or "program") `name`, and its fd
        (-1 unless `loaded` is asked for)."""
        is_map = kind == "map"
        find = _lib.bpf_object__find_map_by_name if is_map else \
            _lib.bpf_object__find_program_by_name
        ptr = find(self._obj(), name.encode())
        if not ptr:
            names = self.map_names() if is_map else self.program_names()
            raise BpfError(errno_mod.ENOENT, f"{kind} {name} in {self.path} "
                                             f"(has: {', '.join(names)})")
        if not loaded:
            return ptr, -1
        fd = (_lib.bpf_map__fd if is_map else _lib.bpf_program__fd)(ptr)
        if fd < 0:
            raise BpfError(_err(fd), f"{kind} {name} in {self.path} is not loaded")
        return ptr, fd

    def set_pin_path(self, map_name: str, path: str | os.PathLike[str]) -> None:
        """Pin one map at `path` instead of under the pin root."""
        ptr, _ = self._find("map", map_name, loaded=False)
        _check(_lib.bpf_map__set_pin_path(ptr, os.fsencode(path)),
               f"set pin path of map {map_name} in {self.path}")

    def load(self) -> None:
        _log_state.lines = []
        try:
            ret = _lib.bpf_object__load(self._obj())
            log = "".join(_log_state.lines)
        finally:
            _log_state.lines = None
        if ret < 0:
            raise BpfError(_err(ret), f"load BPF object {self.path}", log)
        self.loaded = True

    def program(self, name: str) -> Program:
        ptr, fd = self._find("program", name)
        return Program(name, fd, ptr)

    def map(self, name: str, *, key_type: Any = None, value_type: Any = None) -> Map:
        ptr, fd = self._find("map", name)
        m = Map(fd, name, _lib.bpf_map__key_size(ptr), _lib.bpf_map__value_size(ptr),
                _lib.bpf_map__max_entries(ptr), _lib.bpf_map__type(ptr),
                key_type=key_type, value_type=value_type)
        m._check_types()
        return m

    def close(self) -> None:
        if self._ptr is not None:
            _lib.bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tc_hook(ifindex: int, attach_point: int) -> _TcHook:
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex, attach_point=attach_point)


def _tc_point(direction: str) -> int:
    if direction == "ingress":
        return BPF_TC_INGRESS
    if direction == "egress":
        return BPF_TC_EGRESS
    raise ValueError(f"tc direction {direction!r}: expected 'ingress' or 'egress'")


def tc_attach(ifindex: int, prog_fd: int, direction: str = "ingress", *,
              handle: int = 1, priority: int = 1, replace: bool = True) -> int:
    """Attach a program at clsact `direction` of `ifindex` (creating clsact); the prog id."""
    hook = _tc_hook(ifindex, _tc_point(direction))
    # libbpf creates clsact with NLM_F_EXCL, so when the device has it already (its other
    # direction attached first, an agent restarted, a foreign filter) the kernel refuses with
    # EEXIST and the extack "Exclusivity flag on, cannot modify", which libbpf prints as a
    # warning. That is the usual case, not a fault: its lines go to debug with what they mean;
    # any other failure raises with them, and lines of a success stay warnings.
    saved = getattr(_log_state, "lines", None)
    _log_state.lines = []
    try:
        ret = _lib.bpf_tc_hook_create(ctypes.byref(hook))
    finally:
        lines, _log_state.lines = _log_state.lines, saved
    if ret < 0 and _err(ret) != errno_mod.EEXIST:
        raise BpfError(_err(ret), f"create clsact on ifindex {ifindex}", "".join(lines))
    for line in lines:
        if ret < 0:
            _log.debug("%s (clsact exists already on ifindex %d: expected, it is used as it "
                       "is)", line.rstrip(), ifindex)
        else:
            _log.warning("%s", line.rstrip())
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), prog_fd=prog_fd, handle=handle, priority=priority,
                   flags=BPF_TC_F_REPLACE if replace else 0)
    _check(_lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
           f"attach program fd {prog_fd} at tc {direction} of ifindex {ifindex}")
    return int(opts.prog_id)


def tc_query(ifindex: int, direction: str = "ingress", *, handle: int = 1,
             priority: int = 1) -> int | None:
    """The id of the program attached at (handle, priority), or None."""
    hook = _tc_hook(ifindex, _tc_point(direction))
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    # A link without clsact or that filter is an answer here, not a warning to log.
    saved = getattr(_log_state, "lines", None)
    _log_state.lines = []
    try:
        ret = _lib.bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
    finally:
        _log_state.lines = saved
    if ret < 0:
        if _err(ret) in (errno_mod.ENOENT, errno_mod.EINVAL):
            return None
        raise BpfError(_err(ret), f"query tc {direction} of ifindex {ifindex}")
    return int(opts.prog_id)


def tc_detach(ifindex: int, direction: str = "ingress", *, handle: int = 1,
              priority: int = 1) -> None:
    hook = _tc_hook(ifindex, _tc_point(direction))
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    _check(_lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts)),
           f"detach tc {direction} of ifindex {ifindex}")


def tc_hook_destroy(ifindex: int) -> None:
    """Remove the clsact qdisc (and every filter on it) from `ifindex`."""
    hook = _tc_hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)
    ret = _lib.bpf_tc_hook_destroy(ctypes.byref(hook))
    if ret < 0 and _err(ret) != errno_mod.ENOENT:
        raise BpfError(_err(ret), f"destroy clsact on ifindex {ifindex}")


# --- ring buffers (BPF_MAP_TYPE_RINGBUF) ------------------------------------------------------


def ring_buffer_new(map_fd: int, callback: Any) -> int:
    """libbpf's consumer of a ring buffer map; `callback` (a RING_BUFFER_SAMPLE_FN the caller
    keeps alive) is called for each record by `ring_buffer_consume`."""
    rb = _lib.ring_buffer__new(map_fd, callback, None, None)
    if not rb:
        raise BpfError(_null_err(), f"open ring buffer of map fd {map_fd}")
    return int(rb)


def ring_buffer_consume(rb: int) -> int:
    """Hand every record waiting to the callback, without blocking; how many there were."""
    return _check(_lib.ring_buffer__consume(rb), "consume ring buffer")


def ring_buffer_epoll_fd(rb: int) -> int:
    """An epoll fd that is readable while records wait (for an event loop)."""
    return _check(_lib.ring_buffer__epoll_fd(rb), "ring buffer epoll fd")


def ring_buffer_free(rb: int) -> None:
    _lib.ring_buffer__free(rb)


def num_possible_cpus() -> int:
    """How many values a per-CPU map holds per key (libbpf_num_possible_cpus)."""
    return _check(_lib.libbpf_num_possible_cpus(), "count the possible CPUs")
