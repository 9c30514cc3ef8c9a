"""Gradient convergence and spiculation maps of a mammogram, in pure numpy.

Classical mammography CAD features that the blob filters (``features.py``) do not see:

1. **Convergence index** (Kobatake & Hashimoto's convergence index filter, the simple,
   non-adaptive relative of the iris filter): at each pixel p, the mean over the breast
   pixels q of a ring R1 <= |q - p| <= R2 of cos(angle between the image gradient at q and
   the direction q -> p). A mass (a bright, roughly round region) makes the gradients
   around it point at its centre whatever its contrast, so the index is near +1 there,
   0 for random texture. ``CI_RINGS`` gives three ring sizes.
2. **Spiculation / line concentration** (after Karssemeijer & te Brake 1996): bright line
   pixels (the strongest ``LINE_SHARE`` of the breast by the Hessian's most negative
   eigenvalue, sigma ``LINE_SIGMA``) and their orientation theta; at each pixel p, over the
   line pixels q of an annulus, the sum of cos(2 (theta_q - phi_pq)) (phi_pq the direction
   q -> p): +1 for a line pointing at p, -1 across it, 0 on average for random
   orientations. ``spic`` is that sum over sqrt(n / 2) (n line pixels in the annulus): a
   z-score like Karssemeijer's f1. ``spread`` (like his f2) is the share of
   ``SECTORS`` angular sectors of the larger annulus whose sum is positive: spicules all
   round, not one straight edge (a sector counts when its sum exceeds 0.5, half a line
   pixel's vote).

Both are linear in per-pixel vectors (the unit gradient; the line's double-angle vector),
so each ring is two FFT convolutions (``numpy.fft``; no scipy). The maps are computed on
the mark canvas of ``features.py`` (512 px, chest wall on the left, intensity normalised
per breast), lines at 512 px and everything else on the canvas halved to ``GRID`` (256)
px. Coordinates in and out of :class:`ConvergenceMaps` are 512-canvas (column, row).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from radsight.algorithms.mmg.features import erode

__all__ = [
    "CI_RINGS",
    "IMAGE_FEATURES",
    "POINT_FEATURES",
    "SPIC_RINGS",
    "ConvergenceMaps",
    "convergence_maps",
    "from_pixels",
    "image_summary",
    "maxima",
]

#: analysis grid: the 512-px mark canvas halved
GRID = 256
#: convergence index rings, (inner, outer) radius in GRID px (~0.6-0.8 mm on mini-MIAS)
CI_RINGS = ((3.0, 8.0), (6.0, 16.0), (12.0, 32.0))
#: spiculation annuli, (inner, outer) radius in GRID px
SPIC_RINGS = ((4.0, 12.0), (8.0, 24.0))
#: gradient: Gaussian smoothing (GRID px) before central differences
GRAD_SIGMA = 1.5
#: the gradient is taken after subtracting the breast blurred at this sigma (GRID px,
#: ~17 mm): the breast's overall density layout (denser near the chest wall) would
#: otherwise make every large ring converge
DETREND_SIGMA = 24.0
#: lines: Hessian of the 512-px canvas smoothed at this sigma (512 px, ~0.5 mm)
LINE_SIGMA = 1.5
#: share of the inner breast's pixels that count as line pixels (strongest first)
LINE_SHARE = 0.15
#: angular sectors of the larger spiculation annulus for ``spread``
SECTORS = 8
#: pixels this close to the skin line (GRID px) have no gradient or line vote
EDGE = 4
#: responses count only this far inside the breast (GRID px; features.INNER / 2)
INNER = 5
#: image features: the mean of the TOP highest responses in the inner breast
TOP = 16

POINT_FEATURES = [
    *(f"ci_r{int(b)}" for _, b in CI_RINGS),
    *(f"spic_r{int(b)}" for _, b in SPIC_RINGS),
    "spread",
]
IMAGE_FEATURES = [
    *(f"top_ci_r{int(b)}" for _, b in CI_RINGS),
    "top_ci_max",
    *(f"top_spic_r{int(b)}" for _, b in SPIC_RINGS),
    "top_spic_max",
    "top_spread",
]


def _pad_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT sizes)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


_PAD = _pad_size(GRID + int(max(b for _, b in (*CI_RINGS, *SPIC_RINGS))) + 2)


@lru_cache(maxsize=8)
def _kernels(size: int) -> dict[str, np.ndarray]:
    """Spectra of the ring kernels on a ``size`` x ``size`` wrap-around grid."""
    d = np.fft.fftfreq(size, 1.0 / size)  # 0, 1, ..., -1 (offsets p - q)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    r = np.hypot(dx, dy)
    rs = np.where(r > 0, r, 1.0)
    ux, uy = dx / rs, dy / rs
    phi = np.arctan2(dy, dx)
    c2, s2 = np.cos(2 * phi), np.sin(2 * phi)
    out: dict[str, np.ndarray] = {}

    def spec(k: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(k).astype(np.complex64)

    for i, (a, b) in enumerate(CI_RINGS):
        ring = ((r >= a) & (r <= b)).astype(np.float64)
        out[f"ci{i}_x"], out[f"ci{i}_y"], out[f"ci{i}_n"] = (
            spec(ring * ux),
            spec(ring * uy),
            spec(ring),
        )
    for i, (a, b) in enumerate(SPIC_RINGS):
        ring = ((r >= a) & (r <= b)).astype(np.float64)
        out[f"sp{i}_c"], out[f"sp{i}_s"], out[f"sp{i}_n"] = (
            spec(ring * c2),
            spec(ring * s2),
            spec(ring),
        )
    a, b = SPIC_RINGS[-1]
    ring = (r >= a) & (r <= b)
    # the direction of q seen from p is phi + pi (d = p - q)
    sector = (((phi + np.pi) % (2 * np.pi)) / (2 * np.pi) * SECTORS).astype(int) % SECTORS
    for k in range(SECTORS):
        m = (ring & (sector == k)).astype(np.float64)
        out[f"sec{k}_c"], out[f"sec{k}_s"] = spec(m * c2), spec(m * s2)
    return out


@lru_cache(maxsize=8)
def _gauss(shape: tuple[int, int], sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))


def _smooth(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: the breast blurred without a step at the skin line."""
    pad = _pad_size(img.shape[0] + int(3 * sigma) + 1) - img.shape[0]
    shape = (img.shape[0] + pad, img.shape[1] + pad)
    g = _gauss(shape, sigma)
    num = np.fft.irfft2(np.fft.rfft2(img * mask, s=shape) * g, s=shape)[
        : img.shape[0], : img.shape[1]
    ]
    den = np.fft.irfft2(np.fft.rfft2(mask, s=shape) * g, s=shape)[: img.shape[0], : img.shape[1]]
    return np.where(mask > 0, num / np.maximum(den, 1e-3), 0.0)


def _half(a: np.ndarray) -> np.ndarray:
    """2 x 2 sums (512 -> 256)."""
    h, w = a.shape[0] // 2, a.shape[1] // 2
    return a[: 2 * h, : 2 * w].reshape(h, 2, w, 2).sum(axis=(1, 3))


@dataclass
class ConvergenceMaps:
    """The maps of one breast on the GRID (256 px) grid; see the module docstring."""

    #: len(CI_RINGS) x GRID x GRID convergence index (-1..1), 0 outside the inner breast
    ci: np.ndarray
    #: len(SPIC_RINGS) x GRID x GRID line-concentration z-scores, 0 outside the inner breast
    spic: np.ndarray
    #: GRID x GRID share of sectors (larger annulus) with a positive concentration
    spread: np.ndarray
    #: the breast at least INNER px inside its edge
    inner: np.ndarray
    #: the breast's bounding box on the 512 canvas (rows r0..r1, columns c0..c1)
    bbox: tuple[int, int, int, int] = (0, 2 * GRID, 0, 2 * GRID)

    def stack(self) -> np.ndarray:
        """POINT_FEATURES maps, stacked."""
        return np.concatenate([self.ci, self.spic, self.spread[None]])

    def at(self, x: float, y: float, reach: int = 2) -> np.ndarray:
        """POINT_FEATURES at 512-canvas (x, y): each map's largest value within
        +-``reach`` GRID px (candidate centres and map maxima need not coincide)."""
        c = int(np.clip(x / 2, 0, GRID - 1))
        r = int(np.clip(y / 2, 0, GRID - 1))
        win = self.stack()[:, max(r - reach, 0) : r + reach + 1, max(c - reach, 0) : c + reach + 1]
        return win.reshape(len(win), -1).max(axis=1)

    def around(self, xr: float, yr: float, window: float = 0.08) -> np.ndarray:
        """POINT_FEATURES' largest values around the same place of this breast (relative to
        its bounding box, +-``window`` of its size), as ``features._around`` does."""
        r0, r1, c0, c1 = (v / 2 for v in self.bbox)
        h, w = r1 - r0, c1 - c0
        ya, yb = max(int(r0 + (yr - window) * h), 0), int(r0 + (yr + window) * h) + 1
        xa, xb = max(int(c0 + (xr - window) * w), 0), int(c0 + (xr + window) * w) + 1
        win = self.stack()[:, ya:yb, xa:xb]
        if win.size == 0:
            return np.zeros(len(POINT_FEATURES))
        return win.reshape(len(win), -1).max(axis=1)


def convergence_maps(z: np.ndarray, mask: np.ndarray) -> ConvergenceMaps:
    """The maps of a breast on the 512-px mark canvas: ``z`` its normalised intensity
    (``features.normalise``), ``mask`` the breast (0/1)."""
    z = np.asarray(z, np.float64)
    mask = (np.asarray(mask) > 0).astype(np.float64)
    # lines at 512: Hessian of the smoothed breast, by central differences
    s = _smooth(z, mask, LINE_SIGMA)
    gy, gx = np.gradient(s)
    lyy, lyx = np.gradient(gy)
    lxy, lxx = np.gradient(gx)
    lxy = 0.5 * (lxy + lyx)
    half = 0.5 * (lxx - lyy)
    root = np.sqrt(half**2 + lxy**2)
    strength = np.maximum(-(0.5 * (lxx + lyy) - root), 0.0)  # -(most negative eigenvalue)
    # the line runs along the other eigenvector: double angle (lxx - lyy, 2 lxy) / norm
    rs = np.where(root > 0, root, 1.0)
    c2, s2 = half / rs, lxy / rs
    voting = erode(mask, 2 * EDGE)
    inside = strength[voting]
    line = np.zeros_like(strength)
    if inside.size > 16:
        cut = np.quantile(inside, 1.0 - LINE_SHARE)
        line = ((strength > cut) & voting & (root > 0)).astype(np.float64)
    lines = [_half(line), _half(line * c2), _half(line * s2)]
    # the rest on the 256 grid
    m2 = _half(mask) / 4.0
    mask2 = (m2 >= 0.5).astype(np.float64)
    z2 = _half(z * mask) / np.maximum(_half(mask), 1.0)
    s2m = (_smooth(z2, mask2, GRAD_SIGMA) - _smooth(z2, mask2, DETREND_SIGMA)) * mask2
    hy, hx = np.gradient(s2m)
    mag = np.hypot(hx, hy)
    vote2 = erode(mask2, EDGE).astype(np.float64)
    inner = erode(mask2, INNER)
    eps = 1e-3 * (float(np.median(mag[vote2 > 0])) if (vote2 > 0).any() else 1.0) + 1e-9
    ux, uy = hx / (mag + eps) * vote2, hy / (mag + eps) * vote2
    shape = (_PAD, _PAD)
    k = _kernels(_PAD)

    def f(a: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(a, s=shape)

    def inv(spec: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(spec, s=shape)[:GRID, :GRID]

    fx, fy, fn = f(ux), f(uy), f(vote2)
    ci = []
    for i in range(len(CI_RINGS)):
        num = inv(fx * k[f"ci{i}_x"] + fy * k[f"ci{i}_y"])
        n = inv(fn * k[f"ci{i}_n"])
        ci.append(np.where(inner, num / np.maximum(n, 1.0), 0.0))
    fl, fc, fs = (f(a) for a in lines)
    spic = []
    for i in range(len(SPIC_RINGS)):
        num = inv(fc * k[f"sp{i}_c"] + fs * k[f"sp{i}_s"])
        n = inv(fl * k[f"sp{i}_n"])
        spic.append(np.where(inner, num / np.sqrt(np.maximum(n, 1.0) / 2.0), 0.0))
    positive = np.zeros((GRID, GRID))
    for j in range(SECTORS):
        positive += inv(fc * k[f"sec{j}_c"] + fs * k[f"sec{j}_s"]) > 0.5
    spread = np.where(inner, positive / SECTORS, 0.0)
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    bbox = (
        (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        if len(rows)
        else (0, 2 * GRID, 0, 2 * GRID)
    )
    return ConvergenceMaps(
        np.array(ci, np.float32),
        np.array(spic, np.float32),
        spread.astype(np.float32),
        inner,
        bbox,
    )


def from_pixels(pixels: np.ndarray) -> ConvergenceMaps:
    """The maps of one image (2-D, brighter = denser) through the platform's mark canvas."""
    from radsight.algorithms.mmg.features import SIZE, normalise
    from radsight.algorithms.mmg.preprocess import prepare_with_breast

    canvas, mask, _ = prepare_with_breast(pixels, SIZE)
    return convergence_maps(normalise(canvas, mask), mask)


def image_summary(maps: ConvergenceMaps, top: int = TOP) -> np.ndarray:
    """IMAGE_FEATURES: the mean of the ``top`` highest responses in the inner breast."""
    inner = maps.inner

    def topk(a: np.ndarray) -> float:
        v = a[inner]
        if v.size == 0:
            return 0.0
        k = min(top, v.size)
        return float(np.partition(v, v.size - k)[-k:].mean())

    ci_max = maps.ci.max(axis=0)
    spic_max = maps.spic.max(axis=0)
    return np.array(
        [
            *(topk(c) for c in maps.ci),
            topk(ci_max),
            *(topk(s) for s in maps.spic),
            topk(spic_max),
            topk(maps.spread),
        ]
    )


def _local_max(a: np.ndarray) -> np.ndarray:
    """Not below any of the 8 neighbours (>=, where ``features._local_max`` asks >): the
    maps on the coarse 256-px grid have flat tops, which a strict test would drop."""
    p = np.pad(a, 1, constant_values=-np.inf)
    out = np.ones(a.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                out &= a >= p[dy : dy + a.shape[0], dx : dx + a.shape[1]]
    return out


def maxima(a: np.ndarray, inner: np.ndarray, count: int, suppress: float) -> list[tuple]:
    """Up to ``count`` local maxima of the GRID map ``a`` in ``inner`` (greedy, suppression
    radius ``suppress`` GRID px), as 512-canvas (x, y, value), strongest first."""
    work = np.where(_local_max(a) & inner, a, -np.inf)
    rr, cc = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    out = []
    for _ in range(count):
        r, c = np.unravel_index(int(np.argmax(work)), work.shape)
        if not np.isfinite(work[r, c]):
            break
        out.append((2.0 * c + 1.0, 2.0 * r + 1.0, float(a[r, c])))
        work[(rr - r) ** 2 + (cc - c) ** 2 <= suppress**2] = -np.inf
    return out
