"""Pure numpy preprocessing for the mammography model (no ML runtime here).

Training (``radsight_train.mmg``) and the platform call the same functions, so the
model sees one geometry and one intensity scale in both places:

1. a thumbnail (longer side about 128 px) is cut at an Otsu threshold; the largest
   connected component is the breast (film labels, markers and padding are smaller);
2. the chest wall side is the side of the breast's bounding box where the breast is
   tallest (a breast is a half-disc whose flat side lies on the chest wall; the nipple side
   tapers). Mini-MIAS puts the chest wall on either side for either breast, so laterality
   alone cannot tell;
3. the bounding box (plus a margin) is cropped, mirrored when the chest wall is on the
   right so that it is always on the left, and prepared by the chest radiograph
   preprocessing (:func:`radsight.algorithms.cxr.preprocess.preprocess`: area averaging,
   bilinear resampling, 1st..99th percentile to 0..1, letterbox).

:class:`BreastFrame` maps model canvas coordinates back to source pixels (SCOORD, PS3.3
C.18.6: ``(column, row)``, ``(0, 0)`` the top-left corner of the first pixel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from radsight.algorithms.cxr.preprocess import Letterbox, bilinear_resize, preprocess

__all__ = [
    "BreastFrame",
    "breast_mask",
    "chest_wall_side",
    "mask_on_canvas",
    "prepare",
    "prepare_with_breast",
]

THUMB = 128


@dataclass(frozen=True)
class BreastFrame:
    """Where the breast lies in the source image and on the model canvas."""

    #: breast bounding box in source pixels, half-open: columns x0..x1, rows y0..y1
    x0: int
    y0: int
    x1: int
    y1: int
    #: side of the source image the chest wall is on (the canvas always has it on the left)
    chest_wall: Literal["left", "right"]
    letterbox: Letterbox
    #: fraction of the thumbnail the breast covers
    breast_fraction: float

    def to_source(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple:
        """Model canvas (column, row) -> source image (column, row)."""
        cx, cy = self.letterbox.to_source(x, y)
        if self.chest_wall == "right":
            cx = (self.x1 - self.x0) - cx
        return cx + self.x0, cy + self.y0

    def scale(self) -> float:
        """Source pixels per model pixel (the letterbox keeps the aspect ratio)."""
        return 1.0 / self.letterbox.scale_x

    def to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Source image (column, row) -> model canvas (column, row)."""
        cx = x - self.x0
        if self.chest_wall == "right":
            cx = (self.x1 - self.x0) - cx
        box = self.letterbox
        return cx * box.scale_x + box.left, (y - self.y0) * box.scale_y + box.top


def _thumbnail(img: np.ndarray) -> np.ndarray:
    rows, cols = img.shape
    k = max(1, int(max(rows, cols) // THUMB))
    r, c = rows // k * k, cols // k * k
    small = img[:r, :c].reshape(r // k, k, c // k, k).mean(axis=(1, 3), dtype=np.float32)
    return small


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def _largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 4-connected component, by iterative label propagation (numpy only)."""
    rows, cols = binary.shape
    labels = np.where(binary, np.arange(1, binary.size + 1).reshape(rows, cols), 0)
    big = binary.size + 1
    for _ in range(4 * (rows + cols)):
        cur = np.where(binary, labels, big)
        nb = cur.copy()
        nb[1:] = np.minimum(nb[1:], cur[:-1])
        nb[:-1] = np.minimum(nb[:-1], cur[1:])
        nb[:, 1:] = np.minimum(nb[:, 1:], cur[:, :-1])
        nb[:, :-1] = np.minimum(nb[:, :-1], cur[:, 1:])
        nb = np.where(binary, nb, 0)
        if np.array_equal(nb, labels):
            break
        labels = nb
    ids, counts = np.unique(labels[binary], return_counts=True)
    if len(ids) == 0:
        return np.zeros_like(binary)
    return labels == ids[int(np.argmax(counts))]


def breast_mask(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """The breast on a thumbnail (boolean), and the thumbnail's downsampling factor."""
    img = np.asarray(pixels, dtype=np.float32)
    small = _thumbnail(img)
    k = max(1, int(max(img.shape) // THUMB))
    lo, hi = np.percentile(small, [0.5, 99.5])
    if hi - lo <= 1e-6:
        return np.zeros_like(small, dtype=bool), k
    norm = np.clip((small - lo) / (hi - lo), 0, 1)
    t = _otsu(norm)
    # the skin line is darker than the dense tissue Otsu separates: cut lower
    binary = norm > max(0.04, 0.5 * t)
    mask = _largest_component(binary)
    # a breast is one solid region; a threshold through noise (an empty field) leaves a
    # porous one, most of whose pixels touch the outside
    interior = mask.copy()
    interior[1:] &= mask[:-1]
    interior[:-1] &= mask[1:]
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    if not mask.any() or interior.sum() < 0.7 * mask.sum():
        return np.zeros_like(mask), k
    return mask, k


def chest_wall_side(mask: np.ndarray) -> Literal["left", "right"]:
    """The side of the bounding box where the breast is tallest (see the module notes)."""
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(cols) == 0:
        return "left"
    heights = mask[:, cols[0] : cols[-1] + 1].sum(axis=0).astype(np.float64)
    band = max(1, len(heights) // 5)
    return "left" if heights[:band].mean() >= heights[-band:].mean() else "right"


def prepare(
    pixels: np.ndarray,
    size: int,
    low: float = 1.0,
    high: float = 99.0,
    chest_wall: Literal["left", "right"] | None = None,
) -> tuple[np.ndarray, BreastFrame]:
    """Return the ``size`` x ``size`` float32 canvas (chest wall on the left) and its frame.

    ``pixels``: 2-D, any numeric type and range, larger values brighter (MONOCHROME1
    already inverted). ``chest_wall`` overrides the side found from the pixels.
    """
    canvas, _, frame = prepare_with_breast(pixels, size, low, high, chest_wall)
    return canvas, frame


def prepare_with_breast(
    pixels: np.ndarray,
    size: int,
    low: float = 1.0,
    high: float = 99.0,
    chest_wall: Literal["left", "right"] | None = None,
) -> tuple[np.ndarray, np.ndarray, BreastFrame]:
    """:func:`prepare`, plus the breast mask on the canvas (float32, 0 or 1)."""
    img = np.asarray(pixels, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    mask, k = breast_mask(img)
    side = chest_wall or chest_wall_side(mask)
    rows, cols = img.shape
    if mask.any():
        rr = np.nonzero(mask.any(axis=1))[0]
        cc = np.nonzero(mask.any(axis=0))[0]
        margin = 2
        y0 = max(0, (rr[0] - margin) * k)
        y1 = min(rows, (rr[-1] + 1 + margin) * k)
        x0 = max(0, (cc[0] - margin) * k)
        x1 = min(cols, (cc[-1] + 1 + margin) * k)
    else:
        y0, y1, x0, x1 = 0, rows, 0, cols
    crop = img[y0:y1, x0:x1]
    if side == "right":
        crop = crop[:, ::-1]
    canvas, box = preprocess(crop, size, low, high)
    frame = BreastFrame(
        int(x0), int(y0), int(x1), int(y1), side, box, float(mask.mean()) if mask.size else 0.0
    )
    breast = (mask_on_canvas(mask, k, frame, size) > 0.5).astype(np.float32)
    return canvas, breast, frame


def mask_on_canvas(mask: np.ndarray, k: int, frame: BreastFrame, size: int) -> np.ndarray:
    """A thumbnail mask (factor ``k``) drawn on the model canvas (used for training targets)."""
    full = np.kron(mask.astype(np.float32), np.ones((k, k), np.float32))
    crop = full[frame.y0 : frame.y1, frame.x0 : frame.x1]
    if frame.chest_wall == "right":
        crop = crop[:, ::-1]
    box = frame.letterbox
    out = np.zeros((size, size), np.float32)
    if crop.size:
        resized = bilinear_resize(np.ascontiguousarray(crop), box.height, box.width)
        t, left = int(box.top), int(box.left)
        out[t : t + box.height, left : left + box.width] = resized
    return out
