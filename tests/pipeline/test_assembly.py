"""A study is ready after its quiet period, then routed into one job per algorithm."""

from __future__ import annotations

import io
import time

import pydicom
from pydicom.uid import generate_uid

from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.routing import load_rules, parse_rules
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import studies as studystore
from radsight.store import tenants
from radsight.store.scope import Scope


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def setup(tmp_path, database_url, quiet: float) -> tuple[Runtime, int]:  # type: ignore[no-untyped-def]
    settings = load_settings(
        None, data_dir=tmp_path / "d", quiet_periods={"cxr": quiet}, database_url=database_url
    )
    rt = Runtime.open(settings)
    with rt.db.session() as s:
        org_id = tenants.create_organisation(s, "Org", "Region").id
    return rt, org_id


def test_study_waits_for_its_quiet_period(tmp_path, database_url):
    rt, org = setup(tmp_path, database_url, quiet=0.6)
    registry = Registry.from_entry_points()
    rules = load_rules(known_algorithms=registry.refs())
    study = generate_uid()
    accept_instance(rt, part10(make_radiograph(study_instance_uid=study)), organisation_id=org)
    assert assemble_once(rt, registry, rules) == 0, "still inside the quiet period"
    time.sleep(0.4)
    # a second instance restarts the quiet period
    accept_instance(
        rt, part10(make_radiograph(study_instance_uid=study, seed=2)), organisation_id=org
    )
    time.sleep(0.4)
    assert assemble_once(rt, registry, rules) == 0
    time.sleep(0.4)
    assert assemble_once(rt, registry, rules) == 1
    with rt.db.session() as s:
        (st,) = studystore.list_studies(s, scope=Scope.ALL)
        assert st.state == "routed" and st.num_instances == 2 and st.study_type == "cxr"
        (job,) = jobstore.list_jobs(s, scope=Scope.ALL)
        assert job.kind == "analyse" and job.algorithm_name == "radsight-cxr"  # built-in rules
        assert len(job.payload["sop_instance_uids"]) == 2
    # routing again is idempotent
    assert assemble_once(rt, registry, rules) == 0


def test_unroutable_study_is_recorded_not_analysed_with_reason(tmp_path, database_url):
    rt, org = setup(tmp_path, database_url, quiet=0.01)
    registry = Registry.from_entry_points()
    rules = parse_rules(
        'version: "1"\nrules: [{name: ct only, match: {modality: [CT]},'
        " algorithms: [radsight-bright-region]}]"
    )
    accept_instance(rt, part10(make_radiograph()), organisation_id=org)
    time.sleep(0.05)
    assert assemble_once(rt, registry, rules) == 1
    with rt.db.session() as s:
        (st,) = studystore.list_studies(s, scope=Scope.ALL)
        assert st.state == "not_analysed"
        assert "modality DX is not one of ['CT']" in st.state_reason
        assert jobstore.list_jobs(s, scope=Scope.ALL) == []


def test_resent_instance_is_stored_once(tmp_path, database_url):
    rt, org = setup(tmp_path, database_url, quiet=1)
    data = part10(make_radiograph())
    first = accept_instance(rt, data, organisation_id=org)
    again = accept_instance(rt, data, organisation_id=org)
    assert first.new and not again.new and first.study_id == again.study_id
    with rt.db.session() as s:
        assert studystore.count_instances(s, scope=Scope.ALL) == 1
    stored = list((tmp_path / "d" / "objects").rglob("*.dcm"))
    assert len(stored) == 1 and stored[0].read_bytes() == data, "the original is kept as sent"
