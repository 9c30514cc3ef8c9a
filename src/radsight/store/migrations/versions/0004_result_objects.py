"""result_objects: each output of a result as a typed row (role, SOP class, UIDs)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Replaces the positional ``results.output_keys`` ("index 0 is the SR, the rest are SCs"),
``results.sr_sop_instance_uid`` and ``results.sc_series_instance_uid``.

Results stored before this revision: ``output_keys[0]`` becomes the ``sr`` object, the
others ``sc`` objects, in the same order. The SR's SOP Instance UID and the SCs' Series
Instance UID come from the old columns. The UIDs the old row did not keep (the SR's series,
each SC's SOP Instance UID) are worked out again from the formula the pipeline used: a
hash of the result's seed (organisation, Study Instance UID, algorithm, version), the SCs
in the order the pipeline built them (the job's instances in row order, one per frame).
Where that gives another number of SCs than there are keys (instances received after the
analysis), the SCs' SOP Instance UIDs are left empty: they are still served by position.

Downgrade: the old columns again, from the objects in position order.
"""

import sqlalchemy as sa
from alembic import op
from pydicom.uid import generate_uid

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: radsight.dicom.uids as of this revision (frozen here: a migration does not follow code)
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

results = sa.table(
    "results",
    sa.column("id", sa.Integer),
    sa.column("organisation_id", sa.Integer),
    sa.column("study_id", sa.Integer),
    sa.column("algorithm_name", sa.String),
    sa.column("algorithm_version", sa.String),
    sa.column("sr_sop_instance_uid", sa.String),
    sa.column("sc_series_instance_uid", sa.String),
    sa.column("output_keys", sa.JSON),
)
objects = sa.table(
    "result_objects",
    sa.column("result_id", sa.Integer),
    sa.column("position", sa.Integer),
    sa.column("role", sa.String),
    sa.column("sop_class_uid", sa.String),
    sa.column("series_instance_uid", sa.String),
    sa.column("sop_instance_uid", sa.String),
    sa.column("storage_key", sa.String),
)
studies = sa.table(
    "studies", sa.column("id", sa.Integer), sa.column("study_instance_uid", sa.String)
)
series = sa.table("series", sa.column("id", sa.Integer))
instances = sa.table(
    "instances",
    sa.column("id", sa.Integer),
    sa.column("study_id", sa.Integer),
    sa.column("series_id", sa.Integer),
    sa.column("sop_instance_uid", sa.String),
    sa.column("number_of_frames", sa.Integer),
)
jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("study_id", sa.Integer),
    sa.column("algorithm_name", sa.String),
    sa.column("algorithm_version", sa.String),
    sa.column("payload", sa.JSON),
)


def _uid(*parts: object) -> str:
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts]))


def _sc_uids(conn: sa.Connection, row: sa.Row, seed: tuple) -> list[str]:
    """The SC SOP Instance UIDs in the order the pipeline built them."""
    payload = conn.scalar(
        sa.select(jobs.c.payload).where(
            jobs.c.kind == "analyse",
            jobs.c.study_id == row.study_id,
            jobs.c.algorithm_name == row.algorithm_name,
            jobs.c.algorithm_version == row.algorithm_version,
        )
        # one analysis job per (study, version) (its dedup key); the first, should there be more
        .order_by(jobs.c.id)
        .limit(1)
    )
    rows = conn.execute(
        sa.select(instances.c.sop_instance_uid, instances.c.number_of_frames)
        .join(series, series.c.id == instances.c.series_id)
        .where(instances.c.study_id == row.study_id)
        .order_by(series.c.id, instances.c.id)
    ).all()
    wanted = set((payload or {}).get("sop_instance_uids") or [uid for uid, _ in rows])
    return [
        _uid(*seed, "sc", uid, frame)
        for uid, frames in rows
        if uid in wanted
        for frame in range(frames or 1)
    ]


def upgrade() -> None:
    op.create_table(
        "result_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(["result_id"], ["results.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("result_id", "position"),
    )
    with op.batch_alter_table("result_objects") as batch:
        batch.create_index(batch.f("ix_result_objects_result_id"), ["result_id"], unique=False)
        batch.create_index(
            batch.f("ix_result_objects_sop_instance_uid"), ["sop_instance_uid"], unique=False
        )

    conn = op.get_bind()
    old = conn.execute(
        sa.select(results, studies.c.study_instance_uid)
        .join(studies, studies.c.id == results.c.study_id)
        .order_by(results.c.id)
    ).all()
    for row in old:
        keys = list(row.output_keys or [])
        if not keys:
            continue
        seed = (row.organisation_id, row.study_instance_uid, row.algorithm_name,
                row.algorithm_version)
        sc_uids = _sc_uids(conn, row, seed)
        if len(sc_uids) != len(keys) - 1:
            sc_uids = [""] * (len(keys) - 1)
        new = [
            {
                "result_id": row.id,
                "position": 0,
                "role": "sr",
                "sop_class_uid": COMPREHENSIVE_3D_SR,
                "series_instance_uid": _uid(*seed, "sr-series"),
                "sop_instance_uid": row.sr_sop_instance_uid,
                "storage_key": keys[0],
            }
        ]
        new += [
            {
                "result_id": row.id,
                "position": i,
                "role": "sc",
                "sop_class_uid": SECONDARY_CAPTURE,
                "series_instance_uid": row.sc_series_instance_uid,
                "sop_instance_uid": uid,
                "storage_key": key,
            }
            for i, (key, uid) in enumerate(zip(keys[1:], sc_uids, strict=True), start=1)
        ]
        conn.execute(objects.insert(), new)

    with op.batch_alter_table("results") as batch:
        batch.drop_column("output_keys")
        batch.drop_column("sc_series_instance_uid")
        batch.drop_column("sr_sop_instance_uid")


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(
            sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=False,
                      server_default="")
        )
        batch.add_column(
            sa.Column("sc_series_instance_uid", sa.String(length=64), nullable=False,
                      server_default="")
        )
        batch.add_column(sa.Column("output_keys", sa.JSON(), nullable=True))

    conn = op.get_bind()
    by_result: dict[int, list[sa.Row]] = {}
    for obj in conn.execute(
        sa.select(objects).order_by(objects.c.result_id, objects.c.position)
    ):
        by_result.setdefault(obj.result_id, []).append(obj)
    for result_id, objs in by_result.items():
        sr = next((o for o in objs if o.role == "sr"), None)
        sc = next((o for o in objs if o.role == "sc"), None)
        # the old shape had the SR first, then the SCs; other roles had no place in it
        ordered = [o for o in objs if o.role == "sr"] + [o for o in objs if o.role == "sc"]
        conn.execute(
            results.update()
            .where(results.c.id == result_id)
            .values(
                sr_sop_instance_uid=sr.sop_instance_uid if sr else "",
                sc_series_instance_uid=sc.series_instance_uid if sc else "",
                output_keys=[o.storage_key for o in ordered],
            )
        )
    conn.execute(results.update().where(results.c.output_keys.is_(None)).values(output_keys=[]))

    with op.batch_alter_table("results") as batch:
        batch.alter_column("output_keys", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("sr_sop_instance_uid", server_default=None)
        batch.alter_column("sc_series_instance_uid", server_default=None)
    with op.batch_alter_table("result_objects") as batch:
        batch.drop_index(batch.f("ix_result_objects_sop_instance_uid"))
        batch.drop_index(batch.f("ix_result_objects_result_id"))
    op.drop_table("result_objects")
