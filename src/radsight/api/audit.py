"""What the HTTP edge records in the audit trail: reads of patient data and changes.

Every route that returns patient data calls :func:`record_read` before the data leaves
(``tests/api/test_audit_coverage.py`` holds every such route to it); every change of
organisations, AE titles and destinations calls :func:`record_change`. The chain, the
lock and the throttle are :mod:`radsight.store.audit`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from radsight.auth import Principal
from radsight.store import Session
from radsight.store.audit import record_access, record_audit


def client_address(request: Request) -> str:
    """The client's address, the one meaning everywhere (the sign-in throttle, the audit
    trail): the connection's peer, or what a ``trusted_proxies`` proxy forwarded for it
    (uvicorn puts that in ``request.client``; from anyone else the header is ignored)."""
    return request.client.host if request.client else ""


def record_read(
    s: Session,
    principal: Principal,
    request: Request,
    action: str,
    *,
    organisation_id: int | None = None,
    study_id: int | None = None,
    detail: dict[str, Any] | None = None,
    throttle: bool = False,
) -> None:
    """A read of patient data, committed before the answer is sent.

    ``throttle``: a stream of image requests (frames, rendered images, thumbnails) is
    recorded at most once per user, address, study and action per minute.
    """
    record_access(
        s,
        principal,
        action,
        organisation_id=principal.organisation_id if organisation_id is None else organisation_id,
        study_id=study_id,
        detail={"path": request.url.path, **(detail or {})},
        remote_addr=client_address(request),
        throttle=throttle,
    )


def record_change(
    s: Session,
    principal: Principal,
    request: Request,
    action: str,
    organisation_id: int | None,
    detail: dict[str, Any],
) -> None:
    """A change made through the API, in the same transaction as the change (the last
    write of its unit of work: the audit chain's lock is held to the commit)."""
    record_audit(
        s,
        principal,
        action,
        organisation_id=organisation_id,
        detail=detail,
        remote_addr=client_address(request),
    )
