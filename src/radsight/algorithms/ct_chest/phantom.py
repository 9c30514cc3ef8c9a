"""A synthetic chest CT in HU for tests, the benchmark and the demo (not a patient).

Body with a fat rim, two lungs whose cross-section grows and shrinks along z, heart,
spine, vessels, a trachea in the upper slices and the table under the patient; optionally
a ground-glass patch with a consolidated core in the right lung. Pure numpy, seeded.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chest_phantom"]


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def chest_phantom(
    slices: int = 40,
    size: int = 512,
    *,
    lesion: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """HU volume (z, y, x), float32: slice 0 is the top (head end) of the chest."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    vol = np.full((slices, size, size), -1000.0, np.float32)
    body_r = _ellipse(yy, xx, 0.5, 0.5, 0.3, 0.42)
    table = (yy > 0.83) & (yy < 0.86) & (np.abs(xx - 0.5) < 0.45)
    spine = _ellipse(yy, xx, 0.72, 0.5, 0.05, 0.05) < 1
    heart = _ellipse(yy, xx, 0.5, 0.53, 0.13, 0.12) < 1
    trachea = _ellipse(yy, xx, 0.4, 0.5, 0.025, 0.025) < 1
    vessels = rng.random((size, size)) < 0.0015
    for k in range(slices):
        t = (k + 0.5) / slices
        lung_scale = 0.35 + 0.65 * np.sin(np.pi * min(1.0, 0.15 + 0.9 * t)) ** 0.7
        sl = vol[k]
        sl[body_r < 1] = -100.0  # fat
        sl[body_r < 0.85] = 40.0  # soft tissue
        lungs = np.zeros_like(sl, bool)
        for cx in (0.32, 0.68):
            lungs |= _ellipse(yy, xx, 0.5, cx, 0.2 * lung_scale, 0.13 * lung_scale) < 1
        sl[lungs] = -850.0
        if t > 0.4:
            sl[heart] = 40.0
        if t < 0.3:
            sl[trachea] = -1000.0
        sl[lungs & vessels] = 20.0
        sl[spine] = 600.0
        sl[table] = 200.0
        if lesion and 0.35 < t < 0.75:
            w = np.sin(np.pi * (t - 0.35) / 0.4)
            d = _ellipse(yy, xx, 0.48, 0.25, 0.09 * w + 0.01, 0.06 * w + 0.01)
            ggo = lungs & (d < 1)
            sl[ggo] = -450.0
            sl[lungs & (d < 0.3)] = 10.0
        sl += rng.normal(0, 15, sl.shape).astype(np.float32)
    return np.maximum(vol, -1024.0)
