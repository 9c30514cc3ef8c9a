"""Scale-out: gateways dispatch jobs over RabbitMQ to Celery workers, on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pydicom
import pytest

from radsight.testing.peers import storescu
from tests.conftest import approve_with_override, with_plugins, write_rules
from tests.e2e.test_crash_recovery import sr_uids_at, write_series
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def broker_url():  # type: ignore[no-untyped-def]
    """A RabbitMQ virtual host of its own for each test (RabbitMQ runs on the machine)."""
    vhost = f"radsight-test-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"RabbitMQ is not usable ({exc}); .ci/run starts it")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("delete_vhost", vhost)


def celery_server(make_server, tmp_path, plugin_dir, broker_url, database_url, algorithms):  # type: ignore[no-untyped-def]
    rules = write_rules(tmp_path / "rules.yaml", algorithms)
    return make_server(
        workers=0,
        env={
            "PYTHONPATH": with_plugins(plugin_dir),
            "RADSIGHT_ROUTING_RULES": str(rules),
            "RADSIGHT_JOB_RUNNER": "celery",
            "RADSIGHT_BROKER_URL": broker_url,
            "RADSIGHT_DATABASE_URL": database_url,
            "RADSIGHT_JOB_LEASE_S": "3",
            "RADSIGHT_JOB_BACKOFF_S": "0.5",
            "RADSIGHT_JOB_MAX_ATTEMPTS": "2",
        },
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_celery_worker_analyses_and_delivers(
    tmp_path, make_server, storescp, plugin_dir, broker_url, database_url
):
    server = celery_server(
        make_server,
        tmp_path,
        plugin_dir,
        broker_url,
        database_url,
        ["radsight-bright-region", "test-poison"],
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    server.start_worker(concurrency=1)
    write_series(tmp_path / "study", 2)
    assert storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1").returncode == 0
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 1, 120, "the SR via a Celery worker")

    def settled() -> dict | None:
        with server.http() as http:
            jobs = {j["algorithm_name"] or "deliver": j for j in http.get("/api/jobs").json()}
        ended = all(j["state"] in ("done", "dead", "failed") for j in jobs.values())
        return jobs if len(jobs) == 3 and ended else None

    jobs = wait_for(settled, 120, "every job ended")
    assert jobs["radsight-bright-region"]["state"] == "done"
    assert jobs["deliver"]["state"] == "done"
    poison = jobs["test-poison"]
    assert poison["state"] == "dead" and poison["attempts"] == 2
    assert "always crashes" in poison["error"]
    assert "celery" in (server.data_dir / "worker.log").read_text().lower()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_kill_9_of_a_celery_worker_mid_job_runs_it_exactly_once(
    tmp_path, make_server, storescp, plugin_dir, broker_url, database_url
):
    server = celery_server(
        make_server, tmp_path, plugin_dir, broker_url, database_url, ["test-slow"]
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    approve_with_override(server, "test-slow@1.0.0")  # a plug-in without evidence
    first = server.start_worker(concurrency=1)
    write_series(tmp_path / "study", 1)
    assert storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1").returncode == 0

    def running() -> bool:
        with server.http() as http:
            return bool(http.get("/api/jobs", params={"state": "running"}).json())

    wait_for(running, 60, "the analysis running on the worker")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    server.start_worker(concurrency=1)

    def delivered() -> bool:
        with server.http() as http:
            jobs = http.get("/api/jobs").json()
        return any(j["kind"] == "deliver" and j["state"] == "done" for j in jobs)

    wait_for(delivered, 120, "the result delivered by the second worker")
    with server.http() as http:
        jobs = http.get("/api/jobs").json()
        results = http.get("/api/results").json()
    (analysis,) = [j for j in jobs if j["kind"] == "analyse"]
    assert analysis["state"] == "done" and analysis["attempts"] == 2
    assert len(results) == 1
    assert len(sr_uids_at(storescp.out_dir)) == 1


def pg_restart() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_broker_and_database_restarts_lose_nothing(
    tmp_path, make_server, storescp, plugin_dir, broker_url, database_url
):
    server = celery_server(
        make_server, tmp_path, plugin_dir, broker_url, database_url, ["radsight-bright-region"]
    )
    server.extra_env["RADSIGHT_REDISPATCH_S"] = "3"
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    server.start_worker(concurrency=1)
    studies = {name: write_series(tmp_path / name, 3) for name in ("before", "rabbit", "pg")}
    assert storescu(server.dicom_port, tmp_path / "before", calling="MODALITY1").returncode == 0
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 1, 120, "the first SR")

    # RabbitMQ goes away: studies are still received and stored; analysed once it is back
    rabbitmqctl("stop_app")
    try:
        res = storescu(server.dicom_port, tmp_path / "rabbit", calling="MODALITY1")
        assert res.returncode == 0, res.stderr
    finally:
        rabbitmqctl("start_app")
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 2, 180, "the SR after RabbitMQ came back")

    # PostgreSQL restarts while a study arrives: what was not acknowledged is sent again
    pg_restart()
    for _attempt in range(10):
        if storescu(server.dicom_port, tmp_path / "pg", calling="MODALITY1").returncode == 0:
            break
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 3, 180, "the SR after PostgreSQL")

    with server.http() as http:
        stored = {
            inst["sop_instance_uid"]
            for st in http.get("/api/studies").json()
            for inst in http.get(f"/api/studies/{st['id']}").json()["instances"]
        }
        results = http.get("/api/results").json()
    sent = {str(ds.SOPInstanceUID) for series in studies.values() for ds in series}
    assert stored == sent
    assert len(results) == 3 and all(r["status"] == "analysed" for r in results)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_celery_workers_keep_a_shadow_version_from_the_pacs_until_it_is_approved(
    tmp_path, make_server, storescp, plugin_dir, broker_url, database_url
):
    server = celery_server(
        make_server, tmp_path, plugin_dir, broker_url, database_url, ["test-slow"]
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    server.start_worker(concurrency=1)
    # test-slow ships no evidence: registered, so it runs in shadow mode
    shadow = write_series(tmp_path / "shadow", 1)
    assert storescu(server.dicom_port, tmp_path / "shadow", calling="MODALITY1").returncode == 0

    def study_of(ds) -> dict | None:  # type: ignore[no-untyped-def]
        with server.http() as http:
            for st in http.get("/api/studies").json():
                if st["study_instance_uid"] == ds.StudyInstanceUID and st["state"] in (
                    "analysed",
                    "not_analysed",
                    "failed",
                ):
                    return st
        return None

    first = wait_for(lambda: study_of(shadow[0]), 120, "the shadow analysis via a worker")
    assert first["state"] == "not_analysed"
    assert "test-slow 1.0.0 ran in shadow mode" in first["state_reason"]
    with server.http() as http:
        (result,) = http.get(f"/api/studies/{first['id']}/results").json()
        assert http.get("/api/jobs", params={"kind": "deliver"}).json() == []
    assert (result["status"], result["mode"]) == ("analysed", "shadow")

    approve_with_override(server, "test-slow@1.0.0")
    clinical = write_series(tmp_path / "clinical", 1)
    assert storescu(server.dicom_port, tmp_path / "clinical", calling="MODALITY1").returncode == 0

    def sent() -> list | None:  # every object of the result written by storescp
        with server.http() as http:
            jobs = http.get("/api/jobs", params={"kind": "deliver"}).json()
        return jobs if jobs and all(j["state"] == "done" for j in jobs) else None

    assert len(wait_for(sent, 120, "the approved version's result delivered")) == 1
    second = wait_for(lambda: study_of(clinical[0]), 60, "the second study analysed")
    assert second["state"] == "analysed"
    (sr,) = [pydicom.dcmread(p) for p in storescp.files() if pydicom.dcmread(p).Modality == "SR"]
    assert sr.StudyInstanceUID == clinical[0].StudyInstanceUID
