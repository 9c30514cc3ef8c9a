"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from alembic import command
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from radsight.dicom.uids import result_uid
from radsight.store.db import alembic_config, migrate


def test_migrations_match_the_models(database_url):
    migrate(database_url)
    migrate(database_url)  # idempotent
    command.check(alembic_config(database_url))  # raises if the models drifted


def test_migrations_downgrade_and_upgrade_again(database_url):
    migrate(database_url)
    command.downgrade(alembic_config(database_url), "base")
    migrate(database_url)
    command.check(alembic_config(database_url))


def _insert(conn, table, **values):  # type: ignore[no-untyped-def]
    """Insert a row at an old revision, filling the NOT NULL columns the test leaves out."""
    blanks = {
        sa.String: "",
        sa.Text: "",
        sa.Integer: 0,
        sa.Float: 0.0,
        sa.Boolean: False,
        sa.DateTime: datetime(2026, 11, 30, 12, 0),
        sa.JSON: {},
    }
    for col in table.columns:
        if col.name in values or col.nullable or col.primary_key:
            continue
        values[col.name] = next(v for t, v in blanks.items() if isinstance(col.type, t))
    return conn.execute(table.insert().values(**values)).inserted_primary_key[0]


def _old_result(url: str) -> dict[str, object]:
    """A database at revision 0003 holding one analysed result (SR + 3 SCs) and one not."""
    cfg = alembic_config(url)
    command.upgrade(cfg, "0003")
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    t = meta.tables
    seed_uid = "1.2.826.0.1.3680043.8.498.1"
    with engine.begin() as conn:
        region = _insert(conn, t["regions"], name="North")
        org = _insert(conn, t["organisations"], name="City", region_id=region)
        study = _insert(conn, t["studies"], organisation_id=org, study_instance_uid=seed_uid)
        series = _insert(
            conn, t["series"], organisation_id=org, study_id=study, series_instance_uid="1.2.3"
        )
        for uid, frames in (("1.2.3.1", 1), ("1.2.3.2", 2), ("1.2.3.3", 1)):
            _insert(
                conn,
                t["instances"],
                organisation_id=org,
                study_id=study,
                series_id=series,
                sop_instance_uid=uid,
                number_of_frames=frames,
                storage_key=f"instances/{uid}.dcm",
            )
        # the job analysed the first two instances: 3 frames, 3 SCs
        _insert(
            conn,
            t["jobs"],
            organisation_id=org,
            kind="analyse",
            dedup_key="analyse-1",
            study_id=study,
            algorithm_name="alg",
            algorithm_version="1.0.0",
            payload={"sop_instance_uids": ["1.2.3.1", "1.2.3.2"]},
        )
        keys = [f"results/1/x/alg-1.0.0/{n}.dcm" for n in ("sr", "sc-0001", "sc-0002", "sc-0003")]
        analysed = _insert(
            conn,
            t["results"],
            organisation_id=org,
            study_id=study,
            algorithm_name="alg",
            algorithm_version="1.0.0",
            status="analysed",
            sr_sop_instance_uid="1.2.9.1",
            sc_series_instance_uid="1.2.9.2",
            output_keys=keys,
        )
        refused = _insert(
            conn,
            t["results"],
            organisation_id=org,
            study_id=study,
            algorithm_name="other",
            algorithm_version="2.0.0",
            status="not_analysed",
            output_keys=[],
        )
    engine.dispose()
    seed = (org, seed_uid, "alg", "1.0.0")
    return {"analysed": analysed, "refused": refused, "keys": keys, "seed": seed}


def test_migration_0004_gives_old_outputs_their_roles(database_url):
    old = _old_result(database_url)
    migrate(database_url)
    command.check(alembic_config(database_url))
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT result_id, position, role, sop_class_uid, series_instance_uid,"
                " sop_instance_uid, storage_key FROM result_objects ORDER BY result_id, position"
            )
        ).all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("results")}
    engine.dispose()
    seed = old["seed"]
    assert [tuple(r) for r in rows] == [
        (old["analysed"], 0, "sr", Comprehensive3DSRStorage, result_uid(*seed, "sr-series"),
         "1.2.9.1", old["keys"][0]),
        (old["analysed"], 1, "sc", SecondaryCaptureImageStorage, "1.2.9.2",
         result_uid(*seed, "sc", "1.2.3.1", 0), old["keys"][1]),
        (old["analysed"], 2, "sc", SecondaryCaptureImageStorage, "1.2.9.2",
         result_uid(*seed, "sc", "1.2.3.2", 0), old["keys"][2]),
        (old["analysed"], 3, "sc", SecondaryCaptureImageStorage, "1.2.9.2",
         result_uid(*seed, "sc", "1.2.3.2", 1), old["keys"][3]),
    ]  # fmt: skip
    assert not columns & {"output_keys", "sr_sop_instance_uid", "sc_series_instance_uid"}
    # and back: the old columns, as they were
    command.downgrade(alembic_config(database_url), "0003")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        back = conn.execute(
            sa.text(
                "SELECT id, sr_sop_instance_uid, sc_series_instance_uid, output_keys"
                " FROM results ORDER BY id"
            )
        ).all()
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    decoded = [(i, sr, sc, json.loads(k) if isinstance(k, str) else k) for i, sr, sc, k in back]
    assert decoded == [
        (old["analysed"], "1.2.9.1", "1.2.9.2", old["keys"]),
        (old["refused"], "", "", []),
    ]
    assert "result_objects" not in tables


def test_migration_0004_leaves_unprovable_sc_uids_empty(database_url):
    """Instances received after the analysis: the SC UIDs cannot be worked out again."""
    old = _old_result(database_url)
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET payload = :p"), {"p": "{}"})
    engine.dispose()
    migrate(database_url)
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT role, sop_instance_uid FROM result_objects ORDER BY position")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("sr", "1.2.9.1"), ("sc", ""), ("sc", ""), ("sc", "")]
    assert len(old["keys"]) == 4
