"""Mark candidates and their features, in pure numpy (docs/models/mmg.md, "Marks").

Training (``radsight_train.mmg``) and the platform call the same functions. Scales
are relative to the breast: its bounding box is letterboxed onto a ``SIZE`` (512) px
canvas, chest wall on the left (:func:`radsight.algorithms.mmg.preprocess.prepare_with_breast`).
On mini-MIAS a canvas pixel is about 0.3-0.4 mm.

1. Intensity is normalised per breast, by the breast's own 2nd, 50th and 98th percentiles
   (``z = (x - p50) / (p98 - p2)``), so film density, vendor processing and the background
   do not shift the features.
2. Gaussian blurs by FFT, normalised by the blurred breast mask (normalised convolution:
   no step at the skin line). Blobs are differences of Gaussians (sigma, 2 sigma) at
   ``SIGMAS``, counted at least ``INNER`` px inside the breast.
3. Candidates (:func:`find_candidates`, ``CandidateSettings``): up to 10 blob maxima
   (non-maximum suppression over the scales, 2.5 sigma) and up to 4 maxima of the breast
   blurred at sigma 16 (dense regions).
4. Each candidate's ``CANDIDATE_FEATURES``: the DoG responses there, the local brightness,
   where it lies in the breast's bounding box, and the bilateral comparison: its
   brightness and sigma-16 blob response minus the largest of the other breast's around
   the same place (bounding boxes aligned, +-``WINDOW`` of their size). A logistic
   regression in ``mmg.json`` (fitted by ``python -m radsight_train mmg``) ranks them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from radsight.algorithms.mmg.preprocess import BreastFrame, prepare_with_breast

__all__ = [
    "CANDIDATE_FEATURES",
    "CANDIDATE_VARIANTS",
    "SIZE",
    "Breast",
    "Candidate",
    "CandidateSettings",
    "analyse_breast",
    "candidates",
    "find_candidates",
    "with_candidates",
]

SIZE = 512
SIGMAS = (4.0, 8.0, 16.0, 32.0)
INNER = 10
WINDOW = 0.08


@dataclass(frozen=True)
class CandidateSettings:
    """How the mark candidates are picked from the maps (docs/models/mmg.md, "Marks")."""

    #: blob maxima kept: across the scales, or per scale when ``per_scale`` is set
    max_blobs: int = 10
    #: non-maximum suppression radius of a blob, in multiples of its sigma
    suppress: float = 2.5
    #: > 0: up to this many maxima of each scale's own DoG map instead (suppression within
    #: the scale; one within ``min(sigma, sigma')`` of a kept candidate is dropped)
    per_scale: int = 0
    #: dense-region maxima (the breast blurred at sigma 16): how many, suppression radius
    max_bright: int = 4
    bright_suppress: float = 40.0


#: candidate generators: the shipped one (``DEFAULT_CANDIDATES``, 1.1.0's) and three
#: declared before a nested experiment (``python -m experiments.mmg_candidates``)
#: that did not beat it, so they are not used (docs/models/mmg.md, "Also tried: more mark
#: candidates")
CANDIDATE_VARIANTS = {
    "nms_2.5_sigma": CandidateSettings(),  # 1.1.0
    "more_blobs": CandidateSettings(max_blobs=20),
    "looser_nms": CandidateSettings(
        max_blobs=16, suppress=1.25, max_bright=6, bright_suppress=24.0
    ),
    "per_scale": CandidateSettings(max_blobs=0, per_scale=4),
}
DEFAULT_CANDIDATES = "nms_2.5_sigma"

CANDIDATE_FEATURES = [
    *(f"dog_s{s:g}" for s in SIGMAS),
    "local_z",
    "x_from_chest_wall",
    "y_from_top",
    "x2",
    "y2",
    "xy",
    "top_chest_wall_corner",
    "from_bright",
    "local_z_minus_other",
    "dog_s16_minus_other",
]


@lru_cache(maxsize=16)
def _transfer(shape: tuple[int, int], sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2)).astype(np.complex64)


def _blurs(img: np.ndarray, sigmas: tuple[float, ...]) -> list[np.ndarray]:
    """Gaussian blurs of ``img`` (zero padded by 3 x the largest sigma, via FFT)."""
    pad = int(3 * max(sigmas))
    rows, cols = img.shape
    shape = (rows + 2 * pad, cols + 2 * pad)
    big = np.zeros(shape, np.float32)
    big[pad : pad + rows, pad : pad + cols] = img
    spec = np.fft.rfft2(big)
    return [
        np.fft.irfft2(spec * _transfer(shape, s), s=shape)[pad : pad + rows, pad : pad + cols]
        for s in sigmas
    ]


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels whose (2r+1) x (2r+1) box lies inside the mask (by cumulative sums)."""
    m = mask > 0
    c = np.pad(m.astype(np.int32), ((r + 1, r), (r + 1, r))).cumsum(0).cumsum(1)
    k = 2 * r + 1
    box = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return np.asarray(box == k * k)


def _local_max(a: np.ndarray) -> np.ndarray:
    p = np.pad(a, 1, constant_values=-np.inf)
    out = np.ones(a.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                out &= a > p[dy : dy + a.shape[0], dx : dx + a.shape[1]]
    return out


@dataclass(frozen=True)
class Candidate:
    """A mark candidate on the canvas: centre (column, row), radius, scale, origin."""

    x: float
    y: float
    radius: float
    sigma: float
    source: str  # blob | bright


@dataclass
class Breast:
    """One image's breast on the canvas: normalised image, maps and candidates."""

    frame: BreastFrame
    mask: np.ndarray
    #: the breast blurred at sigma 8 (local brightness) and 16
    local: np.ndarray
    dense: np.ndarray
    #: len(SIGMAS) x SIZE x SIZE DoG responses, 0 outside the inner breast
    dogs: np.ndarray
    candidates: list[Candidate]
    #: the breast's bounding box on the canvas: rows r0..r1, columns c0..c1 (half-open)
    bbox: tuple[int, int, int, int]
    #: the breast at least ``INNER`` px inside its edge
    inner: np.ndarray | None = None
    #: how ``candidates`` were picked
    settings: CandidateSettings | None = None

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Canvas (column, row) -> source image (column, row)."""
        sx, sy = self.frame.to_source(x, y)
        return float(sx), float(sy)


def normalise(canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inside = canvas[mask > 0]
    if inside.size < 16:
        return np.zeros_like(canvas)
    p2, p50, p98 = np.percentile(inside, [2, 50, 98])
    return ((canvas - p50) / max(p98 - p2, 1e-3) * (mask > 0)).astype(np.float32)


def find_candidates(breast: Breast, settings: CandidateSettings) -> list[Candidate]:
    """The mark candidates of ``breast``'s maps: blob maxima, then dense-region maxima."""
    dogs = breast.dogs
    inner = breast.inner if breast.inner is not None else erode(breast.mask, INNER)
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    cands: list[Candidate] = []
    if settings.per_scale:
        for i, sigma in enumerate(SIGMAS):
            work = np.where(_local_max(dogs[i]), dogs[i], -np.inf)
            for _ in range(settings.per_scale):
                r, c = np.unravel_index(int(np.argmax(work)), work.shape)
                if not np.isfinite(work[r, c]) or work[r, c] <= 0:
                    break
                work[(rr - r) ** 2 + (cc - c) ** 2 <= (settings.suppress * sigma) ** 2] = -np.inf
                if all(
                    (cd.x - c - 0.5) ** 2 + (cd.y - r - 0.5) ** 2 > min(cd.sigma, sigma) ** 2
                    for cd in cands
                ):
                    cands.append(Candidate(c + 0.5, r + 0.5, 2 * sigma, sigma, "blob"))
    best = dogs.max(axis=0)
    scale = np.asarray(SIGMAS)[dogs.argmax(axis=0)]
    work = np.where(_local_max(best), best, -np.inf)
    for _ in range(settings.max_blobs):
        r, c = np.unravel_index(int(np.argmax(work)), work.shape)
        if not np.isfinite(work[r, c]) or work[r, c] <= 0:
            break
        s = float(scale[r, c])
        cands.append(Candidate(c + 0.5, r + 0.5, 2 * s, s, "blob"))
        work[(rr - r) ** 2 + (cc - c) ** 2 <= (settings.suppress * s) ** 2] = -np.inf
    bright = np.where(_local_max(breast.dense) & inner, breast.dense, -np.inf)
    for _ in range(settings.max_bright):
        r, c = np.unravel_index(int(np.argmax(bright)), bright.shape)
        if not np.isfinite(bright[r, c]):
            break
        if all((cd.x - c) ** 2 + (cd.y - r) ** 2 > 16**2 for cd in cands):
            cands.append(Candidate(c + 0.5, r + 0.5, 24.0, 16.0, "bright"))
        bright[(rr - r) ** 2 + (cc - c) ** 2 <= settings.bright_suppress**2] = -np.inf
    return cands


def analyse_breast(pixels: np.ndarray, settings: CandidateSettings | None = None) -> Breast:
    """Maps and candidates of one image (2-D, brighter = denser); ``settings`` default to
    the 1.1.0 candidates (``CANDIDATE_VARIANTS[DEFAULT_CANDIDATES]``)."""
    canvas, mask, frame = prepare_with_breast(pixels, SIZE)
    z = normalise(canvas, mask)
    inner = erode(mask, INNER)
    sigmas = tuple(sorted(set(SIGMAS) | {2 * s for s in SIGMAS}))
    num = _blurs(z * mask, sigmas)
    den = _blurs(mask, sigmas)
    blurred = {
        s: np.where(mask > 0, n / np.maximum(d, 1e-3), 0.0).astype(np.float32)
        for s, n, d in zip(sigmas, num, den, strict=True)
    }
    dogs = np.stack([(blurred[s] - blurred[2 * s]) * inner for s in SIGMAS])
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(rows) and len(cols):
        bbox = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    else:
        bbox = (0, SIZE, 0, SIZE)
    breast = Breast(frame, mask, blurred[8.0], blurred[16.0], dogs, [], bbox, inner)
    return with_candidates(breast, settings or CANDIDATE_VARIANTS[DEFAULT_CANDIDATES])


def with_candidates(breast: Breast, settings: CandidateSettings) -> Breast:
    """``breast`` with the candidates ``settings`` pick (the same object if it has them)."""
    if breast.settings == settings:
        return breast
    return replace(breast, candidates=find_candidates(breast, settings), settings=settings)


def _around(breast: Breast, maps: list[np.ndarray], xr: float, yr: float) -> list[float]:
    """The largest value of each map around the same place of ``breast`` (relative to its
    bounding box, +-``WINDOW`` of its size: the two breasts never align exactly)."""
    r0, r1, c0, c1 = breast.bbox
    h, w = r1 - r0, c1 - c0
    ya, yb = max(int(r0 + (yr - WINDOW) * h), 0), int(r0 + (yr + WINDOW) * h) + 1
    xa, xb = max(int(c0 + (xr - WINDOW) * w), 0), int(c0 + (xr + WINDOW) * w) + 1
    out = []
    for m in maps:
        win = m[ya:yb, xa:xb]
        out.append(float(win.max()) if win.size else 0.0)
    return out


def candidates(breast: Breast, other: Breast | None = None) -> np.ndarray:
    """The CANDIDATE_FEATURES rows of ``breast.candidates``; ``other`` is the other breast's
    image (same view), None when there is none (the differences are then 0)."""
    r0, r1, c0, c1 = breast.bbox
    s16 = SIGMAS.index(16.0)
    rows = []
    for cand in breast.candidates:
        r = int(np.clip(cand.y, 0, SIZE - 1))
        c = int(np.clip(cand.x, 0, SIZE - 1))
        xr = (cand.x - c0) / max(c1 - c0, 1)
        yr = (cand.y - r0) / max(r1 - r0, 1)
        own = [float(breast.local[r, c]), float(breast.dogs[s16, r, c])]
        if other is None or other is breast:
            diff = [0.0, 0.0]
        else:
            theirs = _around(other, [other.local, other.dogs[s16]], xr, yr)
            diff = [a - b for a, b in zip(own, theirs, strict=True)]
        rows.append(
            [
                *(float(d[r, c]) for d in breast.dogs),
                own[0],
                xr,
                yr,
                xr * xr,
                yr * yr,
                xr * yr,
                max(0.0, 0.7 - xr - yr),
                float(cand.source == "bright"),
                *diff,
            ]
        )
    return np.array(rows, np.float64).reshape(len(rows), len(CANDIDATE_FEATURES))
