"""Admission records: algorithm versions' lifecycle states and organisations' switches.

Both tables are append-only (every change is a new row: who, when, why, on what
evidence); :mod:`radsight.admission` decides which rows are in force. This module is SQL
only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radsight.admission import StateRecord, state_in_force
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import AlgorithmStateRow, AlgorithmSwitchRow, OrganisationRow


def record_state(
    s: Session,
    algorithm_name: str,
    algorithm_version: str,
    state: str,
    *,
    organisation_id: int | None = None,
    region_id: int | None = None,
    reason: str = "",
    actor: str = "",
    evidence_id: int | None = None,
    override: bool = False,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AlgorithmStateRow:
    row = AlgorithmStateRow(
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        organisation_id=organisation_id,
        region_id=None if organisation_id is not None else region_id,
        state=state,
        reason=reason,
        actor=actor,
        evidence_id=evidence_id,
        override=override,
        detail=detail or {},
        created_at=at or utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def state_history(
    s: Session,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    *,
    scope: Scope,
) -> list[AlgorithmStateRow]:
    """Recorded states, oldest first. Platform-wide and region rows are every tenant's to
    see (they decide what runs on its studies); organisation rows only in ``scope``."""
    q = select(AlgorithmStateRow).order_by(AlgorithmStateRow.id)
    if algorithm_name is not None:
        q = q.where(AlgorithmStateRow.algorithm_name == algorithm_name)
    if algorithm_version is not None:
        q = q.where(AlgorithmStateRow.algorithm_version == algorithm_version)
    rows = list(s.scalars(q))
    return [r for r in rows if r.organisation_id is None or scope.includes(r.organisation_id)]


def records(rows: list[AlgorithmStateRow]) -> list[StateRecord]:
    return [StateRecord(r.id, r.state, r.organisation_id, r.region_id, r.created_at) for r in rows]


def known_versions(s: Session) -> set[tuple[str, str]]:
    """Every (name, version) with at least one recorded state."""
    return {
        (n, v)
        for n, v in s.execute(
            select(AlgorithmStateRow.algorithm_name, AlgorithmStateRow.algorithm_version)
        ).all()
    }


def state_for(
    s: Session, algorithm_name: str, algorithm_version: str, organisation_id: int
) -> tuple[str, AlgorithmStateRow | None]:
    """The state of a version for one organisation and the row that decided it."""
    org = s.get(OrganisationRow, organisation_id)
    region_id = org.region_id if org is not None else None
    rows = state_history(s, algorithm_name, algorithm_version, scope=Scope.ALL)
    state, rec = state_in_force(records(rows), organisation_id, region_id)
    by_id = {r.id: r for r in rows}
    return state, (by_id[rec.id] if rec is not None else None)


def states_for_organisation(
    s: Session, algorithm_name: str, versions: list[str], organisation_id: int
) -> dict[str, str]:
    """version -> state for one organisation, for the given installed versions."""
    return {v: state_for(s, algorithm_name, v, organisation_id)[0] for v in versions}


# --- switches ----------------------------------------------------------------------------


def set_switch(
    s: Session,
    organisation_id: int,
    algorithm_name: str,
    enabled: bool,
    *,
    reason: str = "",
    actor: str = "",
) -> AlgorithmSwitchRow:
    row = AlgorithmSwitchRow(
        organisation_id=organisation_id,
        algorithm_name=algorithm_name,
        enabled=enabled,
        reason=reason,
        actor=actor,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def switched_off(s: Session, organisation_id: int) -> dict[str, AlgorithmSwitchRow]:
    """algorithm name -> the row that switched it off, for one organisation."""
    rows = s.scalars(
        select(AlgorithmSwitchRow)
        .where(AlgorithmSwitchRow.organisation_id == organisation_id)
        .order_by(AlgorithmSwitchRow.id)
    ).all()
    newest: dict[str, AlgorithmSwitchRow] = {}
    for r in rows:
        newest[r.algorithm_name] = r
    return {name: r for name, r in newest.items() if not r.enabled}


def switch_history(s: Session, *, scope: Scope) -> list[AlgorithmSwitchRow]:
    q = select(AlgorithmSwitchRow).order_by(AlgorithmSwitchRow.id)
    return list(s.scalars(q.where(scope.where(AlgorithmSwitchRow.organisation_id))))
