"""The convergence-index and spiculation maps of the mammography experiment
(``experiments/mmg_convergence_maps.py``; not shipped, docs/models/mmg.md) find what they
are built for on synthetic shapes: a faint round mass and a star of thin bright lines."""

from __future__ import annotations

import numpy as np

from experiments import mmg_convergence_maps as cv

SIZE = 512


def _breast() -> tuple[np.ndarray, np.ndarray, np.random.Generator, np.ndarray]:
    """Row and column grids, a seeded generator and a half-ellipse breast (chest wall left)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    mask = ((xx / 420.0) ** 2 + ((yy - 256) / 240.0) ** 2) <= 1.0
    return yy, xx, rng, mask


def _peak(a: np.ndarray) -> tuple[int, int]:
    r, c = np.unravel_index(int(np.argmax(a)), a.shape)
    return int(c) * 2, int(r) * 2  # GRID -> 512 canvas (x, y)


def test_convergence_index_peaks_on_a_faint_round_mass():
    yy, xx, rng, mask = _breast()
    z = rng.normal(0.0, 0.3, (SIZE, SIZE))
    z += 0.8 * np.exp(-((xx - 200) ** 2 + (yy - 300) ** 2) / (2 * 14.0**2))
    maps = cv.convergence_maps(np.where(mask, z, 0.0), mask)
    x, y = _peak(maps.ci[1])
    assert abs(x - 200) <= 12 and abs(y - 300) <= 12
    assert maps.ci[1].max() > 0.3  # random texture alone stays near 0
    assert np.median(maps.ci[1][maps.inner]) < 0.1


def test_spiculation_peaks_at_the_centre_of_a_line_star():
    yy, xx, rng, mask = _breast()
    z = rng.normal(0.0, 0.2, (SIZE, SIZE))
    for angle in np.linspace(0, np.pi, 8, endpoint=False):
        dx, dy = np.cos(angle), np.sin(angle)
        dist = np.abs((xx - 220) * dy - (yy - 240) * dx)  # distance to the line
        along = np.abs((xx - 220) * dx + (yy - 240) * dy)
        z += 1.5 * ((dist < 1.5) & (along < 60) & (along > 6))
    maps = cv.convergence_maps(np.where(mask, z, 0.0), mask)
    x, y = _peak(maps.spic[1])
    assert abs(x - 220) <= 16 and abs(y - 240) <= 16
    assert maps.spread[y // 2, x // 2] >= 0.75  # spicules all round, not one edge


def test_a_blank_breast_gives_flat_maps():
    _, _, _, mask = _breast()
    maps = cv.convergence_maps(np.zeros((SIZE, SIZE)), mask)
    assert np.abs(maps.ci).max() < 1e-6
    assert np.abs(maps.spic).max() < 1e-6
