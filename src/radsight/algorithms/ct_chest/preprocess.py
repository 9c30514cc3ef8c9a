"""Pure numpy preparation of one lung-window slice for the lesion model (no ML runtime).

The training slices (8-bit JPEG / 255) and the platform's slices (HU through the lung
window, :func:`radsight.algorithms.ct_volume.window`) both arrive here as 0..1 images and
are put on the model canvas the same way: area-averaged by an integer factor, bilinear
resampling so that the longer side is ``size`` pixels, centred on a canvas of zeros.
:class:`~radsight.algorithms.cxr.preprocess.Letterbox` maps model pixels back to source
pixels (SCOORD, PS3.3 C.18.6).
"""

from __future__ import annotations

import numpy as np

from radsight.algorithms.cxr.preprocess import Letterbox, _block_mean, bilinear_resize

__all__ = ["SIZE", "Letterbox", "to_canvas", "to_source"]

#: model input side in pixels; the lesion map comes out at SIZE // 2
SIZE = 256


def to_canvas(img: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a 2-D 0..1 image onto a ``size`` x ``size`` float32 canvas."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    rows, cols = img.shape
    scale = size / max(rows, cols)
    k = int(1.0 / scale)
    if k >= 2:
        img = _block_mean(img, k)
    height = max(1, min(size, round(rows * scale)))
    width = max(1, min(size, round(cols * scale)))
    img = bilinear_resize(img, height, width)
    top, left = (size - height) // 2, (size - width) // 2
    canvas = np.zeros((size, size), dtype=np.float32)
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


def to_source(prob: np.ndarray, box: Letterbox, size: int = SIZE) -> np.ndarray:
    """A map over the whole ``size`` canvas (any resolution) -> the source grid, bilinear."""
    cell = size / prob.shape[0]
    # source pixel centres -> canvas -> map coordinates (pixel-centre aligned)
    ys = (box.top + (np.arange(box.source_rows) + 0.5) * box.scale_y) / cell - 0.5
    xs = (box.left + (np.arange(box.source_columns) + 0.5) * box.scale_x) / cell - 0.5
    ys = np.clip(ys, 0, prob.shape[0] - 1)
    xs = np.clip(xs, 0, prob.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, prob.shape[0] - 1)
    x1 = np.minimum(x0 + 1, prob.shape[1] - 1)
    wy = (ys - y0).astype(np.float32)[:, None]
    wx = (xs - x0).astype(np.float32)[None, :]
    p = prob.astype(np.float32)
    top = p[y0][:, x0] * (1 - wx) + p[y0][:, x1] * wx
    bottom = p[y1][:, x0] * (1 - wx) + p[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)
