"""Reading a model file's bytes, text or JSON — from a path, or from bytes/text already in memory —
with every failure a :class:`~graphrt.ir.errors.ParseError` naming the file (shared by the MXNet and
Keras readers)."""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

from ..ir.errors import OutOfMemoryError, ParseError
from ..ir.limits import memory_available


def bounded_memory(load: Callable) -> Callable:
    """Decorate a loader so that a ``MemoryError`` (an allocation the budget admitted but the
    process could not make: an address-space limit, a full machine) becomes an
    :class:`~graphrt.ir.errors.OutOfMemoryError` naming the file, never a raw MemoryError."""
    @functools.wraps(load)
    def guarded(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except MemoryError:
            pass  # handled outside the except block, so the failed frames are freed first
        source = args[0] if args else None
        file = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        room, why = memory_available()
        raise OutOfMemoryError(f"loading the model ran out of memory ({why}); graphrt.limits "
                               "bounds what a file may ask for, the process could not allocate "
                               "it", file=file)
    return guarded


def read_bytes(path_or_bytes: Any, file: str | None) -> tuple[bytes, str | None]:
    """The bytes of a path (or the bytes given) and the name to report errors under."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), file
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise ParseError(f"expected a path or bytes, got {type(path_or_bytes).__name__}",
                         file=file)
    name = file if file is not None else os.fspath(path_or_bytes)
    try:
        with open(path_or_bytes, "rb") as fh:
            return fh.read(), name
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}", file=name) from None


def read_text(path_or_text: Any, file: str | None) -> tuple[str, str | None]:
    """A str that starts with ``{``/``[`` (or is blank) is text; other strs and paths are files."""
    if isinstance(path_or_text, str) and path_or_text.lstrip()[:1] in ("{", "[", ""):
        return path_or_text, file
    data, file = read_bytes(path_or_text, file)
    try:
        return data.decode("utf-8-sig"), file
    except UnicodeDecodeError as exc:
        raise ParseError(f"not UTF-8 text (byte offset {exc.start})", file=file) from None


def load_json(path_or_text: Any, file: str | None = None) -> tuple[Any, str | None]:
    """Parse JSON text or a JSON file; syntax errors become ParseError with line and column."""
    text, file = read_text(path_or_text, file)
    try:
        return json.loads(text), file
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno,
                         column=exc.colno) from None
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"invalid JSON: {exc}", file=file) from None
