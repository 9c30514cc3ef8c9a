"""kill -9 while receiving and while analysing; poison and hanging algorithms."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from radsight.dicom.synthetic import make_radiograph
from radsight.testing.peers import dcmtk, echoscu, storescu
from tests.conftest import approve_with_override, with_plugins, write_rules
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow


def write_series(folder: Path, n: int, rows: int = 512) -> list[pydicom.Dataset]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = make_radiograph(
            study_instance_uid=study,
            series_instance_uid=series,
            rows=rows,
            columns=rows,
            seed=i,
            instance_number=i + 1,
        )
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def acknowledged(storescu_log: str, files: list[Path]) -> set[str]:
    """SOP Instance UIDs storescu saw a Success response for (storescu -v order)."""
    acked = set()
    current = None
    for line in storescu_log.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acked.add(str(pydicom.dcmread(current, stop_before_pixels=True).SOPInstanceUID))
            current = None
    return acked


def sr_uids_at(folder: Path) -> list[str]:
    uids = []
    for p in folder.rglob("*"):
        if p.is_file():
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            if ds.Modality == "SR":
                uids.append(str(ds.SOPInstanceUID))
    return uids


def stored_uids(server) -> set[str]:  # type: ignore[no-untyped-def]
    with server.http() as http:
        uids = set()
        for st in http.get("/api/studies", params={"limit": 1000}).json():
            for inst in http.get(f"/api/studies/{st['id']}").json()["instances"]:
                uids.add(inst["sop_instance_uid"])
    return uids


def test_kill_9_while_receiving_loses_no_acknowledged_instance(tmp_path, make_server, storescp):
    server = make_server(workers=1)
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    files_dir = tmp_path / "study"
    sent = write_series(files_dir, 60, rows=1024)
    files = sorted(files_dir.glob("*.dcm"))
    proc = subprocess.Popen(
        [
            dcmtk("storescu"),
            "-v",
            "-aet",
            "MODALITY1",
            "-aec",
            "RADSIGHT",
            "127.0.0.1",
            str(server.dicom_port),
            *map(str, files),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # wait until some, not all, instances are in, then pull the plug
    wait_for(
        lambda: len(list((server.data_dir / "objects").rglob("*.dcm"))) >= 10,
        60,
        "10 instances stored",
    )
    server.kill()
    out, _ = proc.communicate(timeout=60)
    acked = acknowledged(out, files)
    assert 0 < len(acked) < len(files), "the kill came in the middle of the association"

    server.start()
    assert acked <= stored_uids(server), "every acknowledged instance survived kill -9"
    # the modality sends the study again; it is completed and analysed exactly once
    res = storescu(server.dicom_port, files_dir, calling="MODALITY1")
    assert res.returncode == 0, res.stderr
    assert stored_uids(server) == {str(d.SOPInstanceUID) for d in sent}
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) >= 1, 120, "the SR at storescp")
    time.sleep(3)  # a second, wrong SR would arrive within this time
    assert len(set(sr_uids_at(storescp.out_dir))) == 1
    with server.http() as http:
        results = http.get("/api/results").json()
    assert len(results) == 1


def test_kill_9_while_analysing_gives_exactly_one_result(
    tmp_path, make_server, storescp, plugin_dir, database_url
):
    rules = write_rules(tmp_path / "rules.yaml", ["test-slow"])
    server = make_server(
        workers=1,
        env={
            "PYTHONPATH": with_plugins(plugin_dir),
            "RADSIGHT_ROUTING_RULES": str(rules),
            "RADSIGHT_JOB_LEASE_S": "3",
            "RADSIGHT_DATABASE_URL": database_url,
            "RADSIGHT_JOB_BACKOFF_S": "0.5",
        },
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    approve_with_override(server, "test-slow@1.0.0")  # a plug-in without evidence
    write_series(tmp_path / "study", 1)
    assert storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1").returncode == 0

    def running() -> bool:
        with server.http() as http:
            return bool(http.get("/api/jobs", params={"state": "running"}).json())

    wait_for(running, 60, "the analysis job to be running")
    server.kill()
    server.start()

    def delivered() -> bool:
        with server.http() as http:
            jobs = http.get("/api/jobs").json()
        return any(j["kind"] == "deliver" and j["state"] == "done" for j in jobs)

    wait_for(delivered, 120, "the result to be delivered after the restart")
    time.sleep(2)
    with server.http() as http:
        jobs = http.get("/api/jobs").json()
        results = http.get("/api/results").json()
    analyse = [j for j in jobs if j["kind"] == "analyse"]
    assert len(analyse) == 1 and analyse[0]["state"] == "done"
    assert analyse[0]["attempts"] == 2, "the killed attempt counted, the second finished"
    assert len(results) == 1 and results[0]["algorithm_name"] == "test-slow"
    assert len(sr_uids_at(storescp.out_dir)) == 1
    assert len([j for j in jobs if j["kind"] == "deliver"]) == 1


def test_poison_and_hanging_algorithms_end_dead_lettered_without_blocking(
    tmp_path, make_server, storescp, plugin_dir
):
    rules = write_rules(
        tmp_path / "rules.yaml", ["test-poison", "test-hang", "radsight-bright-region"]
    )
    server = make_server(
        workers=2,
        env={
            "PYTHONPATH": with_plugins(plugin_dir),
            "RADSIGHT_ROUTING_RULES": str(rules),
            "RADSIGHT_JOB_MAX_ATTEMPTS": "2",
            "RADSIGHT_JOB_BACKOFF_S": "0.2",
        },
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    write_series(tmp_path / "study", 1)
    assert storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1").returncode == 0

    def settled() -> list | None:
        with server.http() as http:
            jobs = http.get("/api/jobs", params={"kind": "analyse"}).json()
        done = [j for j in jobs if j["state"] in ("done", "failed", "dead")]
        return jobs if len(jobs) == 3 and len(done) == 3 else None

    jobs = {j["algorithm_name"]: j for j in wait_for(settled, 120, "all analysis jobs ended")}
    assert jobs["test-poison"]["state"] == "dead"
    assert jobs["test-poison"]["attempts"] == 2
    assert "always crashes" in jobs["test-poison"]["error"]
    assert jobs["test-hang"]["state"] == "dead"
    assert jobs["test-hang"]["error_code"] == "time_limit_exceeded"
    assert jobs["radsight-bright-region"]["state"] == "done"
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 1, 60, "the good algorithm's SR")
    with server.http() as http:
        (study,) = http.get("/api/studies").json()
    assert study["state"] == "analysed", "one algorithm answered; the study is not stuck"
    listing = server.cli("jobs", "--state", "dead").stdout
    assert "test-poison" in listing and "test-hang" in listing
    assert echoscu(server.dicom_port, calling="MODALITY1").returncode == 0


def test_failed_destination_retries_without_blocking_others(tmp_path, make_server, storescp):
    from radsight.testing.peers import free_port

    dead_port = free_port()  # nothing listens there
    server = make_server(
        workers=1, env={"RADSIGHT_JOB_BACKOFF_S": "0.5", "RADSIGHT_DELIVERY_MAX_ATTEMPTS": "3"}
    )
    server.cli("org", "add", "Down Clinic", "--region", "North")
    server.cli("ae", "add", "Down Clinic", "MOD_DOWN")
    server.cli(
        "destination",
        "add",
        "Down Clinic",
        "broken",
        "--ae-title",
        "GONE",
        "--host",
        "127.0.0.1",
        "--port",
        str(dead_port),
    )
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    write_series(tmp_path / "a", 1)
    write_series(tmp_path / "b", 1)
    assert storescu(server.dicom_port, tmp_path / "a", calling="MOD_DOWN").returncode == 0
    assert storescu(server.dicom_port, tmp_path / "b", calling="MODALITY1").returncode == 0
    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) == 1, 60, "the working clinic's SR")

    def broken_dead() -> list | None:
        with server.http() as http:
            jobs = http.get("/api/jobs", params={"kind": "deliver"}).json()
        dead = [j for j in jobs if j["state"] == "dead"]
        return dead or None

    (dead,) = wait_for(broken_dead, 60, "the broken delivery to be dead-lettered")
    assert dead["attempts"] == 3 and dead["error_code"] == "delivery_error"
    assert "cannot reach" in dead["error"] or "not established" in dead["error"]
    with server.http() as http:
        results = http.get("/api/results").json()
    assert len(results) == 2, "the down clinic's study is analysed and kept for redelivery"
    # the operator fixes the network and retries: nothing was dropped
    with server.http() as http:
        assert http.post(f"/api/jobs/{dead['id']}/retry").json()["state"] == "queued"


def children_of(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_with_its_workers(make_server, signal_name):
    import os
    import signal

    server = make_server(workers=2)
    server.start()
    pid = server.proc.pid
    workers = wait_for(
        lambda: children_of(pid) if len(children_of(pid)) >= 2 else None, 30, "two worker processes"
    )
    os.kill(pid, getattr(signal, signal_name))
    assert server.proc.wait(30) == 0
    server.proc = None
    wait_for(
        lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 15, "the workers to exit"
    )
    log = server.log()
    assert "radsight stopped" in log and "Traceback" not in log
