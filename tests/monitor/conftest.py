"""Helpers for the quality tests: studies through the real pipeline code, API clients."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.config import load_settings
from radsight.dicom.synthetic import make_radiograph
from radsight.ingest.accept import accept_instance
from radsight.monitor.admission import register_installed
from radsight.pipeline.analyse import run_analysis
from radsight.pipeline.assembly import assemble_once
from radsight.pipeline.routing import load_rules
from radsight.runtime import Runtime
from radsight.store import jobs as jobstore
from radsight.store import tenants
from radsight.store.clock import utcnow
from radsight.store.tables import StudyRow
from radsight.web import create_app

from ..conftest import SHARED_DATA, MigratedDatabases, write_rules

COVID_QU_EX = SHARED_DATA / "cxr" / "covid-qu-ex-adult"


@pytest.fixture
def rt(tmp_path: Path, migrated_databases: MigratedDatabases) -> Iterator[Runtime]:
    """SQLite only: for the slower end-to-end tests (the store tests use both databases).
    The default database file starts as a copy of one migrated once per session."""
    migrated_databases.copy_sqlite(tmp_path / "data" / "radsight.db")
    settings = load_settings(None, data_dir=tmp_path / "data", unsafe_no_fsync=True)
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def registry() -> Registry:
    return Registry.from_entry_points()


def dicom_bytes(ds) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def analyse_studies(
    rt: Runtime,
    registry: Registry,
    org_id: int,
    studies: list[list],
    tmp: Path,
    algorithm: str = "radsight-bright-region",
) -> None:
    """Accept each study's instances, route them, run every analysis job as a worker would.

    The installed versions get their first admission state first, as ``radsight serve``
    gives them at start (bright-region: approved by its shipped evidence)."""
    register_installed(rt, registry)
    rules = load_rules(write_rules(tmp / "rules.yaml", [algorithm]), registry.refs())
    for datasets in studies:
        for ds in datasets:
            accept_instance(rt, dicom_bytes(ds), organisation_id=org_id, source="import")
    with rt.db.session() as s:
        s.execute(update(StudyRow).where(StudyRow.state == "receiving").values(ready_at=utcnow()))
    while assemble_once(rt, registry, rules):
        pass
    while True:
        with rt.db.session() as s:
            job = jobstore.claim_job(
                s, "test", 60.0, queues=[q for q in ("analyse.cxr", "analyse.other")]
            )
        if job is None:
            break
        run_analysis(rt, registry, job)
        with rt.db.session() as s:
            jobstore.finish_job(s, job.id)


def make_org(rt: Runtime, name: str = "City Hospital", region: str = "North") -> int:
    with rt.db.session() as s:
        return tenants.create_organisation(s, name, region).id


def token(rt: Runtime, role: str, org_id: int | None, name: str = "t") -> dict[str, str]:
    with rt.db.session() as s:
        _, plain = auth.create_token(s, f"{name}-{role}", role, org_id)
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def client_for(registry: Registry, tmp_path: Path):  # type: ignore[no-untyped-def]
    clients: list[TestClient] = []
    rules = load_rules(
        write_rules(tmp_path / "api-rules.yaml", ["radsight-bright-region"]), registry.refs()
    )

    def make(runtime: Runtime) -> TestClient:
        app = create_app(runtime, registry, rules)
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def bright_study(positive: bool, seed: int, **kw: object) -> list:
    spot = (0.3, 0.5, 0.1) if positive else None
    return [make_radiograph(bright_spot=spot, seed=seed, **kw)]  # type: ignore[arg-type]


@pytest.fixture
def cxr_reference(tmp_path: Path) -> Path:
    """A real reference set: COVID-QU-Ex adult test split, normal (0) vs opacity (1)."""
    if not COVID_QU_EX.is_dir():
        pytest.skip(f"{COVID_QU_EX} is absent: the real reference-set test needs ../shared/data")
    rows = list(csv.DictReader((COVID_QU_EX / "labels.csv").open()))
    picked = [
        r for r in rows if r["official_split"] == "Test" and r["label"] in ("Normal", "Non-COVID")
    ]
    root = tmp_path / "reference"
    root.mkdir()
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "view"])
        for i, r in enumerate(picked[::2]):  # 75 images: enough for the figures, quick on 2 cores
            w.writerow(
                [str(COVID_QU_EX / r["file"]), int(r["label"] != "Normal"), "AP" if i % 3 else "PA"]
            )
    return root
