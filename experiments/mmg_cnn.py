"""Not shipped: a small fully convolutional lesion detector for mammography.

``python -m experiments.mmg_cnn ../shared/data build/mmg-cnn-experiment`` (from the
repository root; writes ``cnn_experiment.json``). Figures and the decision in
docs/models/mmg.md, "Also tried: a lesion CNN". ``PatchNet`` was trained on augmented 64-px
crops; it reached out-of-fold AUROC 0.686 with the contralateral difference, against 0.648
for the shipped design. The paired difference's CI includes 0, so it is not shipped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from experiments.command import arguments
from radsight.algorithms.mmg.preprocess import prepare_with_breast
from radsight.monitor.metrics import wilson
from radsight_train.data import SPLIT_SEED, read_gray
from radsight_train.mmg.marks import compare_aurocs
from radsight_train.mmg.model import (
    FEATURES,
    SIZE,
    BlobFeatures,
    C,
    MiasImage,
    apply_head,
    contralateral,
    design,
    export_onnx,
    fit_head,
    fit_heads,
    image_features,
    mias_items,
    pair_folds,
)

log = logging.getLogger(__name__)

#: the lesion-CNN experiment (``cnn_experiment``: docs/models/mmg.md, "Also tried"; not
#: shipped): width, training length (epochs of CNN_STEPS batches), crop size, and how many
#: of its highest logits make an image's ``cnn_top4`` score
CNN_WIDTH = 8
CNN_EPOCHS = 12
CNN_STEPS = 20
CNN_BATCH = 32
PATCH = 64
CNN_TOP = 4


class PatchNet(nn.Module):
    """Small fully convolutional lesion detector on the standardised canvas: a logit per
    4 x 4 canvas cell (receptive field about 60 px, 40-50 mm on mini-MIAS)."""

    def __init__(self, width: int = CNN_WIDTH) -> None:
        super().__init__()

        def block(a: int, b: int, dilation: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(a, b, 3, padding=dilation, dilation=dilation)
            return [conv, nn.BatchNorm2d(b), nn.ReLU()]

        w = width
        self.body = nn.Sequential(
            *block(1, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            *block(4 * w, 4 * w, 2),
            *block(4 * w, 4 * w, 4),
            nn.Conv2d(4 * w, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class MmgModel(nn.Module):
    """The DoG filter bank and the lesion CNN on the same canvas (the CNN experiment).

    Outputs ``features`` (FEATURES, then ``cnn_top4``: the mean of the 4 highest CNN logits
    inside the breast) and ``maps`` (the four DoG maps, then the CNN's lesion probability,
    0 outside the breast; all at 1/4 resolution).
    """

    def __init__(self, net: PatchNet) -> None:
        super().__init__()
        self.blobs = BlobFeatures()
        self.net = net

    def forward(self, image: torch.Tensor, breast: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features, maps, z, inner = self.blobs.parts(image, breast)
        logit = self.net(z)
        inner4 = -F.max_pool2d(-inner, 4)
        scored = (logit * inner4 - 100.0 * (1 - inner4)).flatten(1)
        top = torch.topk(scored, CNN_TOP, dim=-1).values.mean(-1, keepdim=True)
        return torch.cat([features, top], 1), torch.cat([maps, torch.sigmoid(logit) * inner4], 1)


def standardise(canvas: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """The filter bank's standardisation in numpy (the CNN's training input)."""
    n = max(float(breast.sum()), 1.0)
    mean = float((canvas * breast).sum()) / n
    std = math.sqrt(float((((canvas - mean) ** 2) * breast).sum()) / n) + 1e-3
    return ((canvas - mean) / std * breast).astype(np.float32)


def train_cnn(
    z: np.ndarray,
    target: np.ndarray,
    breast: np.ndarray,
    lesions: list[tuple[int, float, float, float]],
    idx: np.ndarray,
    seed: int,
) -> PatchNet:
    """Fit :class:`PatchNet` on 64-px crops of the images ``idx``: half centred near a
    lesion (jittered), half anywhere in a breast; flips, rotations, contrast, gamma, noise;
    per-cell BCE against the lesion discs, counted inside the breast."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    chosen = set(int(i) for i in idx)
    pos = [les for les in lesions if les[0] in chosen]
    cells = {int(i): np.argwhere(breast[i, ::4, ::4] > 0) * 4 + 2 for i in idx}
    net = PatchNet()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-3)
    steps = CNN_EPOCHS * CNN_STEPS
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    s = z.shape[-1]
    for step in range(steps):
        xs, ys, ms = [], [], []
        for k in range(CNN_BATCH):
            if k % 2 == 0 and pos:
                i, x, y, r = pos[int(rng.integers(len(pos)))]
                x += rng.uniform(-1, 1) * min(r, 20) * 0.5
                y += rng.uniform(-1, 1) * min(r, 20) * 0.5
            else:
                i = int(idx[int(rng.integers(len(idx)))])
                y, x = cells[i][int(rng.integers(len(cells[i])))]
            x0 = int(np.clip(x - PATCH // 2, 0, s - PATCH))
            y0 = int(np.clip(y - PATCH // 2, 0, s - PATCH))
            win = (slice(y0, y0 + PATCH), slice(x0, x0 + PATCH))
            a, t, m = z[i][win], target[i][win], breast[i][win]
            turn = int(rng.integers(4))
            a, t, m = np.rot90(a, turn), np.rot90(t, turn), np.rot90(m, turn)
            if rng.random() < 0.5:
                a, t, m = a[::-1], t[::-1], m[::-1]
            a = a * rng.uniform(0.8, 1.25) + rng.normal(0, 0.15) + rng.normal(0, 0.05, a.shape) * m
            a = np.sign(a) * np.abs(a) ** rng.uniform(0.85, 1.15)
            xs.append(a * m)
            ys.append(t)
            ms.append(m)

        def batch(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.tensor(np.ascontiguousarray(np.array(arrays)), dtype=torch.float32)[
                :, None
            ]

        yt = (F.avg_pool2d(batch(ys), 4) > 0.3).float()
        mt = (F.avg_pool2d(batch(ms), 4) > 0.5).float()
        net.train()
        out = net(batch(xs))
        loss = F.binary_cross_entropy_with_logits(
            out, yt, pos_weight=torch.tensor(3.0), reduction="none"
        )
        loss = (loss * mt).sum() / mt.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % (10 * CNN_STEPS) == 0:
            log.info("CNN step %d/%d loss %.3f", step + 1, steps, float(loss))
    return net.eval()


def prepared(items: list[MiasImage]) -> tuple[np.ndarray, np.ndarray, list]:
    """Every image's canvas and breast mask (the platform's preprocessing), and the lesion
    circles on the canvas as (image index, column, row, radius)."""
    canvases, breasts, lesions = [], [], []
    for i, it in enumerate(items):
        canvas, breast, frame = prepare_with_breast(read_gray(it.path), SIZE)
        canvases.append(canvas)
        breasts.append(breast)
        for les in it.lesions:
            x, y = frame.to_canvas(les.x, les.y)
            lesions.append((i, float(x), float(y), les.radius / frame.scale()))
    return np.array(canvases), np.array(breasts), lesions


def lesion_targets(breast: np.ndarray, lesions: list) -> np.ndarray:
    """The CNN's targets: each lesion circle (0.8 x its radius, at least 4 px) in the breast."""
    target = np.zeros_like(breast)
    rows, cols = np.mgrid[0 : breast.shape[1], 0 : breast.shape[2]]
    for i, x, y, r in lesions:
        target[i][(cols - x) ** 2 + (rows - y) ** 2 <= max(0.8 * r, 4.0) ** 2] = 1.0
    return target * breast


def cnn_experiment(data_root: Path, work: Path, folds: int = 5) -> dict:
    """The lesion-CNN experiment (not shipped; docs/models/mmg.md, "Also tried").

    Per fold: PatchNet trained on the other folds' images, exported with the filter bank
    (``work/fold{k}.onnx``), run on the held-out images. Scores compared out of fold: the
    shipped design (DoG heads), the CNN's ``cnn_top4``, it minus the other breast's, and
    logistic regressions over them fitted on the other folds' out-of-fold scores.
    """
    torch.set_num_threads(2)
    t0 = time.time()
    work.mkdir(parents=True, exist_ok=True)
    items = mias_items(data_root)
    canvases, breasts, lesions = prepared(items)
    z = np.stack([standardise(c, b) for c, b in zip(canvases, breasts, strict=True)])
    target = lesion_targets(breasts, lesions)
    fold_of = pair_folds(items, folds)
    fold = np.array([fold_of[it.pair] for it in items])
    labels = np.array([it.abnormal for it in items])
    features = np.zeros((len(items), len(FEATURES) + 1))
    hits = []
    for k in range(folds):
        train_idx, test = np.nonzero(fold != k)[0], np.nonzero(fold == k)[0]
        net = train_cnn(z, target, breasts, lesions, train_idx, SPLIT_SEED + k)
        export_onnx(MmgModel(net), work / f"fold{k}.onnx")
        model = MmgModel(net).eval()
        for i in test:
            mine = [les for les in lesions if les[0] == i]
            if not mine:
                continue
            with torch.no_grad():
                _, maps = model(
                    torch.from_numpy(canvases[i][None, None]),
                    torch.from_numpy(breasts[i][None, None]),
                )
            # the top cell of the CNN map inside a circle (radius >= 2.5 canvas px)
            r, c = np.unravel_index(int(maps[0, 4].argmax()), maps.shape[-2:])
            cx, cy = c * 4 + 2, r * 4 + 2
            hits.append(
                any((cx - x) ** 2 + (cy - y) ** 2 <= max(rad, 2.5) ** 2 for _, x, y, rad in mine)
            )
        features[test] = image_features(
            [items[i] for i in test], work / f"fold{k}.onnx", (canvases[test], breasts[test])
        )
        log.info("fold %d CNN done in %.0f s", k, time.time() - t0)
    own = features[:, -1]
    other = contralateral(items, features)[:, -1]
    x = np.c_[design(features[:, :-1], contralateral(items, features[:, :-1])), own, own - other]

    def crossfit(cols: list[int], c: float) -> np.ndarray:
        out = np.zeros(len(items))
        for k in range(folds):
            tr, te = fold != k, fold == k
            out[te] = apply_head(fit_head(x[tr][:, cols], labels[tr], c=c), x[te][:, cols])
        return out

    dog = np.zeros(len(items))
    for k in range(folds):
        heads = fit_heads(x[:, :6], items, np.nonzero(fold != k)[0])
        dog[fold == k] = apply_head(heads["abnormal"], x[fold == k][:, :6])
    scores = {
        "dog_heads_shipped_design": dog,
        "cnn_top4": own,
        "cnn_top4_minus_other_breast": own - other,
        "lr_cnn_and_difference": crossfit([6, 7], 1.0),
        "lr_cnn_difference_and_dog": crossfit(list(range(8)), C),
    }
    result = {
        "auroc_out_of_fold": compare_aurocs(labels, scores, "dog_heads_shipped_design"),
        "top_mark_hit_canvas": wilson(sum(hits), len(hits)).as_tuple(),
        "images_with_circles": len(hits),
        "seconds": round(time.time() - t0),
    }
    (work / "cnn_experiment.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    log.info("%s", json.dumps(result, default=float))
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m experiments.mmg_cnn [DATA] [WORK]`` from the repository root."""
    paths = arguments(argv, __doc__, "mmg-cnn-experiment")
    if paths is None:
        return
    data, work = paths
    cnn_experiment(data, work)


if __name__ == "__main__":
    main()
