"""The synthetic extra-axial collections of the brain CT training
(``radsight_train.ct_brain.train.add_collections``) on real training slices: painted
inside the skull, against its inner table, with the density asked for, on normal slices
only, and labelled haemorrhage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from radsight.algorithms.ct_brain.preprocess import pseudo_hu  # noqa: E402
from radsight_train.ct_brain import train as T  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or (REPO / ".." / "shared" / "data")).resolve()


@pytest.fixture(scope="module")
def cache() -> dict:
    if not (DATA / T.DATASET).is_dir():
        pytest.skip(f"head CT slices not found at {DATA / T.DATASET}")
    items = T.read_items(DATA)
    # five normal slices (label 0) and two haemorrhage slices (label 1)
    chosen = [it for it in items if it[1] == 0][:5] + [it for it in items if it[1] == 1][:2]
    return T.load_cache(chosen)


def _hu(cache: dict) -> torch.Tensor:
    """The slices in pseudo-HU at the fixed 40/80 window, as a (n, 1, H, W) batch."""
    n = len(cache["label"])
    return torch.from_numpy(
        np.stack(
            [pseudo_hu(*(cache[k][i, 0].numpy() for k in ("g", "head", "rim"))) for i in range(n)]
        )
    ).unsqueeze(1)


@pytest.mark.parametrize("chronic", [True, False])
def test_collections_lie_against_the_inner_table_of_normal_slices(cache, chronic):
    n = len(cache["label"])
    hu = _hu(cache)
    gen = torch.Generator().manual_seed(1)
    painted, labels = T.add_collections(
        hu, cache, torch.arange(n), cache["label"], gen, 1.0, 1.0 if chronic else 0.0
    )
    changed = (painted - hu).abs() > 1e-3
    normal = cache["label"] == 0
    assert labels.tolist() == [1.0] * n  # normals now labelled haemorrhage, bleeds stay 1
    assert not changed[~normal].any()  # haemorrhage slices are left as they are
    for i in np.nonzero(normal.numpy())[0]:
        where = changed[i, 0].numpy()
        depth = cache["depth"][i, 0].numpy()
        assert where.sum() > 20, f"slice {i}: nothing painted"
        assert (depth[where] > 0).all()  # inside the skull only
        assert depth[where].min() <= 1.5  # touching the inner table
        assert np.percentile(depth[where], 90) <= 11  # a crescent, not a filled head
        fluid = painted[i, 0].numpy()[where & (depth > 1.5)]
        lo, hi = (-10, 37) if chronic else (43, 92)
        assert lo <= float(np.median(fluid)) <= hi


def test_intracranial_space_excludes_the_skull(cache):
    g = cache["g"][:, 0].numpy()
    inside = cache["depth"][:, 0].numpy() > 0
    head = cache["head"][:, 0].numpy()
    assert (inside <= head).all()
    bone = [(g[i][inside[i]] >= T.SKULL_GREY).mean() for i in range(5)]  # the normal slices
    assert max(bone) < 0.15 and float(np.mean(bone)) < 0.05
    for i in range(len(g)):
        assert 0.3 * head[i].sum() <= inside[i].sum() <= 0.95 * head[i].sum()
