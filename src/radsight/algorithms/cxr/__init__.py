"""Built-in chest radiograph and fluorography algorithms (docs/models/cxr.md).

One small CNN (``cxr.onnx``, trained by ``python -m radsight_train cxr``) serves two routing
targets that differ only in their operating threshold:

- :class:`ChestRadiographAlgorithm` (``radsight-cxr``, study type ``cxr``): the threshold
  that maximised Youden's J on validation;
- :class:`FluorographyAlgorithm` (``radsight-flg``, study type ``flg``): a screening
  threshold that kept sensitivity >= 0.95 on validation.

Per frontal image the model gives an abnormality probability (airspace opacity / pneumonia,
temperature-calibrated) and two maps at 1/4 resolution: opacity and lung fields. Opacity
regions become boxes (POLYGON SCOORD) on the source image; the lung map refuses images with
no lung fields in them (a mammogram or CT slice sent as DX).

Fluorography is told apart by data, not here: routing classifies a CR/DX study as ``flg``
when its ImageType, ProtocolName, StudyDescription, SeriesDescription or
RequestedProcedureDescription names fluorography
(:func:`radsight.pipeline.routing.is_fluorography`, re-exported here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from radsight.algorithms.cxr.preprocess import Letterbox, preprocess
from radsight.algorithms.onnx import load_session
from radsight.pipeline.routing import is_fluorography

__all__ = [
    "ChestRadiographAlgorithm",
    "FluorographyAlgorithm",
    "ImagePrediction",
    "PNEUMONIA",
    "check_image",
    "is_fluorography",
]

MODEL_DIR = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads((MODEL_DIR / "cxr.json").read_text())

#: SNOMED CT 233604007 |Pneumonia (disorder)|: RSNA "lung opacity", Kermany and COVID-19
#: pneumonia labels all mean airspace opacity read as pneumonia
PNEUMONIA = Code("233604007", "SCT", "Pneumonia")

CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_PA", "CHEST_AP"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LEFT LATERAL", "RIGHT LATERAL"})
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX"})
MIN_SIDE = 128
#: share of the canvas the lung map must cover for an image to count as a chest radiograph
#: (chosen on validation chest images and training non-chest images by radsight_train)
MIN_LUNG_FRACTION = float(CONFIG.get("min_lung_fraction", 0.04))

def _get_session() -> Any:
    """The model's ONNX Runtime session (one per process, one thread)."""
    return load_session(MODEL_DIR / CONFIG["model"])


def check_image(image: ImageInput) -> str | None:
    """The reason this image cannot be analysed, or None if it can."""
    uid = image.sop_instance_uid
    modality = (image.modality or "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        return f"modality {modality} is not a radiograph (CR or DX expected)"
    body_part = (image.body_part_examined or "").strip().upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        return f"body part examined is {body_part}, not the chest"
    view = (image.view_position or "").strip().upper()
    if view in LATERAL_VIEWS:
        return f"image {uid} is a lateral view ({view}); the model reads frontal views only"
    pixels = image.pixels
    if pixels.ndim != 2:
        return f"image {uid} is not a single grey frame (shape {pixels.shape})"
    if min(pixels.shape) < MIN_SIDE:
        return (
            f"image {uid} is too small ({pixels.shape[1]}x{pixels.shape[0]} pixels, "
            f"at least {MIN_SIDE} needed)"
        )
    step = max(1, max(pixels.shape) // 512)
    sample = np.asarray(pixels[::step, ::step], dtype=np.float64)
    if not np.isfinite(sample).all():
        return f"image {uid} has pixel values that are not finite"
    lo, p1, p99, hi = np.percentile(sample, [0, 1, 99, 100])
    if hi - lo == 0 or p99 - p1 <= 1e-6 * max(1.0, abs(hi)):
        return f"image {uid} is blank (no contrast)"
    at_extreme = float(np.mean((sample <= lo) | (sample >= hi)))
    if at_extreme > 0.6:
        return f"image {uid} is saturated ({at_extreme:.0%} of pixels at the extreme values)"
    return None


@dataclass(frozen=True)
class ImagePrediction:
    """What the model says about one image, maps on the 224-px model canvas."""

    probability: float
    #: opacity probability map on the model canvas, 1/4 resolution (56 x 56)
    opacity_map: np.ndarray
    lung_map: np.ndarray
    letterbox: Letterbox
    #: candidate opacity regions, best first: (peak probability, region on the source)
    regions: tuple[tuple[float, Region], ...]
    #: the opacity map's peak as a source (column, row)
    peak: tuple[float, float]
    lung_fraction: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _components(binary: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a small boolean grid, as index arrays (no scipy here)."""
    seen = np.zeros_like(binary, dtype=bool)
    rows, cols = binary.shape
    out = []
    for r0, c0 in zip(*np.nonzero(binary), strict=True):
        if seen[r0, c0]:
            continue
        stack, members = [(r0, c0)], []
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            members.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < rows and 0 <= cc < cols and binary[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        out.append(np.array(members))
    return out


def predict_image(image: ImageInput) -> ImagePrediction:
    """Preprocess, run the model, and turn the opacity map into source regions."""
    size = CONFIG["input"]["size"]
    canvas, box = preprocess(
        image.pixels, size, CONFIG["input"]["percentile_low"], CONFIG["input"]["percentile_high"]
    )
    logit, seg = _get_session().run(None, {"image": canvas[None, None]})
    probability = float(_sigmoid(float(logit[0]) / CONFIG["temperature"]))
    opacity, lung = _sigmoid(seg[0, 0].astype(np.float64)), _sigmoid(seg[0, 1].astype(np.float64))
    cell = size / opacity.shape[0]
    # only the part of the canvas the image covers counts (not the letterbox bars)
    r0, r1 = int(box.top // cell), int(np.ceil((box.top + box.height) / cell))
    c0, c1 = int(box.left // cell), int(np.ceil((box.left + box.width) / cell))
    inside = np.zeros_like(opacity, dtype=bool)
    inside[r0:r1, c0:c1] = True
    opacity = np.where(inside, opacity, 0.0)
    # an opacity that whites out a lung still counts as lung field: never refuse the sickest
    lung_fraction = float(((lung > 0.5) | (opacity > 0.5))[inside].sum() / inside.size)
    peak_r, peak_c = np.unravel_index(int(np.argmax(opacity)), opacity.shape)
    px, py = box.to_source((peak_c + 0.5) * cell, (peak_r + 0.5) * cell)
    rc = CONFIG["region"]
    peak_value = float(opacity[peak_r, peak_c])
    # below the fixed threshold, the top region is the area around the peak at half its value
    level = rc["threshold"] if peak_value >= rc["threshold"] else 0.5 * peak_value
    regions = []
    min_cells = rc["min_area_fraction"] * opacity.size
    for members in _components(opacity >= level) if peak_value > 0 else []:
        if len(members) < min_cells and not (members == (peak_r, peak_c)).all(1).any():
            continue
        rows, cols = members[:, 0], members[:, 1]
        x0, y0 = box.to_source(cols.min() * cell, rows.min() * cell)
        x1, y1 = box.to_source((cols.max() + 1) * cell, (rows.max() + 1) * cell)
        region = Region.box(
            image.sop_instance_uid, float(x0), float(y0), float(x1), float(y1), image.frame_number
        )
        regions.append((float(opacity[rows, cols].max()), region))
    regions.sort(key=lambda pr: -pr[0])
    return ImagePrediction(
        probability=probability,
        opacity_map=opacity,
        lung_map=lung,
        letterbox=box,
        regions=tuple(regions[: rc["max_regions"]]),
        peak=(float(px), float(py)),
        lung_fraction=lung_fraction,
    )


class ChestRadiographAlgorithm(Algorithm):
    """Airspace opacity / pneumonia on frontal chest radiographs, with marked areas."""

    name = "radsight-cxr"
    version = "1.0.0"
    study_types: tuple[str, ...] = ("cxr",)
    threshold_key = "cxr"
    time_limit_s = 60.0
    description = (
        "Compact CNN: probability of airspace opacity / pneumonia on frontal chest "
        "radiographs (adult and pediatric), opacity areas marked as boxes. Not a diagnosis."
    )

    def __init__(self) -> None:
        threshold = float(CONFIG["thresholds"][self.threshold_key])
        self.findings = (FindingSpec("pneumonia", PNEUMONIA, threshold=threshold),)
        self.study_threshold = threshold

    def _analysable(self, study: StudyInput) -> list[ImageInput]:
        if not study.images:
            raise NotAnalysable("the study has no images with pixel data")
        reasons, usable = [], []
        for image in study.images:
            reason = check_image(image)
            if reason is None:
                usable.append(image)
            else:
                reasons.append(reason)
        if not usable:
            raise NotAnalysable("; ".join(dict.fromkeys(reasons)))
        return usable

    def check(self, study: StudyInput) -> None:
        self._analysable(study)

    def analyse(self, study: StudyInput) -> Analysis:
        predictions = []
        for image in self._analysable(study):
            prediction = predict_image(image)
            if prediction.lung_fraction >= MIN_LUNG_FRACTION:
                predictions.append(prediction)
        if not predictions:
            raise NotAnalysable("no lung fields found: not a frontal chest radiograph")
        threshold = self.findings[0].threshold
        probability = max(p.probability for p in predictions)
        regions = tuple(
            region for p in predictions if p.probability >= threshold for _, region in p.regions
        )
        finding = Finding("pneumonia", round(probability, 6), regions)
        return Analysis(findings=(finding,), study_score=round(probability, 6))


class FluorographyAlgorithm(ChestRadiographAlgorithm):
    """The chest radiograph model at a screening operating point (high sensitivity)."""

    name = "radsight-flg"
    study_types = ("flg",)
    threshold_key = "flg"
    description = (
        "Fluorography screening: the radsight-cxr model at a high-sensitivity threshold; "
        "airspace opacity / pneumonia probability with marked areas. Not a diagnosis."
    )
