"""The layout holds: pure code imports no I/O library; each edge library has one home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "radsight"

#: pure modules: no database, web framework, network library or ML runtime
PURE = [
    "dicom",
    "results",
    "algorithms/contract.py",
    "algorithms/bright_region.py",
    "pipeline/routing.py",
    "pipeline/jobs.py",
    "pipeline/inputs.py",
    "errors.py",
    "monitor/metrics.py",
    "monitor/reference.py",
    "monitor/calibration.py",
    "monitor/technical.py",
    "monitor/clinical.py",
    "monitor/drift.py",
    "monitor/charts.py",
    "monitor/html.py",
    "monitor/dashboard.py",
]
IO_LIBRARIES = {
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "pynetdicom",
    "httpx",
    "onnxruntime",
    "torch",
    "celery",
}

#: library -> where it may be imported (paths relative to src/radsight)
HOMES = {
    "sqlalchemy": ["store/", "api/deps.py"],  # the API only names the Session type
    "alembic": ["store/"],
    "fastapi": ["api/", "web/"],  # web: the radiologist's pages
    "pynetdicom": ["ingest/", "delivery/", "cli/demo.py"],  # the demo plays modality and PACS
    "uvicorn": ["server.py"],
    "celery": ["pipeline/celery_runner.py"],
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def files(spec: str) -> list[Path]:
    p = SRC / spec
    return sorted(p.rglob("*.py")) if p.is_dir() else [p]


@pytest.mark.parametrize("spec", PURE)
def test_pure_code_imports_no_io(spec):
    for path in files(spec):
        bad = imports(path) & IO_LIBRARIES
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


@pytest.mark.parametrize("library", sorted(HOMES))
def test_edge_libraries_live_in_their_package(library):
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if library in imports(path) and not any(rel.startswith(h) for h in HOMES[library]):
            offenders.append(rel)
    assert offenders == [], f"{library} imported outside {HOMES[library]}"


def test_modules_stay_small():
    big = [
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if len(p.read_text().splitlines()) > 650
    ]
    assert big == []


def test_error_codes_are_unique_and_mapped():
    from radsight import errors
    from radsight.ingest.statuses import STATUS_FOR_CODE

    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.RadsightError)
    ]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "every error class has its own code"
    rejected = {c.code for c in classes if issubclass(c, errors.InstanceRejected)} - {
        "instance_rejected"
    }
    assert rejected <= set(STATUS_FOR_CODE), "every instance rejection has a DIMSE status"
