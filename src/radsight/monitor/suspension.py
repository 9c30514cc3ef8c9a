"""Automatic suspension (docs/quality.md, "Automatic suspension").

A conclusive failure of an approved version - a calibration test whose AUROC's whole 95 %
CI lies below the acceptance bar, or (when ``auto_suspend_on_clinical`` is set) a clinical
figure whose whole CI lies below its bar - suspends it at the failure's scope: the
organisation the evidence is about, or the platform for a platform-wide calibration test.
The platform does this as the ``radsight`` actor through the same lifecycle change a
supervisor makes (:func:`radsight.monitor.admission.change_state`), so the state history
and the audit trail show it; only a person reinstates the version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from radsight.errors import AdmissionRefused
from radsight.monitor.admission import SYSTEM, change_state, current_state
from radsight.runtime import Runtime
from radsight.store import admission as admissionstore
from radsight.store import tenants
from radsight.store.scope import Scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suspension:
    """A suspension the platform made: where, and the state row that records it."""

    scope: str  # "organisation <name>" or "platform"
    organisation_id: int | None
    state_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "organisation_id": self.organisation_id,
            "state_id": self.state_id,
        }


def suspend_if_approved(
    rt: Runtime,
    name: str,
    version: str,
    *,
    organisation_id: int | None,
    why: str,
    evidence_id: int | None = None,
) -> Suspension | None:
    """Suspend ``name`` ``version`` for one organisation (None: platform-wide) when it is
    approved there; return what was done, or None when it was approved nowhere in that
    scope (nothing to suspend). The recorded reason is "automatic suspension: " and ``why``.

    Platform-wide it also suspends every organisation where a narrower record (the
    organisation's own or its region's approval) still approves it: a conclusive failure
    on the platform's reference set holds everywhere.
    """
    first = _suspend_one(rt, name, version, organisation_id, why, evidence_id)
    if organisation_id is not None:
        return first
    with rt.db.session() as s:
        still = [
            org.id
            for org, _region in tenants.list_organisations(s, scope=Scope.ALL)
            if admissionstore.state_for(s, name, version, org.id)[0] == "approved"
        ]
    for org_id in still:
        done = _suspend_one(rt, name, version, org_id, why, evidence_id)
        first = first or (done and Suspension("platform", None, done.state_id))
    return first


def _suspend_one(
    rt: Runtime,
    name: str,
    version: str,
    organisation_id: int | None,
    why: str,
    evidence_id: int | None,
) -> Suspension | None:
    with rt.db.session() as s:
        state = current_state(s, name, version, organisation_id=organisation_id)
        scope = (
            f"organisation {tenants.get_organisation(s, organisation_id).name}"
            if organisation_id is not None
            else "platform"
        )
    if state != "approved":
        log.info("%s %s is %s for %s: nothing to suspend", name, version, state, scope)
        return None
    try:
        row = change_state(
            rt,
            SYSTEM,
            name,
            version,
            "suspended",
            organisation=organisation_id,
            reason=f"automatic suspension: {why}",
            evidence_id=evidence_id,
        )
    except AdmissionRefused as exc:  # a person moved it in the meantime: theirs stands
        log.info("%s %s not suspended for %s: %s", name, version, scope, exc.message)
        return None
    log.warning("automatic suspension: %s %s suspended for %s: %s", name, version, scope, why)
    return Suspension(scope, organisation_id, row.id)
