"""QMP on the wire: cutting the byte stream into JSON texts, reading and writing them.

What QEMU's json-streamer, json-parser and QMP encoder do, and nothing else:
no commands, no sockets.  The limits a client can run into are public.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = ["MAX_MESSAGE_BYTES", "MAX_NESTING"]

#: Largest request accepted, in bytes (docs/design.md, "The QMP monitor").
#: A connection's unfinished text is held in memory until it ends, so the cap
#: bounds what one client can make the monitor buffer.  The largest real
#: request here is an ``object-add`` of a few hundred bytes: 1 MiB leaves any
#: client ample room.  (QEMU's json-streamer allows 64 MiB.)
MAX_MESSAGE_BYTES: Final = 1 << 20

#: Deepest nesting of ``{}``/``[]`` accepted.  Requests here nest 3 deep at
#: most.  QEMU's json-streamer allows 1024 (MAX_NESTING), but Python's json
#: decoder recurses once per level and the default recursion limit is 1000, so
#: a limit of that order would turn deep input into a RecursionError; 64 is far
#: above any real request and far below the interpreter's limit.
MAX_NESTING: Final = 64


# -- errors on the wire ---------------------------------------------------------


class QMPError(Exception):
    """A request the monitor refuses, with its QMP error class and text."""

    def __init__(self, desc: str, qmp_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.qmp_class = qmp_class
        self.desc = desc


def error_reply(qmp_class: str, desc: str) -> dict[str, Any]:
    """The ``{"error": ...}`` reply, without its ``id``."""
    return {"error": {"class": qmp_class, "desc": desc}}


def _json_default(value: object) -> object:
    """JSON for what statistics hold besides JSON types: sets (CPU affinity)."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form")


def encode(message: Mapping[str, Any]) -> bytes:
    """One message on the wire: strict JSON, one line, as QEMU sends it.

    Raises:
        TypeError: a value has no JSON form.
        ValueError: a float is not finite (JSON has no NaN or infinity).
    """
    return json.dumps(message, default=_json_default, allow_nan=False).encode() + b"\n"


def check_id(request: Mapping[str, Any]) -> None:
    """Refuse a request whose ``id`` could not be sent back.

    The reply echoes the id, and a number beyond a double's range (``1e999``
    parses as an infinity, as in QEMU's parser) has no strict JSON form.

    Raises:
        QMPError: the id holds a number that is not finite.
    """
    if "id" in request:
        try:
            json.dumps(request["id"], allow_nan=False)
        except ValueError:
            raise QMPError(
                "QMP input member 'id' holds a number beyond JSON's range; "
                "use a smaller number or a string"
            ) from None


# -- splitting the byte stream into JSON texts ------------------------------------

# Outside strings, the bytes that matter: brackets, a quote, whitespace (which
# ends a top-level scalar).  Inside strings: an escape pair or the closing quote.
_OUTSIDE: Final = re.compile(rb'[{}\[\]"]|[ \t\r\n]')
_INSIDE: Final = re.compile(rb'\\.|"', re.DOTALL)


class JsonStreamer:
    """Cuts a byte stream into complete JSON texts, as QEMU's json-streamer.

    A text ends when its brackets balance (or, for a top-level scalar, at the
    next whitespace), so several requests may share a line and one request
    may span lines.  Only brackets, quotes and escapes are looked at; the
    texts themselves are parsed later.  Once a limit is exceeded, ``error``
    says which and the streamer takes no more input.

    One per connection; not thread-safe.
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # the input not yet cut into texts
        self._pos = 0  # how far into _buf has been scanned
        self._depth = 0
        self._in_string = False
        self.error: str | None = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add *data*; iterate over the texts complete so far (maybe none).

        The input is scanned only as far as the texts taken: a consumer that
        stops early (its connection is closing) costs no scan of the rest,
        which the next ``feed()`` goes on with.
        """
        if self.error is None:
            self._buf += data
        return self._texts()

    def _texts(self) -> Iterator[bytes]:
        while (text := self._next_text()) is not None:
            yield text

    def _next_text(self) -> bytes | None:
        """Cut the next complete text off the buffer; None when there is none
        yet, or a limit was exceeded (``error`` says which)."""
        if self.error is not None:
            return None
        buf = self._buf
        pos = self._pos
        text: bytes | None = None
        while text is None and pos < len(buf):
            if self._in_string:
                m = _INSIDE.search(buf, pos)
                if m is None:
                    # Only an escape cut in two can be pending: rescan it.
                    pos = len(buf) - 1 if buf.endswith(b"\\") else len(buf)
                    break
                pos = m.end()
                if m.group() == b'"':
                    self._in_string = False
                    if self._depth == 0:  # a top-level string is a whole text
                        text, pos = self._cut(pos), 0
                continue
            m = _OUTSIDE.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            char, pos = m.group(), m.end()
            if self._depth == 0 and char in b'"{[' and buf[: pos - 1].strip():
                # A top-level scalar ends where the next text starts, which
                # the next call scans from its first byte.
                text, pos = self._cut(pos - 1), 0
            elif char == b'"':
                self._in_string = True
            elif char in b"{[":
                self._depth += 1
                if self._depth > MAX_NESTING:
                    self.error = f"JSON nesting depth limit exceeded (more than {MAX_NESTING})"
                    return None
            elif char in b"}]":
                self._depth -= 1
                if self._depth <= 0:  # balanced (or a stray closer: a parse error)
                    text, pos, self._depth = self._cut(pos), 0, 0
            elif self._depth == 0:  # whitespace at top level
                scalar = self._cut(pos - 1).strip()
                del buf[:1]
                text, pos = scalar or None, 0
        self._pos = pos
        # Too long: a complete text, or the unfinished one (all that is left).
        if len(text if text is not None else buf) > MAX_MESSAGE_BYTES:
            self.error = f"JSON message size limit exceeded (more than {MAX_MESSAGE_BYTES} bytes)"
            return None
        return text

    def _cut(self, end: int) -> bytes:
        """Take the buffer's first *end* bytes off it."""
        text = bytes(self._buf[:end])
        del self._buf[:end]
        return text


# -- reading one JSON text, as QEMU's json-parser ------------------------------------

#: The integers QEMU's JSON parser keeps as integers: int64, else uint64
#: (qobject/json-parser.c, parse_literal); any other is read as a double.
_JSON_INT_MIN: Final = -(1 << 63)
_JSON_INT_MAX: Final = (1 << 64) - 1
#: Characters of the longest of those ("-9223372036854775808" is 20): longer
#: texts go straight to float, so int()'s digit limit is never reached.
_JSON_INT_CHARS: Final = 20


def _parse_int(text: str) -> int | float:
    """A JSON integer as QEMU reads it: an int in int64 or uint64 range, else
    a float (so a property answers with its type error, not a parse error)."""
    if len(text) <= _JSON_INT_CHARS:
        value = int(text)
        if _JSON_INT_MIN <= value <= _JSON_INT_MAX:
            return value
    return float(text)


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid keyword '{name}'")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key '{key}'")
        obj[key] = value
    return obj


def parse(text: bytes) -> object:
    """Parse one JSON text strictly (no NaN/Infinity, no duplicate keys).

    Raises:
        QMPError: the text is not valid JSON; the message says where.
    """
    try:
        return json.loads(
            text.decode("utf-8"),
            parse_int=_parse_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_object_pairs,
        )
    except UnicodeDecodeError as exc:
        raise QMPError(f"JSON parse error, invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise QMPError(
            f"JSON parse error, {exc.msg.lower()} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # from the hooks above
        raise QMPError(f"JSON parse error, {exc}") from None
