"""``radsight import PATH``: a folder or a zip of DICOM files into an organisation.

Each file goes through :func:`~radsight.ingest.accept.accept_instance`, like a C-STORE.
A file that is refused (not DICOM, corrupt, too large, a different instance under a known
SOP Instance UID) is recorded and listed, and the import goes on with the next one. Zip
members are read in chunks and refused while they stream: a member over
``max_instance_bytes``, one that inflates more than ``max_import_compression_ratio``
times, and the archive once its members add up to more than ``max_import_total_bytes``
(which ends the import: the rest is not read). A 1 GiB member is never held in memory.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radsight.config import Settings
from radsight.errors import (
    ArchiveTooLarge,
    InstanceRejected,
    MalformedDicom,
    RadsightError,
    TooLarge,
)
from radsight.ingest.accept import accept_instance, record_rejection
from radsight.runtime import Runtime

log = logging.getLogger(__name__)

#: members are inflated this much at a time
CHUNK_BYTES = 1024 * 1024
#: the compression ratio is judged only above this size: a small blank image or a tiny
#: text file compresses far better than any imaging data, and cannot hurt
RATIO_FLOOR_BYTES = 1024 * 1024


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (name, code, msg)
    study_uids: set[str] = field(default_factory=set)


@dataclass
class _Inflated:
    """Bytes inflated from an archive so far, against ``max_import_total_bytes``."""

    limit: int
    total: int = 0

    def add(self, archive: str, n: int) -> None:
        self.total += n
        if self.total > self.limit:
            raise ArchiveTooLarge(
                f"{archive} holds more than max_import_total_bytes ({self.limit} bytes) "
                "uncompressed: the import stopped there"
            )


def iter_sources(path: Path, settings: Settings) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, loader) for every file in a folder (recursively) or a zip.

    A loader raises an :class:`~radsight.errors.InstanceRejected` for a file that cannot
    be read within the limits; iterating raises :class:`ArchiveTooLarge` for an archive
    whose declared sizes are over ``max_import_total_bytes`` (nothing of it is read).
    """
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                yield str(p.relative_to(path)), _file_loader(p, str(p.relative_to(path)), settings)
    elif zipfile.is_zipfile(path):
        yield from _zip_sources(path, settings)
    elif path.is_file():
        yield path.name, _file_loader(path, path.name, settings)
    else:
        raise RadsightError(f"{path} does not exist")


def _file_loader(p: Path, name: str, settings: Settings) -> Callable[[], bytes]:
    def load() -> bytes:
        size = p.stat().st_size
        if size > settings.max_instance_bytes:
            raise TooLarge(
                f"{name} is {size} bytes, more than max_instance_bytes "
                f"({settings.max_instance_bytes} bytes)"
            )
        return p.read_bytes()

    return load


def _zip_sources(path: Path, settings: Settings) -> Iterator[tuple[str, Callable[[], bytes]]]:
    with zipfile.ZipFile(path) as zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
        declared = sum(i.file_size for i in members)
        inflated = _Inflated(settings.max_import_total_bytes)
        if declared > inflated.limit:
            raise ArchiveTooLarge(
                f"{path.name} declares {declared} bytes uncompressed, more than "
                f"max_import_total_bytes ({inflated.limit} bytes): nothing was imported"
            )
        for info in members:
            yield info.filename, _member_loader(zf, info, path.name, inflated, settings)


def _member_loader(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    archive: str,
    inflated: _Inflated,
    settings: Settings,
) -> Callable[[], bytes]:
    name = info.filename
    max_bytes = settings.max_instance_bytes
    ratio = settings.max_import_compression_ratio
    # what the member may inflate to: the sizes it declares may lie, its compressed size
    # (the bytes really in the archive) cannot
    by_ratio = max(RATIO_FLOOR_BYTES, int(ratio * max(info.compress_size, 1)))

    def too_large(size: int, declared: bool) -> TooLarge:
        what = "declares" if declared else "inflates to more than"
        if size > max_bytes:
            return TooLarge(
                f"{name} {what} {size} bytes, more than max_instance_bytes ({max_bytes} bytes)"
            )
        return TooLarge(
            f"{name} {what} {size} bytes from {info.compress_size} compressed, a ratio "
            f"over max_import_compression_ratio ({ratio:g}): a zip bomb or not an image"
        )

    def load() -> bytes:
        if info.file_size > max_bytes or info.file_size > by_ratio:
            raise too_large(info.file_size, declared=True)
        data = bytearray()
        try:
            with zf.open(info) as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    data += chunk
                    inflated.add(archive, len(chunk))
                    if len(data) > max_bytes or len(data) > by_ratio:
                        raise too_large(len(data), declared=False)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            # a CRC error, a truncated or damaged entry, an unsupported method, encryption
            raise MalformedDicom(
                f"{name} cannot be read from the archive ({type(exc).__name__}: {exc})"
            ) from exc
        return bytes(data)

    return load


def count_sources(path: Path) -> int:
    if path.is_dir():
        return sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return sum(1 for i in zf.infolist() if not i.is_dir())
    return 1


def import_path(
    rt: Runtime,
    path: Path,
    organisation_id: int,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import every file under ``path``; a refused file is recorded and listed, and the
    import goes on (an archive over ``max_import_total_bytes`` ends it)."""
    report = ImportReport()

    def refuse(name: str, exc: InstanceRejected, *, recorded: bool) -> None:
        if not recorded:
            record_rejection(rt, exc, source="import", organisation_id=organisation_id)
        report.rejected.append((name, exc.code, exc.message))

    try:
        for name, load in iter_sources(path, rt.settings):
            try:
                try:
                    data = load()
                except InstanceRejected as exc:
                    if isinstance(exc, ArchiveTooLarge):
                        raise
                    refuse(name, exc, recorded=False)
                    continue
                except OSError as exc:
                    refuse(name, MalformedDicom(f"{name} cannot be read: {exc}"), recorded=False)
                    continue
                try:
                    accepted = accept_instance(
                        rt, data, organisation_id=organisation_id, source="import"
                    )
                except InstanceRejected as exc:  # recorded by accept_instance
                    refuse(name, exc, recorded=True)
                    continue
                if accepted.new:
                    report.stored += 1
                else:
                    report.duplicates += 1
                report.study_uids.add(accepted.study_instance_uid)
            finally:
                if progress:
                    progress(name)
    except ArchiveTooLarge as exc:
        refuse(path.name, exc, recorded=False)
    except (zipfile.BadZipFile, zlib.error, OSError) as exc:  # the archive's directory
        refuse(
            path.name,
            MalformedDicom(f"{path.name} cannot be read ({type(exc).__name__}: {exc})"),
            recorded=False,
        )
    log.info(
        "import of %s: %d stored, %d duplicates, %d rejected, %d studies",
        path,
        report.stored,
        report.duplicates,
        len(report.rejected),
        len(report.study_uids),
    )
    return report
