"""Every real file we can find goes in or is refused with a reason; corrupt bytes never crash.

The files are pydicom's own test files and the pydicom-data package (many modalities,
vendors and transfer syntaxes, some broken on purpose).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pydicom
import pytest

from radsight.dicom.instances import parse_part10
from radsight.dicom.pixels import frames_for_analysis
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import (
    InstanceRejected,
    MalformedDicom,
    MissingPixelData,
    PixelDataMismatch,
    TooLarge,
)
from tests._limits import LIMITS

#: what decoding a stored instance may refuse with: undecodable, or refused before decoding
DECODE_REFUSALS = (MalformedDicom, MissingPixelData, PixelDataMismatch, TooLarge)


def real_files() -> list[Path]:
    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover - a test dependency in pyproject.toml
        pass
    files = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix not in (".py", ".pyc", ".gz", ".bz2", ".json"):
                files.append(path)
    return files


FILES = real_files()


def test_there_are_many_real_files():
    assert len(FILES) > 150


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_real_file_is_accepted_or_refused_with_a_reason(path):
    data = path.read_bytes()
    try:
        parsed = parse_part10(data)
    except InstanceRejected as exc:
        assert exc.message  # refused, with a reason a sender can act on
        return
    assert parsed.sop_instance_uid and parsed.study_instance_uid
    if "PixelData" in parsed.dataset:
        try:
            frames = frames_for_analysis(parsed.dataset, **LIMITS)
        except DECODE_REFUSALS as exc:
            assert exc.message  # stored as sent; analysis will say "not analysed: ..."
        else:
            assert frames and all(f.ndim == 2 for _, f in frames)


def decodable_share() -> float:
    ok = total = 0
    for path in FILES:
        try:
            parsed = parse_part10(path.read_bytes())
        except InstanceRejected:
            continue
        if "PixelData" not in parsed.dataset:
            continue
        total += 1
        try:
            frames_for_analysis(parsed.dataset, **LIMITS)
            ok += 1
        except DECODE_REFUSALS:
            pass
    return ok / total


def test_most_real_images_decode():
    assert decodable_share() >= 0.85


def _valid() -> bytes:
    buf = io.BytesIO()
    make_radiograph(rows=64, columns=64).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("seed", range(300))
def test_corrupted_bytes_never_escape_as_another_error(seed):
    rng = random.Random(seed)
    data = bytearray(_valid())
    action = seed % 4
    if action == 0:  # flip bytes anywhere
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif action == 1:  # cut anywhere
        data = data[: rng.randrange(len(data))]
    elif action == 2:  # a random 32-bit length somewhere in the header
        i = rng.randrange(132, min(len(data) - 4, 1200))
        data[i : i + 4] = rng.randrange(2**32).to_bytes(4, "little")
    else:  # random bytes spliced into the middle
        i = rng.randrange(len(data))
        data[i:i] = rng.randbytes(rng.randint(1, 64))
    try:
        parsed = parse_part10(bytes(data))
    except InstanceRejected:
        return
    # accepted: then it is a checked instance whose pixels decode or say why not
    try:
        frames_for_analysis(parsed.dataset, **LIMITS)
    except DECODE_REFUSALS:
        pass
