"""torchxrayvision models as Radsight algorithms (ONNX Runtime only, no torch).

``python -m radsight_train export-xrv`` turns torchxrayvision DenseNet-121 weights into a
model directory (``xrv.onnx`` + ``xrv.json``). Point ``RADSIGHT_XRV_MODEL_DIR`` at it and the
``radsight-xrv`` entry point registers a :class:`TorchXRayVisionAlgorithm` named after the
weights (``xrv-densenet121-res224-all``); without the variable nothing is registered.

Preprocessing is torchxrayvision's, reimplemented in numpy (docs/algorithms.md):

1. pixel values to [-1024, 1024]: ``(2 * value / maxval - 1) * 1024``
   (``xrv.utils.normalize``), with ``maxval`` 255 for 8-bit images and
   ``2**BitsStored - 1`` for DICOM (``xrv.utils.read_xray_dcm``); values outside
   ``[0, maxval]`` (after a Modality LUT) are stretched min..max instead;
2. the central square (``xrv.datasets.XRayCenterCrop``);
3. ``skimage.transform.resize(..., (224, 224), mode="constant", preserve_range=True)``
   (``xrv.datasets.XRayResizer``): a Gaussian anti-aliasing filter of sigma
   ``(factor - 1) / 2``, then linear interpolation at pixel centres, zeros outside.

Probabilities are torchxrayvision's defaults: ``op_norm(sigmoid(logit))``, which puts each
pathology's operating threshold (from the weights' calibration) at 0.5. Marked areas come
from class activation maps (7 x 7 cells on the 224-px crop): each image gives one candidate
area per pathology, the cells around the peak at least half-way from the map's minimum to
its peak, with the image's probability; the platform marks those at the operating point in
force (:mod:`radsight.operating_points`).

Admission: it ships no evidence. The weights are the user's own export, and nothing here
has measured them, so a version starts ``registered`` and runs in shadow when a rule routes
studies to it (results stored, nothing delivered). A site earns its evidence with
``radsight evaluate`` on its own reference set, then approves that version
(docs/quality.md, "Admission").
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radsight.algorithms.checks import usable_images
from radsight.algorithms.contract import (
    Algorithm,
    Analysis,
    Code,
    Finding,
    FindingSpec,
    ImageInput,
    Region,
    StudyInput,
)
from radsight.algorithms.cxr import check_image
from radsight.algorithms.onnx import load_session
from radsight.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "CODES",
    "Crop",
    "TorchXRayVisionAlgorithm",
    "from_environment",
    "op_norm",
    "preprocess",
    "to_xrv_range",
    "xrv_resize",
]

ENV_VAR = "RADSIGHT_XRV_MODEL_DIR"
FORMAT = "radsight-xrv/1"
SCT = "SCT"
LOCAL = "99RADSIGHT"
#: torchxrayvision pathology -> code. SNOMED CT where one concept means what the labels
#: mean; Radsight's private scheme (code values <= 16 characters, DICOM SH) where the label
#: is a radiological catch-all with no one matching concept
CODES: dict[str, Code] = {
    "Atelectasis": Code("46621007", SCT, "Atelectasis"),
    "Consolidation": Code("95436008", SCT, "Lung consolidation"),
    "Infiltration": Code("409609008", SCT, "Radiologic infiltrate of lung"),
    "Pneumothorax": Code("36118008", SCT, "Pneumothorax"),
    "Edema": Code("19242006", SCT, "Pulmonary edema"),
    "Emphysema": Code("87433001", SCT, "Pulmonary emphysema"),
    "Fibrosis": Code("51615001", SCT, "Fibrosis of lung"),
    "Effusion": Code("60046008", SCT, "Pleural effusion"),
    "Pneumonia": Code("233604007", SCT, "Pneumonia"),
    "Pleural_Thickening": Code("RS-XRV-PLTHICK", LOCAL, "Pleural thickening"),
    "Cardiomegaly": Code("8186001", SCT, "Cardiomegaly"),
    "Nodule": Code("786838002", SCT, "Nodule of lung"),
    "Mass": Code("RS-XRV-MASS", LOCAL, "Lung mass"),
    "Hernia": Code("84089009", SCT, "Hiatal hernia"),
    "Lung Lesion": Code("RS-XRV-LESION", LOCAL, "Lung lesion"),
    "Fracture": Code("125605004", SCT, "Fracture of bone"),
    "Lung Opacity": Code("RS-XRV-OPACITY", LOCAL, "Lung opacity"),
    "Enlarged Cardiomediastinum": Code("RS-XRV-ENLCMED", LOCAL, "Enlarged cardiomediastinum"),
}


def finding_key(pathology: str) -> str:
    """``Lung Opacity`` -> ``lung-opacity``."""
    return pathology.lower().replace("_", "-").replace(" ", "-")


# --- preprocessing (pure numpy) -----------------------------------------------------------


def to_xrv_range(pixels: np.ndarray, bits_stored: int | None = None) -> np.ndarray:
    """Pixel values to torchxrayvision's [-1024, 1024] (``xrv.utils.normalize``)."""
    img = np.asarray(pixels, dtype=np.float64)
    lo, hi = float(img.min()), float(img.max())
    integral = bool(np.all(img == np.round(img)))
    maxval = None
    if integral and lo >= 0 and hi <= 255 and bits_stored in (None, 8):
        maxval = 255.0
    elif bits_stored and integral and lo >= 0 and hi <= 2**bits_stored - 1:
        maxval = float(2**bits_stored - 1)
    if maxval is None:  # rescaled values: stretch what is there
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        maxval = 1.0
    return ((2.0 * (img / maxval) - 1.0) * 1024.0).astype(np.float32)


@dataclass(frozen=True)
class Crop:
    """The central square the model reads, and its scale on the model canvas."""

    left: int
    top: int
    side: int
    size: int

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Model canvas (column, row) -> source image (column, row)."""
        s = self.side / self.size
        return self.left + x * s, self.top + y * s


def _resample_rows(img: np.ndarray, n_out: int) -> np.ndarray:
    """Resample axis 0 as skimage's resize does it: a Gaussian of sigma ``(factor - 1) / 2``
    when shrinking (``ndimage.gaussian_filter``, truncate 4, zeros outside), then linear
    interpolation at pixel centres with zeros beyond the edge (``ndimage.zoom(order=1,
    grid_mode=True, mode="grid-constant")``). Only the rows the interpolation reads are
    filtered, which gives the same numbers for much less work on large images."""
    n_in = img.shape[0]
    factor = n_in / n_out
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * factor - 0.5
    i0 = np.floor(pos).astype(np.intp)
    w = (pos - i0)[:, None]
    need = np.clip(np.concatenate([i0, i0 + 1]), 0, n_in - 1)
    rows = np.unique(need)
    if factor > 1:
        sigma = (factor - 1) / 2
        radius = int(4.0 * sigma + 0.5)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 * x * x / (sigma * sigma))
        kernel /= kernel.sum()
        padded = np.pad(img, [(radius, radius), (0, 0)])
        filtered = np.zeros((len(rows), img.shape[1]), dtype=np.float64)
        for k, weight in enumerate(kernel):
            filtered += weight * padded[rows + k]
    else:
        filtered = img[rows].astype(np.float64)
    lookup = np.zeros(n_in + 2, dtype=np.intp)  # row -> index in filtered, +1 for zeros
    lookup[rows + 1] = np.arange(len(rows)) + 1
    table = np.vstack([np.zeros((1, img.shape[1])), filtered])

    def at(i: np.ndarray) -> np.ndarray:
        inside = (i >= 0) & (i < n_in)
        return table[np.where(inside, lookup[np.clip(i, -1, n_in) + 1], 0)]

    return at(i0) * (1 - w) + at(i0 + 1) * w


def xrv_resize(img: np.ndarray, size: int) -> np.ndarray:
    """``skimage.transform.resize(img, (size, size), mode="constant", preserve_range=True)``
    for a 2-D float image (anti-aliasing when shrinking, order 1, clipped to the input's
    range). The two axes are separable, so each is filtered and interpolated in turn."""
    img = np.asarray(img, dtype=np.float64)
    out = _resample_rows(_resample_rows(img, size).T, size).T
    # skimage clips to the input's range, widened to the zeros outside only if they show
    lo, hi = float(img.min()), float(img.max())
    if not lo <= 0.0 <= hi and out.min() <= 0.0 <= out.max():
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return np.clip(out, lo, hi).astype(np.float32)


def preprocess(
    pixels: np.ndarray, size: int = 224, bits_stored: int | None = None
) -> tuple[np.ndarray, Crop]:
    """torchxrayvision's input for one grey image: ``size`` x ``size`` in [-1024, 1024]."""
    img = to_xrv_range(pixels, bits_stored)
    rows, cols = img.shape
    side = min(rows, cols)
    left, top = cols // 2 - side // 2, rows // 2 - side // 2
    img = img[top : top + side, left : left + side]
    return xrv_resize(img, size), Crop(left, top, side, size)


def op_norm(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``xrv.models.op_norm``: map each threshold to 0.5, linearly on either side; 0.5
    where there is no threshold."""
    out = np.full_like(probs, 0.5, dtype=np.float64)
    have = ~np.isnan(thresholds)
    t = np.where(have, thresholds, 0.5)
    below = (probs < t) & have
    above = ~(probs < t) & have
    out[below] = (probs / (t * 2))[below]
    out[above] = (1.0 - (1.0 - probs) / ((1 - t) * 2))[above]
    return out


def _top_cells(cam: np.ndarray) -> tuple[int, int, int, int]:
    """Row/column bounds of the 4-connected cells around the peak that lie at least half-way
    from the map's minimum to its peak."""
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    level = cam.min() + 0.5 * (cam.max() - cam.min())
    keep = cam >= level
    seen = {peak}
    stack = [peak]
    while stack:
        r, c = stack.pop()
        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= rr < cam.shape[0] and 0 <= cc < cam.shape[1] and keep[rr, cc]:
                if (rr, cc) not in seen:
                    seen.add((rr, cc))
                    stack.append((rr, cc))
    rows = [int(p[0]) for p in seen]
    cols = [int(p[1]) for p in seen]
    return min(rows), max(rows) + 1, min(cols), max(cols) + 1


# --- the algorithm ------------------------------------------------------------------------


def read_config(model_dir: Path) -> dict[str, Any]:
    """``xrv.json`` of an exported model directory, checked."""
    path = Path(model_dir) / "xrv.json"
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: export a model with "
            f"`python -m radsight_train export-xrv --out {model_dir}`"
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} model description")
    pathologies, thresholds = config.get("pathologies"), config.get("op_threshs")
    if not isinstance(pathologies, list) or not isinstance(thresholds, list):
        raise ConfigError(f"{path} lists no pathologies or op_threshs")
    if len(pathologies) != len(thresholds) or not set(pathologies) <= set(CODES):
        raise ConfigError(f"{path}: pathologies must be torchxrayvision's, one threshold each")
    for key in ("name", "version", "weights"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise ConfigError(f"{path} has no {key!r}")
    size = (config.get("input") or {}).get("size")
    if not isinstance(size, int) or size < 32:
        raise ConfigError(f"{path} has no input size (input.size)")
    if not (Path(model_dir) / str(config.get("model", ""))).is_file():
        raise ConfigError(f"{path} names model file {config.get('model')!r}, which is missing")
    return config


class TorchXRayVisionAlgorithm(Algorithm):
    """A torchxrayvision DenseNet-121 exported by ``radsight_train export-xrv``."""

    time_limit_s = 120.0
    manufacturer = "Radsight (torchxrayvision adapter)"

    def __init__(self, model_dir: Path | str) -> None:
        self.model_dir = Path(model_dir)
        self.config = read_config(self.model_dir)
        self.name = str(self.config["name"])
        self.version = str(self.config["version"])
        self.study_types = tuple(self.config.get("study_types") or ("cxr",))
        self.size = int(self.config["input"]["size"])
        thresholds = [math.nan if t is None else float(t) for t in self.config["op_threshs"]]
        self._thresholds = np.array(thresholds, dtype=np.float64)
        #: output index -> pathology, for the outputs these weights were trained for
        self._outputs = {
            i: p
            for i, (p, t) in enumerate(zip(self.config["pathologies"], thresholds, strict=True))
            if not math.isnan(t)
        }
        if not self._outputs:
            raise ConfigError(f"{self.model_dir}/xrv.json has no pathology with a threshold")
        # op_norm puts every pathology's own operating point at 0.5
        self.findings = tuple(
            FindingSpec(finding_key(p), CODES[p], threshold=0.5) for p in self._outputs.values()
        )
        self.study_threshold = 0.5
        self.description = (
            f"torchxrayvision {self.config['weights']} (DenseNet-121, 224 px), run with ONNX "
            "Runtime; probabilities at torchxrayvision's operating points (0.5). Not a diagnosis."
        )

    def shipped_evidence(self) -> dict | None:
        """None: exported weights bring no measurement of their own (see the module
        docstring); the version starts registered and runs in shadow until approved."""
        return None

    def _get_session(self) -> Any:
        return load_session(self.model_dir / self.config["model"])

    def _analysable(self, study: StudyInput) -> list[ImageInput]:
        return usable_images(study, check_image)

    def check(self, study: StudyInput) -> None:
        self._analysable(study)

    def predict(self, image: ImageInput) -> tuple[np.ndarray, np.ndarray, Crop]:
        """Probabilities (18, op-normalised) and class activation maps of one image."""
        bits = image.attributes.get("BitsStored")
        bits_stored = bits if isinstance(bits, int) and 0 < bits <= 32 else None
        canvas, crop = preprocess(image.pixels, self.size, bits_stored)
        logits, cam = self._get_session().run(None, {"image": canvas[None, None]})
        probs = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64)))
        return op_norm(probs, self._thresholds), cam[0], crop

    def _region(self, image: ImageInput, cam: np.ndarray, crop: Crop, probability: float) -> Region:
        r0, r1, c0, c1 = _top_cells(cam)
        cell = self.size / cam.shape[0]
        x0, y0 = crop.to_source(c0 * cell, r0 * cell)
        x1, y1 = crop.to_source(c1 * cell, r1 * cell)
        return Region.box(
            image.sop_instance_uid, x0, y0, x1, y1, image.frame_number, round(probability, 6)
        )

    def analyse(self, study: StudyInput) -> Analysis:
        best: dict[int, float] = {}
        regions: dict[int, list[Region]] = {}
        for image in self._analysable(study):
            probs, cam, crop = self.predict(image)
            for i in self._outputs:
                p = float(np.clip(probs[i], 0.0, 1.0))
                best[i] = max(best.get(i, 0.0), p)
                # one candidate per image, with the image's probability: the platform
                # marks those at the operating point in force
                regions.setdefault(i, []).append(self._region(image, cam[i], crop, p))
        findings = tuple(
            Finding(finding_key(p), round(best[i], 6), tuple(regions.get(i, ())))
            for i, p in self._outputs.items()
        )
        return Analysis(findings=findings, study_score=max(f.probability for f in findings))


def from_environment() -> TorchXRayVisionAlgorithm | None:
    """The ``radsight-xrv`` entry point: the model in ``$RADSIGHT_XRV_MODEL_DIR``, or None
    (nothing registered) when the variable is not set."""
    model_dir = os.environ.get(ENV_VAR, "").strip()
    if not model_dir:
        return None
    return TorchXRayVisionAlgorithm(Path(model_dir))
