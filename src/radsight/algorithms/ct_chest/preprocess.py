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

from radsight.algorithms.cxr.preprocess import Letterbox, letterbox

__all__ = ["SIZE", "Letterbox", "to_canvas", "to_source"]

#: model input side in pixels; the lesion map comes out at SIZE // 2
SIZE = 256


def to_canvas(img: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, Letterbox]:
    """Letterbox a 2-D 0..1 image onto a ``size`` x ``size`` float32 canvas."""
    return letterbox(img, size)


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
