"""Reading members of a zip archive (``.keras``, ``.npz``) within the budget of one load.

Sizes are checked on what the archive *declares*, before anything is inflated: a member's declared
size against the load's :class:`~graphrt.ir.limits.Budget` (``MAX_DECOMPRESSED_BYTES``) and its
compressed size against the archive's own size. :func:`open_member` gives a seekable file over a
member without a second copy: a stored member is read in place from the archive file (nothing is
inflated), a compressed one is inflated once into a buffer of exactly its declared size (a member
that inflates to more than it declares is refused, so the budget counts what is allocated).
"""
from __future__ import annotations

import io
import os
import struct
import zipfile

from ..ir.errors import ParseError
from ..ir.limits import Budget

CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra length


def check_declared(info: zipfile.ZipInfo, archive: str, budget: Budget | None = None) -> None:
    """ParseError when ``info`` declares more compressed bytes than the archive holds; with
    ``budget``, take its declared (inflated) size as decompressed bytes."""
    if info.compress_size > os.path.getsize(archive):
        raise ParseError(f"member {info.filename!r} declares {info.compress_size:,} compressed "
                         "bytes, more than the whole archive", file=archive)
    if budget is not None:
        budget.take("decompressed", info.file_size, f"archive member {info.filename!r}",
                    file=archive)


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str) -> bytearray:
    """The member's bytes, inflated into one buffer of its declared size (in 1 MiB pieces: a
    zip file's ``readinto`` would make a second, temporary copy of the whole member)."""
    buf = bytearray(info.file_size)
    view, got = memoryview(buf), 0
    with zf.open(info) as fh:
        while got < len(buf):
            piece = fh.read(min(CHUNK, len(buf) - got))
            if not piece:
                break
            view[got:got + len(piece)] = piece
            got += len(piece)
        if got != len(buf) or fh.read(1):
            raise ParseError(f"member {info.filename!r} does not hold the {info.file_size:,} "
                             "bytes it declares", file=archive)
    return buf


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of an open binary file (or of a
    buffer, when ``raw`` is a bytes-like object)."""

    def __init__(self, raw, start: int, size: int):
        super().__init__()
        self.raw, self.start, self.size, self.pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.size - self.pos))
        if isinstance(self.raw, (bytes, bytearray, memoryview)):
            b[:n] = self.raw[self.start + self.pos: self.start + self.pos + n]
        else:
            self.raw.seek(self.start + self.pos)
            n = self.raw.readinto(memoryview(b)[:n])
        self.pos += n
        return n


def memory_file(buf) -> io.RawIOBase:
    """A seekable file over a bytes-like buffer, without copying it."""
    return _Window(memoryview(buf), 0, len(buf))


def open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str, fh) -> io.RawIOBase:
    """A seekable file over the member (``fh``: the archive opened in binary mode)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return memory_file(read_member(zf, info, archive))
    fh.seek(info.header_offset)
    head = fh.read(_LOCAL_HEADER.size)
    if len(head) != _LOCAL_HEADER.size or not head.startswith(b"PK\x03\x04"):
        raise ParseError(f"member {info.filename!r} has no local header", file=archive)
    name_len, extra_len = _LOCAL_HEADER.unpack(head)[1:]
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    if start + info.file_size > os.path.getsize(archive):
        raise ParseError(f"member {info.filename!r} declares {info.file_size:,} bytes past the "
                         "end of the archive", file=archive)
    return _Window(fh, start, info.file_size)


__all__ = ["check_declared", "read_member", "open_member", "memory_file"]
