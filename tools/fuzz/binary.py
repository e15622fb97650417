"""Mutations of binary model files, for :mod:`tools.fuzz.driver` (text and JSON ones, the byte-level
fallback and the choosers are in :mod:`tools.fuzz.mutators`).

* protobuf wire format (caffemodel, ONNX): varints set to huge values, declared lengths that lie,
  fields deleted, duplicated, renumbered or given another wire type, NaN/Inf float payloads.
* MXNet ``.params``: header integers (counts, ndim, dims, type flags, name lengths) set to
  interesting values, arrays dropped or duplicated, names made non-UTF-8, NaN/Inf data.
* zip archives (``.keras``, ``.npz``): members mutated in their own format (JSON, HDF5 through
  h5py, ``.npy`` headers), dropped, duplicated, declared sizes that lie, a deflate bomb.

Each mutator is ``mutate(data, chooser) -> (bytes, description)`` like those of fuzz_mutators.
"""
from __future__ import annotations

import ast
import io
import re
import struct
import warnings
import zipfile
import zlib

import numpy as np

from tools.fuzz.mutators import (BAD_UTF8, INTS, SPECIAL_FLOATS, Chooser, Mutator, byte_mutation,
                                 json_mutation, truncate)


# ------------------------------------------------------------------------------- protobuf

def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 70:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise ValueError("bad varint")


class PbField:
    """One field of a protobuf message: number, wire type, spans and the enclosing fields."""

    __slots__ = ("number", "wire", "key", "length", "payload", "parents", "is_message")

    def __init__(self, number, wire, key, length, payload, parents):
        self.number, self.wire, self.key, self.length = number, wire, key, length
        self.payload, self.parents, self.is_message = payload, parents, False


def pb_fields(buf: bytes, limit: int = 20_000) -> list[PbField]:
    """Every field of the message in ``buf`` and, recursively, of sub-messages that parse."""
    out: list[PbField] = []

    def parse(start, end, parents, depth) -> bool:
        pos, mine = start, []
        try:
            while pos < end:
                k0 = pos
                key, pos = _read_varint(buf, pos, end)
                number, wire = key >> 3, key & 7
                if number == 0:
                    return False
                length = None
                if wire == 0:
                    _, pos2 = _read_varint(buf, pos, end)
                    payload = (pos, pos2)
                elif wire == 2:
                    size, p2 = _read_varint(buf, pos, end)
                    length, payload = (pos, p2), (p2, p2 + size)
                    if p2 + size > end:
                        return False
                elif wire in (1, 5):
                    size = 8 if wire == 1 else 4
                    if pos + size > end:
                        return False
                    payload = (pos, pos + size)
                else:
                    return False
                mine.append(PbField(number, wire, (k0, pos if length is None else length[0]),
                                    length, payload, parents))
                pos = payload[1]
        except ValueError:
            return False
        if len(out) + len(mine) > limit:
            return True
        out.extend(mine)
        for f in mine:
            s, e = f.payload
            if f.wire == 2 and depth < 12 and e > s and len(out) < limit:
                n_before = len(out)
                if parse(s, e, parents + (f,), depth + 1):
                    f.is_message = True
                else:
                    del out[n_before:]
        return True

    parse(0, len(buf), (), 0)
    return out


def pb_splice(buf: bytes, field: PbField, start: int, end: int, new: bytes) -> bytes:
    """Replace ``buf[start:end]`` (inside ``field``) and fix every enclosing declared length."""
    out = bytearray(buf)
    out[start:end] = new
    delta = len(new) - (end - start)
    for parent in reversed(field.parents):
        ls, le = parent.length
        size, _ = _read_varint(buf, ls, le)
        enc = _varint(size + delta)
        out[ls:le] = enc
        delta += len(enc) - (le - ls)
    return bytes(out)


def pb_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """A protobuf-wire-aware mutation of one field."""
    fields = pb_fields(data)
    if not fields:
        return byte_mutation(data, ch)
    kind = ch.choice(("varint", "varint", "length", "delete", "duplicate", "floats", "floats",
                      "wire", "number", "truncate"))
    if kind == "truncate":
        bounds = sorted({b for f in fields[:5000] for b in (f.key[0], f.payload[0], f.payload[1])})
        return truncate(data, ch, bounds)
    pick = {"varint": [f for f in fields if f.wire == 0],
            "length": [f for f in fields if f.wire == 2],
            "floats": [f for f in fields if f.wire == 5 or (f.wire == 2 and not f.is_message
                                                             and (f.payload[1] - f.payload[0]) % 4 == 0
                                                             and f.payload[1] > f.payload[0])]}
    f = ch.choice(pick.get(kind) or fields)
    where = f"field {f.number} (wire {f.wire}) at byte {f.key[0]}"
    if kind == "varint" and f.wire == 0:
        v = ch.choice(INTS)
        return pb_splice(data, f, *f.payload, _varint(v)), f"set varint of {where} to {v}"
    if kind == "length" and f.wire == 2:
        size = f.payload[1] - f.payload[0]
        v = ch.choice((size + 1, size - 1, 0, size * 2, 2**31, 2**63, 2**64 - 1))
        return pb_splice(data, f, *f.length, _varint(v)), f"declare length {v} (is {size}) for {where}"
    if kind == "delete":
        return pb_splice(data, f, f.key[0], f.payload[1], b""), f"delete {where}"
    if kind == "duplicate":
        chunk = data[f.key[0]:f.payload[1]]
        return pb_splice(data, f, f.payload[1], f.payload[1], chunk), f"duplicate {where}"
    if kind == "floats" and f.wire in (2, 5):
        buf = bytearray(data)
        s, e = f.payload
        count = ch.choice((1, 3, (e - s) // 4))
        value = ch.choice(SPECIAL_FLOATS)
        for _ in range(min(count, 64)):
            at = s + 4 * ch.int(0, (e - s) // 4 - 1)
            buf[at:at + 4] = struct.pack("<f", value)
        if count == (e - s) // 4:
            buf[s:e] = np.full((e - s) // 4, value, "<f4").tobytes()
        return bytes(buf), f"write {value} into {min(count, (e - s) // 4)} floats of {where}"
    if kind == "wire":
        w = ch.int(0, 7)
        key = _varint((f.number << 3) | w)
        return pb_splice(data, f, *f.key, key), f"wire type {w} for {where}"
    number = ch.choice([g.number for g in fields] + [1, 2**29 - 1, 19000])
    key = _varint((number << 3) | f.wire)
    return pb_splice(data, f, *f.key, key), f"renumber {where} as {number}"


# --------------------------------------------------------------------------- MXNet .params

def params_regions(data: bytes) -> list[tuple[str, int, str]]:
    """(what, offset, struct format) of every header integer of an MXNet ``.params`` file,
    plus ``("data", offset, "<n>")`` for each array's data and ``("array", start, "<end>")``."""
    out: list[tuple[str, int, str]] = []
    pos = 0

    def take(what, fmt):
        nonlocal pos
        value = struct.unpack_from(fmt, data, pos)[0]
        out.append((what, pos, fmt))
        pos += struct.calcsize(fmt)
        return value

    try:
        take("list magic", "<Q")
        take("reserved", "<Q")
        count = take("array count", "<Q")
        for i in range(min(count, 1000)):
            start = pos
            magic = take(f"array {i} magic", "<I")
            if magic in (0xF993FAC9, 0xF993FACA):
                take(f"array {i} storage type", "<i")
                ndim = take(f"array {i} ndim", "<i")
                dims = [take(f"array {i} dim {d}", "<q") for d in range(ndim)]
            elif magic == 0xF993FAC8:
                ndim = take(f"array {i} ndim", "<I")
                dims = [take(f"array {i} dim {d}", "<q") for d in range(ndim)]
            else:
                dims = [take(f"array {i} dim {d}", "<I") for d in range(magic)]
            take(f"array {i} device type", "<i")
            take(f"array {i} device id", "<i")
            flag = take(f"array {i} type flag", "<i")
            size = int(np.prod(dims)) * {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8}.get(flag, 4)
            out.append(("data", pos, str(size)))
            pos += size
            out.append(("array", start, str(pos)))
        names = take("name count", "<Q")
        for i in range(min(names, 1000)):
            n = take(f"name {i} length", "<Q")
            out.append(("name", pos, str(n)))
            pos += n
    except (struct.error, ValueError, OverflowError):
        pass
    return out


def params_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """An MXNet ``.params``-aware mutation."""
    regions = params_regions(data)
    ints = [r for r in regions if r[0] not in ("data", "array", "name")]
    if not ints:
        return byte_mutation(data, ch)
    kind = ch.choice(("int", "int", "int", "data", "truncate", "drop", "dup", "name"))
    buf = bytearray(data)
    if kind == "truncate":
        return truncate(data, ch, sorted({r[1] for r in regions}))
    if kind == "data":  # (spans from headers that earlier mutations may have made huge)
        spans = [(o, int(s)) for w, o, s in regions
                 if w == "data" and 4 <= int(s) and o + int(s) <= len(data)]
        if spans:
            o, s = ch.choice(spans)
            value = ch.choice(SPECIAL_FLOATS)
            n = ch.choice((1, s // 4))
            for k in range(min(n, 64)):
                at = o + 4 * (k if n == s // 4 else ch.int(0, s // 4 - 1))
                buf[at:at + 4] = struct.pack("<f", value)
            if n == s // 4:
                buf[o:o + s] = np.full(s // 4, value, "<f4").tobytes()
            return bytes(buf), f"write {value} into {n} float32 values at byte {o}"
    if kind in ("drop", "dup"):
        arrays = [(o, int(e)) for w, o, e in regions if w == "array" and int(e) <= len(data)]
        if arrays:
            s, e = ch.choice(arrays)
            if kind == "drop":
                return data[:s] + data[e:], f"drop the array at bytes {s}:{e}"
            return data[:e] + data[s:e] + data[e:], f"duplicate the array at bytes {s}:{e}"
    if kind == "name":
        names = [(o, int(n)) for w, o, n in regions if w == "name" and 0 < int(n)
                 and o + int(n) <= len(data)]
        if names:
            o, n = ch.choice(names)
            junk = ch.choice(BAD_UTF8)[:n].ljust(min(n, 2), b"\xff")
            buf[o:o + len(junk)] = junk
            return bytes(buf), f"name at byte {o} starts with {bytes(junk)!r}"
    what, off, fmt = ch.choice(ints)
    value = ch.choice(INTS + (33, 0xF993FAC8, 0xF993FAC9, 0xF993FACA, 8, 9))
    size = struct.calcsize(fmt)
    raw = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    buf[off:off + size] = raw
    return bytes(buf), f"set {what} (byte {off}) to {value}"


# ------------------------------------------------------------------------------------ npy

def npy_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """Mutate a ``.npy`` member: its header dict (shape, dtype, order) or its data."""
    try:
        hlen_fmt = "<H" if data[6] == 1 else "<I"
        hsize = struct.calcsize(hlen_fmt)
        hlen = struct.unpack_from(hlen_fmt, data, 8)[0]
        header = ast.literal_eval(data[8 + hsize:8 + hsize + hlen].decode("latin-1"))
        body = data[8 + hsize + hlen:]
    except (ValueError, SyntaxError, IndexError, struct.error, MemoryError, RecursionError):
        return byte_mutation(data, ch)
    kind = ch.choice(("shape", "shape", "descr", "order", "data", "text"))
    if kind == "data" and header.get("descr") == "<f4" and len(body) >= 4:
        arr = bytearray(body)
        value = ch.choice(SPECIAL_FLOATS)
        n = len(body) // 4
        idx = range(n) if ch.int(0, 1) else [ch.int(0, n - 1)]
        for i in idx:
            arr[4 * i:4 * i + 4] = struct.pack("<f", value)
        return data[:len(data) - len(body)] + bytes(arr), f"write {value} into {len(idx)} values"
    if kind == "text":
        literal = ch.choice(("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, }",
                             "{'descr': __import__('os'), 'shape': ()}", "[]", "{" * 1000,
                             "{'descr': '<f4', 'fortran_order': False}"))
        what = f"header text {literal[:40]!r}"
    else:
        if kind == "shape":
            header["shape"] = ch.choice(((2**40,), (-1,), (), (10**6, 10**6), (2**62, 4),
                                         (0, 2**63), (1,) * 40))
        elif kind == "descr":
            header["descr"] = ch.choice(("|O", "<U8", ">f4", "<f8", "|b1", "|V16", "<c8",
                                         [("a", "<f4")], "<M8[s]", "bogus"))
        else:
            header["fortran_order"] = ch.choice((True, 1, "yes"))
        literal = repr(header)
        what = f"header {literal}"
    raw = literal.encode("latin-1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw) & 0xFFFF) + raw + body, what


# --------------------------------------------------------------------------------- HDF5

def h5_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """Mutate Keras weights (HDF5) through h5py: datasets replaced, dropped, renamed."""
    import h5py

    buf = io.BytesIO(data)
    try:
        with h5py.File(buf, "r+") as h5:
            sets, groups = [], []
            h5.visititems(lambda n, o: (sets if isinstance(o, h5py.Dataset) else groups).append(n))
            kind = ch.choice(("values", "shape", "dtype", "huge", "drop", "name", "extra"))
            if kind == "extra" or not sets:
                h5.create_dataset("layers/nonexistent/vars/0", data=np.ones(3, np.float32))
                h5["layers/nonexistent/vars"].attrs["name"] = "nonexistent"
                what = "add variables for a layer the config does not have"
            else:
                name = ch.choice(sets)
                ds = h5[name]
                shape, dtype = ds.shape, ds.dtype
                if kind == "name":
                    group = h5[name.rsplit("/", 1)[0]]
                    value = ch.choice(("", b"\xff\xfe", 7, "x" * 1000,
                                       str(h5[ch.choice(sets).rsplit("/", 1)[0]].attrs.get("name"))))
                    group.attrs["name"] = value
                    what = f"set the name of {group.name} to {value!r}"[:120]
                else:
                    del h5[name]
                    if kind == "values":
                        v = ch.choice(SPECIAL_FLOATS)
                        h5.create_dataset(name, data=np.full(shape, v, dtype))
                        what = f"fill {name} {shape} with {v}"
                    elif kind == "shape":
                        new = ch.choice(((), (0,), shape[::-1], shape + (1,), (3,) * 5))
                        h5.create_dataset(name, data=np.ones(new, np.float32))
                        what = f"reshape {name} {shape} -> {new}"
                    elif kind == "dtype":
                        new = ch.choice(("int32", "float16", "S4", "bool", "complex64"))
                        h5.create_dataset(name, data=np.ones(shape, dtype=new))
                        what = f"{name} as {new}"
                    elif kind == "huge":
                        new = ch.choice(((2**31,), (1 << 16, 1 << 16), (10**12,)))
                        h5.create_dataset(name, shape=new, dtype="f4", chunks=True)
                        what = f"{name} declared {new}, no data written"
                    else:
                        what = f"delete {name}"
    except Exception as err:  # noqa: BLE001 - earlier mutations made it unreadable to h5py
        return byte_mutation(data, ch)[0], f"(h5py cannot mutate: {type(err).__name__}) bytes"
    return buf.getvalue(), what


# ---------------------------------------------------------------------------------- zip

_BOMB: dict[int, bytes] = {}


def _deflate_bomb(size: int) -> bytes:
    """Raw deflate of ``{`` and ``size`` spaces: one 1 MiB block compressed after a full flush
    (which resets the compressor, so every copy of it is the same bytes), repeated."""
    if size not in _BOMB:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        head = comp.compress(b"{") + comp.flush(zlib.Z_FULL_FLUSH)
        block = comp.compress(b" " * (1 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)
        _BOMB[size] = head + block * (size >> 20) + comp.flush()
    return _BOMB[size]


def _member_mutator(name: str) -> Mutator:
    if name.endswith(".json") or name == "__graph__.json.npy":
        return _npy_json if name.endswith(".npy") else json_mutation
    if name.endswith(".h5"):
        return lambda d, ch: h5_mutation(d, ch) if ch.int(0, 3) else byte_mutation(d, ch)
    if name.endswith(".npy"):
        return npy_mutation
    return byte_mutation


def _npy_json(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """The graph JSON that graphrt stores as a uint8 ``.npy``: mutate the JSON inside."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        text = arr.tobytes()
    except Exception:  # noqa: BLE001 - not a readable npy any more
        return npy_mutation(data, ch)
    if ch.int(0, 4) == 0:
        return npy_mutation(data, ch)
    new, what = json_mutation(text, ch)
    out = io.BytesIO()
    np.save(out, np.frombuffer(new, np.uint8))
    return out.getvalue(), what


def _central_size_lie(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """Set a central-directory entry's uncompressed (or compressed) size to a lie."""
    spots = [m.start() for m in re.finditer(rb"PK\x01\x02", data)]
    if not spots:
        return byte_mutation(data, ch)
    at = ch.choice(spots)
    field, what = ch.choice(((24, "uncompressed"), (20, "compressed")))
    value = ch.choice((0, 1, 0xFFFFFFFE, 2**31, 123))
    buf = bytearray(data)
    buf[at + field:at + field + 4] = struct.pack("<I", value)
    return bytes(buf), f"central directory entry at byte {at}: {what} size {value}"


def zip_mutation(data: bytes, ch: Chooser) -> tuple[bytes, str]:
    """Mutate a zip archive member-wise (then rebuild it), or its bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [(i, zf.read(i.filename)) for i in zf.infolist()]
    except Exception:  # noqa: BLE001 - no longer a readable zip
        return byte_mutation(data, ch)
    if not members:
        return byte_mutation(data, ch)
    kind = ch.choice(("member",) * 6 + ("drop", "dup", "bomb", "size", "bytes"))
    if kind == "bytes":
        return byte_mutation(data, ch)
    if kind == "size":
        return _central_size_lie(data, ch)
    k = ch.int(0, len(members) - 1)
    info, blob = members[k]
    if kind == "member":
        new, what = _member_mutator(info.filename)(blob, ch)
        members[k] = (info, new)
        what = f"{info.filename}: {what}"
    elif kind == "drop":
        del members[k]
        what = f"drop member {info.filename}"
    elif kind == "dup":
        members.insert(k, (info, ch.choice([b for _, b in members])))
        what = f"member {info.filename} twice (the first with other contents)"
    else:
        size = ch.choice((64 << 20, 300 << 20))
        return _with_bomb(members, k, size), f"{info.filename}: a deflate bomb of {size >> 20} MiB"
    return _rezip(members), what


def _rezip(members) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as zf:
            for info, blob in members:
                zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                zi.compress_type = info.compress_type
                zf.writestr(zi, blob)
    return out.getvalue()


def _with_bomb(members, k: int, size: int) -> bytes:
    """The archive with member ``k`` replaced by a deflate stream inflating to ``size`` bytes."""
    bomb = _deflate_bomb(size)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w") as zf:
            for i, (info, blob) in enumerate(members):
                if i != k:
                    zf.writestr(zipfile.ZipInfo(info.filename, date_time=info.date_time), blob)
                    continue
                zi = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                zi.compress_type = zipfile.ZIP_DEFLATED
                zi.file_size, zi.compress_size = size + 1, len(bomb)
                zi.CRC = 0
                zi.header_offset = zf.fp.tell()
                zf.fp.write(zi.FileHeader())
                zf.fp.write(bomb)
                zf.start_dir = zf.fp.tell()
                zf.filelist.append(zi)
                zf.NameToInfo[zi.filename] = zi
                zf._didModify = True
    return out.getvalue()


__all__ = ["pb_mutation", "pb_fields", "pb_splice", "params_mutation", "params_regions",
           "npy_mutation", "h5_mutation", "zip_mutation"]
