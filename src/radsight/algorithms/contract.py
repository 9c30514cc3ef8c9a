"""The algorithm contract (DESIGN.md, "Algorithms").

An algorithm declares its name, version, study types, findings (with codes) and operating
thresholds, and turns a study's pixels into findings with probabilities and regions plus a
study score. It does no I/O: the pipeline decodes the pixels and hands it a
:class:`StudyInput`; it returns an :class:`Analysis`.

Coordinates follow DICOM PS3.3 C.18.6 (SCOORD): ``(column, row)`` in image pixels, with
``(0, 0)`` at the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from radsight.errors import NotAnalysable

__all__ = [
    "Algorithm",
    "Analysis",
    "Code",
    "Finding",
    "FindingSpec",
    "ImageInput",
    "NotAnalysable",
    "Region",
    "StudyInput",
]


@dataclass(frozen=True)
class Code:
    """A coded concept: PS3.3 Table 8.8-1 (code value, coding scheme designator, meaning)."""

    value: str
    scheme_designator: str
    meaning: str


@dataclass(frozen=True)
class FindingSpec:
    """A finding an algorithm can report, with its operating threshold."""

    key: str
    code: Code
    threshold: float
    #: a positive finding of this kind raises the study to urgent priority
    urgent: bool = False
    #: the key of another finding of the same algorithm whose threshold in force this one
    #: takes when no threshold is set for this key itself (a finding that shares another's
    #: probability and operating point, so that a site's override of one holds for both)
    follows: str | None = None
    #: False for a whole-study measurement with no place on an image (chest CT's share of
    #: lung involved): such a finding returns no regions and is never marked
    located: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold of {self.key!r} must lie in [0, 1], got {self.threshold}")
        if self.follows == self.key:
            raise ValueError(f"finding {self.key!r} cannot follow its own threshold")


@dataclass(frozen=True)
class ImageInput:
    """One frame of one source image, decoded and ready for an algorithm.

    ``pixels`` is 2-D float32 after the Modality LUT (HU for CT), with MONOCHROME1 already
    inverted so that larger values are brighter.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    pixels: np.ndarray
    modality: str = ""
    body_part_examined: str = ""
    view_position: str = ""
    image_laterality: str = ""
    pixel_spacing: tuple[float, float] | None = None
    frame_number: int | None = None
    #: other DICOM attributes an algorithm may use, by keyword
    attributes: dict[str, object] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class StudyInput:
    study_instance_uid: str
    study_type: str
    images: tuple[ImageInput, ...]


@dataclass(frozen=True)
class Region:
    """A marked area on one source image: PS3.3 C.18.6.1.2 graphic types."""

    sop_instance_uid: str
    graphic_type: Literal["POLYGON", "POINT", "CIRCLE", "ELLIPSE", "MULTIPOINT"]
    #: (column, row) pairs; a POLYGON is closed (first point repeated last)
    points: tuple[tuple[float, float], ...]
    frame_number: int | None = None
    #: this candidate area's own probability in [0, 1] where the algorithm has one (a CT
    #: finding's slice, one view of a mammogram); None when only the finding's applies.
    #: The platform marks it when this (else the finding's) probability reaches the
    #: finding's operating point in force (:mod:`radsight.operating_points`). The SR
    #: carries it as "Region probability" beside the finding's probability.
    probability: float | None = None

    def __post_init__(self) -> None:
        if self.probability is not None:
            # a numpy scalar from a model would not serialise to JSON: keep a plain float
            object.__setattr__(self, "probability", float(self.probability))
            if not 0.0 <= self.probability <= 1.0:  # NaN fails too
                raise ValueError(f"region probability {self.probability} is not in [0, 1]")

    @classmethod
    def box(
        cls,
        sop_instance_uid: str,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        frame_number: int | None = None,
        probability: float | None = None,
    ) -> Region:
        """A rectangle as a closed POLYGON (SCOORD has no rectangle type)."""
        pts = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
        return cls(sop_instance_uid, "POLYGON", pts, frame_number, probability)

    def bounds(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        if self.graphic_type == "CIRCLE":
            (cx, cy), (ex, ey) = self.points[0], self.points[1]
            r = float(np.hypot(ex - cx, ey - cy))
            return cx - r, cy - r, cx + r, cy + r
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Finding:
    """A finding's probability and every candidate region for it (not only those over a
    threshold: the platform keeps the regions to mark at the point in force)."""

    key: str
    probability: float
    regions: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability of {self.key!r} must lie in [0, 1]")


@dataclass(frozen=True)
class Analysis:
    findings: tuple[Finding, ...]
    #: study-level abnormality score in [0, 1], used for worklist priority
    study_score: float


class Algorithm(abc.ABC):
    """Subclass this and register it under the ``radsight.algorithms`` entry point group."""

    name: str
    version: str
    #: study type keys from DESIGN.md: cxr, flg, mmg, ct-chest, ct-brain
    study_types: tuple[str, ...]
    findings: tuple[FindingSpec, ...]
    #: threshold on ``Analysis.study_score`` for the study-level verdict
    study_threshold: float = 0.5
    #: seconds one study may take before the job is stopped and retried
    time_limit_s: float = 120.0
    description: str = ""
    manufacturer: str = "Radsight"

    def check(self, study: StudyInput) -> None:  # noqa: B027 - optional hook
        """Raise :class:`NotAnalysable` with a reason a radiologist understands."""

    @abc.abstractmethod
    def analyse(self, study: StudyInput) -> Analysis:
        """Pixels and metadata in, findings out. No I/O."""

    def shipped_evidence(self) -> dict | None:
        """The evidence this version ships for its admission, or None.

        A calibration summary in the shape ``radsight evaluate`` stores
        (:func:`radsight.monitor.calibration.summarise`: ``reference``, ``num_studies``,
        ``positives``, ``negatives``, ``auroc`` {value, lower, upper}, ...). On first start
        the platform stores it as an evaluation and judges it by the acceptance rule in
        force: a version whose evidence passes starts approved, one whose evidence fails
        starts in shadow, one with none starts registered (docs/quality.md, "Admission").
        """
        return None

    def finding_spec(self, key: str) -> FindingSpec:
        for spec in self.findings:
            if spec.key == key:
                return spec
        raise KeyError(f"{self.name} {self.version} declares no finding {key!r}")
