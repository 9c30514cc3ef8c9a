"""What an analysis says, in the form the result encoders take (pure data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from radsight.algorithms.contract import Algorithm, Analysis, FindingSpec, Region


def thresholds_in_force(algorithm: Algorithm, overrides: dict[str, float]) -> dict[str, float]:
    """Each finding's threshold and the study's: ``overrides`` (per version or per
    organisation) where set, else a ``follows`` finding's threshold in force, else the
    declared one."""
    specs = {s.key: s for s in algorithm.findings}

    def resolve(key: str, seen: tuple[str, ...] = ()) -> float:
        if key in overrides:
            return overrides[key]
        spec = specs[key]
        if spec.follows and spec.follows in specs and spec.follows not in seen:
            return resolve(spec.follows, (*seen, key))
        return spec.threshold

    out = {key: resolve(key) for key in specs}
    out["study"] = overrides.get("study", algorithm.study_threshold)
    return out


@dataclass(frozen=True)
class ReportedFinding:
    spec: FindingSpec
    probability: float
    #: the operating threshold in force for this algorithm version (and organisation)
    threshold: float
    regions: tuple[Region, ...] = ()

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold


@dataclass(frozen=True)
class AnalysisReport:
    algorithm_name: str
    algorithm_version: str
    manufacturer: str
    findings: tuple[ReportedFinding, ...]
    study_score: float
    study_threshold: float

    @property
    def verdict(self) -> Literal["abnormal", "normal"]:
        """Study-level verdict: abnormal when the study score or any finding is positive."""
        if self.study_score >= self.study_threshold or any(f.positive for f in self.findings):
            return "abnormal"
        return "normal"

    @property
    def urgent(self) -> bool:
        return any(f.positive and f.spec.urgent for f in self.findings)

    @classmethod
    def from_analysis(
        cls,
        algorithm: Algorithm,
        analysis: Analysis,
        thresholds: dict[str, float] | None = None,
    ) -> AnalysisReport:
        """Pair each finding with its spec and the threshold in force.

        ``thresholds`` overrides the declared thresholds per finding key (per-version or
        per-organisation operating points; see :func:`thresholds_in_force`); findings the
        algorithm declares but did not return are reported with probability 0.
        """
        in_force = thresholds_in_force(algorithm, thresholds or {})
        by_key = {f.key: f for f in analysis.findings}
        unknown = set(by_key) - {s.key for s in algorithm.findings}
        if unknown:
            raise ValueError(f"{algorithm.name} returned undeclared findings: {sorted(unknown)}")
        reported = []
        for spec in algorithm.findings:
            found = by_key.get(spec.key)
            reported.append(
                ReportedFinding(
                    spec=spec,
                    probability=found.probability if found else 0.0,
                    threshold=in_force[spec.key],
                    regions=found.regions if found else (),
                )
            )
        return cls(
            algorithm_name=algorithm.name,
            algorithm_version=algorithm.version,
            manufacturer=algorithm.manufacturer,
            findings=tuple(reported),
            study_score=float(analysis.study_score),
            study_threshold=in_force["study"],
        )

    def to_json(self) -> dict[str, object]:
        return {
            "algorithm": {"name": self.algorithm_name, "version": self.algorithm_version},
            "study_score": round(self.study_score, 6),
            "study_threshold": self.study_threshold,
            "verdict": self.verdict,
            "urgent": self.urgent,
            "findings": [
                {
                    "key": f.spec.key,
                    "code": {
                        "value": f.spec.code.value,
                        "scheme": f.spec.code.scheme_designator,
                        "meaning": f.spec.code.meaning,
                    },
                    "probability": round(f.probability, 6),
                    "threshold": f.threshold,
                    "positive": f.positive,
                    "regions": [
                        {
                            "sop_instance_uid": r.sop_instance_uid,
                            "frame_number": r.frame_number,
                            "graphic_type": r.graphic_type,
                            "points": [[round(x, 2), round(y, 2)] for x, y in r.points],
                            "probability": (
                                None if r.probability is None else round(r.probability, 6)
                            ),
                        }
                        for r in f.regions
                    ],
                }
                for f in self.findings
            ],
        }
