"""What an analysis says, in the form the result encoders take (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from radsight.algorithms.contract import Algorithm, Analysis, FindingSpec, Region
from radsight.operating_points import STUDY, points_in_force, regions_to_mark


@dataclass(frozen=True)
class ReportedFinding:
    spec: FindingSpec
    probability: float
    #: the operating point in force for this algorithm version (and organisation)
    threshold: float
    #: the regions to mark: the algorithm's candidates kept at ``threshold``
    #: (:func:`radsight.operating_points.regions_to_mark`)
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
        points: Mapping[str, float] | None = None,
    ) -> AnalysisReport:
        """Pair each finding with its spec, its operating point in force and the regions
        to mark at that point.

        ``points`` are the operating points in force
        (:func:`radsight.operating_points.points_in_force`); keys it lacks take the
        declared point (or a ``follows`` finding's leader's). Findings the algorithm
        declares but did not return are reported with probability 0. The regions kept are
        those :func:`radsight.operating_points.regions_to_mark` keeps, so the SR, the SC
        and the JSON built from this report mark the same regions.
        """
        in_force = points_in_force(algorithm, stored=points)
        by_key = {f.key: f for f in analysis.findings}
        unknown = set(by_key) - {s.key for s in algorithm.findings}
        if unknown:
            raise ValueError(f"{algorithm.name} returned undeclared findings: {sorted(unknown)}")
        reported = []
        for spec in algorithm.findings:
            found = by_key.get(spec.key)
            probability = found.probability if found else 0.0
            candidates = found.regions if found else ()
            if candidates and not spec.located:
                raise ValueError(
                    f"{algorithm.name} returned regions for {spec.key!r}, declared not located"
                )
            reported.append(
                ReportedFinding(
                    spec=spec,
                    probability=probability,
                    threshold=in_force[spec.key],
                    regions=regions_to_mark(probability, in_force[spec.key], candidates),
                )
            )
        return cls(
            algorithm_name=algorithm.name,
            algorithm_version=algorithm.version,
            manufacturer=algorithm.manufacturer,
            findings=tuple(reported),
            study_score=float(analysis.study_score),
            study_threshold=in_force[STUDY],
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
