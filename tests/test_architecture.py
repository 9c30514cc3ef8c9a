"""The layout holds: pure code imports no I/O library; each edge library has one home; and
Radsight's own packages import one another downwards only (the layer table below)."""

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
    "pipeline/rules_reload.py",
    "pipeline/jobs.py",
    "pipeline/inputs.py",
    "errors.py",
    "monitor/metrics.py",
    "monitor/localisation.py",
    "monitor/reference.py",
    "monitor/calibration.py",
    "monitor/technical.py",
    "monitor/clinical.py",
    "monitor/drift.py",
    "monitor/charts.py",
    "monitor/html.py",
    "monitor/dashboard.py",
    "page_system.py",
    "operating_points.py",
    "admission.py",
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
    "sqlalchemy": ["store/"],  # the API names the Session type through radsight.store
    "alembic": ["store/"],
    "fastapi": ["api/", "web/"],  # web: the radiologist's pages
    # the demo plays modality and PACS; the fuzzer plays a hostile modality
    "pynetdicom": ["ingest/", "delivery/", "cli/demo.py", "testing/fuzzrun.py"],
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


#: Radsight's own packages (and top-level modules) from the bottom layer up. A module may
#: import its own package and any package of a LOWER layer, never one of its own layer or a
#: higher one; imports inside functions and under ``TYPE_CHECKING`` count too. This is the
#: data flow of DESIGN.md: ingest and pipeline over the store, review and monitor over them,
#: the HTTP API over those, the web app over the API, the server and the CLI on top.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "page_system", "redact"),  # the error tree; the page system; values out of text
    ("config", "tls"),  # settings (pydantic-settings); the DICOM TLS policy (ssl contexts)
    ("logs", "dicom"),  # logging set-up; DICOM helpers, study types (pure)
    ("algorithms",),  # the algorithm contract and the built-in algorithms (pure)
    ("operating_points", "admission"),  # thresholds in force; lifecycle states (pure)
    ("results",),  # SR / SC encoders (pure)
    ("store",),  # SQL and object storage: the only package that talks SQL
    ("runtime",),  # settings + database + files, passed down
    ("auth",),  # principals, passwords, tokens, sessions
    ("delivery",),  # C-STORE of results to destinations
    ("ingest", "pipeline"),  # one funnel for instances; assemble, route, analyse, deliver
    ("review", "monitor"),  # verdicts and the viewer; quality monitoring
    ("api",),  # the HTTP API (FastAPI)
    ("web",),  # the web app: pages over the API's authentication
    ("server",),  # `radsight serve`: listener, HTTP server and workers in one process tree
    ("cli", "testing"),  # the command line; helpers for tests against real peers
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """``radsight.store.jobs`` -> ``store``; ``radsight.errors`` -> ``errors``."""
    return module.split(".")[1]


def own_imports(source: str, rel: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a Radsight module in ``source``, at any depth.

    ``rel`` is the file's path under src/radsight, to resolve relative imports.
    """
    package = ["radsight", *rel.parts[:-1]]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module == "radsight":  # from radsight import store, web
                found += [(node.lineno, f"radsight.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, m) for line, m in found if m.startswith("radsight.")]


def test_every_package_has_a_layer():
    units = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.glob("*")}
    units -= {"__init__", "__pycache__", "py.typed"}
    assert sorted(units - set(LAYER_OF)) == [], "add new packages to LAYERS"


def test_imports_point_down_the_layers():
    back_edges = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.as_posix() == "__init__.py":
            continue
        here = rel.parts[0].removesuffix(".py")
        for line, module in own_imports(path.read_text(), rel):
            there = unit_of(module)
            if there == here or there not in LAYER_OF:
                continue  # its own package; an unknown name fails the test above
            if LAYER_OF[there] >= LAYER_OF[here]:
                back_edges.append(
                    f"src/radsight/{rel.as_posix()}:{line} imports {module} "
                    f"({here}, layer {LAYER_OF[here]} -> {there}, layer {LAYER_OF[there]})"
                )
    assert back_edges == [], "imports against the layers:\n" + "\n".join(back_edges)


@pytest.mark.parametrize(
    ("source", "rel", "imported"),
    [
        ("from radsight.pipeline.routing import x", "ingest/a.py", "radsight.pipeline.routing"),
        ("def f():\n    from radsight.web import install\n", "api/app.py", "radsight.web"),
        ("if TYPE_CHECKING:\n    import radsight.api.deps\n", "store/db.py", "radsight.api.deps"),
        ("from radsight import pipeline", "store/jobs.py", "radsight.pipeline"),
        ("from ..pipeline import jobs", "store/jobs.py", "radsight.pipeline"),
        ("from . import checks", "monitor/service.py", "radsight.monitor"),
    ],
)
def test_the_layer_check_sees_every_kind_of_import(source, rel, imported):
    """Module level, in a function, under a condition, ``from radsight import``, relative."""
    assert [m for _, m in own_imports(source, Path(rel))] == [imported]


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
