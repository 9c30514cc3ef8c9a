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
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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
    #: source addresses or networks (CIDR) it may connect from; empty: any
    allowed_hosts: Mapped[list] = mapped_column(JSON, default=list)
    #: with DICOM TLS, the subject (RFC 4514 string) its client certificate must carry;
    #: empty: any certificate the CA signed
    tls_client_subject: Mapped[str] = mapped_column(String(255), default="")


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
    #: deliver over DICOM TLS (the PACS's certificate verified; never plain TCP)
    tls: Mapped[bool] = mapped_column(default=False)
    #: the name the PACS's certificate must carry; empty: ``host``
    tls_server_name: Mapped[str] = mapped_column(String(255), default="")


class StudyRow(Base):
    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("organisation_id", "study_instance_uid"),
        Index("ix_studies_state_ready", "state", "ready_at"),
        Index("ix_studies_worklist", "organisation_id", "urgent", "ai_score", "id"),
        Index("ix_studies_received", "organisation_id", "first_received_at"),
        Index("ix_studies_patient_id", "organisation_id", "patient_id"),
        Index("ix_studies_study_date", "organisation_id", "study_date"),
        Index("ix_studies_accession", "organisation_id", "accession_number"),
        #: the worklist's name search (a prefix of "FAMILY GIVEN")
        Index("ix_studies_patient_name", "organisation_id", "patient_name_search"),
        #: QIDO-RS pages through an organisation's studies newest first (limit/offset)
        Index("ix_studies_org_id", "organisation_id", "id"),
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
    # --- what the worklist and QIDO-RS search on (copied from the first instance) ---
    patient_name: Mapped[str] = mapped_column(String(256), default="")
    #: upper-case, '^' as space: what fuzzy name matching compares against
    patient_name_search: Mapped[str] = mapped_column(String(256), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    #: the DICOM StudyID (0020,0010), not this row's id
    dicom_study_id: Mapped[str] = mapped_column(String(16), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(256), default="")
    #: every modality of the study, backslash-separated (ModalitiesInStudy)
    modalities_in_study: Mapped[str] = mapped_column(String(64), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    # --- worklist priority (denormalised from results and verdicts for fast paging) ---
    #: highest study score over the study's analysed results; NULL until analysed
    ai_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: an urgent finding (e.g. intracranial haemorrhage) is over its threshold
    urgent: Mapped[bool] = mapped_column(default=False)
    #: "" -> reviewed | repeat_requested, set by the radiologist's verdicts
    review_state: Mapped[str] = mapped_column(String(16), default="")
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)


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
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)


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
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)


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
    #: the peer's address; and, for aggregated rejections (unregistered callers), how many
    #: attempts the row stands for and when the last one came
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    count: Mapped[int] = mapped_column(Integer, default=1)
    last_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
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
    analysis_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: clinical (delivered, on the worklist) | shadow (stored only: supervisors and
    #: monitoring see it), from the version's admission state when it was analysed
    mode: Mapped[str] = mapped_column(String(16), default="clinical")
    #: 0 for the first analysis; a re-analysis of the same version adds one (new UIDs)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    #: a newer clinical result of the same algorithm on the same study replaced this one
    superseded_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = _ts()
    #: the stored outputs (SR, SCs, ...), each with its role, in encoder order
    objects: Mapped[list[ResultObjectRow]] = relationship(
        order_by="ResultObjectRow.position", lazy="selectin", cascade="all, delete-orphan"
    )


class ResultObjectRow(Base):
    """One stored output of a result: its role (``sr``, ``sc``, ...), SOP class and UIDs.

    A table, not a JSON column of ``results``: "the SR of result X" is a filter on
    ``role``, and a DICOMweb lookup of an output by SOP Instance UID is an index lookup.
    """

    __tablename__ = "result_objects"
    __table_args__ = (UniqueConstraint("result_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    #: the order the encoders built them in (0, 1, ...), which is the delivery order
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    #: empty for a migrated SC whose UID could not be worked out (see migration 0004)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(512))


# --------------------------------------------------------------------------------------
# People, credentials and what they did (the review issue)


class UserRow(Base):
    """A person who signs in to the web app. Roles: radiologist, org_admin, supervisor."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    #: NULL only for a platform-wide ``admin`` signed in through single sign-on
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), index=True, nullable=True
    )
    #: a supervisor with a region sees every organisation of that region (dashboards)
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id"), nullable=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(32))
    #: argon2id, never the password itself
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = _ts()
    password_changed_at: Mapped[datetime] = _ts()
    #: sign-in failures since the last success; locked until (NULL: not locked; a lock with
    #: no end is kept as ``locked`` until an admin unlocks)
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    locked: Mapped[bool] = mapped_column(default=False)
    #: "local" (password) or "oidc"; an OIDC user's issuer and subject ("<iss>|<sub>")
    auth_provider: Mapped[str] = mapped_column(String(16), default="local")
    external_subject: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)


class ApiTokenRow(Base):
    """A bearer token for a user or for a system (a PACS, a script); only its hash is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True, index=True
    )
    #: NULL for a system token
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(64))
    #: the first characters of the token, to tell tokens apart in listings
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: radiologist | org_admin | supervisor | admin (platform-wide, organisation NULL)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = _ts()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)


class WebSessionRow(Base):
    """A signed-in browser: the cookie holds a random id whose hash is kept here."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _ts()
    expires_at: Mapped[datetime] = _ts()
    last_seen_at: Mapped[datetime] = _ts()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)


class VerdictRow(Base):
    """A physician's verdict. Never updated: a change is a new row that supersedes the old.

    kind: ``finding`` (value agree | disagree | unsure, finding_key set), ``study`` (value
    normal | abnormal), ``conclusion`` (text), ``repeat`` (request a repeat scan; text is the
    reason).
    """

    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_org_created", "organisation_id", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"), nullable=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    algorithm_name: Mapped[str] = mapped_column(String(64), default="")
    algorithm_version: Mapped[str] = mapped_column(String(32), default="")
    kind: Mapped[str] = mapped_column(String(16))
    finding_key: Mapped[str] = mapped_column(String(64), default="")
    value: Mapped[str] = mapped_column(String(16), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("verdicts.id"), nullable=True)
    created_at: Mapped[datetime] = _ts()


class AuditEventRow(Base):
    """Who did what, when: opened a study, gave a verdict, signed in, changed a threshold."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_org_created", "organisation_id", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    #: username or token name, kept even if the user is removed
    actor: Mapped[str] = mapped_column(String(128), default="")
    action: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = _ts()
    #: tamper evidence: sha256 of the previous event's hash and this event's content
    #: (``radsight audit verify`` recomputes the chain)
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64), default="")


class AuditChainStartRow(Base):
    """Where the audit chain starts (one row, written by migration 0006): events with an id
    up to ``unchained_through_id`` were written before the chain and carry no hash; every
    later event must be chained, the first linking to the start's own hash
    (:func:`radsight.store.audit.chain_genesis`)."""

    __tablename__ = "audit_chain_start"
    id: Mapped[int] = mapped_column(primary_key=True)
    unchained_through_id: Mapped[int] = mapped_column(Integer, default=0)


class SignInFailureRow(Base):
    """A failed sign-in, kept for the throttle window (per account and per address)."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_addr", "remote_addr", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), default="")
    remote_addr: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = _ts()


# --------------------------------------------------------------------------------------
# Quality (the quality monitoring issue)


class EvaluationRow(Base):
    """A calibration test of one algorithm version on a labelled reference set."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    algorithm_name: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(32))
    #: the organisation whose thresholds it ran at (NULL: platform-wide points)
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True
    )
    reference_name: Mapped[str] = mapped_column(String(256))
    #: running -> done | failed
    state: Mapped[str] = mapped_column(String(16), default="running")
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    passed: Mapped[bool | None] = mapped_column(nullable=True)
    #: headline figures, per-subgroup table, warnings (JSON)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    #: object-store key of the HTML report
    report_key: Mapped[str] = mapped_column(String(512), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = _ts()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)


class ThresholdRow(Base):
    """An operating threshold. Append-only: the newest row for a key is in force."""

    __tablename__ = "thresholds"
    __table_args__ = (
        Index("ix_thresholds_key", "algorithm_name", "algorithm_version", "organisation_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    algorithm_name: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(32))
    #: NULL: every organisation without its own
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True
    )
    #: "" for the study-level threshold
    finding_key: Mapped[str] = mapped_column(String(64), default="")
    value: Mapped[float] = mapped_column(Float)
    #: default | youden | target_sensitivity | target_specificity | manual
    method: Mapped[str] = mapped_column(String(32))
    target: Mapped[float | None] = mapped_column(Float, nullable=True)
    evaluation_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id"), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = _ts()


class AlertRow(Base):
    """A quality alert (clinical, technical, drift, calibration), raised once per key."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "resolved_at", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    #: clinical | technical | drift | calibration
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    #: what makes two alerts the same alert (no new row while one is open)
    key: Mapped[str] = mapped_column(String(255), index=True)
    algorithm_name: Mapped[str] = mapped_column(String(64), default="")
    algorithm_version: Mapped[str] = mapped_column(String(32), default="")
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True
    )
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _ts()
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    #: webhook delivery: "" (none configured) | pending | sent | failed
    webhook_state: Mapped[str] = mapped_column(String(16), default="")


# --------------------------------------------------------------------------------------
# Admission (the admission issue): every algorithm version's lifecycle, with its history


class AlgorithmStateRow(Base):
    """One recorded lifecycle state of an algorithm version at one scope.

    Append-only: the newest row per (version, scope) is in force (``radsight.admission``),
    the rows together are the version's history (who, when, why, on what evidence).
    Scope: ``organisation_id`` set (one organisation), else ``region_id`` set (a region),
    else platform-wide.
    """

    __tablename__ = "algorithm_states"
    __table_args__ = (Index("ix_algorithm_states_version", "algorithm_name", "algorithm_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    algorithm_name: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(32))
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id"), nullable=True
    )
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id"), nullable=True)
    #: registered | shadow | approved | suspended | withdrawn
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    #: the evaluation that was the evidence (approval), or that triggered a suspension
    evidence_id: Mapped[int | None] = mapped_column(ForeignKey("evaluations.id"), nullable=True)
    #: approved without passing evidence, on a supervisor's written reason
    override: Mapped[bool] = mapped_column(default=False)
    #: username, token name, or "radsight" for an automatic change
    actor: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _ts()


class AlgorithmSwitchRow(Base):
    """An organisation switching an algorithm (every version of it) on or off.

    Append-only; the newest row per (organisation, algorithm) is in force; no row: on.
    """

    __tablename__ = "algorithm_switches"
    __table_args__ = (Index("ix_algorithm_switches_org", "organisation_id", "algorithm_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    algorithm_name: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = _ts()
