"""Pure numpy preprocessing for the chest radiograph model (no ML runtime here).

The same functions prepare the training images (``radsight_train``) and the images the
platform analyses, so the model sees one geometry and one intensity scale in both places:

1. area-average by an integer factor (anti-aliasing for large detector images), then
   bilinear resampling so that the longer side is ``size`` pixels, keeping the aspect ratio;
2. percentile normalisation: the ``low``/``high`` percentiles of the resampled image map to
   0 and 1 (robust to bit depth, window and burned-in text);
3. letterboxing: the image is centred on a ``size`` x ``size`` canvas of zeros.

:class:`Letterbox` maps model coordinates back to source pixel coordinates (SCOORD,
PS3.3 C.18.6: ``(column, row)`` with ``(0, 0)`` at the top-left corner of the first pixel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Letterbox", "bilinear_resize", "letterbox", "normalise", "preprocess"]


@dataclass(frozen=True)
class Letterbox:
    """Where the source image lies on the model canvas."""

    #: model pixels per source pixel, along columns and rows
    scale_x: float
    scale_y: float
    #: canvas offset of the source image, in model pixels
    left: float
    top: float
    #: size of the source image on the canvas, in model pixels
    width: int
    height: int
    source_columns: int
    source_rows: int

    def to_source(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple:
        """Model canvas (column, row) -> source image (column, row), clipped to the image."""
        sx = np.clip(
            (np.asarray(x, dtype=np.float64) - self.left) / self.scale_x, 0, self.source_columns
        )
        sy = np.clip(
            (np.asarray(y, dtype=np.float64) - self.top) / self.scale_y, 0, self.source_rows
        )
        return sx, sy


def _block_mean(img: np.ndarray, k: int) -> np.ndarray:
    rows, cols = img.shape
    r, c = rows // k * k, cols // k * k
    return img[:r, :c].reshape(r // k, k, c // k, k).mean(axis=(1, 3), dtype=np.float32)


def bilinear_resize(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resampling with pixel-centre alignment (like ``align_corners=False``)."""
    in_rows, in_cols = img.shape
    if (in_rows, in_cols) == (rows, cols):
        return img.astype(np.float32, copy=True)
    ys = (np.arange(rows, dtype=np.float64) + 0.5) * (in_rows / rows) - 0.5
    xs = (np.arange(cols, dtype=np.float64) + 0.5) * (in_cols / cols) - 0.5
    ys = np.clip(ys, 0, in_rows - 1)
    xs = np.clip(xs, 0, in_cols - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, in_rows - 1)
    x1 = np.minimum(x0 + 1, in_cols - 1)
    wy = (ys - y0).astype(np.float32)[:, None]
    wx = (xs - x0).astype(np.float32)[None, :]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def normalise(img: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low``..``high`` percentiles to 0..1 and clip."""
    lo, hi = np.percentile(img, [low, high])
    if hi - lo < 1e-6:
        return np.zeros_like(img, dtype=np.float32)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def letterbox(
    img: np.ndarray,
    size: int,
    values: Callable[[np.ndarray], np.ndarray] | None = None,
    fill: float = 0.0,
) -> tuple[np.ndarray, Letterbox]:
    """A 2-D image on a ``size`` x ``size`` float32 canvas of ``fill`` and its :class:`Letterbox`:
    integer area averaging, then bilinear resampling so that the longer side is ``size``,
    centred. ``values`` (e.g. :func:`normalise`) maps the resampled image before it is
    placed, so that the bars stay out of it."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    rows, cols = img.shape
    scale = size / max(rows, cols)
    k = int(1.0 / scale)  # integer area averaging first, so bilinear never skips pixels
    if k >= 2:
        img = _block_mean(img, k)
    height = max(1, min(size, round(rows * scale)))
    width = max(1, min(size, round(cols * scale)))
    img = bilinear_resize(img, height, width)
    if values is not None:
        img = values(img)
    top, left = (size - height) // 2, (size - width) // 2
    canvas = np.full((size, size), fill, dtype=np.float32)
    canvas[top : top + height, left : left + width] = img
    box = Letterbox(
        scale_x=width / cols,
        scale_y=height / rows,
        left=float(left),
        top=float(top),
        width=width,
        height=height,
        source_columns=cols,
        source_rows=rows,
    )
    return canvas, box


def preprocess(
    pixels: np.ndarray, size: int = 224, low: float = 1.0, high: float = 99.0
) -> tuple[np.ndarray, Letterbox]:
    """Return a ``size`` x ``size`` float32 image in [0, 1] and its :class:`Letterbox`.

    ``pixels`` is a 2-D array of any numeric type and range, larger values brighter
    (MONOCHROME1 already inverted).
    """
    return letterbox(pixels, size, lambda img: normalise(img, low, high))
