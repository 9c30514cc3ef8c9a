"""Hostile input that ingest accepts ends, in analysis, as a recorded "not analysed: <reason>"
or a specific permanent error: never an ``internal_error`` that is retried (and alarms).

The seeded fuzz corpus (radsight.testing.fuzz, as tests/security/test_fuzz.py sends it to a
server) runs here in-process through ingest, assembly and the analysis job.
"""

from __future__ import annotations

import io
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import InstanceRejected, MalformedDicom, MissingPixelData
from radsight.ingest.accept import accept_instance
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.routing import parse_rules
from radsight.pipeline.runner import INTERNAL_ERROR, run_one
from radsight.runtime import Runtime
from radsight.store import tenants
from radsight.store.tables import JobRow, ResultRow, StudyRow
from radsight.testing import fuzz

SEED = 16
N_MUTANTS = 150
RULES = 'version: "1"\nrules: [{name: all, match: {}, algorithms: [radsight-bright-region]}]'


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(
        None,
        data_dir=tmp_path / "d",
        quiet_periods={t: 0.01 for t in ("cxr", "flg", "mmg", "ct-chest", "ct-brain")},
        default_quiet_period=0.01,
    )
    runtime = Runtime.open(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def _organisation(rt: Runtime) -> int:
    with rt.db.session() as s:
        return tenants.create_organisation(s, "Org", "Region").id


def _analyse_all(rt: Runtime, limit_s: float = 60.0) -> list[JobRow]:
    """Assemble every ready study and run the jobs until none is runnable (bounded)."""
    registry = Registry.from_entry_points()
    time.sleep(0.05)  # the quiet period
    assemble_once(rt, registry, parse_rules(RULES))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and run_one(rt, registry, "test-worker"):
        pass
    with rt.db.session() as s:
        return s.query(JobRow).all()


def test_the_fuzz_corpus_never_ends_as_an_internal_error(rt):
    org = _organisation(rt)
    accepted: Counter[str] = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every odd value
        for m in fuzz.mutants(SEED, N_MUTANTS, fuzz.base_corpus()):
            try:
                accept_instance(rt, m.part10(), organisation_id=org, source="stow")
            except InstanceRejected:  # refused with its code: tests/security covers that
                continue
            accepted[m.mutation] += 1
        jobs = _analyse_all(rt)
    assert sum(accepted.values()) > 50, f"too few mutants reached analysis: {accepted}"
    assert len(jobs) >= sum(accepted.values()) - 10, "each accepted study is analysed"
    outcomes = Counter((j.state, j.error_code) for j in jobs)
    internal = [f"job {j.id}: {j.error}" for j in jobs if j.error_code == INTERNAL_ERROR]
    assert not internal, "\n".join(internal)
    assert {state for state, _ in outcomes} <= {"done", "failed"}, outcomes
    assert all(j.error_code for j in jobs if j.state == "failed"), outcomes
    assert all(j.attempts == 1 for j in jobs), "nothing is retried"
    assert not [j for j in jobs if j.error_code == "encoding_error"], outcomes
    with rt.db.session() as s:
        not_analysed = s.query(ResultRow).filter_by(status="not_analysed").all()
    assert all(r.reason for r in not_analysed)


def _result(rt: Runtime) -> ResultRow:
    with rt.db.session() as s:
        (row,) = s.query(ResultRow).all()
        return row


def test_a_sop_class_uid_encoded_as_a_date_is_not_analysed_with_its_reason(rt):
    # the fuzz's vr_change: (0008,0016) sent with VR DA; the SR's evidence header emptied
    # it as an invalid date and highdicom failed with KeyError: None (internal_error x5)
    org = _organisation(rt)
    ds = make_radiograph(study_instance_uid=generate_uid())
    ds["SOPClassUID"].VR = "DA"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(rt, buf.getvalue(), organisation_id=org, source="stow")
    (job,) = _analyse_all(rt)
    assert (job.state, job.error_code, job.attempts) == ("done", "", 1)
    result = _result(rt)
    assert result.status == "not_analysed"
    assert "SOPClassUID (0008,0016) with VR DA, not UI" in result.reason
    with rt.db.session() as s:
        assert s.get(StudyRow, result.study_id).state != "failed"


def test_an_empty_sop_class_uid_in_the_data_set_is_read_from_the_file_meta(rt):
    # ingest accepts it (the file meta has it, PS3.10 7.1); analysis and the SR use it too
    org = _organisation(rt)
    ds = make_radiograph(study_instance_uid=generate_uid())
    ds.SOPClassUID = ""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)  # the file meta keeps the class
    accept_instance(rt, buf.getvalue(), organisation_id=org, source="stow")
    (job,) = _analyse_all(rt)
    assert (job.state, job.error_code) == ("done", "")
    assert _result(rt).status == "analysed"


def test_an_empty_encapsulated_pixel_data_is_refused_at_ingest(rt):
    # check_pixel_data raised TypeError (bytes(None)) on it: a 500 / a failed C-STORE
    org = _organisation(rt)
    (sample,) = [s for s in fuzz.base_corpus() if s.name == "ct-rle"]
    plain = sample.plain
    e = next(e for e in fuzz.walk(plain, True) if e.tag == 0x7FE00010)
    empty = b"\xe0\x7f\x10\x00OW\0\0\0\0\0\0"  # (7FE0,0010) OW, length 0
    mutant = sample.with_dataset("empty", plain[: e.offset] + empty, "")
    with pytest.raises(MissingPixelData, match="Pixel Data .* is empty"):
        accept_instance(rt, mutant.part10(), organisation_id=org, source="stow")


@pytest.mark.parametrize("name", ["ct-rle", "dx-explicit"])
def test_pixel_data_sent_with_a_text_vr_is_refused_at_ingest(rt, name):
    # the fuzz's vr_change (7FE0,0010) OB -> UT: pydicom reads a str, and check_pixel_data
    # raised TypeError (bytes(str)) on it; a native one would reach the pixel decoder
    org = _organisation(rt)
    (sample,) = [s for s in fuzz.base_corpus() if s.name == name]
    e = next(e for e in fuzz.walk(sample.plain, True) if e.tag == 0x7FE00010)
    vr_at = e.offset + 4
    plain = sample.plain[:vr_at] + b"UT" + sample.plain[vr_at + 2 :]
    mutant = sample.with_dataset("vr_change", plain, "")
    with pytest.raises(MalformedDicom, match=r"\(7FE0,0010\) is encoded with VR UT, not a binary"):
        accept_instance(rt, mutant.part10(), organisation_id=org, source="stow")


def test_a_text_element_sent_as_numbers_is_not_analysed_with_its_reason(rt):
    # the fuzz's vr_change (0008,0070) LO -> US: the SR copied Manufacturer as an integer
    # and pydicom could not write it: TypeError, internal_error x5
    org = _organisation(rt)
    (sample,) = [s for s in fuzz.base_corpus() if s.name == "dx-explicit"]
    e = next(e for e in fuzz.walk(sample.plain, True) if e.tag == 0x00080070)
    vr_at = e.offset + 4
    plain = sample.plain[:vr_at] + b"US" + sample.plain[vr_at + 2 :]
    accept_instance(rt, sample.with_dataset("vr_change", plain, "").part10(), organisation_id=org)
    (job,) = _analyse_all(rt)
    assert (job.state, job.error_code, job.attempts) == ("done", "", 1)
    result = _result(rt)
    assert result.status == "not_analysed"
    assert "Manufacturer (0008,0070) with VR US where PS3.6 says LO" in result.reason


def test_a_patient_name_with_several_values_is_not_analysed_with_its_reason(rt):
    # the fuzz's vm_change and oversized_string on (0010,0010): the SR's Patient module
    # refused a multi-valued name ("Invalid type for a person name", the study failed)
    org = _organisation(rt)
    ds = make_radiograph(study_instance_uid=generate_uid())
    ds.PatientName = ["Doe^Jane", "Roe^Richard", "X"]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    accept_instance(rt, buf.getvalue(), organisation_id=org, source="stow")
    (job,) = _analyse_all(rt)
    assert (job.state, job.error_code, job.attempts) == ("done", "", 1)
    result = _result(rt)
    assert result.status == "not_analysed"
    assert "holds 3 values in Patient's Name (0010,0010), which has one" in result.reason


def test_an_unreadable_pixel_spacing_is_not_analysed_with_its_reason(rt):
    # a bit flip made Imager Pixel Spacing '0>15\0.15': ValueError, internal_error x5
    org = _organisation(rt)
    buf = io.BytesIO()
    make_radiograph(study_instance_uid=generate_uid()).save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert data.count(b"0.15\\0.15") == 1
    data = data.replace(b"0.15\\0.15", b"0>15\\0.15")
    accept_instance(rt, data, organisation_id=org, source="stow")
    (job,) = _analyse_all(rt)
    assert (job.state, job.error_code, job.attempts) == ("done", "", 1)
    result = _result(rt)
    assert result.status == "not_analysed"
    assert "ImagerPixelSpacing" in result.reason and "0>15" in result.reason
    assert "not two decimal numbers" in result.reason


def test_a_study_time_sent_as_an_integer_string_is_not_analysed_with_its_reason(rt):
    # the fuzz's vr_change (0008,0030) TM -> IS: the SR could not convert it to a time
    # (encoding_error, the study failed)
    org = _organisation(rt)
    (sample,) = [s for s in fuzz.base_corpus() if s.name == "dx-explicit"]
    e = next(e for e in fuzz.walk(sample.plain, True) if e.tag == 0x00080030)
    vr_at = e.offset + 4
    plain = sample.plain[:vr_at] + b"IS" + sample.plain[vr_at + 2 :]
    accept_instance(rt, sample.with_dataset("vr_change", plain, "").part10(), organisation_id=org)
    (job,) = _analyse_all(rt)
    assert (job.state, job.error_code, job.attempts) == ("done", "", 1)
    result = _result(rt)
    assert result.status == "not_analysed"
    assert "Study Time (0008,0030) with VR IS where PS3.6 says TM" in result.reason
