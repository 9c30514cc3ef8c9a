"""Train the tuberculosis-like lesion head on the frozen chest radiograph backbone.

``python -m radsight_train cxr-tb`` runs all of it with fixed seeds; see docs/models/cxr.md,
"Tuberculosis-like lesions".

- ``cxr.onnx`` is not retrained. Its stride-16 and stride-32 feature maps become two extra
  graph outputs (``feat16``, ``feat32``, through Identity nodes): the weights and the
  ``logit``/``seg`` outputs stay byte-identical.
- The head is a per-cell logistic regression on those features (14 x 14 cells of 16 model
  pixels). Training signal comes from the TB source only: on the TBX11K official *train*
  split, lung cells inside a TB box are positives and lung cells outside every box are
  negatives. No image of another source is a training example (that would learn the
  hospital, see ../shared/data/README.md).
- The head marks where a TB-like lesion is. Its own image-level score (the top lung-cell
  logit) is checked, out of fold, against the COVID-QU-Ex *validation* normals (another
  source, so source-confounded): it hardly separates them (AUROC about 0.67), so the finding's
  probability is the model's abnormality probability (docs/models/cxr.md says why).
- The weights, normalisation and region settings go to the ``tb`` section of ``cxr.json``;
  the platform runs the head with numpy (:func:`radsight.algorithms.cxr.tb_cell_logits`).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radsight.monitor.metrics import auroc_ci
from radsight_train.data import adult_items, read_gray

log = logging.getLogger(__name__)

SEED = 20240601
FOLDS = 5
MODEL_DIR = Path(__file__).resolve().parents[2] / "radsight" / "algorithms" / "cxr"
#: intermediate tensors of cxr.onnx exposed as extra outputs (name -> tensor in the graph)
FEATURE_OUTPUTS = {
    "feat16": "/stage3/stage3.1/Relu_output_0",
    "feat32": "/stage4/stage4.1/Relu_output_0",
}
#: augmentation: horizontal flip (TB is upper-zone on either side) and two gamma values
GAMMAS = (1.0, 0.8, 1.25)
#: a cell is a positive when at least this share of it lies inside a TB box
POSITIVE_OVERLAP = 0.5
#: L2 strength of the logistic regression (sklearn C)
C = 0.05
#: a cell belongs to the lung fields when this share of its pixels is lung (or opacity)
LUNG_CELL_FRACTION = 0.25


def add_feature_outputs(path: Path) -> bool:
    """Expose the backbone's stride-16/32 feature maps as graph outputs; True if changed.

    Identity nodes give the outputs stable names; no initializer (weight) is touched.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    if set(FEATURE_OUTPUTS) <= present:
        return False
    channels = {"feat16": 96, "feat32": 160}
    produced = {t for node in model.graph.node for t in node.output}
    missing = set(FEATURE_OUTPUTS.values()) - produced
    if missing:
        raise ValueError(f"{path} has no tensors {sorted(missing)}: was CxrNet changed?")
    for name, tensor in FEATURE_OUTPUTS.items():
        if name in present:
            continue
        model.graph.node.append(helper.make_node("Identity", [tensor], [name], name=name))
        model.graph.output.append(
            helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["batch", channels[name], None, None]
            )
        )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


@dataclass
class TbImage:
    path: Path
    split: str  # train | val
    subtype: str  # active | obsolete | both
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def tb_images(data_root: Path) -> list[TbImage]:
    """TBX11K with its official split and the 256-px boxes (and their labels)."""
    base = data_root / "cxr" / "tbx11k-tb-boxes-256"
    out: dict[str, TbImage] = {}
    with open(base / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            out[row["file"]] = TbImage(base / row["file"], row["official_split"], row["tb_subtype"])
    with open(base / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            box = tuple(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            out[row["file"]].boxes.append(box)  # type: ignore[arg-type]
            out[row["file"]].labels.append(row["label"])
    return [im for im in out.values() if im.boxes]


def box_cells(boxes, letterbox, grid: int, size: int) -> np.ndarray:
    """Share of each model cell (``grid`` x ``grid``) covered by the union of source boxes."""
    fine = 4 * grid
    step = size / fine
    ys = (np.arange(fine) + 0.5) * step
    xs = (np.arange(fine) + 0.5) * step
    sx = (xs - letterbox.left) / letterbox.scale_x
    sy = (ys - letterbox.top) / letterbox.scale_y
    inside = np.zeros((fine, fine), bool)
    for x0, y0, x1, y1 in boxes:
        inside |= ((sy >= y0) & (sy < y1))[:, None] & ((sx >= x0) & (sx < x1))[None, :]
    return inside.reshape(grid, 4, grid, 4).mean(axis=(1, 3))


def _maps(image_pixels: np.ndarray, flip: bool, gamma: float):
    """Cell features, lung cells and the letterbox of one (augmented) image."""
    from radsight.algorithms.cxr import CONFIG, tb_features
    from radsight.algorithms.cxr.preprocess import preprocess

    size = CONFIG["input"]["size"]
    canvas, box = preprocess(
        image_pixels, size, CONFIG["input"]["percentile_low"], CONFIG["input"]["percentile_high"]
    )
    if flip:
        canvas = canvas[:, ::-1].copy()
    if gamma != 1.0:
        canvas = np.where(canvas > 0, canvas**gamma, 0.0).astype(np.float32)
    feats, lung_cells, _ = tb_features(canvas, box, lung_cell_fraction=LUNG_CELL_FRACTION)
    return feats, lung_cells, box


def build_cells(images: list[TbImage], augment: bool) -> dict[str, np.ndarray]:
    """Per-cell features and labels (1 in a box, 0 outside every box, -1 ignored)."""
    from radsight.algorithms.cxr import CONFIG

    size = CONFIG["input"]["size"]
    xs, ys, groups = [], [], []
    for i, im in enumerate(images):
        pixels = read_gray(im.path)
        variants = [(f, g) for f in (False, True) for g in GAMMAS] if augment else [(False, 1.0)]
        for flip, gamma in variants:
            feats, lung, box = _maps(pixels, flip, gamma)
            grid = feats.shape[1]
            cover = box_cells(im.boxes, box, grid, size)
            if flip:
                cover = cover[:, ::-1]
            label = np.where(cover >= POSITIVE_OVERLAP, 1, np.where(cover > 0, -1, 0))
            use = lung & (label >= 0)
            xs.append(feats.reshape(feats.shape[0], -1).T[use.ravel()])
            ys.append(label.ravel()[use.ravel()])
            groups.append(np.full(int(use.sum()), i))
    return {"x": np.concatenate(xs), "y": np.concatenate(ys), "group": np.concatenate(groups)}


def fit_head(x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    mu = x.mean(0)
    sd = x.std(0) + 1e-3
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
    clf.fit((x - mu) / sd, y)
    return {
        "mean": mu.astype(float).round(6).tolist(),
        "std": sd.astype(float).round(6).tolist(),
        "weight": clf.coef_[0].astype(float).round(6).tolist(),
        "bias": round(float(clf.intercept_[0]), 6),
    }


def score_image(pixels: np.ndarray, head: dict) -> tuple[float, tuple[int, int], np.ndarray]:
    """Image score (top lung-cell logit), its cell and the logit map, with ``head``."""
    from radsight.algorithms.cxr import tb_cell_logits

    feats, lung, _ = _maps(pixels, False, 1.0)
    logits = tb_cell_logits(feats, head)
    masked = np.where(lung, logits, -np.inf)
    r, c = np.unravel_index(int(np.argmax(masked)), masked.shape)
    return float(masked[r, c]), (int(r), int(c)), logits


def train(data_root: Path, work: Path) -> dict:
    import sklearn

    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    changed = add_feature_outputs(MODEL_DIR / "cxr.onnx")
    log.info("feature outputs %s cxr.onnx", "added to" if changed else "already in")
    images = tb_images(data_root)
    train_images = [im for im in images if im.split == "train"]
    rng = np.random.default_rng(SEED)
    fold_of = rng.permutation(np.arange(len(train_images)) % FOLDS)
    cells = build_cells(train_images, augment=True)
    log.info(
        "%d train images: %d cells (%d positive) in %.0f s",
        len(train_images),
        len(cells["y"]),
        int(cells["y"].sum()),
        time.time() - t0,
    )
    # out-of-fold image scores and peaks on the un-augmented train images
    oof_scores = np.zeros(len(train_images))
    oof_hits = np.zeros(len(train_images), bool)
    for k in range(FOLDS):
        fit = fold_of[cells["group"]] != k
        head = fit_head(cells["x"][fit], cells["y"][fit])
        for i in np.nonzero(fold_of == k)[0]:
            im = train_images[i]
            pixels = read_gray(im.path)
            s, (r, c), _ = score_image(pixels, head)
            oof_scores[i] = s
            _, _, box = _maps(pixels, False, 1.0)
            # pointing game as evaluate cxr-tb plays it: the top cell's centre inside a box
            x, y = box.to_source((c + 0.5) * 16, (r + 0.5) * 16)
            oof_hits[i] = any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in im.boxes)
    head = fit_head(cells["x"], cells["y"])
    normals = [it for it in adult_items(data_root) if it.split == "val" and it.subgroup == "Normal"]
    neg = np.array([score_image(read_gray(it.path), head)[0] for it in normals])
    labels = np.r_[np.ones(len(oof_scores)), np.zeros(len(neg))]
    image_auroc = auroc_ci(labels, np.r_[oof_scores, neg]).as_tuple()
    log.info(
        "out-of-fold train pointing game %.3f; head top-cell score, OOF TB-train vs val "
        "normals (source-confounded): AUROC %.3f (%.3f-%.3f)",
        oof_hits.mean(),
        *image_auroc,
    )
    config = {
        "finding": "tb-like-lesion",
        "probability": "the abnormality probability of cxr.onnx (see docs/models/cxr.md)",
        "features": list(FEATURE_OUTPUTS),
        "grid": 14,
        "head": head,
        "lung_cell_fraction": LUNG_CELL_FRACTION,
        "region": {"relative_level": 0.5, "max_regions": 2},
        "training": {
            "data": "TBX11K official train split (150 images), cxr/tbx11k-tb-boxes-256",
            "split": "official_split == train in labels.csv (TBX11K_train.txt)",
            "train_images": len(train_images),
            "positive_cell_overlap": POSITIVE_OVERLAP,
            "augmentation": {"hflip": True, "gamma": list(GAMMAS)},
            "logistic_regression_C": C,
            "folds": FOLDS,
            "fold_seed": SEED,
            "oof_pointing_game": round(float(oof_hits.mean()), 4),
            "oof_head_score_auroc_vs_val_normals (source-confounded)": [
                round(float(v), 4) for v in image_auroc
            ],
            "val_normals": len(neg),
            "cells": int(len(cells["y"])),
            "positive_cells": int(cells["y"].sum()),
            "sklearn": sklearn.__version__,
            "seconds": round(time.time() - t0),
        },
    }
    path = MODEL_DIR / "cxr.json"
    whole = json.loads(path.read_text())
    whole["tb"] = config
    path.write_text(json.dumps(whole, indent=2) + "\n")
    log.info("wrote the tb section of %s", path)
    return config
