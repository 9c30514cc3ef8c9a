"""``radsight import PATH``: a folder or a zip of DICOM files into an organisation."""

from __future__ import annotations

import functools
import logging
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radsight.errors import InstanceRejected, RadsightError
from radsight.ingest.accept import accept_instance
from radsight.runtime import Runtime

log = logging.getLogger(__name__)

#: refuse single members larger than this (a zip bomb or a wrong file)
MAX_MEMBER_BYTES = 2 * 1024**3


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (name, code, msg)
    study_uids: set[str] = field(default_factory=set)


def iter_sources(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, loader) for every file in a folder (recursively) or a zip."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                yield str(p.relative_to(path)), p.read_bytes
    elif zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        for info in zf.infolist():
            if info.is_dir():
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                yield info.filename, _too_big(info.filename, info.file_size)
                continue
            yield info.filename, functools.partial(zf.read, info)
    elif path.is_file():
        yield path.name, path.read_bytes
    else:
        raise RadsightError(f"{path} does not exist")


def count_sources(path: Path) -> int:
    if path.is_dir():
        return sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if zipfile.is_zipfile(path):
        return sum(1 for i in zipfile.ZipFile(path).infolist() if not i.is_dir())
    return 1


def _too_big(name: str, size: int) -> Callable[[], bytes]:
    def load() -> bytes:
        raise InstanceRejected(f"{name} is {size} bytes, more than the import limit")

    return load


def import_path(
    rt: Runtime,
    path: Path,
    organisation_id: int,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    for name, load in iter_sources(path):
        try:
            accepted = accept_instance(
                rt,
                load(),
                organisation_id=organisation_id,
                source="import",
                calling_ae_title="",
            )
        except InstanceRejected as exc:
            report.rejected.append((name, exc.code, exc.message))
        except OSError as exc:
            report.rejected.append((name, "unreadable", str(exc)))
        else:
            if accepted.new:
                report.stored += 1
            else:
                report.duplicates += 1
            report.study_uids.add(accepted.study_instance_uid)
        if progress:
            progress(name)
    log.info(
        "import of %s: %d stored, %d duplicates, %d rejected, %d studies",
        path,
        report.stored,
        report.duplicates,
        len(report.rejected),
        len(report.study_uids),
    )
    return report
