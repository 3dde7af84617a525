"""HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), decoded incrementally, and lines.

Why our own: a watch stream is one chunk per event, and urllib3 decodes it a chunk at a
time, through several Python calls per chunk and a generator step per event. The stream
threads instead read whatever the socket holds in one call (``watch.raw_reads``) and
decode all of it here in one pass, so a read that holds fifty events costs one pass
rather than fifty round trips through urllib3. Pure: bytes in, bytes out, no I/O.
"""

from __future__ import annotations

import enum
import re
from typing import Final

MAX_SIZE_LINE: Final = 4096  # a chunk-size line with extensions; urllib3 allows 65,536
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{1,15}")


class ChunkedError(ValueError):
    """The body is not valid chunked coding (a ``ValueError``: the stream is malformed)."""


class BodyEnded(ConnectionError):
    """The connection ended before the body's last chunk (the stream was cut)."""


class _Part(enum.Enum):
    SIZE = enum.auto()  # expecting a chunk-size line
    DATA = enum.auto()  # inside a chunk's data
    END = enum.auto()  # expecting the CRLF after a chunk's data
    TRAILER = enum.auto()  # after the last chunk: trailer fields until an empty line
    DONE = enum.auto()


class ChunkedBody:
    """Decodes one chunked body fed in arbitrary pieces; owned by one stream thread."""

    def __init__(self) -> None:
        self._part = _Part.SIZE
        self._left = 0  # data bytes of the current chunk still to come
        self._held = b""  # undecoded bytes: an incomplete size line, trailer line or CRLF

    @property
    def done(self) -> bool:
        """The last chunk and the trailer section have been read."""
        return self._part is _Part.DONE

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` completes; raises ``ChunkedError`` on bad framing."""
        buf = self._held + data if self._held else data
        pos = 0
        out: list[bytes] = []
        size_line = _HEX.fullmatch
        n = len(buf)
        while pos < n or self._part is _Part.DONE:
            part = self._part
            if part is _Part.SIZE or part is _Part.TRAILER:  # first: once per chunk
                end = buf.find(b"\n", pos)
                if end < 0:
                    if n - pos > MAX_SIZE_LINE:
                        raise ChunkedError(f"chunk line longer than {MAX_SIZE_LINE} bytes")
                    break
                line = buf[pos:end].rstrip(b"\r")
                pos = end + 1
                if part is _Part.TRAILER:
                    if not line:
                        self._part = _Part.DONE
                # Hex digits only (the API server's size lines): no split, no strip.
                elif (size := int(line, 16) if size_line(line) else _size(line)) == 0:
                    self._part = _Part.TRAILER
                elif (stop := pos + size) + 2 <= n:
                    # The whole chunk and its CRLF are here (a watch event, most reads):
                    # taken at once, not in a pass through DATA and END each.
                    if buf[stop : stop + 2] != b"\r\n":
                        raise ChunkedError("chunk data not followed by CRLF")
                    out.append(buf[pos:stop])
                    pos = stop + 2
                else:
                    self._left = size
                    self._part = _Part.DATA
            elif part is _Part.DATA:
                take = min(self._left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._part = _Part.END
            elif part is _Part.END:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("chunk data not followed by CRLF")
                pos += 2
                self._part = _Part.SIZE
            else:  # DONE
                if pos < n:
                    raise ChunkedError(f"{n - pos} bytes after the last chunk")
                break
        self._held = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)


def _size(line: bytes) -> int:
    """The chunk size of a chunk-size line (extensions after ``;`` are ignored)."""
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not _HEX.fullmatch(digits):
        raise ChunkedError(f"bad chunk size line {line[:40]!r}")
    return int(digits, 16)


class Lines:
    """Splits bytes fed in pieces into their non-blank lines (one JSON watch event each).

    Each piece is split once, and a line that spans pieces is joined once, so a piece
    that holds many events costs one pass.
    """

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the start of a line that has not ended yet

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, blank ones left out."""
        if b"\n" not in data:
            if data:
                self._pending.append(data)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
        *lines, tail = data.split(b"\n")
        if tail:
            self._pending.append(tail)
        return [line for line in lines if line.strip()]

    def rest(self) -> list[bytes]:
        """The last line, if the body did not end with a newline."""
        rest = b"".join(self._pending)
        self._pending.clear()
        return [rest] if rest.strip() else []
