"""Not shipped: features of the chest radiograph network for mammography.

``python -m experiments.mmg_transfer ../shared/data build/mmg-transfer-experiment`` (from
the repository root; writes ``transfer_experiment_stride{224,112}.json``). Frozen
``feat16`` and ``feat32`` of ``cxr.onnx`` over 224-px tiles of a 448-px breast canvas with a
per-cell logistic head scored out-of-fold AUROC 0.562 and 0.599 (two tilings), below the
shipped 0.648 (docs/models/mmg.md, "Also tried: features of the chest radiograph network").
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.command import arguments
from radsight.algorithms.mmg.preprocess import BreastFrame, prepare_with_breast
from radsight.monitor.metrics import auroc, wilson
from radsight_train.data import SPLIT_SEED, read_gray
from radsight_train.mmg.marks import (
    compare_aurocs,
    fit_ranker,
    inside,
    mark_candidates,
    top_hits,
)
from radsight_train.mmg.model import (
    MiasImage,
    apply_head,
    contralateral,
    design,
    fit_head,
    fit_heads,
    image_features,
    mias_items,
    pair_folds,
)

log = logging.getLogger(__name__)

#: the transfer experiment (``transfer_experiment``: docs/models/mmg.md, "Also tried"; every
#: setting below was declared before the first run). The breast crop (chest wall left) on a
#: TRANSFER_CANVAS px canvas, intensities 1st..99th percentile within the breast to 0..1 (0
#: outside), cut into 2 x 2 tiles of 224 px for the chest radiograph network (cxr.onnx,
#: frozen); its feat16 (96) and feat32 (160, repeated 2 x 2) maps make 256 features per
#: 16-px cell of a 28 x 28 grid. A per-cell L2 logistic regression (standardised, balanced
#: classes, C chosen per outer fold by inner leave-one-fold-out AUROC of the top-k score from
#: TRANSFER_CS; ties to the smaller C) learns lesion cells (centre inside a circle of radius
#: max(r, 10) source px, or holding the circle's centre) against breast cells of normal images
#: and of lesion images further than TRANSFER_AWAY x that radius from every circle; at most
#: TRANSFER_NEGATIVES negative cells per image (seeded). Image score: the mean of the
#: TRANSFER_TOP highest cell logits in the breast. Primary score (the decision rule's): a
#: logistic regression (C = 1) over it and it minus the other breast's, fitted on the
#: training images' inner out-of-fold scores.
TRANSFER_CANVAS = 448
TRANSFER_TILE = 224
TRANSFER_CS = (0.001, 0.01, 0.1)
TRANSFER_TOP = 4
TRANSFER_NEGATIVES = 64
TRANSFER_AWAY = 1.5
TRANSFER_BREAST_SHARE = 0.5
#: tile strides compared: 224 (2 x 2 tiles, the declared design) and 112 (3 x 3 overlapping
#: tiles, each cell read from the tile whose centre is nearest). The second was added after
#: the first run, whose top cells sat mostly next to the tile borders (maybe padding edges)
TRANSFER_STRIDES = (224, 112)


def cxr_cell_features(
    pixels: np.ndarray, stride: int = TRANSFER_TILE
) -> tuple[np.ndarray, np.ndarray, BreastFrame]:
    """The chest radiograph network's frozen features over the breast (transfer experiment).

    Returns ``(features, breast_cells, frame)``: features ``(256, G, G)`` float32 (G = 28:
    ``feat16``, then ``feat32`` repeated 2 x 2, per 16-px cell of the ``TRANSFER_CANVAS``
    canvas), the cells at least ``TRANSFER_BREAST_SHARE`` inside the breast, and the frame.
    numpy and ONNX Runtime only (``cxr.onnx`` on one thread, the 2 x 2 tiles as one batch).
    """
    from radsight.algorithms.cxr import CONFIG as CXR_CONFIG
    from radsight.algorithms.cxr import MODEL_DIR as CXR_DIR
    from radsight.algorithms.onnx import load_session

    canvas, breast, frame = prepare_with_breast(pixels, TRANSFER_CANVAS, 0.0, 100.0)
    inside = breast > 0.5
    if inside.any():
        lo, hi = np.percentile(canvas[inside], [1.0, 99.0])
        canvas = np.where(inside, np.clip((canvas - lo) / max(hi - lo, 1e-6), 0.0, 1.0), 0.0)
    t = TRANSFER_TILE
    offsets = list(range(0, TRANSFER_CANVAS - t + 1, stride))
    n = len(offsets)
    tiles = np.stack([canvas[r : r + t, c : c + t] for r in offsets for c in offsets])
    session = load_session(CXR_DIR / CXR_CONFIG["model"])
    names = [o.name for o in session.get_outputs()]
    out = dict(
        zip(names, session.run(None, {"image": tiles[:, None].astype(np.float32)}), strict=True)
    )
    f16, f32 = out["feat16"], out["feat32"]
    g = f16.shape[-1]
    f32 = np.repeat(np.repeat(f32, 2, axis=2), 2, axis=3)[:, :, :g, :g]
    per_tile = np.concatenate([f16, f32], axis=1)  # (tiles, 256, g, g)
    # each canvas cell is read from the tile whose centre is nearest (ties: the first)
    cell = t // g
    centre = (np.arange(TRANSFER_CANVAS // cell) + 0.5) * cell
    tile = np.argmin(np.abs(centre[:, None] - (np.array(offsets) + t / 2)[None]), axis=1)
    local = ((centre - np.array(offsets)[tile]) // cell).astype(int)
    grid = per_tile[
        (tile[:, None] * n + tile[None, :]), :, local[:, None], local[None, :]
    ].transpose(2, 0, 1)
    size = len(centre)
    share = breast.reshape(size, cell, size, cell).mean(axis=(1, 3))
    return grid.astype(np.float32), share >= TRANSFER_BREAST_SHARE, frame


@dataclass
class CellData:
    """Per image: the breast cells' features, labels (1 lesion, 0 negative, -1 left out of
    fitting), source centres (column, row), and which cells the cell head is fitted on."""

    features: list[np.ndarray]
    label: list[np.ndarray]
    centres: list[np.ndarray]
    fit: list[np.ndarray]
    seconds_per_image: float


def transfer_cells(items: list[MiasImage], stride: int = TRANSFER_TILE) -> CellData:
    """Every image's breast cells through :func:`cxr_cell_features`, labelled as declared at
    ``TRANSFER_CANVAS`` (negatives subsampled per image with a seeded generator)."""
    rng = np.random.default_rng(SPLIT_SEED)
    data = CellData([], [], [], [], 0.0)
    t0 = time.time()
    for it in items:
        feats, cells, frame = cxr_cell_features(read_gray(it.path), stride)
        rr, cc = np.nonzero(cells)
        step = TRANSFER_CANVAS / cells.shape[0]
        sx, sy = frame.to_source((cc + 0.5) * step, (rr + 0.5) * step)
        pos = np.zeros(len(rr), bool)
        near = np.zeros(len(rr), bool)
        for les in it.lesions:
            rad = max(les.radius, 10.0)
            d2 = (sx - les.x) ** 2 + (sy - les.y) ** 2
            cx, cy = frame.to_canvas(les.x, les.y)
            pos |= (d2 <= rad**2) | ((rr == int(cy // step)) & (cc == int(cx // step)))
            near |= d2 <= (TRANSFER_AWAY * rad) ** 2
        label = np.where(pos, 1, np.where(near, -1, 0))
        if it.abnormal and not it.lesions:
            label[:] = -1  # no position: the image label only
        neg = np.nonzero(label == 0)[0]
        fit = label == 1
        fit[rng.permutation(neg)[:TRANSFER_NEGATIVES]] = True
        data.features.append(feats[:, rr, cc].T.copy())
        data.label.append(label)
        data.centres.append(np.c_[sx, sy])
        data.fit.append(fit)
    data.seconds_per_image = (time.time() - t0) / len(items)
    return data


def fit_cell_head(data: CellData, images: np.ndarray, c: float) -> dict:
    """The per-cell L2 logistic regression (standardised, balanced classes)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([data.features[i][data.fit[i]] for i in images]).astype(np.float64)
    y = np.concatenate([data.label[i][data.fit[i]] for i in images])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    model.fit((x - mu) / sd, y)
    return {"mean": mu, "std": sd, "weight": model.coef_[0], "bias": float(model.intercept_[0])}


def cell_scores(head: dict, data: CellData, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the mean of its ``TRANSFER_TOP`` highest cell logits, and the source
    centre (column, row) of its top cell."""
    score, top = np.zeros(len(images)), np.zeros((len(images), 2))
    for n, i in enumerate(images):
        z = ((data.features[i] - head["mean"]) / head["std"]) @ head["weight"] + head["bias"]
        if len(z) == 0:
            continue
        score[n] = float(np.sort(z)[-TRANSFER_TOP:].mean())
        top[n] = data.centres[i][int(np.argmax(z))]
    return score, top


def transfer_experiment(
    data_root: Path, work: Path, folds: int = 5, stride: int = TRANSFER_TILE
) -> dict:
    """Transfer features from the chest radiograph network (not shipped unless it passes;
    docs/models/mmg.md). Declared design: see the ``TRANSFER_*`` constants.

    Per outer fold k: for each C in ``TRANSFER_CS``, cell heads fitted on the training folds
    minus one inner fold score that inner fold (inner out-of-fold top-k scores); C is the one
    with the best inner AUROC; the head refitted on all training folds scores fold k. Scores
    compared out of fold against the shipped design refitted per fold (2,000 class-stratified
    bootstraps, paired): ``cxr_top4``; it minus the other breast's; the primary
    ``lr_cxr_and_difference`` (C = 1 over both, fitted on the training images' inner scores);
    and the shipped design plus both (C = ``C``). Top-cell hit rate (the evaluation's hit
    rule) with its paired difference to the shipped ranked marks (fitted per fold).

    Decision rule (declared): ship only if the primary's AUROC exceeds 0.648 and its paired
    difference's 95 % CI lower bound is above 0.
    """
    torch.set_num_threads(1)
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    items = mias_items(data_root)
    fold_of = pair_folds(items, folds)
    fold = np.array([fold_of[it.pair] for it in items])
    labels = np.array([it.abnormal for it in items])
    by_key = {(it.pair, it.side): i for i, it in enumerate(items)}
    other = np.array(
        [by_key.get((it.pair, "R" if it.side == "L" else "L"), i) for i, it in enumerate(items)]
    )
    data = transfer_cells(items, stride)
    log.info("cxr features of %d images in %.0f s", len(items), time.time() - t0)
    features = image_features(items)
    x_dog = design(features, contralateral(items, features))
    own, top = np.zeros(len(items)), np.zeros((len(items), 2))
    primary, plus_dog, dog = np.zeros(len(items)), np.zeros(len(items)), np.zeros(len(items))
    chosen, inner_auroc = [], []
    for k in range(folds):
        train_idx, test = np.nonzero(fold != k)[0], np.nonzero(fold == k)[0]
        inner = {c: np.zeros(len(items)) for c in TRANSFER_CS}
        for j in sorted(set(range(folds)) - {k}):
            fit_idx = np.nonzero((fold != k) & (fold != j))[0]
            for c in TRANSFER_CS:
                inner[c][fold == j] = cell_scores(
                    fit_cell_head(data, fit_idx, c), data, np.nonzero(fold == j)[0]
                )[0]
        aucs = {c: auroc(labels[train_idx], inner[c][train_idx]) for c in TRANSFER_CS}
        best = max(TRANSFER_CS, key=lambda c: (round(aucs[c], 6), -c))
        chosen.append(best)
        inner_auroc.append({str(c): round(a, 3) for c, a in aucs.items()})
        own[test], top[test] = cell_scores(fit_cell_head(data, train_idx, best), data, test)
        s_in = inner[best]
        x_in = np.c_[s_in, s_in - s_in[other]]
        x_out = np.c_[own, own - own[other]]
        primary[test] = apply_head(fit_head(x_in[train_idx], labels[train_idx], c=1.0), x_out[test])
        both_in, both_out = np.c_[x_dog, x_in], np.c_[x_dog, x_out]
        plus_dog[test] = apply_head(fit_head(both_in[train_idx], labels[train_idx]), both_out[test])
        dog[test] = apply_head(fit_heads(x_dog, items, train_idx)["abnormal"], x_dog[test])
        log.info(
            "fold %d: C %s, inner AUROC %s (%.0f s)", k, best, inner_auroc[-1], time.time() - t0
        )
    scores = {
        "dog_heads_shipped_design": dog,
        "cxr_top4": own,
        "cxr_top4_minus_other_breast": own - own[other],
        "lr_cxr_and_difference (primary)": primary,
        "lr_cxr_difference_and_dog": plus_dog,
    }
    located = np.array([i for i, it in enumerate(items) if it.lesions])
    cell_hit = np.array([inside(items[i], *top[i]) for i in located])
    cands = mark_candidates(items)
    cfold = fold[cands.image]
    shipped_hit = np.zeros(len(items), bool)
    for k in range(folds):
        test = located[fold[located] == k]
        shipped_hit[test] = top_hits(cands, fit_ranker(cands, cfold != k, "plus_place_terms"), test)
    shipped_hit = shipped_hit[located]
    rng = np.random.default_rng(SPLIT_SEED)
    draws = rng.integers(0, len(located), (2000, len(located)))
    diff = cell_hit[draws].mean(1) - shipped_hit[draws].mean(1)
    result = {
        "auroc_out_of_fold": compare_aurocs(labels, scores, "dog_heads_shipped_design"),
        "chosen_C_per_fold": chosen,
        "inner_auroc_cxr_top4_per_fold": inner_auroc,
        "top_cell_hit": wilson(int(cell_hit.sum()), len(cell_hit)).as_tuple(),
        "shipped_ranked_marks_top_hit": wilson(int(shipped_hit.sum()), len(shipped_hit)).as_tuple(),
        "top_cell_minus_shipped_marks_paired_ci": [
            round(float(cell_hit.mean() - shipped_hit.mean()), 3),
            *np.percentile(diff, [2.5, 97.5]).round(3).tolist(),
        ],
        "images_with_circles": len(located),
        "cells": {
            "breast_cells_per_image": round(float(np.mean([len(v) for v in data.label])), 1),
            "lesion_cells": int(sum(int((v == 1).sum()) for v in data.label)),
            "images_with_lesion_cells": int(sum(int((v == 1).any()) for v in data.label)),
        },
        "cxr_features_seconds_per_image": round(data.seconds_per_image, 3),
        "seconds": round(time.time() - t0),
    }
    (work / f"transfer_experiment_stride{stride}.json").write_text(
        json.dumps(result, indent=2, default=float) + "\n"
    )
    log.info("%s", json.dumps(result, default=float))
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.mmg_transfer [DATA] [WORK]`` from the repository root."""
    paths = arguments(argv, __doc__, "mmg-transfer-experiment")
    if paths is None:
        return
    data, work = paths
    for stride in TRANSFER_STRIDES:
        transfer_experiment(data, work, stride=stride)


if __name__ == "__main__":
    main()
