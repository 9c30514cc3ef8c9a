"""Quality records: calibration tests (evaluations), operating thresholds, alerts.

Thresholds are append-only: every change is a new row (who, when, why, how it was picked)
and the newest row for (algorithm, version, organisation, finding) is in force; an
organisation's own row beats the default (``organisation_id`` NULL).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from radsight.errors import Forbidden, InvalidInput, NotFound
from radsight.store.clock import utcnow
from radsight.store.scope import Scope
from radsight.store.tables import AlertRow, EvaluationRow, ThresholdRow

THRESHOLD_METHODS = ("default", "youden", "target_sensitivity", "target_specificity", "manual")
#: ``configuration``: the platform's own set-up is wrong (a routing rules file that does not
#: load); the others are about an algorithm version
ALERT_KINDS = ("clinical", "technical", "drift", "calibration", "configuration")

# --- evaluations -----------------------------------------------------------------------


def create_evaluation(
    s: Session,
    algorithm_name: str,
    algorithm_version: str,
    reference_name: str,
    created_by: str,
    organisation_id: int | None = None,
) -> EvaluationRow:
    """A running evaluation; ``organisation_id``: the organisation it was run for (its
    thresholds; a conclusive failure suspends the version there), None: platform-wide."""
    row = EvaluationRow(
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        reference_name=reference_name[:256],
        state="running",
        summary={},
        created_by=created_by,
        organisation_id=organisation_id,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def finish_evaluation(
    s: Session,
    evaluation_id: int,
    *,
    summary: dict,
    passed: bool | None,
    num_studies: int,
    report_key: str = "",
    error: str = "",
) -> EvaluationRow:
    row = get_evaluation(s, evaluation_id, scope=Scope.ALL)
    row.state = "failed" if error else "done"
    row.summary = summary
    row.passed = passed
    row.num_studies = num_studies
    row.report_key = report_key
    row.error = error
    row.finished_at = utcnow()
    return row


def get_evaluation(s: Session, evaluation_id: int, *, scope: Scope) -> EvaluationRow:
    """An evaluation; one run for an organisation is that organisation's (its thresholds,
    its cases): outside ``scope`` it does not exist. Platform-wide ones are everyone's."""
    row = s.get(EvaluationRow, evaluation_id)
    if row is None or (row.organisation_id is not None and not scope.includes(row.organisation_id)):
        raise NotFound(f"evaluation {evaluation_id} does not exist")
    return row


def list_evaluations(
    s: Session,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    *,
    scope: Scope,
) -> list[EvaluationRow]:
    """Newest first: the platform-wide ones and those of organisations in ``scope``."""
    q = select(EvaluationRow).order_by(EvaluationRow.id.desc())
    q = q.where(
        or_(EvaluationRow.organisation_id.is_(None), scope.where(EvaluationRow.organisation_id))
    )
    if algorithm_name:
        q = q.where(EvaluationRow.algorithm_name == algorithm_name)
    if algorithm_version:
        q = q.where(EvaluationRow.algorithm_version == algorithm_version)
    return list(s.scalars(q))


def latest_evaluation(
    s: Session, algorithm_name: str, algorithm_version: str
) -> EvaluationRow | None:
    """The newest finished calibration test of this version (shipped evidence included)."""
    return s.scalar(
        select(EvaluationRow)
        .where(
            EvaluationRow.algorithm_name == algorithm_name,
            EvaluationRow.algorithm_version == algorithm_version,
            EvaluationRow.state == "done",
        )
        .order_by(EvaluationRow.id.desc())
        .limit(1)
    )


def drift_baseline(s: Session, algorithm_name: str, algorithm_version: str) -> EvaluationRow | None:
    """The newest finished calibration test of this version whose cases carry their input
    features: the drift baseline.

    Evidence shipped with a package keeps only each case's label and score (no
    manufacturer, spacing, size or age), and it describes the vendor's data, not the
    site's: it is never the baseline, however new.
    """
    rows = s.scalars(
        select(EvaluationRow)
        .where(
            EvaluationRow.algorithm_name == algorithm_name,
            EvaluationRow.algorithm_version == algorithm_version,
            EvaluationRow.state == "done",
        )
        .order_by(EvaluationRow.id.desc())
    )
    for row in rows:
        if any((c or {}).get("features") for c in (row.summary or {}).get("cases", [])):
            return row
    return None


# --- thresholds ------------------------------------------------------------------------


def set_threshold(
    s: Session,
    *,
    algorithm_name: str,
    algorithm_version: str,
    value: float,
    method: str,
    created_by: str,
    reason: str = "",
    finding_key: str = "",
    organisation_id: int | None = None,
    target: float | None = None,
    evaluation_id: int | None = None,
) -> ThresholdRow:
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"a threshold must lie in [0, 1], got {value}")
    if method not in THRESHOLD_METHODS:
        raise InvalidInput(f"method must be one of {', '.join(THRESHOLD_METHODS)}, not {method!r}")
    if evaluation_id is not None:
        get_evaluation(s, evaluation_id, scope=Scope.ALL)
    row = ThresholdRow(
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        organisation_id=organisation_id,
        finding_key=finding_key,
        value=float(value),
        method=method,
        target=target,
        evaluation_id=evaluation_id,
        reason=reason,
        created_by=created_by,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def list_thresholds(
    s: Session,
    *,
    scope: Scope,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
) -> list[ThresholdRow]:
    """Every change, newest first (the history): the defaults and the scope's own rows."""
    q = select(ThresholdRow).order_by(ThresholdRow.id.desc())
    if algorithm_name:
        q = q.where(ThresholdRow.algorithm_name == algorithm_name)
    if algorithm_version:
        q = q.where(ThresholdRow.algorithm_version == algorithm_version)
    # the defaults (no organisation) are every tenant's; another tenant's rows are not
    q = q.where(
        or_(scope.where(ThresholdRow.organisation_id), ThresholdRow.organisation_id.is_(None))
    )
    return list(s.scalars(q))


def stored_thresholds(
    s: Session, algorithm_name: str, algorithm_version: str, organisation_id: int | None = None
) -> dict[str, float]:
    """finding key -> threshold (``"study"`` for the study score) set in the store for this
    version: the organisation's own rows over the version's default rows, the newest row
    of a key over older ones.

    Only keys someone set are returned; :func:`radsight.operating_points.points_in_force`
    combines them with the routing rule's and the algorithm's declared points.
    """
    rows = s.scalars(
        select(ThresholdRow)
        .where(
            ThresholdRow.algorithm_name == algorithm_name,
            ThresholdRow.algorithm_version == algorithm_version,
            or_(
                ThresholdRow.organisation_id.is_(None),
                ThresholdRow.organisation_id == organisation_id,
            )
            if organisation_id is not None
            else ThresholdRow.organisation_id.is_(None),
        )
        .order_by(ThresholdRow.id)
    )
    default: dict[str, float] = {}
    own: dict[str, float] = {}
    for row in rows:  # oldest first: the newest row of a key wins
        key = row.finding_key or "study"
        (default if row.organisation_id is None else own)[key] = row.value
    return {**default, **own}


# --- alerts ----------------------------------------------------------------------------


def raise_alert(
    s: Session,
    *,
    kind: str,
    key: str,
    message: str,
    severity: str = "warning",
    algorithm_name: str = "",
    algorithm_version: str = "",
    organisation_id: int | None = None,
    detail: dict | None = None,
    webhook: bool = False,
) -> tuple[AlertRow, bool]:
    """Open an alert unless one with this key is open already; return (row, new)."""
    if kind not in ALERT_KINDS:
        raise ValueError(f"alert kind must be one of {', '.join(ALERT_KINDS)}, not {kind!r}")
    existing = s.scalar(
        select(AlertRow).where(AlertRow.key == key, AlertRow.resolved_at.is_(None)).limit(1)
    )
    if existing is not None:
        return existing, False
    row = AlertRow(
        kind=kind,
        severity=severity,
        key=key[:255],
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        organisation_id=organisation_id,
        message=message,
        detail=detail or {},
        created_at=utcnow(),
        webhook_state="pending" if webhook else "",
    )
    s.add(row)
    s.flush()
    return row, True


def amend_alert(
    s: Session, row: AlertRow, *, message: str, detail: dict, webhook: bool = False
) -> AlertRow:
    """Tell more about an open alert (what the platform did about it): a new message and
    detail, and its webhook sent again."""
    row.message = message
    row.detail = {**(row.detail or {}), **detail}
    if webhook:
        row.webhook_state = "pending"
    return row


def threshold_audit_detail(row: ThresholdRow) -> dict[str, object]:
    """What the audit trail keeps of a threshold change (``threshold.set``)."""
    return {
        "threshold_id": row.id,
        "algorithm": f"{row.algorithm_name}@{row.algorithm_version}",
        "finding": row.finding_key or "study",
        "value": row.value,
        "method": row.method,
        "evaluation_id": row.evaluation_id,
        "reason": row.reason,
    }


def resolve_alert(s: Session, alert_id: int, *, scope: Scope) -> AlertRow:
    """Resolve one alert. Every tenant sees a platform alert (one with no organisation, such
    as a version's failed calibration), but only a platform-wide scope may resolve it."""
    row = get_alert(s, alert_id, scope=scope)
    if row.organisation_id is None and not scope.is_all:
        raise Forbidden(f"alert {alert_id} is platform-wide: only a platform admin resolves it")
    if row.resolved_at is None:
        row.resolved_at = utcnow()
    return row


def resolve_open_alert(s: Session, key: str) -> int:
    """Resolve the open alert with this key, if any (its condition no longer holds)."""
    n = 0
    for row in s.scalars(
        select(AlertRow).where(AlertRow.key == key, AlertRow.resolved_at.is_(None))
    ):
        row.resolved_at = utcnow()
        n += 1
    return n


def resolve_alerts_except(s: Session, kind: str, open_keys: set[str]) -> int:
    """Resolve open alerts of ``kind`` whose condition no longer holds."""
    n = 0
    for row in s.scalars(
        select(AlertRow).where(AlertRow.kind == kind, AlertRow.resolved_at.is_(None))
    ):
        if row.key not in open_keys:
            row.resolved_at = utcnow()
            n += 1
    return n


def get_alert(s: Session, alert_id: int, *, scope: Scope) -> AlertRow:
    row = s.get(AlertRow, alert_id)
    # alerts without an organisation (a version's calibration) are visible to every scope
    if row is None or (row.organisation_id is not None and not scope.includes(row.organisation_id)):
        raise NotFound(f"alert {alert_id} does not exist")
    return row


def list_alerts(
    s: Session,
    *,
    scope: Scope,
    open_only: bool = False,
    kind: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AlertRow]:
    """Newest first: the scope's alerts and those of no organisation (shared by all)."""
    q = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
    q = q.where(or_(scope.where(AlertRow.organisation_id), AlertRow.organisation_id.is_(None)))
    if open_only:
        q = q.where(AlertRow.resolved_at.is_(None))
    if kind:
        q = q.where(AlertRow.kind == kind)
    if since is not None:
        q = q.where(AlertRow.created_at >= since)
    return list(s.scalars(q))


def alerts_for_webhook(s: Session, limit: int = 100) -> list[AlertRow]:
    return list(
        s.scalars(
            select(AlertRow)
            .where(AlertRow.webhook_state == "pending")
            .order_by(AlertRow.id)
            .limit(limit)
        )
    )


def set_webhook_state(s: Session, alert_id: int, state: str, error: str = "") -> None:
    row = s.get(AlertRow, alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    row.webhook_state = state
    if error:
        row.detail = {**(row.detail or {}), "webhook_error": error[:500]}
