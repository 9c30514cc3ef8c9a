"""API payloads: ``XxxCreate`` in, ``XxxRead`` out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from radsight.admission import State
from radsight.monitor.versions import Evidence, OrganisationState, Record


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
    #: addresses or CIDR networks it may connect from (empty: any)
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64)
    #: with DICOM TLS, the RFC 4514 subject its client certificate must have (empty: any)
    tls_client_subject: str = Field("", max_length=255)


class ApplicationEntityUpdate(BaseModel):
    """What to change; a field left out stays as it is."""

    description: str | None = Field(None, max_length=256)
    allowed_hosts: list[str] | None = Field(None, max_length=64)
    tls_client_subject: str | None = Field(None, max_length=255)


class ApplicationEntityRead(_Read):
    id: int
    organisation_id: int
    ae_title: str
    description: str
    allowed_hosts: list[str]
    tls_client_subject: str


class DestinationCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    #: deliver over DICOM TLS only, the PACS's certificate verified
    tls: bool = False
    #: the name the PACS's certificate must carry (empty: ``host``)
    tls_server_name: str = Field("", max_length=255)


class DestinationUpdate(BaseModel):
    """What to change; a field left out stays as it is."""

    enabled: bool | None = None
    tls: bool | None = None
    tls_server_name: str | None = Field(None, max_length=255)


class DestinationRead(_Read):
    id: int
    organisation_id: int
    name: str
    ae_title: str
    host: str
    port: int
    enabled: bool
    tls: bool
    tls_server_name: str


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


def result_file_url(result_id: int, position: int) -> str:
    """Where ``GET`` returns one output of a result as ``application/dicom``."""
    return f"/api/results/{result_id}/files/{position}"


class ResultObjectRead(BaseModel):
    """One output of a result: its role (``sr``, ``sc``, ...), SOP class, UIDs and URL."""

    role: str
    sop_class_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    url: str


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
    #: clinical (delivered, on radiologists' worklists) | shadow (stored only: the
    #: version is not approved for the organisation; supervisors and admins see it)
    mode: str
    #: the newer clinical result of the same algorithm that replaced this one, if any
    superseded_by_id: int | None
    #: every stored output, in encoder order (empty when not analysed)
    outputs: list[ResultObjectRead]
    #: the SR's SOP Instance UID and the SC series' UID, from ``outputs``
    sr_sop_instance_uid: str
    sc_series_instance_uid: str
    output_keys: list[str] = Field(
        description="object-store keys of the outputs, in order; use outputs[].url",
        json_schema_extra={"deprecated": True},
    )
    analysis_seconds: float | None
    #: 0 for the first analysis; n after the n-th re-analysis of this version (new UIDs)
    revision: int = 0
    #: when this revision was made
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _outputs_from_objects(cls, data: Any) -> Any:
        """A result row's typed objects -> ``outputs`` and the fields derived from them."""
        objects = getattr(data, "objects", None)
        if objects is None:
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if hasattr(data, name)}
        first = {o.role: o for o in reversed(objects)}
        fields["outputs"] = [
            ResultObjectRead(
                role=o.role,
                sop_class_uid=o.sop_class_uid,
                series_instance_uid=o.series_instance_uid,
                sop_instance_uid=o.sop_instance_uid,
                url=result_file_url(data.id, i),
            )
            for i, o in enumerate(objects)
        ]
        fields["sr_sop_instance_uid"] = first["sr"].sop_instance_uid if "sr" in first else ""
        fields["sc_series_instance_uid"] = first["sc"].series_instance_uid if "sc" in first else ""
        fields["output_keys"] = [o.storage_key for o in objects]
        return fields


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
    #: the peer's address; refused associations are aggregated: ``count`` attempts of the
    #: same kind from the same AE title and address, the last at ``last_at``
    remote_addr: str
    count: int
    last_at: datetime | None
    created_at: datetime


class FindingRead(BaseModel):
    key: str
    code: str
    scheme_designator: str
    meaning: str
    threshold: float
    urgent: bool


class AlgorithmRead(BaseModel):
    """An algorithm version: what it declares (when installed) and its admission: the state
    platform-wide, the regions' and organisations' states that differ, each organisation's
    state and switch in the caller's scope, the evidence under the acceptance rule."""

    name: str
    version: str
    installed: bool
    study_types: list[str] = []
    description: str = ""
    time_limit_s: float | None = None
    study_threshold: float | None = None
    findings: list[FindingRead] = []
    platform_state: str
    platform_reason: str
    exceptions: list[Record]
    organisations: list[OrganisationState]
    evidence: Evidence | None
    shadow_results: int
    clinical_results: int


class Health(BaseModel):
    """``/health``: only ``status`` without credentials; the rest with a token or session."""

    status: str
    version: str | None = None
    ae_title: str | None = None
    dicom_port: int | None = None
    workers: int | None = None
    jobs: dict[str, int] | None = None
    rules_version: str | None = None
    #: the rules in force: their file's content digest (changes when the file is reloaded)
    rules_digest: str | None = None


class AlgorithmStateChange(BaseModel):
    """A lifecycle change of one version at one scope (neither organisation nor region:
    platform-wide, a platform admin's)."""

    state: State
    organisation: str | None = Field(None, max_length=128, description="one organisation")
    region: str | None = Field(None, max_length=128, description="every organisation of a region")
    reason: str = Field(
        "", max_length=4000, description="why; required to suspend, withdraw, override"
    )
    evidence_id: int | None = Field(None, description="the evaluation that is the evidence")
    override: bool = Field(False, description="approve without passing evidence (needs a reason)")


class AlgorithmStateRead(_Read):
    id: int
    algorithm_name: str
    algorithm_version: str
    state: str
    organisation_id: int | None
    region_id: int | None
    reason: str
    evidence_id: int | None
    override: bool
    actor: str
    created_at: datetime


class AlgorithmSwitch(BaseModel):
    enabled: bool
    reason: str = Field("", max_length=4000, description="why; required to switch off")


class AlgorithmSwitchRead(_Read):
    organisation_id: int
    algorithm_name: str
    enabled: bool
    reason: str
    actor: str
    created_at: datetime


class UserRead(_Read):
    """A user as an admin sees it: never a password hash."""

    id: int
    username: str
    display_name: str
    #: None: a platform admin signed in through single sign-on, of no organisation
    organisation_id: int | None
    role: str
    disabled: bool
    #: failed sign-ins counting towards a lock; '' (not locked), 'until <UTC time>Z' or
    #: 'until unlocked'
    failed_sign_ins: int
    locked: str
