"""Algorithm versions' lifecycle over HTTP (docs/quality.md, "Admission").

Reading: any signed-in caller sees every installed or recorded version, the platform's
and the regions' records, and the states and switches of the organisations in their scope.

Changing a state: a ``supervisor`` for an organisation of their region or for the region
itself; a platform ``admin`` at any scope, and alone platform-wide. An organisation
outside the caller's scope answers 404, exactly as one that does not exist; a region not
the caller's, or the platform, answers 403. A change the lifecycle refuses (no passing
evidence, a move that does not exist, a missing reason) answers 409 with the reason.

Switching an algorithm on or off for an organisation: its ``org_admin``, a supervisor of
its region, a platform admin.
"""

from __future__ import annotations

from dataclasses import fields

from fastapi import APIRouter, Request

from radsight import auth
from radsight.algorithms.registry import Registry
from radsight.api.audit import client_address
from radsight.api.auth import PrincipalDep, ScopeDep
from radsight.api.deps import RegistryDep, RuntimeDep, SessionDep
from radsight.api.schemas import (
    AlgorithmRead,
    AlgorithmStateChange,
    AlgorithmStateRead,
    AlgorithmSwitch,
    AlgorithmSwitchRead,
    FindingRead,
)
from radsight.auth import Principal
from radsight.errors import Forbidden, InvalidInput, NotFound
from radsight.monitor import admission
from radsight.monitor.versions import Version, VersionDetail, list_versions, version_detail
from radsight.runtime import Runtime
from radsight.store import Session, tenants
from radsight.store import admission as admissionstore
from radsight.store.scope import Scope
from radsight.store.tables import AlgorithmStateRow, AlgorithmSwitchRow

router = APIRouter(tags=["algorithms"])

#: who may change a version's lifecycle state
LIFECYCLE_ROLES = ("supervisor", "admin")
#: who may switch an algorithm on or off for an organisation (their own scope)
SWITCH_ROLES = ("org_admin", "supervisor", "admin")


def ensure_may_change(
    s: Session, principal: Principal, organisation: str | None, region: str | None
) -> None:
    """Refuse a lifecycle change outside the caller's role or scope (before any is made)."""
    if principal.role not in LIFECYCLE_ROLES:
        raise Forbidden(
            f"changing an algorithm's state needs the role supervisor or admin; "
            f"you are {principal.role}"
        )
    if organisation and region:
        raise InvalidInput("give an organisation or a region, not both")
    if organisation:
        org = tenants.get_organisation(s, organisation)
        if not auth.scope_of(s, principal).includes(org.id):
            raise NotFound(f"organisation {organisation!r} does not exist")
    elif region:
        if principal.is_admin:
            return
        if principal.region_id is None or tenants.get_region(s, region).id != principal.region_id:
            raise Forbidden(
                f"a supervisor changes states for their own region only, not {region!r}"
            )
    elif not principal.is_admin:
        raise Forbidden(
            "a platform-wide change needs a platform admin; name an organisation or your region"
        )


def ensure_may_switch(s: Session, principal: Principal, organisation: str) -> int:
    """The organisation's id when the caller may switch its algorithms."""
    org = tenants.get_organisation(s, organisation)
    if not auth.scope_of(s, principal).includes(org.id):
        raise NotFound(f"organisation {organisation!r} does not exist")
    if principal.role not in SWITCH_ROLES:
        raise Forbidden(
            "switching an algorithm needs the role org_admin, supervisor or admin; "
            f"you are {principal.role}"
        )
    return org.id


def change_state(
    rt: Runtime,
    registry: Registry,
    principal: Principal,
    name: str,
    version: str,
    body: AlgorithmStateChange,
    remote_addr: str,
) -> AlgorithmStateRow:
    """Check the caller, then make the change (the API's and the page's one path)."""
    with rt.db.session() as s:
        ensure_may_change(s, principal, body.organisation, body.region)
    return admission.change_state(
        rt,
        principal,
        name,
        version,
        body.state,
        organisation=body.organisation or None,
        region=body.region or None,
        reason=body.reason,
        evidence_id=body.evidence_id,
        override=body.override,
        registry=registry,
        remote_addr=remote_addr,
    )


def switch(
    rt: Runtime,
    registry: Registry,
    principal: Principal,
    organisation: str,
    name: str,
    body: AlgorithmSwitch,
    remote_addr: str,
) -> AlgorithmSwitchRow:
    with rt.db.session() as s:
        org_id = ensure_may_switch(s, principal, organisation)
    if not body.enabled and not body.reason.strip():
        raise InvalidInput("say why the algorithm is switched off (a reason)")
    admission.set_enabled(
        rt,
        principal,
        org_id,
        name,
        body.enabled,
        reason=body.reason,
        registry=registry,
        remote_addr=remote_addr,
    )
    with rt.db.session() as s:
        rows = admissionstore.switch_history(s, scope=Scope.of(org_id))
        row = [r for r in rows if r.algorithm_name == name][-1]
        return row


def _read(v: Version, registry: Registry) -> AlgorithmRead:
    admitted = {f.name: getattr(v, f.name) for f in fields(Version)}
    try:
        a = registry.resolve(v.ref)
    except NotFound:  # recorded, no longer installed
        return AlgorithmRead(**admitted)
    return AlgorithmRead(
        **admitted,
        study_types=list(a.study_types),
        description=a.description,
        time_limit_s=a.time_limit_s,
        study_threshold=a.study_threshold,
        findings=[
            FindingRead(
                key=f.key,
                code=f.code.value,
                scheme_designator=f.code.scheme_designator,
                meaning=f.code.meaning,
                threshold=f.threshold,
                urgent=f.urgent,
            )
            for f in a.findings
        ],
    )


@router.get("/api/algorithms", response_model=list[AlgorithmRead])
def get_algorithms(
    s: SessionDep, rt: RuntimeDep, registry: RegistryDep, scope: ScopeDep
) -> list[AlgorithmRead]:
    """Every installed or recorded version: its findings, codes and thresholds; its state
    platform-wide, the regions' and organisations' states that differ, each organisation's
    state and switch (the caller's organisations), its evidence."""
    return [_read(v, registry) for v in list_versions(s, rt.settings, registry, scope=scope)]


@router.get("/api/algorithms/{algorithm}/{version}", response_model=VersionDetail)
def get_algorithm_version(
    algorithm: str,
    version: str,
    s: SessionDep,
    rt: RuntimeDep,
    registry: RegistryDep,
    scope: ScopeDep,
) -> VersionDetail:
    """One version: states in force, history, its evaluations under the acceptance rule."""
    return version_detail(s, rt.settings, registry, algorithm, version, scope=scope)


@router.post(
    "/api/algorithms/{algorithm}/{version}/state",
    response_model=AlgorithmStateRead,
    responses={
        403: {"description": "outside the caller's role or region"},
        404: {"description": "no such version, or an organisation outside the caller's scope"},
        409: {"description": "the lifecycle refuses the change; the problem's detail says why"},
    },
)
def post_state(
    algorithm: str,
    version: str,
    body: AlgorithmStateChange,
    request: Request,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: PrincipalDep,
) -> AlgorithmStateRow:
    """Move a version to a state at a scope (409 with the reason when the lifecycle
    refuses: no passing evidence, no such move, no written reason)."""
    return change_state(rt, registry, principal, algorithm, version, body, client_address(request))


@router.post("/api/organisations/{org}/algorithms/{algorithm}", response_model=AlgorithmSwitchRead)
def post_switch(
    org: str,
    algorithm: str,
    body: AlgorithmSwitch,
    request: Request,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: PrincipalDep,
) -> AlgorithmSwitchRow:
    """Switch an algorithm (every version) on or off for one organisation."""
    return switch(rt, registry, principal, org, algorithm, body, client_address(request))
