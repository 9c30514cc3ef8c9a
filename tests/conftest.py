"""Shared fixtures: real peers (radsight serve, dcmtk storescp, Orthanc) and test data."""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from radsight.config import load_settings
from radsight.runtime import Runtime
from radsight.testing.peers import Orthanc, RadsightProcess, Storescp

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def require_tool(name: str) -> str:
    path = f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: .ci/run installs it (apt-get install dcmtk "
            "dicom3tools orthanc)"
        )
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}): real-data tests need it")
    return SHARED_DATA


#: the PostgreSQL server tests use (running on the machine and in CI; .ci/run starts it)
POSTGRES = os.environ.get("RADSIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_databases: MigratedDatabases
) -> Iterator[str]:
    """An empty database: SQLite in a temporary folder, or a fresh PostgreSQL database.

    A test that also uses ``runtime`` (which migrates its database anyway) gets a copy of
    a database migrated once per session instead: the same schema, without running every
    migration again for each test. ``Runtime.open`` still runs ``migrate`` on it (a
    no-op at head); tests/store/test_migrations.py migrates empty databases itself."""
    migrated = "runtime" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "radsight.db"
        if migrated:
            migrated_databases.copy_sqlite(path)
        yield f"sqlite:///{path}"
        return
    import psycopg

    name = f"radsight_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{migrated_databases.postgresql()}"' if migrated else ""
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"{template}')
    yield _postgres_url(name)
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_admin():  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES} is not reachable ({exc}); .ci/run starts it")


def _postgres_url(name: str) -> str:
    return f"{POSTGRES.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


class MigratedDatabases:
    """One database per backend migrated to head, made on first use; copied per test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sqlite: Path | None = None
        self._postgresql: str | None = None

    def copy_sqlite(self, to: Path) -> None:
        import sqlite3

        from radsight.store.db import migrate

        if self._sqlite is None:
            path = self.folder / "template.db"
            migrate(f"sqlite:///{path}")
            self._sqlite = path
        to.parent.mkdir(parents=True, exist_ok=True)
        src, dst = sqlite3.connect(self._sqlite), sqlite3.connect(to)
        try:
            src.backup(dst)  # a consistent copy, whatever the journal mode
        finally:
            src.close()
            dst.close()

    def postgresql(self) -> str:
        from radsight.store.db import migrate

        if self._postgresql is None:
            name = f"radsight_template_{uuid.uuid4().hex[:12]}"
            with _postgres_admin() as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            migrate(_postgres_url(name))  # its connections are closed when it returns
            self._postgresql = name
        return self._postgresql

    def drop(self) -> None:
        if self._postgresql is not None:
            with _postgres_admin() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self._postgresql}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedDatabases]:
    templates = MigratedDatabases(tmp_path_factory.mktemp("migrated"))
    yield templates
    templates.drop()


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """The store, migrated: SQLite (the embedded default) and PostgreSQL (scaled out)."""
    settings = load_settings(None, data_dir=tmp_path / "data", database_url=database_url)
    rt = Runtime.open(settings)
    yield rt
    rt.close()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Storescp]:
    require_tool("storescp")
    scp = Storescp(tmp_path / "storescp").start()
    yield scp
    scp.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    require_tool("Orthanc")
    peer = Orthanc(tmp_path / "orthanc").start()
    yield peer
    peer.stop()


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A folder on PYTHONPATH that registers extra algorithms through real entry points."""
    root = tmp_path / "plugins"
    dist = root / "radsight_test_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: radsight-test-plugins\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [radsight.algorithms]
        slow = radsight_test_algorithms:SlowAlgorithm
        poison = radsight_test_algorithms:PoisonAlgorithm
        hang = radsight_test_algorithms:HangingAlgorithm
        """)
    )
    (root / "radsight_test_algorithms.py").write_text(
        textwrap.dedent("""\
        import time
        from radsight.algorithms.bright_region import BrightRegionAlgorithm

        class SlowAlgorithm(BrightRegionAlgorithm):
            name = "test-slow"
            version = "1.0.0"
            def analyse(self, study):
                time.sleep(4.0)
                return super().analyse(study)

        class PoisonAlgorithm(BrightRegionAlgorithm):
            name = "test-poison"
            version = "1.0.0"
            def analyse(self, study):
                raise RuntimeError("this algorithm always crashes")

        class HangingAlgorithm(BrightRegionAlgorithm):
            name = "test-hang"
            version = "1.0.0"
            time_limit_s = 2.0
            def analyse(self, study):
                time.sleep(3600)
        """)
    )
    return root


def with_plugins(plugin_dir: Path) -> str:
    """PYTHONPATH for a server with the test plug-ins: the folder, then this test's path
    (so that a worktree's radsight runs, not an installed one)."""
    return os.pathsep.join(p for p in (str(plugin_dir), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: start ``radsight serve`` processes; all are stopped at the end."""
    started: list[RadsightProcess] = []

    def make(name: str = "radsight", **kwargs: object) -> RadsightProcess:
        env = dict(kwargs.pop("env", None) or {})  # type: ignore[call-overload]
        if env.get("RADSIGHT_ROUTING_RULES") == "builtin":
            del env["RADSIGHT_ROUTING_RULES"]  # the built-in rules and models
        elif "RADSIGHT_ROUTING_RULES" not in env:
            # platform tests use generated images: route them to the deterministic algorithm
            rules = write_rules(tmp_path / f"{name}-rules.yaml", ["radsight-bright-region"])
            env["RADSIGHT_ROUTING_RULES"] = str(rules)
        server = RadsightProcess(tmp_path / name, env=env, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def write_rules(path: Path, algorithms: list[str]) -> Path:
    path.write_text(
        textwrap.dedent(f"""\
        version: "test-1"
        rules:
          - name: everything
            match: {{}}
            algorithms: [{", ".join(algorithms)}]
        """)
    )
    return path


# --- admission: approve a version the way a user would -----------------------------------

#: the reason tests give when they approve a version without passing evidence
TEST_REASON = "approved for this test: it asserts what an approved version does"


def shipped_evaluation(rt: Runtime, ref: str) -> int:
    """The id of the evaluation a fresh install stored from ``name@version``'s shipped
    evidence (ids depend on how many built-ins ship evidence: never hard-code them)."""
    from radsight.store import quality
    from radsight.store.scope import Scope

    name, version = ref.split("@")
    with rt.db.session() as s:
        rows = quality.list_evaluations(s, name, version, scope=Scope.ALL)
    (row,) = [r for r in rows if r.created_by == "shipped with the package"]
    return row.id


def admit(rt: Runtime, *algorithms: object) -> None:
    """Approve each algorithm (an ``Algorithm`` or ``"name@version"``) platform-wide by
    override with a reason, as an operator would, in-process. A version approved already
    (bright-region, by its shipped evidence) is left as it is."""
    from radsight.monitor.admission import change_state, current_state

    for a in algorithms:
        if isinstance(a, str):
            name, version = a.split("@")
        else:
            name, version = a.name, a.version  # type: ignore[attr-defined]
        with rt.db.session() as s:
            if current_state(s, name, version) == "approved":
                continue
        change_state(rt, TESTS_ACTOR, name, version, "approved", reason=TEST_REASON, override=True)


@dataclass(frozen=True)
class _Actor:
    name: str = "tests"
    organisation_id: int | None = None
    user_id: int | None = None


TESTS_ACTOR = _Actor()


def approve_with_override(
    server: RadsightProcess, ref: str, reason: str = TEST_REASON, organisation: str = ""
) -> None:
    """Approve ``name@version`` without passing evidence, with a written reason, against a
    server's database, as an operator would: ``radsight algorithm approve REF --override
    --reason TEXT`` (the server registers its versions at start: call this after)."""
    org = ["--organisation", organisation] if organisation else []
    server.cli("algorithm", "approve", ref, *org, "--override", "--reason", reason)
