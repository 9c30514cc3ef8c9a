"""Object storage for instance files and results: a directory by default, or S3.

Every store has the interface of :class:`ObjectStore`, and :func:`open_object_store` picks
one from the ``object_store`` setting: :class:`DirectoryStore` for a directory (the
embedded default, or a shared file system), :class:`radsight.store.s3.S3Store` for an
``s3://bucket/prefix`` URL. Keys are the same in both: relative POSIX paths
(``instances/<org>/<study>/<series>/<sop>.dcm``, ``results/<org>/<study>/<algo>/sr.dcm``),
a file under the directory or an object under the prefix. The database keeps the key, never
the location, so a store can move without touching a row.

In a :class:`DirectoryStore` a put is
durable when it returns: the bytes are written to a temporary file and renamed into place
(readers see the old or the new content, never a half-written file), then the file and its
directory - and the parent of every directory the put created - are fsynced, so an
acknowledged instance survives a crash. The fsyncs run at the same time on a small thread
pool while the calling thread computes the SHA-256: concurrent fsyncs share journal commits
and cache flushes, which took a 0.5 MiB put from ~6 ms to ~2 ms on ext4 here
(bench/bench_ingest.py). For a new key the rename comes before the file's fsync, so a
crash before ``put`` returns can leave an incomplete file under it, but nothing refers to
it: rows are committed only after ``put`` has returned, and a re-send rewrites the file. An
existing key is replaced only by bytes already fsynced (old content or new, never partial).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from radsight.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from radsight.config import Settings

_SAFE = re.compile(r"[^0-9A-Za-z.\-_]")


class ObjectStore(Protocol):
    """Where instance files and results are kept, addressed by key."""

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` durably before returning; return its SHA-256."""
        ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """The object for reading as a stream (close it, or use ``with``)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; a key that is not there is not an error."""
        ...

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (a key prefix such as ``instances/1/``)."""
        ...

    def check(self) -> None:
        """Raise ConfigError when the store cannot be used (at start-up)."""
        ...


def open_object_store(settings: Settings) -> ObjectStore:
    """The store the settings name (``object_store``); nothing is contacted yet."""
    where = settings.resolved_object_store
    if where.startswith("s3://"):
        from radsight.store.s3 import S3Store  # boto3 only where S3 is used

        return S3Store.from_settings(settings)
    return DirectoryStore(Path(where), fsync=not settings.unsafe_no_fsync)


def check_key(key: str) -> str:
    """A key is a relative POSIX path of plain components; raise StorageError otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"storage key {key!r} is not a relative path of plain names")
    if "\\" in key or "\x00" in key:
        raise StorageError(f"storage key {key!r} holds a backslash or NUL")
    return key


def safe_component(value: str) -> str:
    """A UID or name made safe as one path component."""
    cleaned = _SAFE.sub("_", value.strip()) or "_"
    return cleaned[:128]


class DirectoryStore:
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool_lock = threading.Lock()
        self._fsync_pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def path(self, key: str) -> Path:
        p = (self.root / check_key(key)).resolve()
        if self.root.resolve() not in p.parents:
            raise StorageError(f"storage key {key!r} escapes the store")
        return p

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` durably under ``key``; return its SHA-256."""
        target = self.path(key)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            created = _make_dirs(target.parent)
            # content already under the key is only ever replaced by synced bytes
            overwrite = not created and target.exists()
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync and overwrite:
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
                pending: list[Future[None]] = []
                if self.fsync:
                    pool = self._pool()
                    if not overwrite:
                        pending.append(pool.submit(os.fsync, fh.fileno()))
                    dirs = {target.parent, *(d.parent for d in created)}
                    pending += [pool.submit(_fsync_dir, d) for d in sorted(dirs)]
                try:
                    sha256 = hashlib.sha256(data).hexdigest()  # while the disk syncs
                finally:
                    _wait_all(pending)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"could not store {key}: {exc.strerror}") from exc
        return sha256

    def _pool(self) -> ThreadPoolExecutor:
        # one pool per process: threads do not survive a fork
        with self._pool_lock:
            if self._fsync_pool is None or self._pool_pid != os.getpid():
                self._fsync_pool = ThreadPoolExecutor(8, thread_name_prefix="radsight-fsync")
                self._pool_pid = os.getpid()
            return self._fsync_pool

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror}") from exc

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except OSError as exc:
            raise StorageError(f"could not read {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete {key}: {exc.strerror}") from exc

    def check(self) -> None:
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(f"object store {self.root} is not a writable directory")

    def keys(self, prefix: str = "") -> Iterator[str]:
        root = self.root.resolve()
        start = root / prefix.rpartition("/")[0]  # only the folder the prefix names
        for p in sorted(start.rglob("*")):
            key = p.relative_to(root).as_posix()
            # temporary files of puts in progress start with a dot
            if p.is_file() and not p.name.startswith(".") and key.startswith(prefix):
                yield key


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p``; return the directories that were missing, outermost first."""
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # a concurrent put made it; sync its parent here too
            pass
        created.append(d)
    return created


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wait_all(pending: list[Future[None]]) -> None:
    """Wait for every fsync, then raise the first failure (an unsynced put is a failed put)."""
    errors = [exc for f in pending if (exc := f.exception()) is not None]
    if errors:
        raise errors[0]
