"""Giving a verdict: who may, on what, and what is recorded.

Every verdict is tied to the algorithm version whose output it judges (when the study
has one), so that clinical monitoring compares like with like. The study is looked up
within the caller's organisations: another tenant's study is "not found", never
"forbidden", so its existence does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass

from radsight import auth
from radsight.auth import Principal
from radsight.errors import Forbidden, InvalidInput, NotFound
from radsight.store import Session, people
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store import verdicts as verdictstore
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow, StudyRow, VerdictRow

#: roles that give clinical verdicts (a platform ``admin`` token acting for a user too)
REVIEWER_ROLES = ("radiologist", "admin")
MAX_TEXT = 10_000
MAX_REASON = 1_000


@dataclass(frozen=True)
class VerdictRequest:
    kind: str
    value: str = ""
    text: str = ""
    finding_key: str = ""
    #: which algorithm's result is judged; may be left out when the study has one
    result_id: int | None = None


def visible_study(s: Session, principal: Principal, study_id: int) -> StudyRow:
    """The study if the caller may see it, else :class:`NotFound`."""
    return studystore.get_study(s, study_id, scope=auth.scope_of(s, principal))


def _judged_result(s: Session, study: StudyRow, req: VerdictRequest) -> ResultRow | None:
    scope = Scope.of(study.organisation_id)
    # radiologists judge what they were shown: clinical, current results
    results = resultstore.list_results(s, scope=scope, study_id=study.id, clinical_only=True)
    results = [r for r in results if r.status == "analysed"]
    if req.result_id is not None:
        for r in results:
            if r.id == req.result_id:
                return r
        raise NotFound(f"study {study.id} has no analysed result {req.result_id}")
    if len(results) == 1:
        return results[0]
    if req.kind == "finding":
        if not results:
            raise InvalidInput(f"study {study.id} has no AI findings to judge")
        raise InvalidInput(f"study {study.id} has {len(results)} results: give result_id")
    return None


def give_verdict(
    s: Session, principal: Principal, study_id: int, req: VerdictRequest, remote_addr: str = ""
) -> VerdictRow:
    """Check and append one verdict, and audit it.

    Raises
    ------
    radsight.errors.NotFound
        The study (or result) is not one of the caller's organisations'.
    radsight.errors.Forbidden
        The caller is not a radiologist, or is a token without a person behind it.
    radsight.errors.InvalidInput
        An unknown kind, value or finding; a missing or too long text.
    """
    study = visible_study(s, principal, study_id)
    if principal.role not in REVIEWER_ROLES:
        raise Forbidden(f"verdicts are given by radiologists; you are {principal.role}")
    if principal.user_id is None:
        raise Forbidden("a verdict is given by a person: use a user's token or sign in")
    text = req.text.strip()
    if req.kind == "conclusion" and not text:
        raise InvalidInput("a conclusion needs some text")
    if req.kind == "repeat" and not text:
        raise InvalidInput("say why the scan should be repeated")
    limit = MAX_REASON if req.kind == "repeat" else MAX_TEXT
    if len(text) > limit:
        raise InvalidInput(f"the text is {len(text)} characters; at most {limit}")
    if req.kind in ("finding", "study") and text:
        raise InvalidInput(f"a {req.kind} verdict has a value, not text")
    result = _judged_result(s, study, req)
    if req.kind == "finding":
        assert result is not None  # _judged_result raises for a finding without one
        keys = [f.get("key") for f in (result.report or {}).get("findings", [])]
        if req.finding_key not in keys:
            raise InvalidInput(
                f"{result.algorithm_name} {result.algorithm_version} reports no finding "
                f"{req.finding_key!r}"
            )
    row = verdictstore.create_verdict(
        s,
        study=study,
        user_id=principal.user_id,
        kind=req.kind,
        value=req.value,
        text=text,
        finding_key=req.finding_key,
        result_id=result.id if result is not None else None,
        algorithm_name=result.algorithm_name if result is not None else "",
        algorithm_version=result.algorithm_version if result is not None else "",
    )
    people.record_audit(
        s,
        principal,
        "verdict.create",
        organisation_id=study.organisation_id,
        study_id=study.id,
        detail={
            "verdict_id": row.id,
            "kind": row.kind,
            "value": row.value,
            "finding_key": row.finding_key,
            "algorithm": f"{row.algorithm_name} {row.algorithm_version}".strip(),
            "supersedes_id": row.supersedes_id,
        },
        remote_addr=remote_addr,
    )
    return row
