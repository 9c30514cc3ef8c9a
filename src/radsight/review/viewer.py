"""What the viewer shows of a study: its images, the AI results and marks, the verdicts.

Plain data (dicts and dataclasses) for the web layer to render; text from DICOM stays
text here and is escaped by the templates and set with ``textContent`` by the script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radsight.dicom.study_types import STUDY_TYPE_LABELS
from radsight.store import Session
from radsight.store import results as resultstore
from radsight.store import studies as studystore
from radsight.store import verdicts as verdictstore
from radsight.store.scope import Scope
from radsight.store.tables import ResultRow, StudyRow
from radsight.store.verdicts import VerdictEntry
from radsight.store.worklist import study_status

#: roles that also see shadow results (stored only, never delivered) and superseded ones,
#: each marked: supervisors judge a version on live studies before anyone relies on it
SHADOW_ROLES = ("supervisor", "admin")


def sees_shadow(role: str) -> bool:
    """Whether a principal with ``role`` sees shadow and superseded results; a
    radiologist (and an organisation admin) sees the clinical, current ones only."""
    return role in SHADOW_ROLES


STATUS_LABELS = {
    "waiting": "waiting",
    "analysed": "analysed",
    "not_analysed": "not analysed",
    "reviewed": "reviewed",
    "repeat_requested": "repeat requested",
}


@dataclass
class FindingView:
    key: str
    meaning: str
    probability: float
    threshold: float
    positive: bool
    #: the verdict in force: agree | disagree | unsure | ""
    verdict: str = ""


@dataclass
class ResultView:
    id: int
    algorithm_name: str
    algorithm_version: str
    status: str
    reason: str
    study_score: float | None
    study_threshold: float | None
    verdict: str
    urgent: bool
    #: clinical (delivered, a radiologist sees it) | shadow (stored only)
    mode: str = "clinical"
    #: the id of the newer clinical result of the same algorithm that replaced it
    superseded_by_id: int | None = None
    findings: list[FindingView] = field(default_factory=list)

    @property
    def clinical(self) -> bool:
        return self.mode == "clinical" and self.superseded_by_id is None


@dataclass
class StudyView:
    study: StudyRow
    status: str
    status_label: str
    study_type_label: str
    results: list[ResultView]
    history: list[VerdictEntry]
    study_verdict: str
    conclusion: str
    repeat_reason: str
    #: JSON for the viewer script: series, images and marks
    viewer_data: dict[str, Any]


def status_text(study: StudyRow) -> str:
    """What the worklist says: "analysed", "not analysed: <reason>", ..."""
    status = study_status(study)
    label = STATUS_LABELS[status]
    if status == "not_analysed" and study.state_reason:
        return f"{label}: {study.state_reason}"
    return label


def build_study_view(s: Session, study: StudyRow, *, with_shadow: bool) -> StudyView:
    """The study as the viewer shows it. ``with_shadow`` (see :func:`sees_shadow`): also
    the shadow and superseded results and their marks, each marked as such."""
    results = []
    marks = []
    scope = Scope.of(study.organisation_id)
    rows = resultstore.list_results(
        s, scope=scope, study_id=study.id, clinical_only=not with_shadow
    )
    for r in sorted(rows, key=lambda r: r.id):
        report = r.report or {}
        view = ResultView(
            id=r.id,
            algorithm_name=r.algorithm_name,
            algorithm_version=r.algorithm_version,
            status=r.status,
            reason=r.reason,
            study_score=r.study_score,
            study_threshold=report.get("study_threshold"),
            verdict=r.verdict,
            urgent=r.urgent,
            mode=r.mode,
            superseded_by_id=r.superseded_by_id,
        )
        for f in report.get("findings", []):
            current = verdictstore.current_verdict(s, study.id, "finding", f["key"], r.id)
            view.findings.append(
                FindingView(
                    key=f["key"],
                    meaning=f.get("code", {}).get("meaning", f["key"]),
                    probability=float(f.get("probability", 0.0)),
                    threshold=float(f.get("threshold", 0.0)),
                    positive=bool(f.get("positive")),
                    verdict=current.value if current is not None else "",
                )
            )
            for region in f.get("regions", []):
                marks.append(
                    {
                        "sop_instance_uid": region["sop_instance_uid"],
                        "frame_number": region.get("frame_number"),
                        "graphic_type": region["graphic_type"],
                        "points": region["points"],
                        # a region's own probability (a CT slice's) where it has one
                        "label": f"{f.get('code', {}).get('meaning', f['key'])} "
                        f"{_region_probability(region, f):.2f}"
                        + ("" if view.clinical else f" ({_not_clinical(r)})"),
                        "positive": bool(f.get("positive")),
                        "algorithm": f"{r.algorithm_name} {r.algorithm_version}",
                        "mode": r.mode,
                        "superseded": r.superseded_by_id is not None,
                    }
                )
        results.append(view)

    series: dict[int, dict[str, Any]] = {}
    for inst, se in studystore.list_instances(s, study.id):
        entry = series.setdefault(
            se.id,
            {
                "series_instance_uid": se.series_instance_uid,
                "description": se.series_description,
                "modality": se.modality,
                "series_number": se.series_number,
                "images": [],
            },
        )
        attrs = inst.attributes or {}
        laterality = str(attrs.get("ImageLaterality") or attrs.get("Laterality") or "")
        label = " ".join(
            v
            for v in (laterality if laterality != "U" else "", str(attrs.get("ViewPosition") or ""))
            if v
        )
        entry["images"].append(
            {
                "id": inst.id,
                "sop_instance_uid": inst.sop_instance_uid,
                "frames": inst.number_of_frames or 1,
                "instance_number": inst.instance_number,
                "label": label,
            }
        )
    ordered = sorted(
        series.values(), key=lambda e: (e["series_number"] is None, e["series_number"] or 0)
    )
    for entry in ordered:
        entry["images"].sort(
            key=lambda i: (i["instance_number"] is None, i["instance_number"] or 0, i["id"])
        )

    def text_of(kind: str) -> tuple[str, str]:
        row = verdictstore.current_verdict(s, study.id, kind, "", _single_result(results))
        return (row.value, row.text) if row is not None else ("", "")

    status = study_status(study)
    return StudyView(
        study=study,
        status=status,
        status_label=status_text(study),
        study_type_label=STUDY_TYPE_LABELS.get(study.study_type, study.study_type or "—"),
        results=results,
        history=verdictstore.verdict_history(s, study.id),
        study_verdict=text_of("study")[0],
        conclusion=text_of("conclusion")[1],
        repeat_reason=text_of("repeat")[1],
        viewer_data={
            "study_id": study.id,
            "study_type": study.study_type,
            "series": ordered,
            "marks": marks,
        },
    )


def _single_result(results: list[ResultView]) -> int | None:
    """The result a study-level verdict refers to (see review.verdicts._judged_result)."""
    analysed = [r for r in results if r.status == "analysed" and r.clinical]
    return analysed[0].id if len(analysed) == 1 else None


def _not_clinical(r: ResultRow) -> str:
    return "shadow" if r.mode == "shadow" else "superseded"


def _region_probability(region: dict[str, Any], finding: dict[str, Any]) -> float:
    own = region.get("probability")
    return float(finding.get("probability", 0.0) if own is None else own)
