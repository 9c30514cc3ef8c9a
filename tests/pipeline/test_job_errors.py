"""Errors at the job edge: a caller's bad value or an unreadable stored file fail a job for
good, with their code; an unexpected exception is a retried ``internal_error``."""

from __future__ import annotations

import io
import time

import pytest
from pydicom.uid import generate_uid

from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import InvalidInput, StorageError, StoredObjectUnreadable
from radsight.ingest.accept import accept_instance
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.jobs import analyse_key
from radsight.pipeline.routing import parse_rules
from radsight.pipeline.runner import fail, run_one
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import tenants
from radsight.store.tables import InstanceRow, JobRow, StudyRow


@pytest.mark.parametrize(
    ("exc", "state", "code"),
    [
        (InvalidInput("threshold 'x' must lie in [0, 1]"), "failed", "invalid_input"),
        (
            StoredObjectUnreadable("stored object k cannot be read"),
            "failed",
            "stored_object_unreadable",
        ),
        (StorageError("disk full"), "queued", "storage_error"),
        (ValueError("a bug"), "queued", "internal_error"),
        (KeyError("a bug"), "queued", "internal_error"),
    ],
)
def test_a_failed_job_is_retried_by_the_class_of_its_error(runtime, study_id, exc, state, code):
    with runtime.db.session() as s:
        org_id = s.get(StudyRow, study_id).organisation_id
        jobstore.create_job(
            s,
            dedup_key=analyse_key(study_id, "algo", "1"),
            organisation_id=org_id,
            kind="analyse",
            study_id=study_id,
            algorithm_name="algo",
            algorithm_version="1",
            max_attempts=3,
        )
    with runtime.db.session() as s:
        job = jobstore.claim_job(s, "w", 10)
    assert fail(runtime, job, exc, "w") == state
    with runtime.db.session() as s:
        row = s.get(JobRow, job.id)
    assert (row.state, row.error_code) == (state, code)


def test_a_job_over_a_corrupted_stored_file_fails_for_good(tmp_path):
    settings = load_settings(None, data_dir=tmp_path / "d", quiet_periods={"cxr": 0.01})
    rt = Runtime.open(settings)
    try:
        registry = Registry.from_entry_points()
        with rt.db.session() as s:
            org = tenants.create_organisation(s, "Org", "Region").id
        buf = io.BytesIO()
        make_radiograph(study_instance_uid=generate_uid()).save_as(buf, enforce_file_format=True)
        accepted = accept_instance(rt, buf.getvalue(), organisation_id=org)
        with rt.db.session() as s:
            key = s.query(InstanceRow).one().storage_key
        rt.files.put(key, b"\0" * 64 + b"no longer a DICOM file")  # a failing disk
        rules = parse_rules(
            'version: "1"\nrules: [{name: r, study_types: [cxr], '
            "algorithms: [radsight-bright-region]}]"
        )
        time.sleep(0.05)
        assert assemble_once(rt, registry, rules) == 1
        assert run_one(rt, registry, "test-worker")
        assert not run_one(rt, registry, "test-worker"), "nothing is queued again"
        with rt.db.session() as s:
            (job,) = s.query(JobRow).all()
            study = s.get(StudyRow, accepted.study_id)
            assert (job.state, job.attempts) == ("failed", 1)
            assert job.error_code == "stored_object_unreadable"
            assert key in job.error and "cannot be read" in job.error
            assert study.state == "failed" and "stored_object_unreadable" in study.state_reason
    finally:
        rt.close()
