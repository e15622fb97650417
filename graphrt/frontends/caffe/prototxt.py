"""Reader (and printer) for the protobuf *text* format, as Caffe ``.prototxt`` files use it.

The format
----------
A file is one message: a sequence of fields. Each field is a name followed by one of

* ``name: value``                       a scalar (number, string, identifier)
* ``name { ... }`` or ``name: { ... }``  a nested message (``< ... >`` works like ``{ ... }``)
* ``name: [v1, v2, ...]``                shorthand for repeating the field once per element

A field may be followed by ``;`` or ``,``. ``#`` starts a comment that runs to the end of the line.

This reader knows no schema, so every field may repeat and the source order is kept: Caffe's
``layer`` (and the legacy ``layers``) are just repeated fields of the top message. Scalars become:

* ``12``, ``-3``, ``0x1F``, ``017`` (octal, as in protobuf)   -> ``int``
* ``1.5``, ``1e-4``, ``-0.5``, ``0.1f``, ``inf``, ``-nan``    -> ``float``
* ``"a"`` / ``'a'`` with C escapes; adjacent strings join   -> ``str``
* ``true`` / ``false`` (also ``True`` / ``False``)           -> ``bool``
* any other identifier, such as ``MAX`` or ``TRAIN``         -> :class:`EnumValue` (a ``str``)

Every malformed input raises :class:`~graphrt.ir.errors.ParseError` with the file, line and column.
"""
from __future__ import annotations

import bisect
import os
import re
from typing import Any, Iterable

from ...ir.errors import ParseError

MAX_DEPTH = 100
"""The deepest nesting of messages accepted; deeper input raises ParseError, not RecursionError."""

_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\[^\n])*"|'(?:[^'\\\n]|\\[^\n])*')
  | (?P<num>(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fF]?)(?![\w.]))
  | (?P<id>[A-Za-z_]\w*)
  | (?P<punct>[{}<>\[\]:;,\-])
  | (?P<badstr>["'][^\n]*)
  | (?P<badnum>\.?\d[\w.]*)
  | (?P<bad>.)
""", re.VERBOSE | re.DOTALL | re.ASCII)

_ESCAPE_RE = re.compile(
    r"\\(?:([0-7]{1,3})|[xX]([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.))", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
                   "\\": "\\", "'": "'", '"': '"', "?": "?"}
_BOOLS = {"true": True, "True": True, "false": False, "False": False}
_SPECIAL_FLOATS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}
_CLOSERS = {"{": "}", "<": ">"}
_IDENT_RE = re.compile(r"[A-Za-z_]\w*\Z", re.ASCII)


MAX_INT_BITS = 256  # integer literals beyond this are refused (protobuf's widest has 64)

class EnumValue(str):
    """An unquoted identifier value such as ``MAX``; compares equal to the plain ``str``. Its repr
    is the identifier as the prototxt writes it (``MAX``, no quotes), so messages quote the file."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


class Message:
    """An ordered list of ``(name, value)`` fields; any field may repeat.

    ``line`` is the 1-based line where the message starts (the field name of a nested message).
    """

    __slots__ = ("_fields", "_field_lines", "_index", "_lines", "line")

    def __init__(self, fields: Iterable[tuple[str, Any]] = (), line: int | None = None):
        self._fields: list[tuple[str, Any]] = []
        self._field_lines: list[int | None] = []
        self._index: dict[str, list[Any]] = {}
        self._lines: dict[str, list[int | None]] = {}
        self.line = line
        for name, value in fields:
            self.add(name, value)

    def add(self, name: str, value: Any, line: int | None = None) -> None:
        """Append one field; ``line`` is where it appears in the source, if known."""
        self._fields.append((name, value))
        self._field_lines.append(line)
        self._index.setdefault(name, []).append(value)
        self._lines.setdefault(name, []).append(line)

    @property
    def fields(self) -> list[tuple[str, Any]]:
        """All fields as ``(name, value)`` pairs in source order (a copy)."""
        return list(self._fields)

    def items(self) -> list[tuple[str, Any, int | None]]:
        """All fields as ``(name, value, line)`` triples in source order."""
        return [(n, v, line) for (n, v), line in zip(self._fields, self._field_lines)]

    def get(self, name: str, default: Any = None) -> Any:
        """The last value of field ``name`` (protobuf's rule for a singular field), or ``default``."""
        values = self._index.get(name)
        return values[-1] if values else default

    def getall(self, name: str) -> list[Any]:
        """Every value of field ``name`` in source order (empty when absent)."""
        return list(self._index.get(name, ()))

    def names(self) -> list[str]:
        """The distinct field names in order of first appearance."""
        return list(self._index)

    def line_of(self, name: str) -> int | None:
        """The line of the first occurrence of field ``name``, or None."""
        lines = self._lines.get(name)
        return lines[0] if lines else None

    def lines_of(self, name: str) -> list[int | None]:
        """The line of every occurrence of field ``name``, parallel to :meth:`getall`."""
        return list(self._lines.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Message({self._fields!r}, line={self.line!r})"


# ----------------------------------------------------------------------------------- parsing

def parse_prototxt(text: str | bytes, file: str | None = None) -> Message:
    """Parse protobuf text format into a :class:`Message` (``line`` 1). ``file`` names errors."""
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), file)
    if text.startswith("\ufeff"):
        text = text[1:]
    return _Parser(text, file).parse()


def load_prototxt(path: str | os.PathLike) -> Message:
    """Read the file at ``path`` (UTF-8) and parse it."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ParseError(f"cannot read file: {exc.strerror or exc}", file=file) from exc
    return parse_prototxt(_decode(data, file), file)


def _decode(data: bytes, file: str | None) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ParseError(f"invalid UTF-8 byte 0x{data[exc.start]:02x} (byte offset {exc.start})",
                         file=file, line=line, column=column) from None


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """``(kind, text, offset)`` tokens; stops after the first malformed one (kind starts 'bad')."""
    tokens = []
    append = tokens.append
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        append((kind, m.group(), m.start()))
        if kind[0] == "b":
            break
    append(("eof", "", len(text)))
    return tokens


def _describe(tok: tuple[str, str, int]) -> str:
    kind, value, _ = tok
    if kind == "eof":
        return "end of file"
    if kind == "punct":
        return repr(value)
    short = value if len(value) <= 40 else value[:37] + "..."
    return {"id": "identifier ", "num": "number ", "str": "string "}.get(kind, "") + short


class _Parser:
    """Recursive-descent parser over the token list; depth is bounded by MAX_DEPTH."""

    def __init__(self, text: str, file: str | None):
        self.text = text
        self.file = file
        self.tokens = _tokenize(text)
        self.pos = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    # -- helpers
    def where(self, offset: int) -> tuple[int, int]:
        k = bisect.bisect_left(self.newlines, offset)
        return k + 1, offset - (self.newlines[k - 1] if k else -1)

    def error(self, message: str, offset: int) -> ParseError:
        line, column = self.where(offset)
        return ParseError(message, file=self.file, line=line, column=column)

    def fail(self, expected: str) -> ParseError:
        tok = self.tokens[self.pos]
        kind, value, offset = tok
        if kind == "badstr":
            return self.error("unterminated string (strings cannot span lines)", offset)
        if kind == "badnum":
            return self.error(f"invalid number {value!r}", offset)
        if kind == "bad":
            return self.error(f"unexpected character {value!r}", offset)
        return self.error(f"expected {expected}, got {_describe(tok)}", offset)

    def accept(self, *puncts: str) -> str | None:
        kind, value, _ = self.tokens[self.pos]
        if kind == "punct" and value in puncts:
            self.pos += 1
            return value
        return None

    # -- grammar
    def parse(self) -> Message:
        msg = Message(line=1)
        self.fields(msg, None, "", 0, 0)
        return msg

    def fields(self, msg: Message, close: str | None, owner: str, opened: int, depth: int) -> None:
        tokens = self.tokens
        while True:
            kind, value, offset = tokens[self.pos]
            if kind == "id":
                self.pos += 1
                self.field(msg, value, offset, depth)
                kind, value, _ = tokens[self.pos]
                if kind == "punct" and value in ";,":
                    self.pos += 1
            elif close is not None and kind == "punct" and value == close:
                self.pos += 1
                return
            elif close is None and kind == "eof":
                return
            elif close is None:
                raise self.fail("a field name")
            elif kind == "eof":
                raise self.fail(f"{close!r} to close {owner!r} opened at line {opened}")
            else:
                raise self.fail(f"a field name or {close!r} to close {owner!r} "
                                f"(opened at line {opened})")

    def field(self, msg: Message, name: str, offset: int, depth: int) -> None:
        line = self.where(offset)[0]
        kind, value, _ = self.tokens[self.pos]
        colon = kind == "punct" and value == ":"
        if colon:
            self.pos += 1
            kind, value, _ = self.tokens[self.pos]
        if kind == "punct" and value in "{<":
            self.pos += 1
            msg.add(name, self.message(name, line, value, depth), line)
        elif kind == "punct" and value == "[":
            self.pos += 1
            for item in self.list_values(name, line, depth):
                msg.add(name, item, line)
        elif colon:
            msg.add(name, self.scalar(name), line)
        else:
            raise self.fail(f"':' or '{{' after field name {name!r}")

    def message(self, name: str, line: int, opener: str, depth: int) -> Message:
        if depth >= MAX_DEPTH:
            raise self.error(f"messages nested deeper than {MAX_DEPTH} levels",
                             self.tokens[self.pos - 1][2])
        sub = Message(line=line)
        self.fields(sub, _CLOSERS[opener], name, line, depth + 1)
        return sub

    def list_values(self, name: str, line: int, depth: int) -> list[Any]:
        values: list[Any] = []
        if self.accept("]"):
            return values
        while True:
            opener = self.accept("{", "<")
            values.append(self.message(name, line, opener, depth) if opener else self.scalar(name))
            if self.accept("]"):
                return values
            if not self.accept(","):
                raise self.fail(f"',' or ']' in the list for {name!r} opened at line {line}")

    def scalar(self, name: str) -> Any:
        kind, value, offset = self.tokens[self.pos]
        if kind == "str":
            return self.strings()
        if kind == "num":
            self.pos += 1
            return self.number(value, offset)
        if kind == "id":
            self.pos += 1
            if value in _BOOLS:
                return _BOOLS[value]
            special = _SPECIAL_FLOATS.get(value.lower())
            return special if special is not None else EnumValue(value)
        if kind == "punct" and value == "-":
            return self.negative()
        raise self.fail(f"a value for {name!r} after ':'")

    def negative(self) -> int | float:
        self.pos += 1
        kind, value, offset = self.tokens[self.pos]
        if kind == "num":
            self.pos += 1
            return -self.number(value, offset)
        if kind == "id" and value.lower() in _SPECIAL_FLOATS:
            self.pos += 1
            return -_SPECIAL_FLOATS[value.lower()]
        raise self.fail("a number after '-'")

    def number(self, text: str, offset: int) -> int | float:
        shown = repr(text) if len(text) <= 40 else f"{text[:20]!r}...({len(text):,} characters)"
        try:
            if text[:2] in ("0x", "0X"):
                value = int(text, 16)
            elif any(c in text for c in ".eEfF"):
                return float(text.rstrip("fF"))
            elif len(text) > 1 and text[0] == "0":
                value = int(text, 8)
            else:
                value = int(text)
        except ValueError:
            raise self.error(f"invalid number {shown}", offset) from None
        if value.bit_length() > MAX_INT_BITS:  # no protobuf field holds it, and an error message
            # could not even print it (Python refuses str() of an int over 4,300 digits)
            raise self.error(f"integer {shown} has more than {MAX_INT_BITS} bits", offset)
        return value

    def strings(self) -> str:
        parts = []
        while self.tokens[self.pos][0] == "str":
            _, value, offset = self.tokens[self.pos]
            self.pos += 1
            parts.append(self.unescape(value[1:-1], offset))
        return "".join(parts)

    def unescape(self, body: str, offset: int) -> str:
        if "\\" not in body:
            return body
        out = bytearray()
        last = 0
        try:
            for m in _ESCAPE_RE.finditer(body):
                out += body[last:m.start()].encode("utf-8", "surrogatepass")
                out += self.escape_bytes(m, offset)
                last = m.end()
            out += body[last:].encode("utf-8", "surrogatepass")
            return out.decode("utf-8")
        except (ValueError, UnicodeError):
            raise self.error("string is not valid UTF-8 after its escapes are applied",
                             offset) from None

    def escape_bytes(self, m: re.Match, offset: int) -> bytes:
        octal, hex2, u4, u8, simple = m.groups()
        if octal or hex2:
            return bytes([int(octal, 8) & 0xFF if octal else int(hex2, 16)])
        if u4 or u8:
            return chr(int(u4 or u8, 16)).encode("utf-8", "surrogatepass")
        if simple in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[simple].encode()
        raise self.error(f"invalid escape sequence {m.group()!r} in string", offset + 1 + m.start())


# ---------------------------------------------------------------------------------- printing

_QUOTE_RE = re.compile(r'[\\"\x00-\x1f\x7f]')
_QUOTE_MAP = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _quote(s: str) -> str:
    return '"' + _QUOTE_RE.sub(lambda m: _QUOTE_MAP.get(m.group(), f"\\{ord(m.group()):03o}"), s) + '"'


def _format_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, EnumValue):
        plain = str(value)
        reserved = plain in _BOOLS or plain.lower() in _SPECIAL_FLOATS
        return plain if _IDENT_RE.match(plain) and not reserved else _quote(plain)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(f"cannot print a value of type {type(value).__name__} in prototxt")


def _format_into(msg: Message, depth: int, out: list[str], indent: str) -> None:
    pad = indent * depth
    for name, value in msg._fields:
        if not _IDENT_RE.match(name):
            raise ValueError(f"field name {name!r} is not an identifier")
        if isinstance(value, Message):
            out.append(f"{pad}{name} {{")
            _format_into(value, depth + 1, out, indent)
            out.append(f"{pad}}}")
        else:
            out.append(f"{pad}{name}: {_format_scalar(value)}")


def format_prototxt(msg: Message, indent: int = 2) -> str:
    """Print ``msg`` in protobuf text format; :func:`parse_prototxt` reads it back equal."""
    out: list[str] = []
    _format_into(msg, 0, out, " " * indent)
    return "\n".join(out) + ("\n" if out else "")


__all__ = ["Message", "EnumValue", "parse_prototxt", "load_prototxt", "format_prototxt",
           "MAX_DEPTH"]
