"""Mutations of real model files, for :mod:`tools.fuzz.driver`.

Every mutator is ``mutate(data: bytes, ch: Chooser) -> (bytes, description)``: it takes a file's
bytes and a :class:`Chooser` (the source of every decision: hypothesis, a seeded ``random.Random``
or atheris' data provider) and returns the mutated bytes and a one-line description of what it did,
precise enough to redo by hand ("set varint of field 7 at byte 120 to 2**63"). A mutator that
cannot apply (a JSON mutation of bytes that no longer parse) falls back to a byte-level one.

Families:

* bytes: bit flips, byte sets, truncation at an offset class (start, end, middle, a structural
  boundary), deletion, duplication, insertion of non-UTF-8 sequences, repetition.
* text (prototxt): numbers replaced by huge, negative, NaN and infinite values, fields and blocks
  duplicated or deleted, strings (blob names) swapped, deep nesting, unbalanced braces.
* JSON (MXNet symbols, Keras configs, graphrt's graph): values deleted, duplicated (lists),
  keys duplicated, values replaced by interesting ones, numbers inside attribute strings
  changed, deep nesting.
* binary formats (protobuf wire, MXNet ``.params``, zip archives): :mod:`tools.fuzz.binary`.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Sequence

INTS = (0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40,
        2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -2**31, -2**63, 10**30)
NUMBER_TEXTS = ("0", "-1", "-7", "2147483647", "2147483648", "4294967296", "99999999999",
                "9223372036854775808", "1e308", "-1e308", "1e400", "nan", "-nan", "inf", "-inf",
                "0x7fffffffffffffff", "-0", "1.5", "5e-324", "100000", "1000000")
SPECIAL_FLOATS = (float("nan"), float("inf"), float("-inf"), 3.4e38, -3.4e38, 1e-45, 0.0)
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\x00",
            b"\xf4\x90\x80\x80", b"\xe2\x82")
NESTING = (50, 99, 100, 101, 1000, 10_000)  # past MAX_DEPTH and Python's recursion limit


class Chooser:
    """The decisions of one case. Subclasses implement :meth:`int` (inclusive bounds)."""

    def int(self, lo: int, hi: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def choice(self, items: Sequence):
        return items[self.int(0, len(items) - 1)]

    def weighted(self, items: Sequence[tuple[float, Any]]):
        """One of ``(weight, item)`` pairs, by integer weights."""
        total = sum(int(w) for w, _ in items)
        pick = self.int(0, total - 1)
        for w, item in items:
            pick -= int(w)
            if pick < 0:
                return item
        return items[-1][1]

    def raw(self, n: int) -> bytes:
        return bytes(self.int(0, 255) for _ in range(n))


class RandomChooser(Chooser):
    """Decisions from a ``random.Random`` (seeded: the same seed gives the same case)."""

    def __init__(self, rng):
        self.rng = rng

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)

    def raw(self, n):
        return self.rng.randbytes(n)


class HypothesisChooser(Chooser):
    """Decisions drawn from hypothesis' ``st.data()``, so hypothesis drives the mutations."""

    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def int(self, lo, hi):
        return self.data.draw(self.st.integers(lo, hi))

    def raw(self, n):
        return self.data.draw(self.st.binary(min_size=n, max_size=n))


class ProviderChooser(Chooser):
    """Decisions from atheris' ``FuzzedDataProvider`` (coverage-guided by libFuzzer)."""

    def __init__(self, fdp):
        self.fdp = fdp

    def int(self, lo, hi):
        return self.fdp.ConsumeIntInRange(lo, hi)

    def raw(self, n):
        out = self.fdp.ConsumeBytes(n)
        return out + bytes(n - len(out))


Mutator = Callable[[bytes, Chooser], "tuple[bytes, str]"]


# ----------------------------------------------------------------------------------- bytes

def _offset(n: int, ch: Chooser, boundaries: Sequence[int] = ()) -> tuple[int, str]:
    """An offset in ``[0, n]`` from one of the offset classes."""
    kinds = ["start", "end", "middle"] + (["boundary"] * 2 if boundaries else [])
    kind = ch.choice(kinds)
    if kind == "start":
        return min(n, ch.int(0, 16)), kind
    if kind == "end":
        return max(0, n - ch.int(0, 16)), kind
    if kind == "boundary":
        return max(0, min(n, ch.choice(boundaries) + ch.int(-1, 1))), kind
    return ch.int(0, n), kind


def truncate(data: bytes, ch: Chooser, boundaries: Sequence[int] = ()) -> tuple[bytes, str]:
    at, kind = _offset(len(data), ch, boundaries)
    return data[:at], f"truncate to {at} of {len(data)} bytes ({kind})"


def byte_mutation(data: bytes, ch: Chooser, boundaries: Sequence[int] = ()) -> tuple[bytes, str]:
    """One byte-level mutation; ``boundaries`` are structural offsets for truncation."""
    n = len(data)
    kind = ch.choice(("flip", "set", "truncate", "truncate", "delete", "duplicate", "insert",
                      "repeat"))
    if kind == "truncate" or n == 0:
        return truncate(data, ch, boundaries)
    buf = bytearray(data)
    at = ch.int(0, n - 1)
    if kind == "flip":
        bit = ch.int(0, 7)
        buf[at] ^= 1 << bit
        return bytes(buf), f"flip bit {bit} of byte {at}"
    if kind == "set":
        value = ch.choice((0, 1, 0x7F, 0x80, 0xFF, ch.int(0, 255)))
        buf[at] = value
        return bytes(buf), f"set byte {at} to 0x{value:02x}"
    size = ch.choice((1, 2, 4, 8, ch.int(1, 256)))
    chunk = data[at:at + size]
    if kind == "delete":
        return data[:at] + data[at + size:], f"delete {size} bytes at {at}"
    if kind == "duplicate":
        return data[:at] + chunk + data[at:], f"duplicate {len(chunk)} bytes at {at}"
    if kind == "insert":
        junk = ch.choice(BAD_UTF8 + (None,)) or ch.raw(ch.int(1, 8))
        return data[:at] + junk + data[at:], f"insert {junk!r} at {at}"
    times = ch.choice((10, 1000, 10_000))  # <= 160 KB more: the time bound is for hangs
    piece = chunk[:16]
    return data[:at] + piece * times + data[at:], f"repeat {piece!r} x{times} at {at}"


# ------------------------------------------------------------------------------------ text

_NUM_RE = re.compile(rb"(?<![\w.])-?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)(?![\w.])")
_STR_RE = re.compile(rb'"[^"\n]*"')
_FIELD_RE = re.compile(rb"(?m)^[ \t]*([A-Za-z_]\w*)[ \t]*(?=[:{])")


def _block_spans(data: bytes) -> list[tuple[int, int]]:
    """(start of line, end after the closing brace) of every ``name { ... }`` block."""
    spans, stack = [], []
    for i, c in enumerate(data):
        if c == 0x7B:  # {
            stack.append(data.rfind(b"\n", 0, i) + 1)
        elif c == 0x7D and stack:  # }
            spans.append((stack.pop(), i + 1))
    return spans


def _lines(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 0
    for line in data.splitlines(keepends=True):
        out.append((pos, pos + len(line)))
        pos += len(line)
    return out


def text_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """A prototxt-aware mutation (falls back to bytes when the file has nothing to act on)."""
    kind = ch.choice(("number", "number", "string", "field", "line_dup", "line_del", "block_dup",
                      "block_del", "nest", "brace"))
    if kind == "number":
        nums = list(_NUM_RE.finditer(data))
        if nums:
            m = ch.choice(nums)
            new = ch.choice(NUMBER_TEXTS).encode()
            return (data[:m.start()] + new + data[m.end():],
                    f"number {m.group().decode()} at byte {m.start()} -> {new.decode()}")
    elif kind == "string":
        strs = list(_STR_RE.finditer(data))
        if strs:
            m = ch.choice(strs)
            new = ch.choice([s.group() for s in strs] + [b'"nonexistent"', b'""',
                                                         b'"' + b"x" * 5000 + b'"'])
            return (data[:m.start()] + new + data[m.end():],
                    f"string {m.group()[:40]!r} at byte {m.start()} -> {new[:40]!r}")
    elif kind == "field":
        fields = list(_FIELD_RE.finditer(data))
        if fields:
            m = ch.choice(fields)
            new = ch.choice(fields).group(1)
            return (data[:m.start(1)] + new + data[m.end(1):],
                    f"field name {m.group(1).decode()} at byte {m.start(1)} -> {new.decode()}")
    elif kind in ("line_dup", "line_del"):
        lines = _lines(data)
        if lines:
            s, e = ch.choice(lines)
            if kind == "line_dup":
                return data[:e] + data[s:e] + data[e:], f"duplicate line at byte {s}"
            return data[:s] + data[e:], f"delete line at byte {s}"
    elif kind in ("block_dup", "block_del"):
        blocks = _block_spans(data)
        if blocks:
            s, e = ch.choice(blocks)
            if kind == "block_dup":
                return data[:e] + b"\n" + data[s:e] + data[e:], f"duplicate block at byte {s}"
            return data[:s] + data[e:], f"delete block at byte {s}"
    elif kind == "nest":
        depth = ch.choice(NESTING)
        lines = _lines(data) or [(0, 0)]
        at = ch.choice(lines)[0]
        return (data[:at] + b"n { " * depth + b"}" * depth + b"\n" + data[at:],
                f"insert messages nested {depth} deep at byte {at}")
    else:
        braces = [i for i, c in enumerate(data) if c in b"{}"]
        if braces:
            at = ch.choice(braces)
            return data[:at] + data[at + 1:], f"delete {chr(data[at])!r} at byte {at}"
    return byte_mutation(data, ch)


# ------------------------------------------------------------------------------------ JSON

def _json_slots(doc: Any, limit: int = 4000) -> list[tuple[Any, Any, str]]:
    """(container, key, path) of every value below the root, breadth first."""
    out, queue = [], [(doc, "$")]
    while queue and len(out) < limit:
        node, path = queue.pop(0)
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for k, v in items:
            sub = f"{path}[{k!r}]"
            out.append((node, k, sub))
            if isinstance(v, (dict, list)):
                queue.append((v, sub))
    return out


def _interesting_value(ch: Chooser, doc: Any, slots) -> tuple[Any, str]:
    kind = ch.choice(("int", "float", "other", "swap", "attr"))
    if kind == "int":
        v = ch.choice(INTS)
        return v, str(v)
    if kind == "float":
        v = ch.choice(SPECIAL_FLOATS)
        return v, str(v)
    if kind == "swap" and slots:
        c, k, path = ch.choice(slots)
        return json.loads(json.dumps(c[k])), f"the value at {path}"
    if kind == "attr":
        v = ch.choice(("(-1, 5)", "(100000000, 100000000)", "(0,)", "()", "None", "(5, 5, 5)",
                       "100000000000", "-3", "nan", "inf", "(2147483648, 1)", "abc", "(1, -1)"))
        return v, repr(v)
    v = ch.choice((None, True, "", "x" * 10_000, [], {}, [[]], {"class_name": None},
                   "\ud800", "\u0000"))
    return v, repr(v)[:40]


def _dump(doc: Any, ch: Chooser) -> bytes:
    indent = ch.choice((None, 2))
    text = json.dumps(doc, indent=indent, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def json_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """A JSON-aware mutation (byte-level when the data is not JSON)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return byte_mutation(data, ch)
    slots = _json_slots(doc)
    if not slots:
        return byte_mutation(data, ch)
    container, key, path = ch.choice(slots)
    kind = ch.choice(("replace", "replace", "replace", "delete", "duplicate", "attr_number",
                      "nest"))
    if kind == "delete":
        del container[key]
        return _dump(doc, ch), f"delete {path}"
    if kind == "duplicate":
        if isinstance(container, list):
            container.insert(key, json.loads(json.dumps(container[key])))
            return _dump(doc, ch), f"duplicate list item {path}"
        marker = "\u0000dup"
        value = json.loads(json.dumps(ch.choice([c[k] for c, k, _ in slots])))  # no cycle
        container[marker] = value
        text = _dump(doc, ch).replace(json.dumps(marker).encode(), json.dumps(key).encode())
        return text, f"duplicate key {path} (the second with another value)"
    if kind == "attr_number" and isinstance(container[key], str):
        nums = list(re.finditer(r"-?\d+", container[key]))
        if nums:
            m = ch.choice(nums)
            new = str(ch.choice(INTS))
            old = container[key]
            container[key] = old[:m.start()] + new + old[m.end():]
            return _dump(doc, ch), f"number {m.group()} in string {path} -> {new}"
    if kind == "nest":
        depth = ch.choice(NESTING)
        marker = "\u0000nest"
        container[key] = marker
        text = _dump(doc, ch).replace(json.dumps(marker).encode(),
                                      b"[" * depth + b"1" + b"]" * depth)
        return text, f"replace {path} by a list nested {depth} deep"
    value, what = _interesting_value(ch, doc, slots)
    container[key] = value
    return _dump(doc, ch), f"set {path} to {what}"


__all__ = ["Chooser", "RandomChooser", "HypothesisChooser", "ProviderChooser", "byte_mutation",
           "truncate", "text_mutation", "json_mutation", "INTS", "SPECIAL_FLOATS", "BAD_UTF8"]
