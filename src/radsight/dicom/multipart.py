"""``multipart/related`` bodies and ``Accept`` headers as DICOMweb uses them (PS3.18 8.6-8.7).

Pure: the standard library only. STOW-RS requests arrive as multipart/related; WADO-RS
answers leave as one; :func:`parse_accept` reads the media ranges a client accepts.
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from radsight.errors import InvalidInput

__all__ = [
    "MediaRange",
    "PartSpan",
    "boundary_of",
    "index_parts",
    "iter_parts",
    "parse_accept",
    "read_part",
    "split_parts",
]

_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header, e.g. ``multipart/related; type="..."``."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def type(self) -> str:
        """The ``type`` parameter of a multipart range (the media type of each part)."""
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str:
        return self.params.get("transfer-syntax", "")


def _split_top(header: str) -> list[str]:
    """Split on commas that are not inside quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


def parse_media_type(text: str) -> MediaRange:
    main, _, rest = text.partition(";")
    params = {
        k.lower(): v.strip().strip('"') for k, v in _PARAM.findall(";" + rest if rest else "")
    }
    q = 1.0
    if "q" in params:
        try:
            q = float(params.pop("q"))
        except ValueError:
            q = 0.0
    return MediaRange(main.strip().lower(), params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, most preferred first; ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(part) for part in _split_top(header)]
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def boundary_of(content_type: str) -> str:
    """The boundary of a multipart Content-Type; ``InvalidInput`` when there is none."""
    media = parse_media_type(content_type)
    if media.media_type != "multipart/related":
        raise InvalidInput(f"expected multipart/related, got {media.media_type or 'nothing'}")
    boundary = media.params.get("boundary", "")
    if not boundary:
        raise InvalidInput("the multipart/related Content-Type has no boundary")
    return boundary


@dataclass(frozen=True)
class PartSpan:
    """One part of a multipart body held in a file: its headers and where its content is."""

    headers: dict[str, str]
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


#: bytes read from the body at a time, and the most a part's header block may take
_CHUNK = 1024 * 1024
_MAX_HEAD = 64 * 1024


def _find(fp: BinaryIO, needle: bytes, pos: int) -> int:
    """The offset of ``needle`` at or after ``pos`` in ``fp``, or -1 (one chunk in memory)."""
    while True:
        fp.seek(pos)
        chunk = fp.read(_CHUNK + len(needle) - 1)
        if len(chunk) < len(needle):
            return -1
        at = chunk.find(needle)
        if at >= 0:
            return pos + at
        if len(chunk) < _CHUNK + len(needle) - 1:
            return -1
        pos += _CHUNK


def index_parts(fp: BinaryIO, content_type: str) -> list[PartSpan]:
    """The parts of a multipart/related body in a file, without reading their content.

    A body is split on its delimiter (PS3.18 8.6.1.2, RFC 2046 5.1.1); each part's headers
    (names lower-case) come before its first blank line. ``InvalidInput`` when the body has
    no parts, or a part has no header/body separator.
    """
    delimiter = b"--" + boundary_of(content_type).encode()
    cuts = []
    pos = _find(fp, delimiter, 0)
    while pos >= 0:
        cuts.append(pos)
        pos = _find(fp, delimiter, pos + len(delimiter))
    if len(cuts) < 2:
        raise InvalidInput("the multipart body has no parts (or a wrong boundary)")
    fp.seek(0, 2)
    cuts.append(fp.tell())
    parts = []
    for here, following in zip(cuts, cuts[1:], strict=False):
        begin = here + len(delimiter)
        fp.seek(begin)
        head = fp.read(min(following - begin, _MAX_HEAD))
        if head.startswith(b"--"):  # the close delimiter
            break
        skip = 2 if head.startswith(b"\r\n") else 0
        sep = head.find(b"\r\n\r\n", skip)
        if sep < 0:
            if not head[skip:].strip():
                continue
            raise InvalidInput("a multipart part has no header/body separator")
        headers = {}
        for line in head[skip:sep].decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        content_start, content_end = begin + sep + 4, following
        fp.seek(max(content_start, content_end - 2))
        if content_end - content_start >= 2 and fp.read(2) == b"\r\n":
            content_end -= 2
        parts.append(PartSpan(headers, content_start, content_end))
    return parts


def read_part(fp: BinaryIO, part: PartSpan) -> bytes:
    fp.seek(part.start)
    return fp.read(part.size)


def split_parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (headers with lower-case names, content)."""
    fp = io.BytesIO(body)
    return [(p.headers, read_part(fp, p)) for p in index_parts(fp, content_type)]


def new_boundary() -> str:
    return "radsight-" + secrets.token_hex(12)


def iter_parts(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """Encode (content type, content) parts as a multipart body, one chunk at a time."""
    for content_type, content in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield content
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
