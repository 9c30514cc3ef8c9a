"""The supervisors' algorithm pages: ``/algorithms`` (every version, its state for each
organisation in view, its evidence) and ``/algorithms/{algorithm}/{version}`` (history,
evidence, the forms that change its state or switch it per organisation).

The forms take the API's one path (:mod:`radsight.api.routes.algorithms`): the same
permission checks, the same lifecycle rules, the same audit rows. A refusal is shown on
the page it came from.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from radsight import auth
from radsight.admission import STATES
from radsight.api.audit import client_address
from radsight.api.deps import RegistryDep, RuntimeDep, SessionDep
from radsight.api.problems import mark_html_errors
from radsight.api.routes.algorithms import (
    LIFECYCLE_ROLES,
    change_state,
    switch,
)
from radsight.api.schemas import AlgorithmStateChange, AlgorithmSwitch
from radsight.auth import Principal
from radsight.errors import AdmissionRefused, Forbidden, InvalidInput
from radsight.monitor.versions import RECENT_DAYS, list_versions, version_detail
from radsight.store import Session, tenants
from radsight.store.scope import Scope
from radsight.web.common import ALGORITHM_ROLES, PagePrincipal, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_html_errors)])

#: the buttons of the state form: state -> label
ACTIONS = {
    "approved": "Approve",
    "shadow": "Shadow",
    "suspended": "Suspend",
    "withdrawn": "Withdraw",
}


def _allowed(principal: Principal) -> None:
    if principal.role not in ALGORITHM_ROLES:
        raise Forbidden(
            f"The algorithm pages are for supervisors and admins; you are {principal.role}."
        )


def scope_choices(s: Session, principal: Principal) -> list[tuple[str, str]]:
    """(value, label) of the scopes this caller may change a state at."""
    if principal.role not in LIFECYCLE_ROLES:
        return []
    orgs = tenants.list_organisations(s, scope=auth.scope_of(s, principal))
    choices = []
    if principal.is_admin:
        choices.append(("platform", "Platform-wide"))
        regions = sorted({r.name for _, r in tenants.list_organisations(s, scope=Scope.ALL)})
        choices += [(f"region:{r}", f"Region {r}") for r in regions]
    elif principal.region_id is not None:
        regions = sorted({r.name for _, r in orgs if r.id == principal.region_id})
        choices += [(f"region:{r}", f"Region {r}") for r in regions]
    choices += [(f"organisation:{o.name}", o.name) for o, _ in orgs]
    return choices


@router.get("/algorithms")
def algorithms_page(
    request: Request, s: SessionDep, rt: RuntimeDep, registry: RegistryDep, principal: PagePrincipal
) -> Response:
    _allowed(principal)
    scope = auth.scope_of(s, principal)
    versions = list_versions(s, rt.settings, registry, scope=scope)
    organisations = [o.name for o, _ in tenants.list_organisations(s, scope=scope)]
    return render(
        request,
        "algorithms.html",
        {"versions": versions, "organisations": organisations, "recent_days": RECENT_DAYS},
    )


@router.get("/algorithms/{algorithm}/{version}")
def algorithm_page(
    request: Request,
    algorithm: str,
    version: str,
    s: SessionDep,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: PagePrincipal,
    error: Annotated[str, Query(max_length=2000)] = "",
    done: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    _allowed(principal)
    detail = version_detail(
        s, rt.settings, registry, algorithm, version, scope=auth.scope_of(s, principal)
    )
    return render(
        request,
        "algorithm.html",
        {
            "v": detail,
            "scopes": scope_choices(s, principal),
            "actions": ACTIONS,
            "error": error,
            "done": done,
            "recent_days": RECENT_DAYS,
        },
    )


def _back(algorithm: str, version: str, *, error: str = "", done: str = "") -> Response:
    url = f"/algorithms/{quote(algorithm)}/{quote(version)}"
    if error:
        url += f"?error={quote(error[:1500])}"
    elif done:
        url += f"?done={quote(done)}"
    return RedirectResponse(url, status_code=303)


@router.post("/algorithms/{algorithm}/{version}/state")
def state_form(
    request: Request,
    algorithm: str,
    version: str,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: PagePrincipal,
    state: Annotated[str, Form(max_length=16)],
    scope: Annotated[str, Form(max_length=200)] = "",
    reason: Annotated[str, Form(max_length=4000)] = "",
    evidence_id: Annotated[str, Form(max_length=12)] = "",
    override: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    _allowed(principal)
    try:
        if state not in STATES:
            raise InvalidInput(f"unknown state {state!r}")
        if evidence_id and not evidence_id.isdigit():
            raise InvalidInput(f"evidence: give an evaluation number, not {evidence_id!r}")
        kind, _, name = scope.partition(":")
        if kind not in ("platform", "region", "organisation") or (kind != "platform" and not name):
            raise InvalidInput("choose where the change applies")
        body = AlgorithmStateChange(
            state=state,  # type: ignore[arg-type]
            organisation=name if kind == "organisation" else None,
            region=name if kind == "region" else None,
            reason=reason,
            evidence_id=int(evidence_id) if evidence_id else None,
            override=bool(override),
        )
        row = change_state(
            rt, registry, principal, algorithm, version, body, client_address(request)
        )
    except (AdmissionRefused, InvalidInput, Forbidden) as exc:
        return _back(algorithm, version, error=exc.message)
    where = name if kind != "platform" else "the platform"
    return _back(
        algorithm,
        version,
        done=f"{algorithm} {version} is {row.state} for {where}"
        + (" (override)" if row.override else ""),
    )


@router.post("/algorithms/{algorithm}/{version}/switch")
def switch_form(
    request: Request,
    algorithm: str,
    version: str,
    rt: RuntimeDep,
    registry: RegistryDep,
    principal: PagePrincipal,
    organisation: Annotated[str, Form(max_length=128)],
    enabled: Annotated[str, Form(max_length=8)],
    reason: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    _allowed(principal)
    on = enabled == "on"
    try:
        switch(
            rt,
            registry,
            principal,
            organisation,
            algorithm,
            AlgorithmSwitch(enabled=on, reason=reason),
            client_address(request),
        )
    except (InvalidInput, Forbidden) as exc:
        return _back(algorithm, version, error=exc.message)
    return _back(
        algorithm,
        version,
        done=f"{algorithm} is switched {'on' if on else 'off'} for {organisation}",
    )
