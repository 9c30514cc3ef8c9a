"""A result's outputs are a typed list: one ``sr`` and one ``sc`` per analysed frame, each
stored, delivered and served by its role and SOP class, never by its position."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, generate_uid

from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.dicom.uids import result_uid
from radsight.pipeline.deliver import run_delivery
from radsight.pipeline.routing import load_rules
from radsight.results import ENCODERS, ROLES
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import results as resultstore
from radsight.store import tenants
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow
from radsight.web import create_app
from tests.conftest import MigratedDatabases, write_rules
from tests.monitor.conftest import analyse_studies, make_org, token

ALGORITHM = "radsight-bright-region"


@pytest.fixture
def rt(tmp_path: Path, migrated_databases: MigratedDatabases) -> Iterator[Runtime]:
    migrated_databases.copy_sqlite(tmp_path / "data" / "radsight.db")  # migrated once
    runtime = Runtime.open(load_settings(None, data_dir=tmp_path / "data", unsafe_no_fsync=True))
    yield runtime
    runtime.close()


@pytest.fixture
def registry() -> Registry:
    return Registry.from_entry_points()


def two_image_study() -> list[pydicom.Dataset]:
    """A PA radiograph with a bright spot and a second image of the same study and series."""
    study, series = generate_uid(), generate_uid()
    return [
        make_radiograph(
            study_instance_uid=study,
            series_instance_uid=series,
            bright_spot=spot,
            seed=n,
            instance_number=n,
        )
        for n, spot in ((1, (0.3, 0.5, 0.1)), (2, None))
    ]


def analysed(rt: Runtime, registry: Registry, tmp_path: Path) -> tuple[int, ResultRow, list]:
    org = make_org(rt)
    study = two_image_study()
    analyse_studies(rt, registry, org, [study], tmp_path)
    with rt.db.session() as s:
        (result,) = resultstore.list_results(s, scope=Scope.ALL)
    return org, result, study


def test_the_encoders_are_registered_by_role_and_sop_class():
    assert [(e.role, e.sop_class_uid) for e in ENCODERS] == [
        ("sr", Comprehensive3DSRStorage),
        ("sc", SecondaryCaptureImageStorage),
    ]
    assert set(ROLES) == {e.role for e in ENCODERS}


def test_an_analysis_stores_one_sr_and_one_sc_per_frame(tmp_path, rt, registry):
    org, result, study = analysed(rt, registry, tmp_path)
    assert result.status == "analysed"
    assert [(o.position, o.role) for o in result.objects] == [(0, "sr"), (1, "sc"), (2, "sc")]
    seed = (org, study[0].StudyInstanceUID, ALGORITHM, "1.0.0")
    for obj in result.objects:
        ds = pydicom.dcmread(io.BytesIO(rt.files.get(obj.storage_key)))
        # the row says what the stored file is, and the UIDs are the deterministic ones
        assert (obj.sop_class_uid, obj.series_instance_uid, obj.sop_instance_uid) == (
            ds.SOPClassUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
        )
        assert ds.StudyInstanceUID == study[0].StudyInstanceUID
    sr, *captures = result.objects
    assert (sr.sop_instance_uid, sr.series_instance_uid) == (
        result_uid(*seed, "sr"),
        result_uid(*seed, "sr-series"),
    )
    assert [c.sop_instance_uid for c in captures] == [
        result_uid(*seed, "sc", ds.SOPInstanceUID, 0) for ds in study
    ]
    assert {c.series_instance_uid for c in captures} == {result_uid(*seed, "sc-series")}
    assert [o.storage_key.rsplit("/", 1)[1] for o in result.objects] == [
        "sr.dcm",
        "sc-0001.dcm",
        "sc-0002.dcm",
    ]


def test_the_api_lists_the_outputs_with_their_roles(tmp_path, rt, registry):
    org, result, _ = analysed(rt, registry, tmp_path)
    rules = load_rules(write_rules(tmp_path / "api-rules.yaml", [ALGORITHM]), registry.refs())
    with TestClient(create_app(rt, registry, rules)) as client:
        h = token(rt, "radiologist", org)
        body = client.get(f"/api/results/{result.id}", headers=h).json()
        assert [(o["role"], o["sop_class_uid"]) for o in body["outputs"]] == [
            ("sr", Comprehensive3DSRStorage),
            ("sc", SecondaryCaptureImageStorage),
            ("sc", SecondaryCaptureImageStorage),
        ]
        for out in body["outputs"]:
            got = client.get(out["url"], headers=h)
            assert got.headers["content-type"] == "application/dicom"
            ds = pydicom.dcmread(io.BytesIO(got.content))
            assert (ds.SOPInstanceUID, ds.SeriesInstanceUID) == (
                out["sop_instance_uid"],
                out["series_instance_uid"],
            )
        # the fields clients used before the list, derived from it
        (sr,) = [o for o in body["outputs"] if o["role"] == "sr"]
        assert body["sr_sop_instance_uid"] == sr["sop_instance_uid"]
        assert body["sc_series_instance_uid"] == body["outputs"][1]["series_instance_uid"]
        assert len(body["output_keys"]) == 3
        listed = client.get(f"/api/studies/{result.study_id}", headers=h).json()["results"]
        assert [o["role"] for o in listed[0]["outputs"]] == ["sr", "sc", "sc"]
        assert client.get(f"/api/results/{result.id}/files/3", headers=h).status_code == 404


def test_delivery_sends_every_object_of_the_result(tmp_path, rt, registry, storescp):
    org = make_org(rt)
    with rt.db.session() as s:
        tenants.create_destination(s, org, "pacs", storescp.ae_title, "127.0.0.1", storescp.port)
    analyse_studies(rt, registry, org, [two_image_study()], tmp_path)
    with rt.db.session() as s:
        (result,) = resultstore.list_results(s, scope=Scope.ALL)
        job = jobstore.claim_job(s, "test", 60.0, queues=["delivery"])
    assert job is not None and job.result_id == result.id
    assert run_delivery(rt, job) == 3
    received = [pydicom.dcmread(p, stop_before_pixels=True) for p in storescp.files()]
    assert sorted((d.SOPClassUID, d.SOPInstanceUID) for d in received) == sorted(
        (o.sop_class_uid, o.sop_instance_uid) for o in result.objects
    )
