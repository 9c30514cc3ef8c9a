"""Built-in chest radiograph and fluorography algorithms (docs/models/cxr.md).

One small CNN (``cxr.onnx``, trained by ``python -m radsight_train cxr``) serves two routing
targets that differ only in their operating threshold:

- :class:`ChestRadiographAlgorithm` (``radsight-cxr``, study type ``cxr``): the threshold
  that maximised Youden's J on validation;
- :class:`FluorographyAlgorithm` (``radsight-flg``, study type ``flg``): a screening
  threshold that kept sensitivity >= 0.95 on validation.

Per frontal image the model gives an abnormality probability (airspace opacity / pneumonia,
temperature-calibrated) and two maps at 1/4 resolution: opacity and lung fields. Opacity
regions become boxes (POLYGON SCOORD) on the source image, at most ``region.max_regions``
(3) per image, each carrying its image's probability (the platform marks those of the
images at the operating point in force, :mod:`radsight.operating_points`); the lung map
refuses images with no lung fields in them (a mammogram or CT slice sent as DX).

A second finding, tuberculosis-like lesion, is marked by a small head on the same network's
frozen feature maps (``feat16``/``feat32`` outputs of ``cxr.onnx``; weights in the ``tb``
section of ``cxr.json``, trained by ``python -m radsight_train cxr-tb``): a per-cell logistic
regression on a 14 x 14 grid of the lung fields, run here with numpy. Its top cells become
boxes (at most ``tb.region.max_regions``, 2, per image). The data has no TB-negative
images from the TB source, and the head's own image-level score did not separate TB from
normals of another source (docs/models/cxr.md), so the finding's probability and operating
points are the model's abnormality probability and thresholds: the finding says "abnormal;
the TB-like lesion, if any, is most likely here", and the study score stays the abnormality
probability.

Fluorography is told apart by data, not here: routing classifies a CR/DX study as ``flg``
when its ImageType, ProtocolName, StudyDescription, SeriesDescription or
RequestedProcedureDescription names fluorography
(:func:`radsight.dicom.study_types.is_fluorography`, re-exported here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from radsight.algorithms.checks import grey_frame_problem, usable_images
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
from radsight.algorithms.evidence import load_evidence
from radsight.algorithms.onnx import load_session
from radsight.dicom.study_types import is_fluorography

__all__ = [
    "TB_LIKE_LESION",
    "ChestRadiographAlgorithm",
    "FluorographyAlgorithm",
    "ImagePrediction",
    "PNEUMONIA",
    "check_image",
    "is_fluorography",
    "predict_image",
    "tb_cell_logits",
    "tb_features",
]

MODEL_DIR = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads((MODEL_DIR / "cxr.json").read_text())
#: the tuberculosis-like lesion head (absent only until ``radsight_train cxr-tb`` has run on
#: a freshly trained backbone)
TB_CONFIG: dict[str, Any] = CONFIG.get("tb", {})
#: the head's weights as arrays, converted once
_TB_HEAD = {k: np.asarray(v, dtype=np.float64) for k, v in TB_CONFIG.get("head", {}).items()}

#: SNOMED CT 233604007 |Pneumonia (disorder)|: RSNA "lung opacity", Kermany and COVID-19
#: pneumonia labels all mean airspace opacity read as pneumonia
PNEUMONIA = Code("233604007", "SCT", "Pneumonia")
#: no SNOMED CT concept means "lesion that looks like tuberculosis" (TBX11K boxes mark active
#: and healed/calcified TB alike, not a diagnosis): the project's private scheme, as mmg does
TB_LIKE_LESION = Code("RS-CXR-TBL", "99RADSIGHT", "Tuberculosis-like lesion")

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
    return grey_frame_problem(image, MIN_SIDE, max_saturated=0.6)


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
    #: the TB head's top lung-cell logit (a localisation score, not a TB probability)
    tb_score: float = 0.0
    #: the TB head's in-box probability per cell of the 14 x 14 grid (0 outside the lungs)
    tb_map: np.ndarray | None = None
    #: candidate TB regions, best first: (peak probability, region on the source)
    tb_regions: tuple[tuple[float, Region], ...] = ()
    #: the TB map's peak (centre of the top cell) as a source (column, row); None when no
    #: cell of the 14 x 14 grid lies in the lung fields
    tb_peak: tuple[float, float] | None = None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _components(binary: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a small boolean grid, as index arrays (no scipy here).

    Plain Python sets of (row, column) pairs: on these small grids that is several times
    faster than indexing the numpy array cell by cell.
    """
    cells = list(zip(*(axis.tolist() for axis in np.nonzero(binary)), strict=True))
    todo = set(cells)
    out = []
    for start in cells:
        if start not in todo:
            continue
        todo.discard(start)
        stack, members = [start], []
        while stack:
            r, c = stack.pop()
            members.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    neighbour = (r + dr, c + dc)
                    if neighbour in todo:
                        todo.discard(neighbour)
                        stack.append(neighbour)
        out.append(np.array(members))
    return out


def _run_model(canvas: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``cxr.onnx`` for one canvas, by name."""
    session = _get_session()
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": canvas[None, None]}), strict=True))


def _inside_cells(box: Letterbox, grid: int, size: int) -> np.ndarray:
    """Cells of a ``grid`` x ``grid`` map that overlap the image (not the letterbox bars)."""
    cell = size / grid
    r0, r1 = int(box.top // cell), int(np.ceil((box.top + box.height) / cell))
    c0, c1 = int(box.left // cell), int(np.ceil((box.left + box.width) / cell))
    inside = np.zeros((grid, grid), dtype=bool)
    inside[r0:r1, c0:c1] = True
    return inside


def tb_features(
    canvas: np.ndarray,
    box: Letterbox,
    outputs: dict[str, np.ndarray] | None = None,
    lung_cell_fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per-cell features of the TB head and the cells that lie in the lung fields.

    Returns ``(features, lung_cells, outputs)``: features ``(256, 14, 14)`` (the stride-16
    map and the stride-32 map repeated 2 x 2), lung cells as a boolean ``(14, 14)`` grid, and
    the model outputs (run here unless given). A cell is lung when at least
    ``lung_cell_fraction`` of it is (default: the shipped head's setting).
    """
    out = outputs if outputs is not None else _run_model(canvas)
    f16, f32 = out["feat16"][0], out["feat32"][0]
    grid = f16.shape[1]
    f32 = np.repeat(np.repeat(f32, 2, axis=1), 2, axis=2)[:, :grid, :grid]
    features = np.concatenate([f16, f32]).astype(np.float64)
    seg = out["seg"][0]
    lung = (seg[1] > 0) | (seg[0] > 0)  # sigmoid > 0.5; whited-out lungs count as lung
    k = lung.shape[0] // grid
    share = lung[: grid * k, : grid * k].reshape(grid, k, grid, k).mean(axis=(1, 3))
    if lung_cell_fraction is None:
        lung_cell_fraction = float(TB_CONFIG.get("lung_cell_fraction", 0.25))
    level = lung_cell_fraction
    inside = _inside_cells(box, grid, canvas.shape[0])
    return features, (share >= level) & inside, out


def tb_cell_logits(features: np.ndarray, head: dict[str, Any]) -> np.ndarray:
    """The TB head: a logistic regression per cell on standardised features (numpy only)."""
    mean = np.asarray(head["mean"], dtype=np.float64)[:, None, None]
    std = np.asarray(head["std"], dtype=np.float64)[:, None, None]
    weight = np.asarray(head["weight"], dtype=np.float64)
    z = (features - mean) / std
    return np.tensordot(weight, z, axes=1) + float(head["bias"])


def _map_regions(
    values: np.ndarray,
    level: float,
    min_cells: float,
    box: Letterbox,
    image: ImageInput,
    size: int,
) -> list[tuple[float, Region]]:
    """Connected areas of ``values >= level`` as source boxes, best first."""
    cell = size / values.shape[0]
    peak_r, peak_c = np.unravel_index(int(np.argmax(values)), values.shape)
    regions = []
    for members in _components(values >= level) if values[peak_r, peak_c] > 0 else []:
        if len(members) < min_cells and not (members == (peak_r, peak_c)).all(1).any():
            continue
        rows, cols = members[:, 0], members[:, 1]
        x0, y0 = box.to_source(cols.min() * cell, rows.min() * cell)
        x1, y1 = box.to_source((cols.max() + 1) * cell, (rows.max() + 1) * cell)
        region = Region.box(
            image.sop_instance_uid, float(x0), float(y0), float(x1), float(y1), image.frame_number
        )
        regions.append((float(values[rows, cols].max()), region))
    regions.sort(key=lambda pr: -pr[0])
    return regions


def predict_image(image: ImageInput) -> ImagePrediction:
    """Preprocess, run the model, and turn the opacity and TB maps into source regions."""
    size = CONFIG["input"]["size"]
    canvas, box = preprocess(
        image.pixels, size, CONFIG["input"]["percentile_low"], CONFIG["input"]["percentile_high"]
    )
    outputs = _run_model(canvas)
    logit, seg = outputs["logit"], outputs["seg"]
    probability = float(_sigmoid(float(logit[0]) / CONFIG["temperature"]))
    opacity, lung = _sigmoid(seg[0, 0].astype(np.float64)), _sigmoid(seg[0, 1].astype(np.float64))
    cell = size / opacity.shape[0]
    # only the part of the canvas the image covers counts (not the letterbox bars)
    inside = _inside_cells(box, opacity.shape[0], size)
    opacity = np.where(inside, opacity, 0.0)
    # an opacity that whites out a lung still counts as lung field: never refuse the sickest
    lung_fraction = float(((lung > 0.5) | (opacity > 0.5))[inside].sum() / inside.size)
    peak_r, peak_c = np.unravel_index(int(np.argmax(opacity)), opacity.shape)
    px, py = box.to_source((peak_c + 0.5) * cell, (peak_r + 0.5) * cell)
    rc = CONFIG["region"]
    peak_value = float(opacity[peak_r, peak_c])
    # below the fixed threshold, the top region is the area around the peak at half its value
    level = rc["threshold"] if peak_value >= rc["threshold"] else 0.5 * peak_value
    regions = _map_regions(opacity, level, rc["min_area_fraction"] * opacity.size, box, image, size)
    tb: dict[str, Any] = {}
    if TB_CONFIG:
        features, lung_cells, _ = tb_features(canvas, box, outputs)
        logits = np.where(lung_cells, tb_cell_logits(features, _TB_HEAD), -np.inf)
        tb_map = _sigmoid(logits)
        r, c = np.unravel_index(int(np.argmax(logits)), logits.shape)
        tb_cell = size / tb_map.shape[0]
        tx, ty = box.to_source((c + 0.5) * tb_cell, (r + 0.5) * tb_cell)
        trc = TB_CONFIG["region"]
        top = float(tb_map[r, c])
        tb_regions = _map_regions(tb_map, trc["relative_level"] * top, 1, box, image, size)
        tb = {
            "tb_score": float(logits[r, c]) if lung_cells.any() else 0.0,
            "tb_map": tb_map,
            "tb_regions": tuple(tb_regions[: trc["max_regions"]]),
            "tb_peak": (float(tx), float(ty)) if lung_cells.any() else None,
        }
    return ImagePrediction(
        probability=probability,
        opacity_map=opacity,
        lung_map=lung,
        letterbox=box,
        regions=tuple(regions[: rc["max_regions"]]),
        peak=(float(px), float(py)),
        lung_fraction=lung_fraction,
        **tb,
    )


class ChestRadiographAlgorithm(Algorithm):
    """Airspace opacity / pneumonia on frontal chest radiographs, with marked areas."""

    name = "radsight-cxr"
    version = "1.1.0"
    study_types: tuple[str, ...] = ("cxr",)
    threshold_key = "cxr"
    time_limit_s = 60.0
    description = (
        "Compact CNN: probability of airspace opacity / pneumonia on frontal chest "
        "radiographs (adult and pediatric), opacity areas marked as boxes; on abnormal "
        "images, where a tuberculosis-like lesion most likely is (a head trained on TBX11K "
        "boxes; not a TB probability). Not a diagnosis."
    )

    def __init__(self) -> None:
        threshold = float(CONFIG["thresholds"][self.threshold_key])
        findings = [FindingSpec("pneumonia", PNEUMONIA, threshold=threshold)]
        if TB_CONFIG:  # the abnormality operating point: see the module docstring
            findings.append(
                FindingSpec(
                    "tb-like-lesion", TB_LIKE_LESION, threshold=threshold, follows="pneumonia"
                )
            )
        self.findings = tuple(findings)
        self.study_threshold = threshold

    def shipped_evidence(self) -> dict | None:
        """A calibration test at this algorithm's own operating point on the model card's
        internal test splits (849 images; docs/models/cxr.md, "Admission evidence"):
        ``cxr.evidence.json`` / ``flg.evidence.json``."""
        return load_evidence(
            MODEL_DIR / f"{self.threshold_key}.evidence.json", self.name, self.version
        )

    def _analysable(self, study: StudyInput) -> list[ImageInput]:
        return usable_images(study, check_image)

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
        probability = max(p.probability for p in predictions)
        # every image's candidate areas, each with its image's probability: the platform
        # marks those of the images at the operating point in force
        regions = tuple(
            replace(region, probability=round(p.probability, 6))
            for p in predictions
            for _, region in p.regions
        )
        findings = [Finding("pneumonia", round(probability, 6), regions)]
        if len(self.findings) > 1:
            tb_regions = tuple(
                replace(region, probability=round(p.probability, 6))
                for p in predictions
                for _, region in p.tb_regions
            )
            findings.append(Finding("tb-like-lesion", round(probability, 6), tb_regions))
        # any finding vs normal: both findings share the abnormality probability
        return Analysis(findings=tuple(findings), study_score=round(probability, 6))


class FluorographyAlgorithm(ChestRadiographAlgorithm):
    """The chest radiograph model at a screening operating point (high sensitivity)."""

    name = "radsight-flg"
    study_types = ("flg",)
    threshold_key = "flg"
    description = (
        "Fluorography screening: the radsight-cxr model at high-sensitivity thresholds; "
        "airspace opacity / pneumonia with marked areas; on abnormal images, where a "
        "tuberculosis-like lesion most likely is (not a TB probability). Not a diagnosis."
    )
