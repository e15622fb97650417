"""Run a weights reader in a forked child, so a native library stuck on corrupt input is bounded.

libhdf5 can loop forever (or crash) on a corrupted file, beyond the reach of Python signals. Where
``os.fork`` exists, :func:`read_in_child` runs ``read()`` in a child process, receives its result
(layer name -> list of numeric arrays) through a pipe as raw bytes (no pickle), and kills the child
after ``seconds``: a stuck or crashed reader becomes a :class:`~graphrt.ir.errors.ParseError`. A
GraphrtError raised by ``read`` in the child is raised again, as the same class, in the parent.
"""
from __future__ import annotations

import faulthandler
import json
import os
import select
import signal
import struct
import time
from typing import Callable

import numpy as np

from ..ir import errors
from ..ir.errors import GraphrtError, ParseError

Weights = dict[str, list[np.ndarray]]


def _encode(found: Weights) -> list[bytes]:
    index = [[name, [[a.dtype.str, list(a.shape)] for a in arrays]] for name, arrays in found.items()]
    head = json.dumps(index).encode()
    return [b"O", struct.pack("<Q", len(head)), head] + [
        np.ascontiguousarray(a).tobytes() for arrays in found.values() for a in arrays]


def _decode(data: bytes, file: str | None) -> Weights:
    if data[:1] == b"E":
        kind, _, message = data[1:].decode("utf-8", "replace").partition("\n")
        cls = getattr(errors, kind, GraphrtError)
        raise (cls if isinstance(cls, type) and issubclass(cls, GraphrtError)
               else GraphrtError)(message, file=file)
    (hlen,) = struct.unpack_from("<Q", data, 1)
    pos, out = 9 + hlen, {}
    for name, specs in json.loads(data[9:pos]):
        arrays = []
        for dtype, shape in specs:
            dt = np.dtype(dtype)
            n = int(np.prod(shape)) * dt.itemsize
            arrays.append(np.frombuffer(data, dt, n // dt.itemsize if dt.itemsize else 0,
                                        pos).reshape(shape).copy())
            pos += n
        out[name] = arrays
    return out


def _child(wfd: int, read: Callable[[], Weights]) -> None:
    code = 0
    faulthandler.disable()  # a crash here is expected and reported by the parent
    try:
        with os.fdopen(wfd, "wb") as out:
            try:
                parts = _encode(read())
            except GraphrtError as err:
                parts = [b"E", f"{type(err).__name__}\n{err.message}".encode("utf-8", "replace")]
            for part in parts:
                out.write(part)
    except BaseException:  # noqa: BLE001 - the parent reports a child that wrote nothing
        code = 1
    finally:
        os._exit(code)


def read_in_child(read: Callable[[], Weights], seconds: float, what: str,
                  file: str | None) -> Weights:
    """``read()`` run in a forked child given ``seconds``; in-process where fork is missing."""
    if not hasattr(os, "fork"):
        return read()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(rfd)
        _child(wfd, read)
    os.close(wfd)
    chunks, status, deadline = [], None, time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ParseError(f"reading {what} did not finish in {seconds:g} s (libhdf5 stuck "
                                 "on a corrupt file?)", file=file)
            ready, _, _ = select.select([rfd], [], [], left)
            if ready:
                chunk = os.read(rfd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(rfd)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    data = b"".join(chunks)
    if status != 0 or not data:
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        raise ParseError(f"the reader of {what} failed ({how}) on a corrupt file", file=file)
    return _decode(data, file)


__all__ = ["read_in_child"]
