"""``radsight reanalyse`` against a live ``radsight serve``: storescu in, storescp out.

A test algorithm (``test-bright``, the bright-region algorithm under another name, without
shipped evidence) is installed through real entry points; a rule routes every study to it
by name. (1) A new version, installed and approved after a study was analysed, re-analyses
it (with the embedded workers, and with Celery workers): exactly one new SR reaches the
PACS, and the old result is superseded. (2) An instance that arrives after its study was
analysed is picked up: revision 1, new UIDs, one more SR.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.runtime import Runtime
from radsight.store import results as resultstore
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow, StudyRow
from radsight.testing.peers import storescu
from tests.conftest import require_tool, write_rules
from tests.e2e.test_celery import broker_url  # noqa: F401 - a fixture
from tests.e2e.test_crash_recovery import sr_uids_at
from tests.e2e.test_dicom_flow import register, wait_for

pytestmark = pytest.mark.slow

NAME = "test-bright"
PLUGIN_MODULE = "radsight_reanalyse_plugins"


def install_version(plugins: Path, version: str) -> None:
    """Install ``test-bright`` ``version`` as a package with an entry point would."""
    dist = plugins / f"radsight_test_bright_{version.replace('.', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: radsight-test-bright-{version}\nVersion: {version}\n"
    )
    cls = "BrightV" + version.replace(".", "_")
    (dist / "entry_points.txt").write_text(
        f"[radsight.algorithms]\n{NAME}-{version} = {PLUGIN_MODULE}:{cls}\n"
    )


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    root = tmp_path / "reanalyse-plugins"
    root.mkdir()
    (root / f"{PLUGIN_MODULE}.py").write_text(
        textwrap.dedent(f"""\
        from radsight.algorithms.bright_region import BrightRegionAlgorithm

        class BrightV1_0_0(BrightRegionAlgorithm):
            name = "{NAME}"
            version = "1.0.0"
            def shipped_evidence(self):
                return None

        class BrightV2_0_0(BrightV1_0_0):
            version = "2.0.0"
        """)
    )
    install_version(root, "1.0.0")
    return root


def approve(server, name: str, version: str) -> None:  # type: ignore[no-untyped-def]
    """Approve a version platform-wide with an override and a reason, as an operator does."""
    server.cli(
        "algorithm",
        "approve",
        f"{name}@{version}",
        "--override",
        "--reason",
        "tested on our own studies by the board",
    )


def start_server(make_server, tmp_path, plugins, database_url, workers=1, **env):  # type: ignore[no-untyped-def]
    rules = write_rules(tmp_path / "rules.yaml", [NAME])
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p)
    return make_server(
        workers=workers,
        env={
            "PYTHONPATH": path,  # the plug-ins, and the code under test
            "RADSIGHT_ROUTING_RULES": str(rules),
            "RADSIGHT_DATABASE_URL": database_url,
            **env,
        },
    )


def write_instance(folder: Path, study_uid: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds = make_radiograph(
        study_instance_uid=study_uid,
        bright_spot=(0.3, 0.5, 0.1),
        seed=seed,
        instance_number=seed,
    )
    path = folder / f"{seed:04d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def jobs_settled(server) -> list[dict] | None:  # type: ignore[no-untyped-def]
    with server.http() as http:
        jobs = http.get("/api/jobs", params={"limit": 1000}).json()
    if jobs and all(j["state"] in ("done", "failed", "dead") for j in jobs):
        return jobs  # type: ignore[no-any-return]
    return None


def store_of(server, database_url: str) -> Runtime:  # type: ignore[no-untyped-def]
    """The server's database and files, opened in this process (read-only use)."""
    return Runtime.open(load_settings(None, data_dir=server.data_dir, database_url=database_url))


def results_by_version(rt: Runtime, study_uid: str) -> dict[str, ResultRow]:
    with rt.db.session() as s:
        (study,) = s.scalars(select(StudyRow).where(StudyRow.study_instance_uid == study_uid))
        rows = resultstore.list_results(s, scope=Scope.ALL, study_id=study.id)
        for r in rows:
            s.expunge(r)
        return {r.algorithm_version: r for r in rows}


def sc_count_at(folder: Path) -> int:
    return sum(
        1
        for p in folder.rglob("*")
        if p.is_file()
        and pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID == SecondaryCaptureImageStorage
    )


# one database per end-to-end flow (the embedded store here, PostgreSQL with Celery and
# for the late instance): tests/pipeline/test_reanalysis.py covers both for every rule
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_new_approved_version_sends_exactly_one_new_sr(
    tmp_path, make_server, storescp, plugins, database_url
):
    server = start_server(make_server, tmp_path, plugins, database_url)
    new_version_flow(server, tmp_path, storescp, plugins, database_url, celery=False)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_new_approved_version_with_celery_workers(
    tmp_path,
    make_server,
    storescp,
    plugins,
    database_url,
    broker_url,  # noqa: F811 - the fixture imported above
):
    server = start_server(
        make_server,
        tmp_path,
        plugins,
        database_url,
        workers=0,
        RADSIGHT_JOB_RUNNER="celery",
        RADSIGHT_BROKER_URL=broker_url,
    )
    new_version_flow(server, tmp_path, storescp, plugins, database_url, celery=True)


def new_version_flow(server, tmp_path, storescp, plugins, database_url, celery: bool) -> None:  # type: ignore[no-untyped-def]
    require_tool("storescu")
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    if celery:
        server.start_worker(concurrency=1)
    approve(server, NAME, "1.0.0")
    study = generate_uid()
    write_instance(tmp_path / "study", study, seed=1)
    assert storescu(server.dicom_port, tmp_path / "study", calling="MODALITY1").returncode == 0
    (first_sr,) = wait_for(lambda: sr_uids_at(storescp.out_dir), 120, "1.0.0's SR at the PACS")
    wait_for(lambda: jobs_settled(server), 60, "the first analysis and delivery")

    # install 2.0.0 (a package with an entry point; the service restarts), then approve it
    server.stop()
    install_version(plugins, "2.0.0")
    server.start()
    if celery:
        server.start_worker(concurrency=1)
    approve(server, NAME, "2.0.0")
    out = server.cli("reanalyse", "--study", study).stdout
    assert "studies selected: 1" in out
    assert "jobs created: 1 new analyses, 0 re-analyses of changed studies" in out

    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) >= 2, 120, "2.0.0's SR at the PACS")
    wait_for(lambda: jobs_settled(server), 60, "the re-analysis and its delivery")
    srs = sr_uids_at(storescp.out_dir)
    assert len(srs) == 2, "exactly one new SR"
    (new_sr,) = set(srs) - {first_sr}
    rt = store_of(server, database_url)
    try:
        results = results_by_version(rt, study)
    finally:
        rt.close()
    assert sorted(results) == ["1.0.0", "2.0.0"]
    assert [o.sop_instance_uid for o in results["2.0.0"].objects if o.role == "sr"] == [new_sr]
    assert results["1.0.0"].superseded_by_id == results["2.0.0"].id
    assert results["2.0.0"].superseded_by_id is None
    # the study reads analysed again, and a second request finds nothing to do
    with server.http() as http:
        (st,) = http.get("/api/studies").json()
        assert st["state"] == "analysed"
    out = server.cli("reanalyse", "--study", study).stdout
    assert "jobs created: 0 new analyses, 0 re-analyses of changed studies" in out
    assert "up to date: 1" in out


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_late_instance_is_picked_up_by_reanalyse(
    tmp_path, make_server, storescp, plugins, database_url
):
    require_tool("storescu")
    server = start_server(make_server, tmp_path, plugins, database_url)
    register(server, [("archive", storescp.ae_title, storescp.port)])
    server.start()
    approve(server, NAME, "1.0.0")
    study = generate_uid()
    write_instance(tmp_path / "first", study, seed=1)
    assert storescu(server.dicom_port, tmp_path / "first", calling="MODALITY1").returncode == 0
    (first_sr,) = wait_for(lambda: sr_uids_at(storescp.out_dir), 120, "the first SR")
    wait_for(lambda: jobs_settled(server), 60, "the first analysis and delivery")
    assert sc_count_at(storescp.out_dir) == 1

    write_instance(tmp_path / "late", study, seed=2)
    assert storescu(server.dicom_port, tmp_path / "late", calling="MODALITY1").returncode == 0

    def study_row() -> dict | None:
        with server.http() as http:
            (st,) = http.get("/api/studies").json()
        return st if st["num_instances"] == 2 else None  # type: ignore[no-any-return]

    assert wait_for(study_row, 30, "the late instance stored")["state"] == "analysed"
    out = server.cli("reanalyse", "--study", study).stdout
    assert "jobs created: 0 new analyses, 1 re-analyses of changed studies" in out
    assert "1 instance(s) not in the analysed input" in out

    wait_for(lambda: len(sr_uids_at(storescp.out_dir)) >= 2, 120, "the revision's SR")
    wait_for(lambda: jobs_settled(server), 60, "the re-analysis and its delivery")
    srs = sr_uids_at(storescp.out_dir)
    assert len(srs) == 2 and first_sr in srs
    (new_sr,) = set(srs) - {first_sr}
    assert new_sr != first_sr
    assert sc_count_at(storescp.out_dir) == 1 + 2, "the revision's SCs cover both instances"
    with server.http() as http:
        (st,) = http.get("/api/studies").json()
        (result,) = http.get(f"/api/studies/{st['id']}").json()["results"]
    assert result["revision"] == 1 and result["sr_sop_instance_uid"] == new_sr
    assert [o["role"] for o in result["outputs"]] == ["sr", "sc", "sc"]
    assert st["state"] == "analysed"
