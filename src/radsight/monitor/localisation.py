"""Localisation figures of a calibration test: pointing game and FROC (pure: numpy).

A reference set may outline where each positive's lesions are (``regions.csv``, read by
:mod:`radsight.monitor.reference`): boxes, circles or polygons in the pixel coordinates
(column, row) of the source image. An algorithm's *marks* are the candidate regions it
returned for its located findings, each with its probability (the region's own, else its
finding's: :func:`radsight.operating_points.region_probability`); those the report keeps
at the operating points in force are *marked*.

- A mark's point is the centre of its bounding box (a POINT mark: the point; a CIRCLE: its
  centre). It *hits* a reference region of its case when the point lies inside the region
  (on the border counts), on the same image (the region's SOP Instance UID and frame, when
  it names them) and for the same finding (when the region names one).
- **Pointing game** (Zhang et al., IJCV 126:1084, 2018): the share of positive cases with
  reference regions whose top mark (the most probable; the first of equals, in the
  algorithm's order) hits one of them. No mark is a miss. A proportion with its Wilson
  interval; it does not depend on the operating point.
- **FROC** (free-response ROC; Chakraborty, Med Phys 16:561, 1989): for every threshold
  ``t`` over the marks' probabilities, the lesion sensitivity (reference regions hit by a
  mark of probability >= ``t``, over all reference regions) against the mean number of
  false-positive marks per case (marks >= ``t`` hitting no region of their case, over every
  case: negatives and located positives). Positive cases without reference regions are left
  out (their marks cannot be judged). The 95 % band and the sensitivities at 0.5, 1, 2 and 4
  false positives per case (the curve's step value: the best sensitivity among the
  thresholds with at most that many) come from a seeded bootstrap of cases, stratified
  (located positives and negatives resampled separately).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radsight.algorithms.contract import Region
from radsight.monitor.metrics import Estimate, wilson

#: false-positive marks per case at which the FROC summary gives the sensitivity
FP_RATES = (0.5, 1.0, 2.0, 4.0)
#: bootstrap resamples and seed of the FROC band (fixed: the same set gives the same band)
N_BOOT = 2000
SEED = 20240601
#: points kept in the stored curve and in its band
MAX_CURVE_POINTS = 200
BAND_POINTS = 41
#: resamples whose curves are held in memory at once
BOOT_CHUNK = 200

Shape = Literal["box", "circle", "polygon"]


@dataclass(frozen=True)
class ReferenceRegion:
    """One reference region (a lesion outline) on a case's source image.

    ``coordinates``: a box ``(x0, y0, x1, y1)``, a circle ``(cx, cy, r)``, a polygon
    ``(x1, y1, x2, y2, ...)``; pixel coordinates (column, row) of the source image.
    ``sop_instance_uid`` and ``frame_number`` restrict it to one image (empty / None: any
    image of the case); ``finding`` to one finding key (empty: any located finding).
    """

    shape: Shape
    coordinates: tuple[float, ...]
    sop_instance_uid: str = ""
    frame_number: int | None = None
    finding: str = ""

    def __post_init__(self) -> None:
        c = self.coordinates
        if not all(math.isfinite(v) for v in c):
            raise ValueError("coordinates must be finite numbers")
        if self.shape == "box":
            if len(c) != 4:
                raise ValueError("a box needs x0,y0,x1,y1")
            if c[2] <= c[0] or c[3] <= c[1]:
                raise ValueError(f"box {c} is empty: x1 must exceed x0 and y1 exceed y0")
        elif self.shape == "circle":
            if len(c) != 3:
                raise ValueError("a circle needs cx,cy,r")
            if c[2] <= 0:
                raise ValueError(f"circle radius {c[2]} must be positive")
        elif self.shape == "polygon":
            if len(c) < 6 or len(c) % 2:
                raise ValueError("a polygon needs at least 3 points 'x y'")
        else:
            raise ValueError(f"unknown shape {self.shape!r}")

    def contains(self, x: float, y: float) -> bool:
        """Whether the point (column ``x``, row ``y``) lies inside, the border included."""
        c = self.coordinates
        if self.shape == "box":
            return c[0] <= x <= c[2] and c[1] <= y <= c[3]
        if self.shape == "circle":
            return (x - c[0]) ** 2 + (y - c[1]) ** 2 <= c[2] ** 2
        return _in_polygon(x, y, list(zip(c[0::2], c[1::2], strict=True)))

    def on_image(self, sop_instance_uid: str, frame_number: int | None) -> bool:
        if self.sop_instance_uid and self.sop_instance_uid != sop_instance_uid:
            return False
        return self.frame_number is None or self.frame_number == (frame_number or 1)


def _in_polygon(x: float, y: float, pts: list[tuple[float, float]]) -> bool:
    """Even-odd rule (a ray to the right), with points on an edge inside."""
    inside = False
    n = len(pts)
    for i in range(n):
        (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % n]
        # on the edge: collinear and within its bounding box
        cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
        if (
            abs(cross) <= 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1))
            and min(x1, x2) <= x <= max(x1, x2)
            and min(y1, y2) <= y <= max(y1, y2)
        ):
            return True
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@dataclass(frozen=True)
class Mark:
    """One candidate region of a located finding, as scored for localisation."""

    finding: str
    probability: float
    #: the centre of the region's bounding box (column, row)
    x: float
    y: float
    sop_instance_uid: str
    frame_number: int | None = None
    #: kept by the report at the operating points in force (drawn on the SC, in the SR)
    marked: bool = False

    @classmethod
    def of(cls, finding: str, probability: float, region: Region, marked: bool) -> Mark:
        x0, y0, x1, y1 = region.bounds()
        return cls(
            finding,
            float(probability),
            (x0 + x1) / 2,
            (y0 + y1) / 2,
            region.sop_instance_uid,
            region.frame_number,
            marked,
        )

    def hits(self, region: ReferenceRegion) -> bool:
        return (
            (not region.finding or region.finding == self.finding)
            and region.on_image(self.sop_instance_uid, self.frame_number)
            and region.contains(self.x, self.y)
        )


@dataclass(frozen=True)
class LocalisedCase:
    """A case as localisation sees it: its label, reference regions and marks."""

    label: int
    regions: tuple[ReferenceRegion, ...]
    marks: tuple[Mark, ...]

    def top_mark(self) -> Mark | None:
        """The most probable mark, the first of equals."""
        best: Mark | None = None
        for m in self.marks:
            if best is None or m.probability > best.probability:
                best = m
        return best


def scored_marks(case: LocalisedCase, findings: Sequence[str] = ()) -> tuple[Mark, ...]:
    """The case's marks that count: those of ``findings`` when given, else all."""
    return tuple(m for m in case.marks if not findings or m.finding in findings)


def pointing_game(cases: Sequence[LocalisedCase]) -> Estimate:
    """Positive cases with regions whose top mark hits one of them, with a Wilson CI."""
    located = [c for c in cases if c.label == 1 and c.regions]
    hits = 0
    for case in located:
        top = case.top_mark()
        hits += top is not None and any(top.hits(r) for r in case.regions)
    return wilson(hits, len(located))


@dataclass(frozen=True)
class _Froc:
    """Per case: the best hitting probability of each reference region (-inf when no
    mark hits it) and the probabilities of the marks that hit no region."""

    region_case: np.ndarray
    region_best: np.ndarray
    fp_case: np.ndarray
    fp_probability: np.ndarray
    #: the kept marks' counterparts, for the point at the operating thresholds
    region_marked: np.ndarray
    fp_marked: np.ndarray
    positive: np.ndarray  # per case: a located positive (else a negative)

    @classmethod
    def of(cls, cases: Sequence[LocalisedCase]) -> _Froc:
        rc, rb, rm, fc, fp, fm, pos = [], [], [], [], [], [], []
        for i, case in enumerate(cases):
            pos.append(case.label == 1)
            for region in case.regions:
                hitting = [m for m in case.marks if m.hits(region)]
                rc.append(i)
                rb.append(max((m.probability for m in hitting), default=-math.inf))
                rm.append(any(m.marked for m in hitting))
            for mark in case.marks:
                if not any(mark.hits(r) for r in case.regions):
                    fc.append(i)
                    fp.append(mark.probability)
                    fm.append(mark.marked)
        return cls(
            np.array(rc, dtype=int),
            np.array(rb, dtype=float),
            np.array(fc, dtype=int),
            np.array(fp, dtype=float),
            np.array(rm, dtype=bool),
            np.array(fm, dtype=bool),
            np.array(pos, dtype=bool),
        )


def _curves(f: _Froc, weights: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Lesion sensitivity and false positives per case at each threshold, per row of
    case weights (how often each case is drawn)."""

    def counts(case: np.ndarray, prob: np.ndarray) -> np.ndarray:
        order = np.argsort(-prob, kind="mergesort")
        w = np.concatenate([np.zeros((len(weights), 1)), weights[:, case[order]]], axis=1)
        cum = np.cumsum(w, axis=1)
        # how many of these (sorted, descending) are at or above each threshold
        above = np.searchsorted(-prob[order], -thresholds, side="right")
        return cum[:, above]

    per_case = np.bincount(f.region_case, minlength=weights.shape[1])
    n_regions = (weights @ per_case)[:, None]
    n_cases = weights.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = counts(f.region_case, f.region_best) / n_regions
    return sensitivity, counts(f.fp_case, f.fp_probability) / n_cases


def _at_rates(sensitivity: np.ndarray, fppc: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Per row, the sensitivity at the lowest threshold with at most ``rate`` false
    positives per case (both rise as the threshold falls; column 0 is +inf: 0 and 0)."""
    last = np.stack([np.searchsorted(row, rates + 1e-12, side="right") - 1 for row in fppc])
    return np.take_along_axis(sensitivity, np.maximum(last, 0), axis=1)


def froc(
    cases: Sequence[LocalisedCase],
    *,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    rates: Sequence[float] = FP_RATES,
) -> dict:
    """The FROC curve with its bootstrap band, the sensitivity at ``rates`` false
    positives per case, and the point at the operating thresholds (the kept marks).

    ``cases``: negatives and positives with reference regions (others are dropped).
    Returns JSON: ``curve`` {fp_per_case, sensitivity, threshold}, ``band``
    {fp_per_case, lower, upper}, ``at_fp_rates`` [{fp_per_case, sensitivity (Estimate)}],
    ``at_threshold`` {sensitivity, fp_per_case (Estimates)}, ``lesions``, ``cases``,
    ``bootstrap`` {resamples, seed, stratified}.
    """
    kept = [c for c in cases if c.label == 0 or c.regions]
    if not any(c.label == 1 for c in kept):
        raise ValueError("a FROC curve needs positive cases with reference regions")
    f = _Froc.of(kept)
    probs = np.r_[f.region_best[np.isfinite(f.region_best)], f.fp_probability]
    thresholds = np.r_[math.inf, np.unique(probs)[::-1]]
    one = np.ones((1, len(kept)))
    sens, fppc = (a[0] for a in _curves(f, one, thresholds))
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(kept)))
    for group in (np.flatnonzero(f.positive), np.flatnonzero(~f.positive)):
        if len(group):
            draws = group[rng.integers(0, len(group), (n_boot, len(group)))]
            np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    grid = np.linspace(0.0, max(float(fppc[-1]), max(rates)), BAND_POINTS)
    rate_arr = np.asarray(rates, dtype=float)
    at_point = _at_rates(sens[None, :], fppc[None, :], rate_arr)[0]
    band_parts, rate_parts = [], []
    for start in range(0, n_boot, BOOT_CHUNK):  # a few hundred resamples at a time: memory
        boot_sens, boot_fppc = _curves(f, weights[start : start + BOOT_CHUNK], thresholds)
        band_parts.append(_at_rates(boot_sens, boot_fppc, grid))
        rate_parts.append(_at_rates(boot_sens, boot_fppc, rate_arr))
    band, at_boot = np.concatenate(band_parts), np.concatenate(rate_parts)

    def estimate(value: float, boots: np.ndarray, n: int) -> dict:
        lo, hi = np.nanpercentile(boots, [2.5, 97.5])
        return Estimate(float(value), float(lo), float(hi), n).to_json()

    n_lesions = len(f.region_case)

    # the point the report's marks give at the operating thresholds in force
    def per_case(case: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(case, weights=values.astype(float), minlength=len(kept))

    with np.errstate(invalid="ignore", divide="ignore"):
        marked_sens = (weights @ per_case(f.region_case, f.region_marked)) / (
            weights @ per_case(f.region_case, np.ones(n_lesions))
        )
    marked_fppc = (weights @ per_case(f.fp_case, f.fp_marked)) / weights.sum(1)
    idx = _thin(len(thresholds), MAX_CURVE_POINTS)
    return {
        "lesions": n_lesions,
        "cases": len(kept),
        "curve": {
            "fp_per_case": [round(float(v), 4) for v in fppc[idx]],
            "sensitivity": [round(float(v), 4) for v in sens[idx]],
            "threshold": [None if math.isinf(t) else round(float(t), 6) for t in thresholds[idx]],
        },
        "band": {
            "fp_per_case": [round(float(v), 4) for v in grid],
            "lower": [round(float(v), 4) for v in np.nanpercentile(band, 2.5, axis=0)],
            "upper": [round(float(v), 4) for v in np.nanpercentile(band, 97.5, axis=0)],
        },
        "at_fp_rates": [
            {
                "fp_per_case": float(r),
                "sensitivity": estimate(at_point[i], at_boot[:, i], n_lesions),
            }
            for i, r in enumerate(rate_arr)
        ],
        "at_threshold": {
            "sensitivity": estimate(f.region_marked.mean(), marked_sens, n_lesions),
            "fp_per_case": estimate(f.fp_marked.sum() / len(kept), marked_fppc, len(kept)),
        },
        "bootstrap": {"resamples": n_boot, "seed": seed, "stratified": True},
    }


def _thin(n: int, max_points: int) -> np.ndarray:
    """Indices keeping the ends and at most ``max_points`` points."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.r_[0, np.linspace(0, n - 1, max_points).astype(int), n - 1])


def localisation(cases: Sequence[LocalisedCase], findings: Sequence[str] = ()) -> dict | None:
    """The localisation figures of a calibration test, or None when no positive case has
    reference regions. ``findings``: the finding keys whose marks count (all when empty)."""
    scoped = [LocalisedCase(c.label, c.regions, scored_marks(c, findings)) for c in cases]
    if not any(c.label == 1 and c.regions for c in scoped):
        return None
    return {
        "findings": list(findings),
        "pointing_game": pointing_game(scoped).to_json(),
        "froc": froc(scoped),
    }
