"""The audit trail's hash chain, as an operator checks it: ``radsight audit verify``.

Each tamper a person with database access could try (edit a row, delete one, forge one
in its place, move one, add one around the writer) is made with plain SQL on SQLite and
PostgreSQL, and ``verify`` must exit 1 naming the event where the chain breaks.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from radsight.auth import Principal
from radsight.cli.main import cli
from radsight.config import load_settings
from radsight.runtime import Runtime
from radsight.store.audit import event_digest, record_audit, verify_chain
from radsight.store.tables import AuditEventRow


@pytest.fixture
def run(tmp_path, monkeypatch, database_url):  # type: ignore[no-untyped-def]
    """``radsight ...`` against the test database, after four changes made with the CLI."""
    for key in [k for k in __import__("os").environ if k.startswith("RADSIGHT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RADSIGHT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADSIGHT_DATABASE_URL", database_url)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args))

    for args in (
        ("org", "add", "City", "--region", "North"),
        ("ae", "add", "City", "CT1"),
        ("destination", "add", "City", "pacs", "--ae-title", "PACS", "--host", "10.0.0.9",
         "--port", "104"),
        ("destination", "disable", "City", "pacs"),
    ):  # fmt: skip
        res = invoke(*args)
        assert res.exit_code == 0, res.output
    yield invoke


@pytest.fixture
def sql(tmp_path, database_url):  # type: ignore[no-untyped-def]
    """Plain SQL on the same database: what someone with database access could run."""
    rt = Runtime.open(
        load_settings(None, data_dir=tmp_path / "data", database_url=database_url),
        run_migrations=False,
    )

    def execute(statement: str, **params: object) -> list:
        with rt.db.session() as s:
            result = s.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    yield execute
    rt.close()


def test_the_cli_changes_are_recorded_and_the_chain_is_intact(run):
    res = run("audit", "verify")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "4 events, chain intact from #1 to #4"
    listing = run("audit", "list", "--action", "destination.*").output
    assert "destination.update" in listing and "destination.create" in listing
    assert "organisation.create" not in listing and "cli:" in listing
    assert '"enabled": false' in listing


def test_an_edited_row_is_named(run, sql):
    ((original,),) = sql("SELECT detail FROM audit_events WHERE id = 2")
    original = original if isinstance(original, str) else json.dumps(original)
    sql("UPDATE audit_events SET detail = :d WHERE id = 2", d='{"ae_title": "EVIL"}')
    res = run("audit", "verify")
    assert res.exit_code == 1
    assert "event #2 was altered: its content does not match its hash" in res.output
    # put back, the event verifies again; an edit of a plain column is caught the same way
    sql("UPDATE audit_events SET detail = :d WHERE id = 2", d=original)
    assert run("audit", "verify").exit_code == 0
    sql("UPDATE audit_events SET actor = 'someone-else' WHERE id = 3")
    res = run("audit", "verify")
    assert res.exit_code == 1 and "event #3 was altered" in res.output


def test_a_deleted_row_breaks_the_chain(run, sql):
    sql("DELETE FROM audit_events WHERE id = 2")
    res = run("audit", "verify")
    assert res.exit_code == 1
    assert "chain broken at event #3: it does not follow event #1" in res.output


def test_the_deleted_start_of_the_chain_is_seen(run, sql):
    sql("DELETE FROM audit_events WHERE id = 1")
    res = run("audit", "verify")
    assert res.exit_code == 1 and "event #2 links to an earlier event that is missing" in res.output


def test_a_forged_row_in_place_of_a_deleted_one_is_found(run, sql):
    """The forger knows the algorithm and recomputes the hash: the next link still breaks."""
    (prev,) = sql("SELECT hash FROM audit_events WHERE id = 2")
    sql("DELETE FROM audit_events WHERE id = 3")
    forged = AuditEventRow(
        created_at=datetime(2026, 12, 7, 10, 0),
        actor="cli:root",
        user_id=None,
        organisation_id=1,
        action="destination.create",
        study_id=None,
        detail={"name": "elsewhere"},
        remote_addr="",
    )
    digest = event_digest(prev[0], forged)
    sql(
        "INSERT INTO audit_events (id, organisation_id, actor, action, detail, remote_addr,"
        " created_at, prev_hash, hash) VALUES (3, 1, 'cli:root', 'destination.create',"
        " :detail, '', :at, :prev, :hash)",
        detail='{"name": "elsewhere"}',
        at=forged.created_at,
        prev=prev[0],
        hash=digest,
    )
    res = run("audit", "verify")
    assert res.exit_code == 1
    assert "chain broken at event #4: it does not follow event #3" in res.output
    assert "event #3" not in res.output.split("chain broken")[0]  # the forgery itself matches


def test_moved_rows_break_the_chain(run, sql):
    """Two events swapped (contents, hashes and all): each is now out of its place."""
    cols = "organisation_id, user_id, actor, action, study_id, detail, remote_addr, created_at, prev_hash, hash"  # noqa: E501
    two = sql(f"SELECT {cols} FROM audit_events WHERE id = 2")[0]
    three = sql(f"SELECT {cols} FROM audit_events WHERE id = 3")[0]
    sets = ", ".join(f"{c.strip()} = :{c.strip()}" for c in cols.split(","))
    for target, source in ((2, three), (3, two)):
        values = dict(zip([c.strip() for c in cols.split(",")], source, strict=True))
        if not isinstance(values["detail"], str):
            values["detail"] = __import__("json").dumps(values["detail"])
        sql(f"UPDATE audit_events SET {sets} WHERE id = {target}", **values)
    res = run("audit", "verify")
    assert res.exit_code == 1 and "chain broken at event #2" in res.output


def test_a_row_added_around_the_writer_is_found(run, sql):
    sql(
        "INSERT INTO audit_events (organisation_id, actor, action, detail, remote_addr,"
        " created_at) VALUES (1, 'x', 'study.open', '{}', '', :at)",
        at=datetime(2026, 12, 7, 10, 0),
    )
    res = run("audit", "verify")
    assert res.exit_code == 1 and "event #5 is not chained" in res.output


def test_anchoring_the_head_catches_a_truncated_trail(run, sql):
    """Deleting the newest events leaves a valid chain; only an anchored head shows it."""
    head = run("audit", "head")
    assert head.exit_code == 0
    head_id, head_hash, _when = head.output.split()
    assert head_id == "4" and len(head_hash) == 64
    assert run("audit", "verify", "--anchor", head_hash).exit_code == 0
    sql("DELETE FROM audit_events WHERE id = 4")
    assert run("audit", "verify").exit_code == 0  # a hash chain alone cannot tell
    res = run("audit", "verify", "--anchor", head_hash)
    assert res.exit_code == 1 and "the anchored head" in res.output


def _rehash_from(sql, first: int, prev_hash: str) -> None:  # type: ignore[no-untyped-def]
    """What a forger who knows the algorithm does: recompute every hash from ``first`` on."""
    cols = "id, created_at, actor, user_id, organisation_id, action, study_id, detail, remote_addr"
    for r in sql(f"SELECT {cols} FROM audit_events WHERE id >= :f ORDER BY id", f=first):
        detail = r[7] if not isinstance(r[7], str) else __import__("json").loads(r[7])
        at = r[1] if isinstance(r[1], datetime) else datetime.fromisoformat(r[1])
        row = AuditEventRow(
            created_at=at, actor=r[2], user_id=r[3], organisation_id=r[4], action=r[5],
            study_id=r[6], detail=detail, remote_addr=r[8],
        )  # fmt: skip
        digest = event_digest(prev_hash, row)
        sql("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE id = :i", p=prev_hash,
            h=digest, i=r[0])  # fmt: skip
        prev_hash = digest


def test_blanked_and_edited_leading_events_are_not_taken_for_pre_chain_ones(run, sql):
    """Blank the first events' hashes, edit them, restart the chain after them: before the
    start of the chain was fixed, verify took them for events older than the chain."""
    sql("UPDATE audit_events SET hash = '', prev_hash = '' WHERE id <= 2")
    sql("UPDATE audit_events SET detail = :d WHERE id = 2", d='{"ae_title": "EVIL"}')
    _rehash_from(sql, 3, "")
    res = run("audit", "verify")
    assert res.exit_code == 1, res.output
    assert "error[audit_chain_broken]: event #1 is not chained" in res.output
    # linking the restarted chain to the start's digest does not help: #1 and #2 still show
    from radsight.store.audit import chain_genesis

    _rehash_from(sql, 3, chain_genesis(0))
    res = run("audit", "verify")
    assert res.exit_code == 1 and "event #1 is not chained" in res.output


def test_moving_the_start_of_the_chain_is_found(run, sql):
    sql("UPDATE audit_events SET hash = '', prev_hash = '' WHERE id <= 2")
    sql("UPDATE audit_chain_start SET unchained_through_id = 2")
    res = run("audit", "verify")
    assert res.exit_code == 1
    assert "event #3 links to an earlier event that is missing" in res.output
    sql("DELETE FROM audit_chain_start")  # no start: the chain starts at the first event
    res = run("audit", "verify")
    assert res.exit_code == 1 and "event #1 is not chained" in res.output


def test_a_database_migrated_with_older_events_verifies(database_url, tmp_path):
    """Events written before migration 0006 carry no hash: counted, not checked; the start
    of the chain is where the migration found the trail."""
    import sqlalchemy as sa
    from alembic import command

    from radsight.store.db import alembic_config

    command.upgrade(alembic_config(database_url), "0005")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        for n in range(2):
            conn.execute(
                sa.text(
                    "INSERT INTO audit_events (actor, action, detail, remote_addr, created_at)"
                    " VALUES ('old', 'signin', :d, '', :at)"
                ),
                {"d": f'{{"n": {n}}}', "at": datetime(2026, 1, 1)},
            )
    engine.dispose()
    settings = load_settings(None, data_dir=tmp_path / "data", database_url=database_url)
    rt = Runtime.open(settings)  # migrates to head
    try:
        with rt.db.session() as s:
            record_audit(s, None, "routing_rules.reload", detail={"version": "2"})
        with rt.db.session() as s:
            report = verify_chain(s)
        assert report.ok, report.problems
        assert report.summary() == (
            "3 events, chain intact from #3 to #3 (2 earlier events were written before the chain)"
        )
        with rt.db.session() as s:  # an event written around the writer now is refused
            s.add(
                AuditEventRow(
                    actor="x", action="study.open", detail={}, remote_addr="",
                    created_at=datetime(2026, 12, 7), prev_hash="", hash="",
                )
            )  # fmt: skip
        with rt.db.session() as s:
            report = verify_chain(s)
        assert not report.ok and "event #4 is not chained" in report.problems[0]
    finally:
        rt.close()


def test_concurrent_writers_keep_one_chain(runtime):
    """Eight writers at once (each its own connection, as gateways and workers are)."""
    who = Principal(kind="token", name="w", role="admin", organisation_id=None)
    errors: list[BaseException] = []
    per_thread, deadline = 15, time.monotonic() + 60

    def write(n: int) -> None:
        try:
            for i in range(per_thread):
                if time.monotonic() > deadline:
                    return
                with runtime.db.session() as s:
                    record_audit(s, who, "study.open", detail={"writer": n, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    with runtime.db.session() as s:
        report = verify_chain(s)
    assert report.ok, report.problems[:3]
    assert report.events == 8 * per_thread
