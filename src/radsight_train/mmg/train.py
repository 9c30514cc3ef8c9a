"""Fit the mammography model with patient-pair cross-validation and export it.

``python -m radsight_train mmg`` runs all of it with fixed seeds; see docs/models/mmg.md.

1. ``mmg.onnx``: the fixed filter bank :class:`~radsight_train.mmg.model.BlobFeatures`,
   exported to ONNX, so that the platform runs it with ONNX Runtime like every built-in
   model.
2. ``mmg.json``: four logistic regressions over three of its features
   (:data:`~radsight_train.mmg.model.DESIGN`) plus their difference to the contralateral
   breast (the same view of the other side): abnormal, mass, calcification,
   distortion/asymmetry. They are fitted here, first once per fold for the cross-validated
   figures, then on all images for the shipped model.
3. ``mmg.json`` ``heads.ranker``: the mark ranker (:mod:`radsight_train.mmg.marks`).

Patient pairs are dealt into ``--folds`` folds, stratified by the pair's worst label (seed
20240601): both breasts of a woman are always on the same side. What was tried and not
shipped (a lesion CNN, transfer features of the chest radiograph network, more mark
candidates, gradient convergence) lives in ``experiments/`` at the repository root, its
figures in the model card ("Also tried").
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from radsight.monitor.metrics import auroc
from radsight_train.data import SPLIT_SEED
from radsight_train.mmg.marks import (
    RANKER_C,
    RANKER_VARIANTS,
    fit_ranker,
    mark_candidates,
    ranker_experiment,
    stacking_experiment,
)
from radsight_train.mmg.model import (
    DESIGN,
    FEATURES,
    HEADS,
    KINDS,
    MODEL_DIR,
    SIGMAS,
    SIZE,
    BlobFeatures,
    C,
    apply_head,
    contralateral,
    design,
    export_onnx,
    fit_heads,
    image_features,
    mias_items,
    pair_folds,
    screening,
    youden,
)

log = logging.getLogger(__name__)


def train(data_root: Path, work: Path, folds: int) -> dict:
    torch.set_num_threads(1)
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    export_onnx(BlobFeatures(), MODEL_DIR / "mmg.onnx")
    items = mias_items(data_root)
    features = image_features(items)
    x = design(features, contralateral(items, features))
    log.info("features of %d images in %.0f s", len(items), time.time() - t0)
    fold_of = pair_folds(items, folds)
    fold = np.array([fold_of[it.pair] for it in items])
    oof = {name: np.zeros(len(items)) for name in HEADS}
    fold_heads = []
    for k in range(folds):
        heads = fit_heads(x, items, np.nonzero(fold != k)[0])
        fold_heads.append(heads)
        test = np.nonzero(fold == k)[0]
        for name, head in heads.items():
            oof[name][test] = apply_head(head, x[test])
    labels = np.array([it.abnormal for it in items])
    log.info("out-of-fold AUROC abnormal vs normal %.3f", auroc(labels, oof["abnormal"]))
    thresholds = {
        "study": youden(oof["abnormal"], labels),
        "screening": screening(oof["abnormal"], labels),
    }
    for kind in KINDS:
        m = np.array([it.abnormal == 0 or kind in it.kinds for it in items])
        thresholds[kind] = youden(oof[kind][m], labels[m])
    heads = fit_heads(x, items, np.arange(len(items)))
    cands = mark_candidates(items)
    cfold = fold[cands.image]
    marks = ranker_experiment(items, cands, fold)
    variant = marks["shipped_variant"]
    for k in range(folds):
        fold_heads[k]["ranker"] = fit_ranker(cands, cfold != k, variant)
    heads["ranker"] = fit_ranker(cands, np.ones(len(cands.hit), bool), variant)
    marks["image_head_with_ranker_score"] = stacking_experiment(items, x, cands, fold, variant)
    (work / "marks.json").write_text(json.dumps(marks, indent=2, default=float) + "\n")
    log.info("marks: %s", json.dumps(marks, default=float))
    (work / "folds.json").write_text(
        json.dumps(
            {
                "fold": fold.tolist(),
                "heads": fold_heads,
                "oof": {k: v.tolist() for k, v in oof.items()},
            }
        )
        + "\n"
    )
    config = {
        "model": "mmg.onnx",
        "architecture": "BlobFeatures (fixed DoG filter bank, radsight_train.mmg.model) + "
        "logistic regressions",
        "input": {"size": SIZE, "percentile_low": 1.0, "percentile_high": 99.0},
        "outputs": {
            "features": FEATURES,
            "maps": "DoG responses at each sigma (canvas pixels), max-pooled to 1/4",
        },
        "sigmas": list(SIGMAS),
        "kinds": list(KINDS),
        "design": DESIGN,
        "heads": heads,
        "thresholds": thresholds,
        "region": {"max_regions": 3, "relative_level": 0.8, "radius_per_sigma": 2.0},
        "ranker": {
            "features": "radsight.algorithms.mmg.features.CANDIDATE_FEATURES",
            "C": RANKER_C,
            "variant": variant,
            "variants_compared": list(RANKER_VARIANTS),
            "out_of_fold_top_mark_hit": marks["variants"][variant],
            "nested_top_mark_hit": marks["nested_choice"],
        },
        "training": {
            "split_seed": SPLIT_SEED,
            "folds": folds,
            "C": C,
            "seconds": round(time.time() - t0),
            "torch": torch.__version__,
            "command": f"python -m radsight_train mmg --folds {folds}",
        },
    }
    (MODEL_DIR / "mmg.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("thresholds %s; wrote %s in %.0f s", thresholds, MODEL_DIR, time.time() - t0)
    return config
