"""Built-in non-contrast brain CT algorithm: intracranial haemorrhage (docs/models/ct-brain.md).

``radsight-ct-brain`` (study type ``ct-brain``) reads the study's best axial CT series
(:func:`radsight.algorithms.ct_volume.select_series`), assembles it in HU
(:func:`~radsight.algorithms.ct_volume.assemble_volume`; gantry tilt is measured and left
in place, so every mark lies on its own source slice), and runs a small 2-D CNN
(``ct_brain.onnx``, trained by ``python -m radsight_train ct-brain``) on each slice that
shows brain, with brain (40/80), subdural (80/200) and bone (600/2800) windows as the
three input channels. The model's class-activation map is the per-slice score's source
and gives the marked region (a box on the source slice).

- slice level: :meth:`BrainCTAlgorithm.predict_slices` gives every analysed slice's
  calibrated probability and its region; the ``region.max_slices`` (6) most probable slices
  are the finding's candidate regions, each with its slice's probability, and the SR and SC
  carry those at the operating point in force (:mod:`radsight.operating_points`);
- study level: the highest slice probability; a positive finding is urgent.

Input checks ("not analysed: <reason>"): no CT / no axial series (scouts, secondary
captures, reformats dropped), a body part other than the head, a field wider than a head,
no slice with enough brain tissue, unusable pixels.
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
    NotAnalysable,
    Region,
    StudyInput,
)
from radsight.algorithms.ct_brain.preprocess import BODY_HU, head_mask, prepare_slice
from radsight.algorithms.ct_volume import Volume, assemble_volume, select_series
from radsight.algorithms.cxr.preprocess import Letterbox
from radsight.algorithms.evidence import load_evidence
from radsight.algorithms.onnx import load_session

__all__ = ["HAEMORRHAGE", "BrainCTAlgorithm", "SlicePrediction", "head_slices", "intracranial"]

MODEL_DIR = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads((MODEL_DIR / "ct_brain.json").read_text())

#: SNOMED CT 1386000 |Intracranial hemorrhage (disorder)|
HAEMORRHAGE = Code("1386000", "SCT", "Intracranial hemorrhage")
HEAD_BODY_PARTS = frozenset({"HEAD", "BRAIN", "SKULL", "HEADNECK", "HEAD_NECK", "CRANIUM"})
#: the widest adult head with scalp is about 200 mm; a chest or abdomen is 300 mm or more
MAX_HEAD_MM = 250.0
#: brain parenchyma and blood, HU; a slice shows brain when this covers enough area
BRAIN_HU = (15.0, 90.0)
MIN_BRAIN_MM2 = 2500.0
#: slices closer than this are sub-sampled: the training slices look like 5 mm slices
SLAB_MM = 4.0


def _get_session() -> Any:
    """The model's ONNX Runtime session (one per process, one thread)."""
    return load_session(MODEL_DIR / CONFIG["model"])


@dataclass(frozen=True)
class SlicePrediction:
    """What the model says about one slice."""

    index: int  # slice index in the volume (sorted along the normal)
    sop_instance_uid: str
    frame_number: int | None
    probability: float
    #: haemorrhage probability map on the model canvas (16 x 16 for 128 px)
    cam: np.ndarray
    #: the marked area on the source slice: (column0, row0, column1, row1)
    bounds: tuple[float, float, float, float]


def intracranial(hu: np.ndarray, bone_hu: float = 300.0) -> np.ndarray:
    """What the skull encloses on a slice (empty where the bone ring is open).

    On a coarse grid (about 4 px cells on 512) a cell is bone when any pixel in it is
    denser than ``bone_hu``; the cells not reachable from the border without crossing
    bone are inside the skull. The skull base and the face (an open ring) give little.
    """
    rows, cols = hu.shape
    step = max(1, int(np.ceil(max(rows, cols) / 128)))
    r, c = rows // step * step, cols // step * step
    bone = np.asarray(
        (hu[:r, :c] > bone_hu).reshape(r // step, step, c // step, step).any(axis=(1, 3))
    )
    outside = np.zeros_like(bone)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = (
        ~bone[0, :],
        ~bone[-1, :],
        ~bone[:, 0],
        ~bone[:, -1],
    )
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= ~bone
        if (grown == outside).all():
            break
        outside = grown
    inside = ~bone & ~outside
    full = np.zeros((rows, cols), dtype=bool)
    full[:r, :c] = np.repeat(np.repeat(inside, step, axis=0), step, axis=1)
    return full


def head_slices(volume: Volume) -> list[int]:
    """Indices of the slices that show enough brain to be read (skull base and vertex out).

    Raises NotAnalysable when the field is wider than a head or no slice shows brain.
    """
    row_mm, col_mm = volume.spacing[1], volume.spacing[2]
    widths, areas = [], []
    for hu in volume.hu:
        mask, crop = head_mask(hu, BODY_HU)
        if mask.any():
            widths.append(max((crop.row1 - crop.row0) * row_mm, (crop.col1 - crop.col0) * col_mm))
        brain = intracranial(hu) & (hu >= BRAIN_HU[0]) & (hu <= BRAIN_HU[1])
        areas.append(float(brain.sum()) * row_mm * col_mm)
    if not widths:
        raise NotAnalysable("unusable pixels: no slice shows anything denser than air")
    width = float(np.median(widths))
    if width > MAX_HEAD_MM:
        raise NotAnalysable(
            f"not a head CT: the scanned body is {width:.0f} mm across "
            f"(a head is under {MAX_HEAD_MM:.0f} mm)"
        )
    best = max(areas)
    if best < MIN_BRAIN_MM2:
        raise NotAnalysable(
            f"no slice shows brain inside a closed skull ({best / 100:.0f} cm2 at most, "
            f"{MIN_BRAIN_MM2 / 100:.0f} cm2 needed): not a head CT, or the skull is open"
        )
    keep = [i for i, a in enumerate(areas) if a >= max(MIN_BRAIN_MM2, 0.3 * best)]
    step = max(1, round(SLAB_MM / volume.spacing[0])) if volume.spacing[0] > 0 else 1
    if step > 1:  # thin slices: about one every SLAB_MM, the densest slice included
        anchor = int(np.argmax(areas))
        keep = [i for i in keep if (i - anchor) % step == 0]
    return keep


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _peak_component(prob: np.ndarray, level: float) -> np.ndarray:
    """The 4-connected cells at or above ``level`` that hold the map's peak."""
    above = prob >= level
    peak = np.unravel_index(int(np.argmax(prob)), prob.shape)
    region = np.zeros_like(above)
    region[peak] = True
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= above
        if (grown == region).all():
            return region
        region = grown


def _source_bounds(
    cells: np.ndarray, cell: float, box: Letterbox, col0: int, row0: int
) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(cells)
    x0, y0 = box.to_source(cols.min() * cell, rows.min() * cell)
    x1, y1 = box.to_source((cols.max() + 1) * cell, (rows.max() + 1) * cell)
    return (float(x0) + col0, float(y0) + row0, float(x1) + col0, float(y1) + row0)


class BrainCTAlgorithm(Algorithm):
    """Intracranial haemorrhage on non-contrast head CT, slice and study level, with marks."""

    name = "radsight-ct-brain"
    version = "1.1.0"
    study_types: tuple[str, ...] = ("ct-brain",)
    time_limit_s = 120.0
    description = (
        "Compact 2-D CNN on brain/subdural/bone windows: probability of intracranial "
        "haemorrhage per slice and per study, suspicious areas marked as boxes on the "
        "slices. Trained on 200 public slices only: a research tool, not a diagnosis."
    )

    def __init__(self) -> None:
        threshold = float(CONFIG["thresholds"]["haemorrhage"])
        self.findings = (
            FindingSpec("intracranial_haemorrhage", HAEMORRHAGE, threshold=threshold, urgent=True),
        )
        self.study_threshold = threshold
        self._last: tuple[StudyInput, Volume, list[int]] | None = None

    def shipped_evidence(self) -> dict | None:
        """The model card's cross-validated slice figures (docs/models/ct-brain.md): 200
        slices, fewer than the acceptance rule's 400 studies, so it starts in shadow."""
        return load_evidence(MODEL_DIR / "evidence.json", self.name, self.version)

    def _volume(self, study: StudyInput) -> tuple[Volume, list[int]]:
        # check() then analyse() on the same study: assemble it once (the tuple is read
        # and replaced whole, so concurrent callers at worst miss the cache)
        last = self._last
        if last is not None and last[0] is study:
            return last[1], last[2]
        volume, indices = self._assemble(study)
        self._last = (study, volume, indices)
        return volume, indices

    def _assemble(self, study: StudyInput) -> tuple[Volume, list[int]]:
        if not study.images:
            raise NotAnalysable("the study has no images with pixel data")
        parts = {i.body_part_examined.strip().upper() for i in study.images} - {""}
        if parts and not parts & HEAD_BODY_PARTS:
            raise NotAnalysable(f"body part examined is {', '.join(sorted(parts))}, not the head")
        series = select_series(study.images, min_slices=int(CONFIG.get("min_slices", 1)))
        volume = assemble_volume(series)
        return volume, head_slices(volume)

    def check(self, study: StudyInput) -> None:
        self._volume(study)

    def predict_slices(self, study: StudyInput) -> list[SlicePrediction]:
        """Every analysed slice's calibrated probability and marked area, in slice order."""
        volume, indices = self._volume(study)
        size = int(CONFIG["input"]["size"])
        batch, boxes = [], []
        for i in indices:
            channels, box, crop = prepare_slice(volume.hu[i], size)
            batch.append(channels)
            boxes.append((box, crop))
        logits, cams = _get_session().run(None, {"image": np.stack(batch)})
        # Platt scaling fitted on the out-of-fold logits: p = sigmoid((logit - shift) / T)
        temperature = float(CONFIG["temperature"])
        shift = float(CONFIG.get("logit_shift", 0.0))
        level = float(CONFIG["region"]["level"])
        out = []
        for k, i in enumerate(indices):
            prob_map = _sigmoid((cams[k, 0].astype(np.float64) - shift) / temperature)
            box, crop = boxes[k]
            cell = size / prob_map.shape[0]
            # the mark stays on the patient: cells mostly denser than -20 HU (the subdural
            # window's floor), not the air or letterbox around the head
            g = prob_map.shape[0]
            tissue = (batch[k][1] > 0).reshape(g, size // g, g, size // g).mean(axis=(1, 3))
            inside = np.where(tissue > 0.5, prob_map, 0.0)
            if not inside.any():
                inside = prob_map
            cells = _peak_component(inside, level * float(inside.max()))
            image = volume.images[i]
            out.append(
                SlicePrediction(
                    index=i,
                    sop_instance_uid=image.sop_instance_uid,
                    frame_number=image.frame_number,
                    probability=float(
                        _sigmoid((np.asarray(logits[k], np.float64) - shift) / temperature)
                    ),
                    cam=prob_map,
                    bounds=_source_bounds(cells, cell, box, crop.col0, crop.row0),
                )
            )
        return out

    def analyse(self, study: StudyInput) -> Analysis:
        slices = self.predict_slices(study)
        self._last = None  # do not hold a volume (up to hundreds of MiB) between studies
        probability = max(s.probability for s in slices)
        # the most probable slices are the candidates, each with its own probability; the
        # platform marks those at the operating point in force
        marked = sorted(slices, key=lambda s: -s.probability)[: int(CONFIG["region"]["max_slices"])]
        regions = tuple(
            Region.box(
                s.sop_instance_uid,
                *s.bounds,
                frame_number=s.frame_number,
                probability=round(s.probability, 6),
            )
            for s in sorted(marked, key=lambda s: s.index)
        )
        finding = Finding("intracranial_haemorrhage", round(probability, 6), regions)
        return Analysis(findings=(finding,), study_score=round(probability, 6))
