"""Object storage for instance files and results: a directory by default.

Keys are relative POSIX paths (``instances/<org>/<study>/<series>/<sop>.dcm``). A put is
durable when it returns: the bytes are written to a temporary file, flushed to disk, renamed
into place and the directory entry synced, so an acknowledged instance survives a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from radsight.errors import StorageError

_SAFE = re.compile(r"[^0-9A-Za-z.\-_]")


def safe_component(value: str) -> str:
    """A UID or name made safe as one path component."""
    cleaned = _SAFE.sub("_", value.strip()) or "_"
    return cleaned[:128]


class DirectoryStore:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise StorageError(f"storage key {key!r} escapes the store")
        return p

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` durably under ``key``; return its SHA-256."""
        target = self.path(key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
            if self.fsync:
                dir_fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"could not store {key}: {exc.strerror}") from exc
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).exists()
