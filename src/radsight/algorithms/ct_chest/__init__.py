"""Built-in chest CT algorithm: COVID-19-like pneumonia (docs/models/ct-chest.md).

``radsight-ct-chest`` (study type ``ct-chest``) reads one axial CT series:

1. series selection and volume assembly (:mod:`radsight.algorithms.ct_volume`): scouts,
   secondary captures and reformats dropped, the thinnest series (lung kernel preferred)
   sorted into a HU volume;
2. lungs by classical HU thresholding (:mod:`radsight.algorithms.ct_chest.lungs`);
3. lesions (ground-glass opacity and consolidation together) by a small U-Net
   (``ct_chest.onnx``, trained by ``python -m radsight_train ct-chest``) on every slice
   that has lung, shown the lung window (-600/1500 HU) of the lungs' bounding box;
4. the share of lung involved and the CT 0-4 severity grade of the Moscow COVID-19 CT
   scale: CT-0 none, CT-1 < 25 %, CT-2 25-50 %, CT-3 50-75 %, CT-4 >= 75 %.

Findings: ``ggo-consolidation`` (SNOMED CT 1217294009 Ground glass opacity; the model's
mask covers consolidation too) with its lesions outlined per slice (convex POLYGONs on
the source images; the largest 2 per slice, at most 400, each with its mean probability;
without a lesion, the most probable 2 components per slice too small to count, at most
20, or else the area around the map's peak, as candidates for an operating point below
the lesion threshold), and three
cumulative severity findings ``involvement-25/50/75`` (declared ``located=False``: a share
of lung has no place on an image) whose score is a steep logistic of the measured share
around each cut-off, so that the grade can be read in the SR as the number of positive
findings. The platform marks the candidates at the operating point in force
(:mod:`radsight.operating_points`). The study score is the
lesion probability when no lesion is found, else 0.5 + 0.5 * min(1, share / 0.75).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from radsight.algorithms.contract import (
    Algorithm,
    Analysis,
    Code,
    Finding,
    FindingSpec,
    ImageInput,
    NotAnalysable,
    Region,
    StudyInput,
)
from radsight.algorithms.ct_chest.lungs import LungMask, lung_mask
from radsight.algorithms.ct_chest.preprocess import SIZE, to_canvas, to_source
from radsight.algorithms.ct_volume import LUNG, Volume, assemble_volume, select_series, window
from radsight.algorithms.evidence import load_evidence
from radsight.algorithms.onnx import load_session

__all__ = [
    "GGO_CONSOLIDATION",
    "ChestCTAlgorithm",
    "ChestCTAssessment",
    "assess",
    "check_study",
    "grade_for",
    "segment_slices",
]

MODEL_DIR = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads((MODEL_DIR / "ct_chest.json").read_text())

#: SNOMED CT 1217294009 |Ground glass opacity|: the model's lesion mask is GGO and
#: consolidation together (the Inf-Net "infection" mask)
GGO_CONSOLIDATION = Code("1217294009", "SCT", "Ground glass opacity")
INVOLVEMENT = {
    25: Code("RS-CT-INV25", "99RADSIGHT", "Lung involvement 25 % or more (CT-2 or higher)"),
    50: Code("RS-CT-INV50", "99RADSIGHT", "Lung involvement 50 % or more (CT-3 or higher)"),
    75: Code("RS-CT-INV75", "99RADSIGHT", "Lung involvement 75 % or more (CT-4)"),
}
#: width of the logistic around each cut-off, as a share of lung
INVOLVEMENT_SOFTNESS = 0.02

#: body parts that are certainly not the chest (an empty or a wider one is checked by
#: the lung mask instead)
NOT_CHEST = frozenset(
    {
        "HEAD", "BRAIN", "SKULL", "HEADNECK", "NECK", "ABDOMEN", "PELVIS", "ABDOMENPELVIS",
        "KNEE", "ANKLE", "FOOT", "HAND", "WRIST", "ELBOW", "SHOULDER", "HIP", "LEG", "ARM",
        "EXTREMITY", "CSPINE", "LSPINE", "SSPINE", "BREAST", "IAC", "SINUS", "ORBIT", "JAW",
    }
)  # fmt: skip
MIN_SLICES = int(CONFIG.get("min_slices", 16))
#: no slice with this share of the body's cross-section in lung: not a chest CT
MIN_LUNG_SLICE_FRACTION = 0.15
MIN_LUNG_ML = 200.0
#: lesion components smaller than this on a slice (about 8 mm across) are neither marked
#: nor counted: vessels cut across near the hila otherwise give false marks
MIN_MARK_MM2 = 50.0
MAX_MARKS_PER_SLICE = 2
MAX_REGIONS = 400
MAX_FAINT_REGIONS = 20
BATCH = 16
#: thinner series are read every n-th slice (see :func:`assess`)
MODEL_SLICE_MM = 2.0


def _get_session() -> Any:
    """The model's ONNX Runtime session (one per process, one thread)."""
    return load_session(MODEL_DIR / CONFIG["model"])


def grade_for(share: float, lesion_present: bool = True) -> int:
    """CT 0-4 severity grade from the share of lung involved (0..1)."""
    if not lesion_present or share <= 0:
        return 0
    return 1 + int(share >= 0.25) + int(share >= 0.5) + int(share >= 0.75)


def segment_slices(images: list[np.ndarray]) -> list[np.ndarray]:
    """Lesion probability of 0..1 lung-window images, each on its own grid (batched)."""
    out: list[np.ndarray] = []
    for start in range(0, len(images), BATCH):
        chunk = images[start : start + BATCH]
        canvases, boxes = zip(*(to_canvas(img, SIZE) for img in chunk), strict=True)
        (logits,) = _get_session().run(None, {"image": np.stack(canvases)[:, None]})
        for logit, box in zip(logits[:, 0], boxes, strict=True):
            prob = 1.0 / (1.0 + np.exp(-logit.astype(np.float32)))
            out.append(to_source(prob, box, SIZE))
    return out


@dataclass(frozen=True)
class ChestCTAssessment:
    """Everything the algorithm measured on one study (on the lung mask's grid)."""

    volume: Volume
    lungs: LungMask
    #: lesion probability per cell, 0 outside the lung region
    probability: np.ndarray
    lesion: np.ndarray
    lung_ml: float
    lesion_ml: float
    share: float
    grade: int
    lesion_probability: float
    #: the lesions' outlines (the largest few per slice), each with its mean probability
    regions: tuple[Region, ...]
    #: without a lesion: outlines of the components too small to count (the most probable
    #: few per slice), each with its probability, none above ``lesion_probability``; with
    #: no component at all, the area around the map's peak
    faint_regions: tuple[Region, ...] = ()

    @property
    def lesion_present(self) -> bool:
        return self.grade > 0


def check_study(study: StudyInput) -> list[ImageInput]:
    """The series to read, or :class:`NotAnalysable` with the reason."""
    if not study.images:
        raise NotAnalysable("the study has no images with pixel data")
    modalities = {(i.modality or "").upper() for i in study.images} - {""}
    if modalities and "CT" not in modalities:
        raise NotAnalysable(f"modality {', '.join(sorted(modalities))} is not CT")
    parts = {(i.body_part_examined or "").strip().upper() for i in study.images} - {""}
    if parts and parts <= NOT_CHEST:
        raise NotAnalysable(f"body part examined is {', '.join(sorted(parts))}, not the chest")
    series = select_series(study.images, min_slices=MIN_SLICES, kernel="sharp")
    middle = np.asarray(series[len(series) // 2].pixels)
    if middle.ndim != 2 or min(middle.shape) < 64:
        raise NotAnalysable(f"unusable pixels: slices of shape {middle.shape} (64 x 64 or more)")
    if not np.isfinite(middle).all():
        raise NotAnalysable("unusable pixels: values that are not finite")
    if float(middle.min()) > -500.0:
        raise NotAnalysable(
            "unusable pixels: no value below -500 HU in the middle slice, so the pixels are "
            "not Hounsfield units (or the slice holds no air)"
        )
    return series


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull of (x, y) points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return [(float(x), float(y)) for x, y in pts]

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    upper: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return [(float(x), float(y)) for x, y in lower[:-1] + upper[:-1]]


def _outline(members: np.ndarray, step: int, rows: int, cols: int) -> tuple:
    """The convex outline of grid cells (row, col) in source pixel coordinates, closed."""
    r, c = members[:, 0], members[:, 1]
    corners = np.concatenate([np.stack([c + dx, r + dy], 1) for dy in (0, 1) for dx in (0, 1)])
    hull = _hull(corners)
    pts = [(min(x * step, cols), min(y * step, rows)) for x, y in hull]
    return (*pts, pts[0])


def _marks(volume: Volume, lesion: np.ndarray, prob: np.ndarray, step: int) -> tuple:
    """Lesion components per slice: the kept mask (components of at least MIN_MARK_MM2),
    outlines of the largest few kept ones per slice with their mean probability, outlines
    of the most probable few smaller ones per slice with their probability (mean times
    size over the minimum size), and the best such probability over all components."""
    cell_mm2 = volume.spacing[1] * volume.spacing[2] * step * step
    min_cells = max(1, math.ceil(MIN_MARK_MM2 / cell_mm2))
    rows, cols = volume.hu.shape[1:]
    candidates: list[tuple[int, float, Region]] = []
    faint: list[tuple[float, Region]] = []
    best = 0.0
    kept_mask = np.zeros_like(lesion)
    eight = np.ones((3, 3), bool)
    for k in np.nonzero(lesion.any((1, 2)))[0]:
        labels, n = ndimage.label(lesion[k], structure=eight)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sums = np.bincount(labels.ravel(), weights=prob[k].ravel(), minlength=n + 1)
        means = sums / np.maximum(sizes, 1)
        big = sizes >= min_cells
        big[0] = False
        kept_mask[k] = big[labels]
        # a component below the size counts in proportion to its size
        weighted = means * np.minimum(1.0, sizes / min_cells)
        best = max(best, float(weighted[1:].max()))
        image = volume.images[int(k)]

        def outline(i: int, p: float, image: ImageInput = image, labels: np.ndarray = labels):
            points = _outline(np.argwhere(labels == i), step, rows, cols)
            return Region(image.sop_instance_uid, "POLYGON", points, image.frame_number, p)

        for i in [i for i in np.argsort(-sizes) if big[i]][:MAX_MARKS_PER_SLICE]:
            candidates.append((int(sizes[i]), float(means[i]), outline(i, float(means[i]))))
        small = [i for i in np.argsort(-weighted, kind="stable") if i and not big[i]]
        for i in small[:MAX_MARKS_PER_SLICE]:
            faint.append((float(weighted[i]), outline(i, float(weighted[i]))))
    candidates.sort(key=lambda c: -c[0])
    faint.sort(key=lambda c: -c[0])
    return (
        kept_mask,
        tuple(r for _, _, r in candidates[:MAX_REGIONS]),
        tuple(r for _, r in faint[:MAX_FAINT_REGIONS]),
        best,
    )


def _peak_region(
    volume: Volume, prob: np.ndarray, step: int, probability: float
) -> tuple[Region, ...]:
    """With no component at the lesion threshold at all: the area around the map's peak at
    half its value, on the peak's slice, with the finding's probability (the only
    candidate for an operating point at or below it); none when the map is empty."""
    k, r, c = np.unravel_index(int(np.argmax(prob)), prob.shape)
    peak = float(prob[k, r, c])
    if peak <= 0.0:
        return ()
    labels, _ = ndimage.label(prob[k] >= 0.5 * peak, structure=np.ones((3, 3), bool))
    rows, cols = volume.hu.shape[1:]
    points = _outline(np.argwhere(labels == labels[r, c]), step, rows, cols)
    image = volume.images[int(k)]
    return (Region(image.sop_instance_uid, "POLYGON", points, image.frame_number, probability),)


def assess(study: StudyInput) -> ChestCTAssessment:
    """Select, assemble, segment lungs and lesions, and measure (no I/O)."""
    series = check_study(study)
    volume = assemble_volume(series)
    lungs = lung_mask(volume.hu, volume.spacing)
    fraction = lungs.slice_fraction()
    if lungs.volume_ml < MIN_LUNG_ML or float(fraction.max()) < MIN_LUNG_SLICE_FRACTION:
        raise NotAnalysable(
            f"no lungs found: {lungs.volume_ml:.0f} mL of lung, at most "
            f"{100 * float(fraction.max()):.0f} % of a slice's body cross-section (at least "
            f"{MIN_LUNG_ML:.0f} mL and {100 * MIN_LUNG_SLICE_FRACTION:.0f} % expected): not a "
            "chest CT, or the lungs are outside the field of view"
        )
    step = lungs.step
    region = lungs.region
    # one crop for every slice: the lungs' bounding box with a margin, like the training
    # slices (cropped to the lungs)
    zs, ys, xs = np.nonzero(region)
    margin_r = max(1, int(0.08 * (ys.max() - ys.min() + 1)))
    margin_c = max(1, int(0.08 * (xs.max() - xs.min() + 1)))
    r0, r1 = max(0, ys.min() - margin_r), min(region.shape[1], ys.max() + 1 + margin_r)
    c0, c1 = max(0, xs.min() - margin_c), min(region.shape[2], xs.max() + 1 + margin_c)
    with_lung = np.nonzero(region.any((1, 2)))[0]
    # thin slices: the model reads slices about MODEL_SLICE_MM apart, the ones between
    # take the linear interpolation of their neighbours' maps
    stride = max(1, int(MODEL_SLICE_MM / max(volume.spacing[0], 1e-3)))
    read = list(with_lung[::stride])
    if read[-1] != with_lung[-1]:
        read.append(int(with_lung[-1]))
    crops = [window(volume.hu[k, r0 * step : r1 * step, c0 * step : c1 * step], LUNG) for k in read]
    prob = np.zeros(region.shape, np.float32)
    h, w = (r1 - r0), (c1 - c0)
    for k, p in zip(read, segment_slices(crops), strict=True):
        # the full-resolution map back on the lung grid (block mean over step x step)
        prob[k, r0:r1, c0:c1] = p[: h * step, : w * step].reshape(h, step, w, step).mean((1, 3))
    for a, b in zip(read, read[1:], strict=False):
        for k in range(a + 1, b):
            prob[k] = ((b - k) * prob[a] + (k - a) * prob[b]) / (b - a)
    prob *= region
    threshold = float(CONFIG.get("lesion_threshold", 0.5))
    lesion, regions, faint, best = _marks(volume, prob >= threshold, prob, step)
    lung_cells = int(region.sum())
    share = float(lesion.sum()) / max(1, lung_cells)
    probability = best if regions else min(best, threshold - 1e-3)
    # without a lesion, the components too small to count are the candidates to mark (at
    # an operating point below the lesion threshold), none more probable than the finding
    if regions:
        faint = ()
    elif faint:
        faint = tuple(replace(r, probability=min(probability, r.probability or 0.0)) for r in faint)
    else:
        faint = _peak_region(volume, prob, step, probability)
    return ChestCTAssessment(
        volume=volume,
        lungs=lungs,
        probability=prob,
        lesion=lesion,
        lung_ml=lungs.volume_ml,
        lesion_ml=float(lesion.sum()) * lungs.voxel_ml,
        share=share,
        grade=grade_for(share, bool(regions)),
        lesion_probability=probability,
        regions=regions,
        faint_regions=faint,
    )


class ChestCTAlgorithm(Algorithm):
    """GGO / consolidation on chest CT: lesion outlines, share of lung involved, CT 0-4."""

    name = "radsight-ct-chest"
    version = "1.0.0"
    study_types: tuple[str, ...] = ("ct-chest",)
    time_limit_s = 300.0
    description = (
        "Chest CT, COVID-19-like pneumonia: ground-glass opacity / consolidation outlined "
        "per slice by a compact U-Net, share of lung involved and the CT 0-4 severity grade. "
        "Not a diagnosis."
    )

    def __init__(self) -> None:
        threshold = float(CONFIG.get("lesion_threshold", 0.5))
        self.findings = (
            FindingSpec("ggo-consolidation", GGO_CONSOLIDATION, threshold=threshold),
            *(
                FindingSpec(f"involvement-{cut}", code, 0.5, located=False)
                for cut, code in INVOLVEMENT.items()
            ),
        )
        self.study_threshold = 0.5

    def shipped_evidence(self) -> dict | None:
        """The model card's lesion segmentation figures (docs/models/ct-chest.md): 48
        slices, all positive, no study-level AUROC, so it starts in shadow."""
        return load_evidence(MODEL_DIR / "evidence.json", self.name, self.version)

    def check(self, study: StudyInput) -> None:
        check_study(study)

    def analyse(self, study: StudyInput) -> Analysis:
        result = assess(study)
        candidates = result.regions or result.faint_regions
        findings = [Finding("ggo-consolidation", round(result.lesion_probability, 6), candidates)]
        for cut in INVOLVEMENT:
            z = (result.share - cut / 100) / INVOLVEMENT_SOFTNESS
            score = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
            findings.append(Finding(f"involvement-{cut}", round(score, 6)))
        if result.lesion_present:
            study_score = 0.5 + 0.5 * min(1.0, result.share / 0.75)
        else:
            study_score = result.lesion_probability * 0.5 / self.findings[0].threshold
        return Analysis(findings=tuple(findings), study_score=round(study_score, 6))
