"""Classical lung segmentation of a CT volume in HU (numpy and scipy.ndimage, no model).

The lesion model says where the opacities are; this says where the lungs are, so that the
share of lung involved can be measured. On a HU volume (z, y, x), working on a grid
subsampled in-plane to at most 128 columns (4 mm cells at a 512 px, 500 mm field):

1. body: voxels above -500 HU, the largest 3-D connected component (the table, the
   cushions and the air around the patient fall away), holes filled slice by slice;
2. air inside the body: voxels below -400 HU within the body;
3. airways: per slice, an air component of less than 8 cm^2 whose centre lies in the
   middle fifth of the body's width is the trachea, a main bronchus or the oesophagus, and
   is dropped (lobar and smaller bronchi stay inside the lungs, as in most lung masks);
4. lungs: the 3-D air components of at least 20 % of the largest one's volume, at most
   two, whose mean density is between -960 and -500 HU (bowel gas is about -1000 HU,
   aerated lung about -850 HU);
5. lung region: each slice's lung mask closed with a radius of about 6 mm and its holes
   filled, so that vessels, airways and opacities enclosed by aerated lung count as lung.

Known limits (docs/models/ct-chest.md): dense consolidation that reaches the pleura over
more than the closing radius lies outside the region and is under-counted; a lung that is
consolidated throughout is not found at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LungMask", "lung_mask", "subsample"]

BODY_HU = -500.0
AIR_HU = -400.0
AIRWAY_MAX_MM2 = 800.0
LUNG_MEAN_HU = (-960.0, -500.0)
CLOSING_MM = 6.0
MAX_COLUMNS = 128

#: in-plane 2-D neighbourhoods inside a 3-D array: slices never touch each other
_PLANE_CROSS = np.zeros((3, 3, 3), bool)
_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class LungMask:
    """Masks on the subsampled grid: ``step`` source pixels per cell along rows and columns."""

    body: np.ndarray
    #: aerated lung (step 4)
    aerated: np.ndarray
    #: lung region (step 5): what the percentage of lung involved is a percentage of
    region: np.ndarray
    step: int
    #: volume of one cell in mL
    voxel_ml: float

    @property
    def volume_ml(self) -> float:
        return float(self.region.sum()) * self.voxel_ml

    def slice_fraction(self) -> np.ndarray:
        """Per slice: lung region area over body area (0 where there is no body)."""
        body = self.body.sum((1, 2)).astype(np.float64)
        return np.where(body > 0, self.region.sum((1, 2)) / np.maximum(body, 1), 0.0)


def subsample(hu: np.ndarray, step: int) -> np.ndarray:
    """Mean over ``step`` x ``step`` blocks of every slice (edges cropped), float32."""
    if step == 1:
        return hu.astype(np.float32, copy=False)
    z, rows, cols = hu.shape
    r, c = rows // step * step, cols // step * step
    out = np.zeros((z, r // step, c // step), np.float32)
    for dy in range(step):
        for dx in range(step):
            out += hu[:, dy:r:step, dx:c:step]
    out /= step * step
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill each slice's holes: background not connected to that slice's edge."""
    labels, _ = ndimage.label(~mask, structure=_PLANE_CROSS)
    edge = np.concatenate(
        [
            labels[:, 0].ravel(),
            labels[:, -1].ravel(),
            labels[:, :, 0].ravel(),
            labels[:, :, -1].ravel(),
        ]
    )
    outside = np.zeros(int(labels.max()) + 1, bool)
    outside[edge] = True
    outside[0] = False
    return ~outside[labels]


def _largest(labels: np.ndarray) -> np.ndarray:
    sizes = np.bincount(labels.ravel())
    if len(sizes) < 2:
        return np.zeros(labels.shape, bool)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _drop_airways(air: np.ndarray, body: np.ndarray, cell_mm2: float) -> np.ndarray:
    labels, n = ndimage.label(air, structure=_PLANE_CROSS)
    if n == 0:
        return air
    count = np.bincount(labels.ravel(), minlength=n + 1)
    small = count * cell_mm2 < AIRWAY_MAX_MM2
    small[0] = False
    zs, _, xs = np.nonzero(small[labels])  # the pixels of small components only
    if len(zs) == 0:
        return air
    owner = labels[zs, _, xs]
    n_px = np.bincount(owner, minlength=n + 1)
    zz = np.bincount(owner, weights=zs, minlength=n + 1) / np.maximum(n_px, 1)
    xx = np.bincount(owner, weights=xs, minlength=n + 1) / np.maximum(n_px, 1)
    # the body's left-right extent in every slice
    present: np.ndarray = np.asarray(body.any(axis=1))
    left = np.argmax(present, 1)
    right = body.shape[2] - 1 - np.argmax(present[:, ::-1], 1)
    z = np.clip(np.round(zz).astype(int), 0, air.shape[0] - 1)
    centre = (left[z] + right[z]) / 2
    width = np.maximum(right[z] - left[z], 1)
    airway = small & (np.abs(xx - centre) < 0.1 * width)
    return air & ~airway[labels]


def lung_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> LungMask:
    """Segment the lungs of a HU volume (z, y, x) with voxel ``spacing`` (z, y, x) in mm."""
    if hu.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {hu.shape}")
    step = max(1, int(np.ceil(hu.shape[2] / MAX_COLUMNS)))
    small = subsample(hu, step)
    dz, dy, dx = spacing
    cell_mm2 = dy * dx * step * step
    labels, _ = ndimage.label(small > BODY_HU)
    body = _fill_holes(_largest(labels))
    air = (small < AIR_HU) & body
    air = _drop_airways(air, body, cell_mm2)
    labels, n = ndimage.label(air)
    aerated = np.zeros_like(air)
    if n:
        flat = labels.ravel()
        sizes = np.bincount(flat, minlength=n + 1)[1:]
        means = np.bincount(flat, weights=small.ravel(), minlength=n + 1)[1:] / np.maximum(sizes, 1)
        order = np.argsort(-sizes)
        kept = [
            int(i) + 1
            for i in order[:2]
            if sizes[i] >= 0.2 * sizes[order[0]] and LUNG_MEAN_HU[0] <= means[i] <= LUNG_MEAN_HU[1]
        ]
        aerated = np.isin(labels, kept)
    radius = max(1, int(round(CLOSING_MM / (dx * step))))
    # closing with a square (separable min/max filters are fast), then holes filled
    size = (1, 2 * radius + 1, 2 * radius + 1)
    region = ndimage.maximum_filter(aerated.view(np.uint8), size=size)
    region = ndimage.minimum_filter(region, size=size, mode="nearest").astype(bool)
    region = _fill_holes(region | aerated) & body
    return LungMask(
        body=body,
        aerated=aerated,
        region=region,
        step=step,
        voxel_ml=dz * cell_mm2 / 1000.0,
    )
