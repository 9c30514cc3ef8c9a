"""Size limits, trailing data, re-sent instances and log hygiene at the one ingest funnel.

Each test reproduces a finding of issue 16 as a user meets it: an instance with 64 MiB of
zeros after it, an instance over ``max_instance_bytes`` over C-STORE, a different instance
re-sent under a known SOP Instance UID (C-STORE, import), and pydicom warnings that put a
patient's name into the log.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE

from radsight.dicom.synthetic import make_radiograph
from radsight.errors import DuplicateInstance, MalformedDicom, TooLarge
from radsight.ingest.accept import accept_instance
from radsight.ingest.dimse import start_listener
from radsight.ingest.statuses import DUPLICATE_SOP_INSTANCE, OUT_OF_RESOURCES, SUCCESS
from radsight.logs import configure_logging
from radsight.runtime import Runtime
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope

ZEROS = bytes(64 * 1024 * 1024)


def encode(ds: pydicom.Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds = copy.deepcopy(ds)
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def org(runtime: Runtime) -> int:
    with runtime.db.session() as s:
        return tenants.create_organisation(s, "A", "R1").id


def rejections(rt: Runtime, org_id: int) -> list:
    with rt.db.session() as s:
        return studystore.list_rejections(s, scope=Scope.of(org_id))


def stored_instances(rt: Runtime, org_id: int) -> int:
    with rt.db.session() as s:
        return studystore.count_instances(s, scope=Scope.of(org_id))


# --- trailing data -----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [None, 200], ids=["valid instance", "200 bytes of DICOM"])
def test_zeros_after_the_data_set_are_refused_fast(runtime, org, cut):
    good = encode(make_radiograph(rows=64, columns=64))
    data = (good if cut is None else good[:cut]) + ZEROS
    t0 = time.process_time()
    with pytest.raises(MalformedDicom, match="bytes after the end of the data set"):
        accept_instance(runtime, data, organisation_id=org, source="stow")
    assert time.process_time() - t0 < 2.0, "refused without parsing 8 million empty elements"
    assert stored_instances(runtime, org) == 0
    (row,) = rejections(runtime, org)
    assert row.error_code == "malformed_dicom" and "67108" in row.message


def test_instance_over_max_instance_bytes_is_refused_and_recorded(runtime, org):
    small = runtime.settings.model_copy(update={"max_instance_bytes": 100_000})
    rt = dataclasses.replace(runtime, settings=small)
    data = encode(make_radiograph(rows=256, columns=256))  # 131 KB of pixels
    with pytest.raises(TooLarge, match="max_instance_bytes"):
        accept_instance(rt, data, organisation_id=org, source="import")
    (row,) = rejections(runtime, org)
    assert row.error_code == "too_large"


# --- re-sent instances -------------------------------------------------------------------


def test_a_resent_instance_is_the_same_or_refused(runtime, org):
    ds = make_radiograph(rows=64, columns=64)
    first = accept_instance(runtime, encode(ds), organisation_id=org)
    assert first.new
    # the same bytes, and the same image in other transfer syntaxes: idempotent successes
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless):
        again = accept_instance(runtime, encode(ds, syntax), organisation_id=org)
        assert not again.new and again.study_id == first.study_id
    # another image under the same SOP Instance UID: refused, recorded, the first kept
    other = copy.deepcopy(ds)
    other.PatientID = "SOMEONE-ELSE"
    with pytest.raises(DuplicateInstance, match="stored sha256 [0-9a-f]{12}, received"):
        accept_instance(runtime, encode(other), organisation_id=org, source="import")
    (row,) = rejections(runtime, org)
    assert row.error_code == "duplicate_sop_instance" and row.sop_instance_uid == ds.SOPInstanceUID
    with runtime.db.session() as s:
        ((inst, _),) = studystore.list_instances(s, first.study_id)
    kept = pydicom.dcmread(io.BytesIO(runtime.files.get(inst.storage_key)))
    assert kept.PatientID == ds.PatientID


# --- C-STORE -----------------------------------------------------------------------------


@pytest.fixture
def listener(runtime, org):  # type: ignore[no-untyped-def]
    """Radsight's C-STORE SCP in this process, max_instance_bytes 100 kB, MODALITY of A."""
    settings = runtime.settings.model_copy(
        update={"max_instance_bytes": 100_000, "dicom_port": 0, "dicom_host": "127.0.0.1"}
    )
    rt = Runtime.open(settings)
    with rt.db.session() as s:
        tenants.create_application_entity(s, org, "MODALITY")
    _ae, server = start_listener(rt)
    yield rt, server.server_address[1]  # type: ignore[attr-defined]
    server.shutdown()  # type: ignore[attr-defined]
    rt.close()


def c_store(port: int, *datasets: pydicom.Dataset) -> list[int]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(datasets[0].SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSIGHT")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_c_store_over_max_instance_bytes_and_duplicates(listener, org):
    rt, port = listener
    big = make_radiograph(rows=512, columns=512)  # 512 kB of pixels, limit 100 kB
    small = make_radiograph(rows=64, columns=64)
    changed = copy.deepcopy(small)
    changed.PatientID = "SOMEONE-ELSE"
    statuses = c_store(port, big, small, small, changed)
    assert statuses == [OUT_OF_RESOURCES, SUCCESS, SUCCESS, DUPLICATE_SOP_INSTANCE]
    assert stored_instances(rt, org) == 1
    rows = {r.error_code: r for r in rejections(rt, org)}
    assert rows["too_large"].dimse_status == OUT_OF_RESOURCES
    assert "max_instance_bytes" in rows["too_large"].message
    assert rows["too_large"].sop_instance_uid == big.SOPInstanceUID
    assert rows["duplicate_sop_instance"].dimse_status == DUPLICATE_SOP_INSTANCE


# --- logs --------------------------------------------------------------------------------


def test_pydicom_warnings_never_put_element_values_in_the_log(runtime, org, capfd):
    """Names in numeric elements: pydicom's warning and the refusal both quote them."""
    configure_logging(runtime.settings.model_copy(update={"log_format": "text"}))
    try:
        ds = make_radiograph(rows=64, columns=64)
        ds.PatientName = "Doe^Johnathan"
        ds.PatientWeight = "12345.6"
        ds.InstanceNumber = "7654321"
        data = encode(ds).replace(b"12345.6 ", b"DOE^JOHN").replace(b"7654321 ", b"SMITH^AB")
        accept_instance(runtime, data, organisation_id=org, source="stow")
    finally:
        logging.captureWarnings(False)
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
    err = capfd.readouterr().err
    assert "Invalid value for VR IS" in err, err
    for value in ("DOE^JOHN", "SMITH^AB", "Doe^Johnathan"):
        assert value not in err, err
