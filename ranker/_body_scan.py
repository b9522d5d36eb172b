"""Request limits checked while a rerank body streams in, before anything parses it.

A body of two million one-character documents is 26 MB, well under the byte limit, yet parsing it whole takes
seconds of the event loop and gigabytes of memory before ``max_docs`` can be checked. :class:`BodyScanner` is
fed each chunk as it arrives (by :mod:`ranker._http_guard`) and follows the JSON structure just enough to count
the elements of the list field (``documents`` or ``texts``) and the bytes of each element and of the query; it
raises :class:`~ranker.protocol.ApiError` 413 at the chunk that crosses a limit, so such a body is refused after
reading a few kilobytes. Its cost is per structural character (quotes, brackets, and the commas and colons of
the top-level object and the list), not per byte: string contents and untracked values are skipped with
regular expressions.

It reads a superset of JSON: it checks brackets, string quotes and that the body is one object, and leaves
numbers, literals, escapes and most commas to the parser, which sees the body next. So valid JSON is refused
here only over a limit; bodies it refuses as malformed (400) or as not an object (422) are ones the parser
would refuse too. Field names are compared after JSON unescaping (``"docu\\u006dents"`` is ``documents``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ranker.protocol import ApiError

__all__ = ["BodyScanner", "ScanLimits"]

_NOT_WS = re.compile(rb"[^ \t\r\n]")
#: the rest of a string's contents: everything up to an unescaped quote (or a backslash ending the chunk)
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
#: what matters at the top-level object and in the tracked list
_TRACKED = re.compile(rb'["\[\]{},:]')
#: inside any other value only nesting and strings matter
_NESTED = re.compile(rb'["\[\]{}]')
_BOM = b"\xef\xbb\xbf"
_CLOSE = {ord("}"): ord("{"), ord("]"): ord("[")}
#: a field name longer than this cannot spell a known field, even fully \u-escaped
_MAX_KEY_BYTES = 256
_QUOTE, _OPEN_OBJ, _OPEN_ARR, _COMMA, _COLON = b'"{[,:'
_VALUE_START = frozenset(b'"{[-0123456789tfnNI')


@dataclass(frozen=True)
class ScanLimits:
    """``list_key``: the field whose elements are counted (``max_items``) and sized (``max_item_bytes`` bytes of
    JSON each); ``text_keys``: top-level string fields held to ``max_item_bytes`` too; ``max_depth``: the
    deepest nesting allowed anywhere."""

    list_key: str
    max_items: int
    max_item_bytes: int
    text_keys: frozenset[str] = frozenset({"query"})
    max_depth: int = 64


class BodyScanner:
    """Feed it the body chunk by chunk (:meth:`feed`); it raises ApiError as soon as the body is over a limit
    (413), is malformed at a bracket or quote (400), or is not a JSON object (422)."""

    def __init__(self, limits: ScanLimits):
        self.limits = limits
        self.items = 0                 # elements of the tracked list seen so far
        self._offset = 0               # bytes fed before the current chunk
        self._head = b""               # the first bytes, until the body's first character is known
        self._started = self._finished = False
        self._stack = bytearray()      # open containers: b"{" or b"["
        self._in_string = self._escape = False
        self._string_role = ""         # "key", "text" (a tracked text field), "item" or "" (anything else)
        self._key_buf: bytearray | None = None
        self._key = ""                 # the field of the top-level object being read
        self._top = "key"              # in the top-level object: expecting a "key", a "colon", a "value" or "after" it
        self._expect_value = False     # the next non-space byte starts a value of the top object or list
        self._list_depth = 0           # the depth inside the tracked list (2), 0 outside it
        self._item_start = -1          # offset where the open element or text began, -1 when none is open
        self._item_what = ""
        self._scalar_item = False

    def feed(self, chunk: bytes) -> None:
        i, n = 0, len(chunk)
        if not self._started:
            chunk, i = self._begin(chunk)
            n = len(chunk)
        while i < n and not self._finished:
            if self._in_string:
                i = self._string(chunk, i)
            elif self._expect_value:
                i = self._value_start(chunk, i)
            else:
                regex = _TRACKED if len(self._stack) == 1 or len(self._stack) == self._list_depth else _NESTED
                m = regex.search(chunk, i)
                if m is None:
                    break
                i = m.end()
                self._structural(chunk[m.start()], self._offset + m.start())
        if self._finished and i < n and _NOT_WS.search(chunk, i):
            raise ApiError(400, "invalid_json", "the body is not valid JSON: there is more after the closing '}'")
        self._offset += n
        self._check_open_item(self._offset)

    def _begin(self, chunk: bytes) -> tuple[bytes, int]:
        """Skip a UTF-8 byte order mark and whitespace; the first character must open an object."""
        data = self._head + chunk
        self._offset -= len(self._head)
        if len(data) < len(_BOM) and _BOM.startswith(data):
            self._head, self._offset = data, self._offset + len(data)
            return b"", 0
        self._head = b""
        i = len(_BOM) if data.startswith(_BOM) else 0
        m = _NOT_WS.search(data, i)
        if m is None:
            return data, len(data)
        first = data[m.start()]
        if first != _OPEN_OBJ:
            if first in _VALUE_START:
                raise ApiError(422, "invalid_request", "body: the body must be a JSON object "
                               '({"query": ..., ...}); see /openapi.json')
            raise ApiError(400, "invalid_json", "the body is not valid JSON: send a JSON object with "
                           "Content-Type: application/json")
        self._started = True
        self._stack.append(_OPEN_OBJ)
        return data, m.end()

    def _string(self, chunk: bytes, i: int) -> int:
        if self._escape:  # the chunk before ended in a backslash: this byte is the escaped one
            self._escape = False
            if self._key_buf is not None and len(self._key_buf) <= _MAX_KEY_BYTES:
                self._key_buf += chunk[i:i + 1]
            i += 1
            if i >= len(chunk):
                return i
        start = i
        end = _STRING_BODY.match(chunk, i).end()  # type: ignore[union-attr]
        if self._key_buf is not None and len(self._key_buf) <= _MAX_KEY_BYTES:
            self._key_buf += chunk[start:min(end, start + _MAX_KEY_BYTES + 1)]
        if end >= len(chunk):
            return end
        if chunk[end] != _QUOTE:  # a backslash that ends the chunk: its escaped byte comes next
            if self._key_buf is not None and len(self._key_buf) <= _MAX_KEY_BYTES:
                self._key_buf += b"\\"
            self._escape = True
            return end + 1
        self._in_string = False
        self._string_ended(self._offset + end)
        return end + 1

    def _string_ended(self, pos: int) -> None:
        role, self._string_role = self._string_role, ""
        if role == "key":
            self._key = _decode_key(self._key_buf or b"")
            self._key_buf = None
            self._top = "colon"
        elif role in ("text", "item"):
            self._close_item(pos + 1)
        if len(self._stack) == 1 and role != "key":
            self._top = "after"

    def _value_start(self, chunk: bytes, i: int) -> int:
        m = _NOT_WS.search(chunk, i)
        if m is None:
            return len(chunk)
        self._expect_value = False
        first, pos = chunk[m.start()], self._offset + m.start()
        if len(self._stack) == self._list_depth:
            if first == ord("]"):
                return m.start()  # an empty list: no element
            self.items += 1
            if self.items > self.limits.max_items:
                raise ApiError(413, "too_many_documents", f"more than {self.limits.max_items} {self.limits.list_key} "
                               f"(max_docs={self.limits.max_items}); split the request into several or restart the "
                               "server with a larger --max-docs")
            self._open_item(pos, f"{self.limits.list_key}[{self.items - 1}]")
            self._scalar_item = first not in (_QUOTE, _OPEN_OBJ, _OPEN_ARR)
        elif self._key in self.limits.text_keys and first == _QUOTE:
            self._open_item(pos, self._key)
        if len(self._stack) == 1 and first not in (_QUOTE, _OPEN_OBJ, _OPEN_ARR):
            self._top = "after"
        return m.start()

    def _structural(self, c: int, pos: int) -> None:
        depth = len(self._stack)
        if c == _QUOTE:
            self._in_string = True
            if depth == 1 and self._top == "key":
                self._string_role, self._key_buf = "key", bytearray()
            elif self._item_start >= 0 and not self._scalar_item and self._item_depth_is(depth):
                self._string_role = "text" if depth == 1 else "item"
        elif c in (_OPEN_OBJ, _OPEN_ARR):
            self._open(c, depth)
        elif c in _CLOSE:
            self._close(c, pos)
        elif c == _COMMA:
            if depth == 1:
                self._top = "key"
            elif depth == self._list_depth:
                if self._scalar_item:
                    self._close_item(pos)
                self._expect_value = True
        elif c == _COLON and depth == 1 and self._top == "colon":
            self._top = "value"
            self._expect_value = True

    def _item_depth_is(self, depth: int) -> bool:
        """A string at ``depth`` is the open text or element itself (not a string inside an element object)."""
        return depth == 1 or depth == self._list_depth

    def _open(self, c: int, depth: int) -> None:
        if depth >= self.limits.max_depth:
            raise ApiError(400, "invalid_body", f"the body nests more than {self.limits.max_depth} levels deep")
        if depth == 1 and self._top == "value" and c == _OPEN_ARR and self._key == self.limits.list_key:
            self._list_depth = 2
            self._expect_value = True
        self._stack.append(c)

    def _close(self, c: int, pos: int) -> None:
        if not self._stack or self._stack[-1] != _CLOSE[c]:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: unexpected {chr(c)!r} at byte {pos}")
        self._stack.pop()
        depth = len(self._stack)
        if self._list_depth and depth == self._list_depth - 1:  # the tracked list ended
            if self._scalar_item:
                self._close_item(pos)
            self._list_depth = 0
        elif self._list_depth and depth == self._list_depth and self._item_start >= 0:
            self._close_item(pos + 1)  # an element object (or list) ended
        if depth == 1:
            self._top = "after"
        elif depth == 0:
            self._finished = True

    def _open_item(self, pos: int, what: str) -> None:
        self._item_start, self._item_what = pos, what

    def _close_item(self, end: int) -> None:
        self._check_open_item(end)
        self._item_start, self._scalar_item = -1, False

    def _check_open_item(self, end: int) -> None:
        if self._item_start >= 0 and end - self._item_start > self.limits.max_item_bytes:
            raise ApiError(413, "text_too_long", f"{self._item_what} has more than {self.limits.max_item_bytes} bytes "
                           "of JSON, more than any text within max_chars characters can take; cut it client-side "
                           "(only the first max_seq_len tokens are scored anyway)")


def _decode_key(raw: bytes | bytearray) -> str:
    """The field name a JSON string spells ("" when it is too long to be a known field)."""
    if len(raw) > _MAX_KEY_BYTES:
        return ""
    try:
        key = json.loads(b'"' + bytes(raw) + b'"')
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON: a field name has a bad escape or control "
                       "character") from None
    return key if isinstance(key, str) else ""
