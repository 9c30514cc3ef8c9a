"""Database rows. Every row of tenant data carries its ``organisation_id``.

Rejected input from a caller that is not registered (an unknown AE title, an unsigned
upload) has no organisation yet: that is the one place ``organisation_id`` may be NULL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _ts() -> Mapped[datetime]:
    return mapped_column(DateTime())


class RegionRow(Base):
    __tablename__ = "regions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)


class OrganisationRow(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    region_id: Mapped[int] = mapped_column(ForeignKey("regions.id"))
    created_at: Mapped[datetime] = _ts()


class ApplicationEntityRow(Base):
    """A calling AE title an organisation sends from."""

    __tablename__ = "application_entities"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")


class DestinationRow(Base):
    """Where an organisation's results are C-STOREd."""

    __tablename__ = "destinations"
    __table_args__ = (UniqueConstraint("organisation_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(default=True)


class StudyRow(Base):
    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("organisation_id", "study_instance_uid"),
        Index("ix_studies_state_ready", "state", "ready_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    study_type: Mapped[str] = mapped_column(String(16), default="")
    #: receiving -> routed (jobs made) -> analysed | not_analysed | failed (all jobs ended);
    #: receiving -> not_analysed when no routing rule matches
    state: Mapped[str] = mapped_column(String(16), default="receiving")
    state_reason: Mapped[str] = mapped_column(Text, default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    #: the patient's details stay in the DICOM files; the row keeps what routing needs
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = _ts()
    last_received_at: Mapped[datetime] = _ts()
    #: when the quiet period ends; the assembler marks the study ready after it
    ready_at: Mapped[datetime] = _ts()
    routed_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    rules_version: Mapped[str] = mapped_column(String(64), default="")


class SeriesRow(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("study_id", "series_instance_uid"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    series_description: Mapped[str] = mapped_column(String(64), default="")


class InstanceRow(Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("organisation_id", "sop_instance_uid"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    #: key in the object store
    storage_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: routing attributes (PS3.3 keywords, snake_case)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = _ts()


class RejectionRow(Base):
    """A refused instance or association, with the reason a sender's admin can act on."""

    __tablename__ = "rejections"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True, index=True
    )
    source: Mapped[str] = mapped_column(String(16))  # dimse | import | association
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    error_code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    dimse_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = _ts()


class JobRow(Base):
    """One unit of durable work: analyse (study, algorithm version) or deliver (result, dest)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "state", "queue", "run_after"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # analyse | deliver
    queue: Mapped[str] = mapped_column(String(64), default="default")
    #: makes creation idempotent: one job per (study, algorithm version) / (result, dest)
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    algorithm_name: Mapped[str] = mapped_column(String(64), default="")
    algorithm_version: Mapped[str] = mapped_column(String(32), default="")
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"), nullable=True)
    destination_id: Mapped[int | None] = mapped_column(ForeignKey("destinations.id"), nullable=True)
    #: what the job needs beyond its keys (routed instances, thresholds, rule)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    #: queued -> running -> done | failed | dead (dead-letter); running -> queued on retry
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    time_limit_s: Mapped[float] = mapped_column(Float, default=120.0)
    run_after: Mapped[datetime] = _ts()
    lease_owner: Mapped[str] = mapped_column(String(128), default="")
    #: when a message-queue runner (Celery) was last told to run it
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _ts()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)


class ResultRow(Base):
    """The outcome of one (study, algorithm version): analysed with outputs, or not."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("study_id", "algorithm_name", "algorithm_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    algorithm_name: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # analysed | not_analysed
    reason: Mapped[str] = mapped_column(Text, default="")
    study_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    verdict: Mapped[str] = mapped_column(String(16), default="")
    urgent: Mapped[bool] = mapped_column(default=False)
    report: Mapped[dict] = mapped_column(JSON, default=dict)
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sc_series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    #: object-store keys of the SR and the SC images
    output_keys: Mapped[list] = mapped_column(JSON, default=list)
    analysis_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = _ts()
