"""``multipart/related`` bodies and ``Accept`` headers as DICOMweb uses them (PS3.18 8.6-8.7).

Pure: the standard library only. STOW-RS requests arrive as multipart/related; WADO-RS
answers leave as one; :func:`parse_accept` reads the media ranges a client accepts.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from radsight.errors import InvalidInput

__all__ = ["MediaRange", "boundary_of", "iter_parts", "parse_accept", "split_parts"]

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


def split_parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (headers with lower-case names, content)."""
    delimiter = b"--" + boundary_of(content_type).encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise InvalidInput("the multipart body has no parts (or a wrong boundary)")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the close delimiter
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            if not head.strip():
                continue
            raise InvalidInput("a multipart part has no header/body separator")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        if content.endswith(b"\r\n"):
            content = content[:-2]
        parts.append((headers, content))
    return parts


def new_boundary() -> str:
    return "radsight-" + secrets.token_hex(12)


def iter_parts(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """Encode (content type, content) parts as a multipart body, one chunk at a time."""
    for content_type, content in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield content
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
