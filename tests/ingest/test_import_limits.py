"""``radsight import`` within limits: a zip bomb, corrupt members, re-sent instances.

The command runs as a user runs it (a subprocess); its peak memory is measured by a small
parent process that waits for it (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pydicom

from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.runtime import Runtime
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope

MiB = 1024 * 1024

#: runs ``radsight ARGS`` and prints its exit status, output and peak RSS (KiB) as JSON
MEASURED = """
import json, resource, subprocess, sys
r = subprocess.run([sys.executable, "-m", "radsight.cli.main", *sys.argv[1:]],
                   capture_output=True, text=True, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": r.returncode, "out": r.stdout, "err": r.stderr[-3000:], "kib": peak}))
"""


def radsight(tmp_path: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADSIGHT_")}
    env["RADSIGHT_DATA_DIR"] = str(tmp_path / "data")
    res = subprocess.run(
        [sys.executable, "-c", MEASURED, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return json.loads(res.stdout)


def add_organisation(tmp_path: Path) -> None:
    """City Hospital, in the data folder the commands use (in-process: seconds saved)."""
    rt = Runtime.open(load_settings(None, data_dir=tmp_path / "data"))
    try:
        with rt.db.session() as s:
            tenants.create_organisation(s, "City Hospital", "North")
    finally:
        rt.close()


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_a_zip_bomb_is_refused_fast_at_bounded_memory(tmp_path):
    add_organisation(tmp_path)
    archive = tmp_path / "bomb.zip"
    zeros = bytes(8 * MiB)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("first.dcm", part10(make_radiograph(rows=64, columns=64)))
        with zf.open("zeros.dcm", "w") as fh:  # 1 GiB of zeros: a 4.7 MB archive
            for _ in range(128):
                fh.write(zeros)
        zf.writestr("last.dcm", part10(make_radiograph(rows=64, columns=64, seed=2)))
    assert archive.stat().st_size < 8 * MiB
    t0 = time.monotonic()
    res = radsight(tmp_path, "import", str(archive), "--org", "City Hospital")
    took = time.monotonic() - t0
    assert res["rc"] == 1, res
    assert "2 stored, 0 already there, 1 rejected" in res["out"], res
    assert "rejected zeros.dcm: too_large:" in res["out"]
    assert "max_import_compression_ratio" in res["out"]
    assert res["kib"] < 600 * 1024, f"the import peaked at {res['kib'] // 1024} MiB"
    assert took < 30, f"{took:.0f} s"


def test_import_goes_on_past_corrupt_members_and_lists_them(tmp_path):
    add_organisation(tmp_path)
    ds = make_radiograph(rows=64, columns=64)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1-good.dcm", part10(ds))
        zf.writestr("2-corrupt.dcm", part10(make_radiograph(rows=64, columns=64, seed=3)))
        zf.writestr("3-truncated.dcm", part10(make_radiograph(rows=64, columns=64, seed=4))[:900])
        other = copy.deepcopy(ds)
        other.PatientID = "SOMEONE-ELSE"
        zf.writestr("4-same-uid.dcm", part10(other))
        zf.writestr("5-good.dcm", part10(make_radiograph(rows=64, columns=64, seed=5)))
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("2-corrupt.dcm")
    start = info.header_offset + 30 + len(info.filename)  # its compressed data
    raw[start + 40 : start + 80] = bytes(40)
    archive.write_bytes(bytes(raw))
    res = radsight(tmp_path, "import", str(archive), "--org", "City Hospital")
    assert res["rc"] == 1, res
    assert "2 stored, 0 already there, 3 rejected" in res["out"], res
    assert "Traceback" not in res["err"]
    out = res["out"]
    assert "rejected 2-corrupt.dcm: malformed_dicom: 2-corrupt.dcm cannot be read" in out
    assert "rejected 3-truncated.dcm: " in out
    assert "rejected 4-same-uid.dcm: duplicate_sop_instance: " in out
    rt = Runtime.open(load_settings(None, data_dir=tmp_path / "data"))
    try:
        with rt.db.session() as s:
            rows = studystore.list_rejections(s, scope=Scope.ALL)
    finally:
        rt.close()
    assert sorted(r.error_code for r in rows if r.source == "import") == [
        "duplicate_sop_instance",
        "malformed_dicom",
        "malformed_dicom",
    ]


def test_an_archive_over_the_total_is_listed_as_archive_too_large(tmp_path):
    """Its own code (not the per-file ``too_large``): the whole import stopped there."""
    from radsight.ingest.importer import import_path

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for n in range(3):
            zf.writestr(f"{n}.dcm", part10(make_radiograph(rows=64, columns=64, seed=n)))
    settings = load_settings(None, data_dir=tmp_path / "data", max_import_total_bytes=10_000)
    rt = Runtime.open(settings)
    try:
        with rt.db.session() as s:
            org = tenants.create_organisation(s, "City Hospital", "North").id
        report = import_path(rt, archive, org)
        with rt.db.session() as s:
            codes = [r.error_code for r in studystore.list_rejections(s, scope=Scope.ALL)]
    finally:
        rt.close()
    assert report.stored == 0
    assert [(name, code) for name, code, _msg in report.rejected] == [
        ("big.zip", "archive_too_large")
    ]
    assert codes == ["archive_too_large"]
