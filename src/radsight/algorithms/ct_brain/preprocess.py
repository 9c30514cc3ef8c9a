"""Pure numpy preprocessing for the brain CT model, shared by training and the platform.

One axial slice in HU becomes a ``3 x size x size`` float32 canvas:

1. the head is found (HU > -300, the connected region nearest the centre, on a coarse grid)
   and cropped with a margin; the table and stray objects outside it are set to air;
2. the crop is area-averaged by an integer factor, resampled bilinearly so that its longer
   side is ``size`` pixels, and letterboxed on a canvas of air (-1024 HU);
3. three windows of :mod:`radsight.algorithms.ct_volume` become the channels: brain
   (40/80), subdural (80/200) and bone (600/2800).

The training slices are 8-bit display PNGs, not HU: ``radsight_train.ct_brain.train``
rebuilds pseudo-HU from them (:func:`pseudo_hu`) and then runs the same steps 2-3, so the
model sees one geometry and one intensity scale in training and on real DICOM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radsight.algorithms.ct_volume import AIR_HU, BONE, BRAIN, SUBDURAL, window
from radsight.algorithms.cxr.preprocess import Letterbox
from radsight.algorithms.cxr.preprocess import letterbox as shared_letterbox

__all__ = [
    "CHANNELS",
    "Crop",
    "head_mask",
    "letterbox",
    "prepare_slice",
    "pseudo_hu",
    "to_channels",
]

CHANNELS = (BRAIN, SUBDURAL, BONE)
#: HU above which a pixel belongs to the patient (soft tissue, bone), not air or padding
BODY_HU = -300.0
_GRID = 64


@dataclass(frozen=True)
class Crop:
    """The head's bounding box on the source slice, (row0, row1, col0, col1), half-open."""

    row0: int
    row1: int
    col0: int
    col1: int


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion by ``steps`` 4-neighbour steps (outside the array counts as empty)."""
    out = mask.copy()
    for _ in range(steps):
        inner = out.copy()
        inner[1:] &= out[:-1]
        inner[:-1] &= out[1:]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        inner[0, :] = inner[-1, :] = False
        inner[:, 0] = inner[:, -1] = False
        out = inner
    return out


def _largest_central_region(coarse: np.ndarray) -> np.ndarray:
    """The 4-connected region of ``coarse`` holding the set pixel nearest the centre."""
    if not coarse.any():
        return coarse
    rows, cols = np.nonzero(coarse)
    cr, cc = (coarse.shape[0] - 1) / 2, (coarse.shape[1] - 1) / 2
    k = int(np.argmin((rows - cr) ** 2 + (cols - cc) ** 2))
    region = np.zeros_like(coarse)
    region[rows[k], cols[k]] = True
    while True:  # flood fill by repeated dilation inside the mask (a 64 x 64 grid: cheap)
        grown = _dilate(region) & coarse
        if (grown == region).all():
            return region
        region = grown


def head_mask(values: np.ndarray, level: float) -> tuple[np.ndarray, Crop]:
    """The head (the central connected region above ``level``) and its bounding box.

    Works on a coarse grid (``64`` cells on the longer side) so that thin bridges such as
    a head holder or a burned-in ruler do not matter much, and it stays fast on 512 x 512.
    """
    rows, cols = values.shape
    step = max(1, int(np.ceil(max(rows, cols) / _GRID)))
    coarse = values[::step, ::step] > level
    region = _largest_central_region(coarse)
    if not region.any():
        return np.zeros_like(values, dtype=bool), Crop(0, rows, 0, cols)
    # holes: what the region encloses (ventricles on a display PNG, sinuses on CT)
    outside = np.zeros_like(region)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = (
        ~region[0, :],
        ~region[-1, :],
        ~region[:, 0],
        ~region[:, -1],
    )
    while True:
        grown = _dilate(outside) & ~region
        if (grown == outside).all():
            break
        outside = grown
    holes = ~region & ~outside

    def upsample(coarse_mask: np.ndarray) -> np.ndarray:
        full = np.repeat(np.repeat(coarse_mask, step, axis=0), step, axis=1)[:rows, :cols]
        if full.shape != values.shape:  # the coarse grid fell short of the edge
            pad = np.zeros(values.shape, dtype=bool)
            pad[: full.shape[0], : full.shape[1]] = full
            full = pad
        return full

    mask = (upsample(region) & (values > level)) | upsample(holes)
    rr, cc = np.nonzero(mask)
    if rr.size == 0:
        return mask, Crop(0, rows, 0, cols)
    margin = max(2, int(0.04 * max(np.ptp(rr) + 1, np.ptp(cc) + 1)))
    crop = Crop(
        max(0, int(rr.min()) - margin),
        min(rows, int(rr.max()) + 1 + margin),
        max(0, int(cc.min()) - margin),
        min(cols, int(cc.max()) + 1 + margin),
    )
    return _dilate(_dilate(mask)), crop


def letterbox(img: np.ndarray, size: int, fill: float) -> tuple[np.ndarray, Letterbox]:
    """Resample ``img`` so its longer side is ``size`` and centre it on a ``fill`` canvas."""
    return shared_letterbox(img, size, fill=fill)


def to_channels(hu_canvas: np.ndarray) -> np.ndarray:
    """The three window channels of a HU canvas: ``(3, size, size)`` float32 in [0, 1]."""
    return np.stack([window(hu_canvas, w) for w in CHANNELS]).astype(np.float32)


def prepare_slice(hu: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox, Crop]:
    """One HU slice -> model input ``(3, size, size)``, its letterbox and its head crop.

    A canvas point maps back to the source slice with ``box.to_source`` plus the crop's
    ``(col0, row0)`` offset.
    """
    values = np.asarray(hu, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {values.shape}")
    mask, crop = head_mask(values, BODY_HU)
    cleaned = np.where(mask, values, np.float32(AIR_HU))
    cropped = cleaned[crop.row0 : crop.row1, crop.col0 : crop.col1]
    canvas, box = letterbox(cropped, size, AIR_HU)
    return to_channels(canvas), box, crop


def pseudo_hu(
    grey: np.ndarray,
    head: np.ndarray,
    rim: np.ndarray,
    center: float = 40.0,
    width: float = 80.0,
    bone_hu: float | np.ndarray = 1000.0,
) -> np.ndarray:
    """Approximate HU for an 8-bit brain-window display slice (training data only).

    ``grey`` (0..1) is read as a linear window ``center``/``width``: grey 0 is
    ``center - width / 2`` HU and grey 1 ``center + width / 2``. What the display clipped
    cannot be recovered, so two cases are filled in: dark pixels outside the head become
    air (-1000 HU), and saturated white pixels in the outer rim of the head (the skull)
    become ``bone_hu``. Inside the rim a saturated pixel stays at the window top (blood
    and calcification lie there).
    """
    values = (center - width / 2.0) + grey.astype(np.float32) * np.float32(width)
    values = np.where(head, values, np.float32(-1000.0))
    saturated = rim & (grey >= 0.97)
    return np.where(saturated, np.asarray(bone_hu, dtype=np.float32), values).astype(np.float32)
