"""API payloads: ``XxxCreate`` in, ``XxxRead`` out."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class OrganisationCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    region: str = Field(min_length=1, max_length=128)


class OrganisationRead(_Read):
    id: int
    name: str
    region: str


class ApplicationEntityCreate(BaseModel):
    ae_title: str = Field(min_length=1, max_length=16)
    description: str = Field("", max_length=256)


class ApplicationEntityRead(_Read):
    id: int
    organisation_id: int
    ae_title: str
    description: str


class DestinationCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)


class DestinationUpdate(BaseModel):
    enabled: bool


class DestinationRead(_Read):
    id: int
    organisation_id: int
    name: str
    ae_title: str
    host: str
    port: int
    enabled: bool


class StudyRead(_Read):
    id: int
    organisation_id: int
    study_instance_uid: str
    study_type: str
    state: str
    state_reason: str
    modality: str
    study_date: str
    num_instances: int
    first_received_at: datetime
    last_received_at: datetime
    routed_at: datetime | None
    rules_version: str


class InstanceRead(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    size: int
    received_at: datetime


class JobRead(_Read):
    id: int
    organisation_id: int
    kind: str
    queue: str
    study_id: int
    algorithm_name: str
    algorithm_version: str
    result_id: int | None
    destination_id: int | None
    state: str
    attempts: int
    max_attempts: int
    error_code: str
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_after: datetime


class ResultRead(_Read):
    id: int
    organisation_id: int
    study_id: int
    algorithm_name: str
    algorithm_version: str
    status: str
    reason: str
    study_score: float | None
    verdict: str
    urgent: bool
    report: dict
    sr_sop_instance_uid: str
    sc_series_instance_uid: str
    output_keys: list[str]
    analysis_seconds: float | None
    created_at: datetime


class StudyDetail(StudyRead):
    instances: list[InstanceRead]
    results: list[ResultRead]
    jobs: list[JobRead]


class RejectionRead(_Read):
    id: int
    organisation_id: int | None
    source: str
    calling_ae_title: str
    error_code: str
    message: str
    dimse_status: int | None
    sop_instance_uid: str
    created_at: datetime


class FindingRead(BaseModel):
    key: str
    code: str
    scheme_designator: str
    meaning: str
    threshold: float
    urgent: bool


class AlgorithmRead(BaseModel):
    name: str
    version: str
    study_types: list[str]
    description: str
    time_limit_s: float
    study_threshold: float
    findings: list[FindingRead]


class Health(BaseModel):
    status: str
    version: str
    ae_title: str
    dicom_port: int
    workers: int
    jobs: dict[str, int]
    rules_version: str
