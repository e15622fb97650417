"""Readers for MXNet's on-disk formats: ``.params`` NDArray lists and ``-symbol.json`` graphs.

These are pure data readers: they decode bytes and text into numpy arrays and plain dataclasses
and know nothing about graphrt graphs.  Every malformed input raises a :class:`ParseError`
(unsupported features raise :class:`UnsupportedError`); no other exception type escapes.

``.params`` (what ``mx.nd.save`` writes in MXNet 1.x; all integers little-endian)::

    uint64 0x112                      list magic
    uint64 0                          reserved
    uint64 n, then n NDArrays
    uint64 m, then m names            m == n, or m == 0 for an unnamed list
    name:    uint64 length, then that many UTF-8 bytes (MXNet uses "arg:" / "aux:" prefixes)

One NDArray, in one of four layouts chosen by its first uint32::

    V2 0xF993FAC9 / V3 0xF993FACA:  int32 storage type (0 = dense; sparse unsupported),
                                    shape = uint32 ndim (int32 in V3) + ndim int64 dims
    V1 0xF993FAC8:                  shape = uint32 ndim + ndim int64 dims
    legacy (anything else):         that uint32 is ndim, then ndim uint32 dims
    then, unless the array is "none" (ndim 0, or -1 in V3 where ndim 0 is a scalar; returned
    as an empty float32 array):
    int32 dev_type, int32 dev_id, int32 type flag, then prod(shape) * itemsize bytes of data.

Type flags: 0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64, 7 bool.

``-symbol.json``: ``{"nodes": [{"op", "name", "attrs"|"attr"|"param", "inputs": [[i, out, ver]]}],
"arg_nodes": [...], "heads": [[i, out, ver]], "node_row_ptr": [...],
"attrs": {"mxnet_version": ["int", 10901]}}``.  Attribute values are strings such as ``"(5, 5)"``;
:func:`parse_attr` turns them into Python values.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.errors import ParseError
from ..files import load_json, read_bytes

try:
    from ...ir.errors import UnsupportedError
except ImportError:  # pragma: no cover - older errors module
    UnsupportedError = ParseError  # type: ignore[misc,assignment]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
MAX_NDIM = 32

DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?"}
STORAGE_NAMES = {1: "row_sparse", 2: "csr"}


# ----------------------------------------------------------------------------- .params

class _Reader:
    """A cursor over a bytes buffer whose every read checks for truncation."""

    def __init__(self, data: bytes, file: str | None):
        self.data = memoryview(data)
        self.pos = 0
        self.file = file

    def error(self, message: str, at: int | None = None) -> ParseError:
        offset = self.pos if at is None else at
        return ParseError(f"{message} (at byte offset {offset})", file=self.file)

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining():
            raise self.error(f"truncated file: {what} needs {n} bytes, "
                             f"only {self.remaining()} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> Any:
        values = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))
        return values[0] if len(values) == 1 else values


def read_params(path_or_bytes: Any, file: str | None = None) -> dict[str, np.ndarray]:
    """Decode an MXNet ``.params`` file (a path, or its bytes) into ``{name: array}``.

    Names keep MXNet's ``arg:``/``aux:`` prefixes; an unnamed list gets keys ``"0"``, ``"1"``...
    """
    data, file = read_bytes(path_or_bytes, file)
    rd = _Reader(data, file)
    magic = rd.unpack("<Q", "list magic")
    if magic != LIST_MAGIC:
        raise ParseError(f"not an MXNet NDArray list: magic 0x{magic:x}, expected 0x{LIST_MAGIC:x}",
                         file=file)
    rd.unpack("<Q", "reserved field")
    count = _read_count(rd, 8, "array count")  # every array needs >= 8 bytes
    arrays = [_read_ndarray(rd, i) for i in range(count)]
    names = _read_names(rd)
    if rd.remaining():
        raise rd.error(f"{rd.remaining()} unexpected trailing bytes")
    if not names:
        names = [str(i) for i in range(count)]
    if len(names) != count:
        raise ParseError(f"{count} arrays but {len(names)} names", file=file)
    result: dict[str, np.ndarray] = {}
    for name, arr in zip(names, arrays):
        if name in result:
            raise ParseError(f"duplicate array name {name!r}", file=file)
        result[name] = arr
    return result


def _read_count(rd: _Reader, min_item_size: int, what: str) -> int:
    at = rd.pos
    count = rd.unpack("<Q", what)
    if count * min_item_size > rd.remaining():
        raise rd.error(f"{what} {count} cannot fit in the {rd.remaining()} remaining bytes", at)
    return count


def _read_names(rd: _Reader) -> list[str]:
    names = []
    for _ in range(_read_count(rd, 8, "name count")):
        at = rd.pos
        raw = rd.take(rd.unpack("<Q", "name length"), "name")
        try:
            names.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise rd.error("array name is not valid UTF-8", at) from None
    return names


def _read_ndarray(rd: _Reader, index: int) -> np.ndarray:
    at = rd.pos
    magic = rd.unpack("<I", f"array {index} header")
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = rd.unpack("<i", f"array {index} storage type")
        if stype != 0:
            kind = STORAGE_NAMES.get(stype, f"storage type {stype}")
            raise UnsupportedError(f"array {index} at byte offset {at}: {kind} NDArrays are not "
                                   "supported, only dense", file=rd.file)
        shape = _read_shape(rd, index, "<q", signed_ndim=magic == V3_MAGIC)
    elif magic == V1_MAGIC:
        shape = _read_shape(rd, index, "<q")
    else:
        shape = _read_shape(rd, index, "<I", ndim=magic)
    if shape is None:
        return np.zeros((0,), dtype=np.float32)
    rd.unpack("<ii", f"array {index} context")
    return _read_data(rd, index, shape)


def _read_shape(rd: _Reader, index: int, dim_fmt: str, *, signed_ndim: bool = False,
                ndim: int | None = None) -> tuple[int, ...] | None:
    at = rd.pos
    if ndim is None:
        ndim = rd.unpack("<i" if signed_ndim else "<I", f"array {index} ndim")
    if ndim == -1 or (ndim == 0 and not signed_ndim):
        return None  # a "none" array; V3 (numpy shape semantics) uses ndim 0 for scalars
    if ndim == 0:
        return ()
    if not 0 < ndim <= MAX_NDIM:
        raise rd.error(f"array {index}: bad header (ndim or magic 0x{ndim & 0xFFFFFFFF:x})", at)
    dims = rd.unpack(f"<{ndim}{dim_fmt[1]}", f"array {index} shape")
    dims = (dims,) if isinstance(dims, int) else dims
    if any(d < 0 for d in dims):
        raise rd.error(f"array {index}: negative dimension in shape {dims}", at)
    return tuple(dims)


def _read_data(rd: _Reader, index: int, shape: tuple[int, ...]) -> np.ndarray:
    at = rd.pos
    flag = rd.unpack("<i", f"array {index} type flag")
    if flag not in DTYPES:
        raise UnsupportedError(f"array {index} at byte offset {at}: unknown type flag {flag}",
                               file=rd.file)
    dtype = np.dtype(DTYPES[flag])
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > rd.remaining():  # checked before anything is allocated
        raise rd.error(f"truncated file: array {index} of shape {shape} ({dtype}) needs "
                       f"{nbytes} bytes, only {rd.remaining()} left")
    raw = rd.take(nbytes, f"array {index} data")
    try:
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
    except ValueError as exc:  # e.g. a zero-size shape whose other dims overflow
        raise rd.error(f"array {index}: unusable shape {shape}: {exc}", at) from None
    if dtype.kind == "b":
        return arr.view(np.uint8) != 0
    return arr.astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------- symbol.json

@dataclass(frozen=True)
class SymbolNode:
    """One node of an MXNet symbol: ``op`` is ``"null"`` for variables and parameters."""

    op: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict, hash=False)
    inputs: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class SymbolGraph:
    """A parsed ``-symbol.json``: nodes in file (topological) order, heads as (node, output)."""

    nodes: tuple[SymbolNode, ...]
    heads: tuple[tuple[int, int], ...]
    arg_nodes: tuple[int, ...] = ()
    mxnet_version: int | None = None


def read_symbol_json(path_or_text: Any, file: str | None = None) -> SymbolGraph:
    """Parse an MXNet ``-symbol.json`` (path or text) into a :class:`SymbolGraph`."""
    doc, file = load_json(path_or_text, file)
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise ParseError("symbol JSON must be an object with a 'nodes' list", file=file)
    raw_nodes = doc["nodes"]
    nodes = tuple(_parse_node(raw, i, len(raw_nodes), file) for i, raw in enumerate(raw_nodes))
    heads = _parse_entries(doc.get("heads"), len(nodes), "'heads'", file)
    if not heads:
        raise ParseError("symbol JSON has no 'heads'", file=file)
    arg_nodes = doc.get("arg_nodes", [i for i, n in enumerate(nodes) if n.op == "null"])
    if not isinstance(arg_nodes, list) or not all(_is_index(a, len(nodes)) for a in arg_nodes):
        raise ParseError("'arg_nodes' must be a list of node indices", file=file)
    return SymbolGraph(nodes, heads, tuple(arg_nodes), _mxnet_version(doc))


def _is_index(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit


def _mxnet_version(doc: dict) -> int | None:
    version = doc.get("attrs", {}).get("mxnet_version") if isinstance(doc.get("attrs"), dict) \
        else None
    if isinstance(version, list) and len(version) == 2 and isinstance(version[1], int):
        return version[1]
    return None


def _parse_node(raw: Any, index: int, count: int, file: str | None) -> SymbolNode:
    if not isinstance(raw, dict):
        raise ParseError(f"node {index} is not an object", file=file)
    name = raw.get("name")
    if not isinstance(name, str):
        raise ParseError(f"node {index} has no string 'name'", file=file)
    op = raw.get("op")
    if not isinstance(op, str):
        raise ParseError("missing or non-string 'op'", node=name, file=file)
    attrs = raw.get("attrs", raw.get("attr", raw.get("param", {})))
    if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
        raise ParseError("'attrs' must map names to strings", node=name, op=op, file=file)
    try:
        inputs = _parse_entries(raw.get("inputs", []), count, "'inputs'", file)
    except ParseError as exc:
        raise exc.locate(node=name, op=op) from None
    return SymbolNode(op, name, dict(attrs), inputs)


def _parse_entries(raw: Any, count: int, what: str, file: str | None
                   ) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, list):
        raise ParseError(f"{what} must be a list of [node, output, version]", file=file)
    entries = []
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) in (2, 3)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in entry)):
            raise ParseError(f"{what} entry {entry!r} is not [node, output, version]", file=file)
        if not _is_index(entry[0], count) or entry[1] < 0:
            raise ParseError(f"{what} entry {entry!r} is out of range "
                             f"({count} nodes)", file=file)
        entries.append((entry[0], entry[1]))
    return tuple(entries)


# ----------------------------------------------------------------------------- attributes

_INT = re.compile(r"[+-]?\d+L?")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)",
                    re.IGNORECASE)
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
KINDS = ("int", "float", "bool", "str", "tuple", "float_tuple", "auto")


def parse_attr(value: str, kind: Any, name: str | None = None) -> Any:
    """Turn one MXNet attribute string into a Python value.

    ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"tuple"`` (of ints; a bare int
    is a 1-tuple, ``"None"`` items allowed), ``"float_tuple"``, ``"auto"`` (guess), or the type
    ``int``/``float``/``bool``/``str``/``tuple``.  ``"None"`` yields None for every kind.
    A malformed value raises ParseError naming the attribute (the caller adds the node).
    """
    kind = {int: "int", float: "float", bool: "bool", str: "str", tuple: "tuple"}.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown attribute kind {kind!r}")
    if not isinstance(value, str):
        raise ParseError(f"attribute {name!r}: expected a string, got {type(value).__name__}")
    text = value.strip()
    if text == "None":
        return None
    result = _PARSERS[kind](text)
    if result is _BAD:
        what = {"tuple": "a tuple of ints", "float_tuple": "a tuple of floats"}.get(kind, kind)
        raise ParseError(f"attribute {name!r}: cannot parse {value!r} as {what}")
    return result


_BAD = object()


def _int(text: str) -> Any:
    if not _INT.fullmatch(text):
        return _BAD
    try:
        return int(text.rstrip("L"))
    except ValueError:  # absurdly many digits
        return _BAD


def _float(text: str) -> Any:
    return float(text) if _FLOAT.fullmatch(text) else _BAD


def _bool(text: str) -> Any:
    return _BOOLS.get(text.lower(), _BAD)


def _tuple(text: str, item=_int) -> Any:
    if text[:1] in ("(", "[") and text[-1:] == {"(": ")", "[": "]"}[text[0]]:
        body = text[1:-1].strip()
        if not body:
            return ()
        parts = [p.strip() for p in body.split(",")]
        if parts[-1] == "" and len(parts) > 1:
            parts.pop()  # "(3,)"
    else:
        parts = [text]  # a bare scalar is a 1-tuple, as in dmlc::Tuple
    items = tuple(None if p == "None" else item(p) for p in parts)
    return _BAD if _BAD in items else items


def _auto(text: str) -> Any:
    for parse in (_int, _float, _tuple):
        result = parse(text)
        if result is not _BAD and (parse is not _tuple or text[:1] in "(["):
            return result
    if text.lower() in ("true", "false"):
        return _bool(text)
    return text


_PARSERS = {"int": _int, "float": _float, "bool": _bool, "str": lambda t: t, "tuple": _tuple,
            "float_tuple": lambda t: _tuple(t, _float), "auto": _auto}

__all__ = ["read_params", "read_symbol_json", "parse_attr", "load_json", "SymbolGraph",
           "SymbolNode"]
