"""The transfer experiment (``experiments/mmg_transfer.py``; not shipped: docs/models/mmg.md,
"Also tried: features of the chest radiograph network") reads the chest radiograph network's
features where it says it does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the experiment imports radsight_train (the train extra)")

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or (REPO / ".." / "shared" / "data")).resolve()
MIAS = DATA / "mmg" / "mini-mias-train"
needs_mias = pytest.mark.skipif(
    not (MIAS / "images").is_dir(), reason=f"mini-MIAS not found under {MIAS}"
)


@needs_mias
def test_transfer_experiment_reads_each_cell_from_its_nearest_cxr_tile() -> None:
    """Each cell of the 28 x 28 grid holds cxr.onnx's features of the tile whose centre is
    nearest (2 x 2 or 3 x 3 tiles), and the annotated lesion of mdb010 lies on breast cells."""
    from experiments.mmg_transfer import TRANSFER_CANVAS, cxr_cell_features
    from radsight.algorithms.cxr import CONFIG as CXR_CONFIG
    from radsight.algorithms.cxr import MODEL_DIR as CXR_DIR
    from radsight.algorithms.mmg.preprocess import prepare_with_breast
    from radsight.algorithms.onnx import load_session
    from radsight_train.data import read_gray
    from radsight_train.mmg.model import mias_items

    item = next(it for it in mias_items(DATA) if it.refnum == "mdb010")
    pixels = read_gray(item.path)
    f2, cells2, frame = cxr_cell_features(pixels, 224)
    f3, cells3, _ = cxr_cell_features(pixels, 112)
    assert f2.shape == f3.shape == (256, 28, 28)
    assert np.array_equal(cells2, cells3) and 150 < cells2.sum() < 28 * 28

    canvas, breast, _ = prepare_with_breast(pixels, TRANSFER_CANVAS, 0.0, 100.0)
    inside = breast > 0.5
    lo, hi = np.percentile(canvas[inside], [1.0, 99.0])
    canvas = np.where(inside, np.clip((canvas - lo) / (hi - lo), 0, 1), 0).astype(np.float32)
    session = load_session(CXR_DIR / CXR_CONFIG["model"])

    def feat16(top: int, left: int) -> np.ndarray:
        tile = canvas[None, None, top : top + 224, left : left + 224]
        return session.run(["feat16"], {"image": tile})[0][0]

    # cell (12, 20): 2 x 2 tiles read it from tile (0, 1); 3 x 3 tiles from the one at (112, 224)
    assert np.allclose(f2[:96, 12, 20], feat16(0, 224)[:, 12, 6], atol=1e-5)
    assert np.allclose(f3[:96, 12, 20], feat16(112, 224)[:, 5, 6], atol=1e-5)
    les = item.lesions[0]
    x, y = frame.to_canvas(les.x, les.y)
    assert cells2[int(y // 16), int(x // 16)]
