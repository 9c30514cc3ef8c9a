"""accept_instance: every transfer syntax, tenancy, originals kept byte for byte."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from radsight.dicom.pixels import frames_for_analysis
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import NotDicom
from radsight.ingest.accept import accept_instance
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope
from tests._limits import LIMITS


def encode(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def orgs(runtime):  # type: ignore[no-untyped-def]
    with runtime.db.session() as s:
        a = tenants.create_organisation(s, "A", "R1").id
        b = tenants.create_organisation(s, "B", "R2").id
    return a, b


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_instances_are_stored_as_sent_and_decode(runtime, orgs, syntax):
    ds = make_radiograph(rows=128, columns=128)
    original = ds.pixel_array.copy()
    ds.compress(syntax)
    data = encode(ds)
    accepted = accept_instance(runtime, data, organisation_id=orgs[0])
    with runtime.db.session() as s:
        ((inst, _series),) = studystore.list_instances(s, accepted.study_id)
    assert inst.transfer_syntax_uid == syntax
    stored = runtime.files.get(inst.storage_key)
    assert stored == data, "the original is stored unchanged"
    ((_frame, pixels),) = frames_for_analysis(pydicom.dcmread(io.BytesIO(stored)), **LIMITS)
    assert np.array_equal(pixels, original.astype(np.float32)), "lossless round trip"


def test_same_study_from_two_organisations_stays_apart(runtime, orgs):
    data = encode(make_radiograph())
    a = accept_instance(runtime, data, organisation_id=orgs[0])
    b = accept_instance(runtime, data, organisation_id=orgs[1])
    assert a.new and b.new and a.study_id != b.study_id
    with runtime.db.session() as s:
        assert [
            st.organisation_id for st in studystore.list_studies(s, scope=Scope.of(orgs[0]))
        ] == [orgs[0]]
        assert [
            st.organisation_id for st in studystore.list_studies(s, scope=Scope.of(orgs[1]))
        ] == [orgs[1]]
        assert studystore.count_instances(s, scope=Scope.of(orgs[0])) == 1


def test_rejection_is_recorded_for_the_organisation(runtime, orgs):
    with pytest.raises(NotDicom):
        accept_instance(
            runtime, b"%PDF-1.4 not an image" * 20, organisation_id=orgs[1], source="import"
        )
    with runtime.db.session() as s:
        (row,) = studystore.list_rejections(s, scope=Scope.of(orgs[1]))
    assert row.error_code == "not_dicom" and row.source == "import"
    assert row.dimse_status is None


def test_bare_dataset_without_file_meta_is_accepted(runtime, orgs):
    ds = make_radiograph(rows=64, columns=64)
    del ds.file_meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    raw = buf.getvalue()  # a bare implicit VR data set: no preamble, no file meta
    accepted = accept_instance(runtime, raw, organisation_id=orgs[0])
    with runtime.db.session() as s:
        ((inst, _),) = studystore.list_instances(s, accepted.study_id)
    stored = pydicom.dcmread(io.BytesIO(runtime.files.get(inst.storage_key)))
    assert stored.SOPInstanceUID == ds.SOPInstanceUID
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
