"""Train the brain CT haemorrhage model: cross-validate, calibrate, export to ONNX.

``python -m radsight_train ct-brain`` runs all of it with fixed seeds; see
docs/models/ct-brain.md. Data: the 200 head CT slices of ``ct-brain/head-ct-hemorrhage-256``
(labels follow the id order, so folds are drawn from a seeded shuffle, stratified by label).

1. ``folds``-fold cross-validation: one model per fold, trained from scratch, predicts its
   held-out fold. The pooled out-of-fold probabilities give the reported AUROC (with a
   bootstrap CI), the temperature and the operating threshold.
2. One final model on all 200 slices with the same schedule is exported to
   ``src/radsight/algorithms/ct_brain/ct_brain.onnx`` with ``ct_brain.json``.

The slices are 8-bit display PNGs, not HU. Each is turned into pseudo-HU
(:func:`radsight.algorithms.ct_brain.preprocess.pseudo_hu`) with a window drawn at random
per step (centre 30-50, width 70-120 HU), a random skull density and CT-like noise, then
windowed into the brain / subdural / bone channels the platform computes from real HU.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from radsight.algorithms.ct_brain.preprocess import (
    CHANNELS,
    erode,
    head_mask,
    letterbox,
    pseudo_hu,
    to_channels,
)
from radsight_train.data import read_gray
from radsight_train.metrics import auroc_ci
from radsight_train.model import Block, _conv_bn, count_parameters
from radsight_train.train_cxr import fit_temperature, set_seeds

log = logging.getLogger(__name__)

SIZE = 96
SEED = 11
SPLIT_SEED = 20240601
MODEL_DIR = Path(__file__).resolve().parents[1] / "radsight" / "algorithms" / "ct_brain"
DATASET = Path("ct-brain") / "head-ct-hemorrhage-256"
#: share of the head size treated as the skull rim of a PNG slice
RIM_FRACTION = 0.07


class BrainNet(nn.Module):
    """Residual CNN with a class-activation map head (the CxrNet blocks, 3 channels in).

    ``cam``: haemorrhage logit per cell at 1/8 resolution (12 x 12 for 96 px); ``logit``:
    the image logit, log-mean-exp pooling of the map (r = 4), so the map is exactly what
    the image score is made of and marks come from it without a separate localiser.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64), r: float = 4.0) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.r = r
        # a 5x5 stride-4 stem: the 8-px cells of the map need no finer early features,
        # and it keeps CPU training within minutes
        self.stem = _conv_bn(len(CHANNELS), w0, 4, 5)  # /4
        self.stage1 = Block(w0, w1, 1)  # /4
        self.stage2 = nn.Sequential(Block(w1, w2, 2), Block(w2, w2, 1))  # /8
        self.stage3 = nn.Sequential(Block(w2, w3, 2), Block(w3, w3, 1))  # /16
        self.lat3 = nn.Conv2d(w3, w2, 1)
        self.fuse = _conv_bn(w2, w2)
        self.dropout = nn.Dropout2d(0.1)
        self.cam = nn.Conv2d(w2, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - 0.3) / 0.3
        f2 = self.stage2(self.stage1(self.stem(x)))
        f3 = self.stage3(f2)
        up = F.interpolate(self.lat3(f3), size=f2.shape[-2:], mode="bilinear", align_corners=False)
        cam = self.cam(self.dropout(self.fuse(f2 + up)))
        flat = cam.flatten(1) * self.r
        logit = (torch.logsumexp(flat, 1) - math.log(flat.shape[1])) / self.r
        return logit, cam


def read_items(data_root: Path) -> list[tuple[Path, int]]:
    base = data_root / DATASET
    with open(base / "labels.csv", newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]
    return [(base / "images" / f"{int(r['id']):03d}.png", int(r["hemorrhage"])) for r in rows]


def folds_for(labels: list[int], k: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Fold of each item: a seeded shuffle, then round-robin per class (stratified)."""
    rng = random.Random(seed)
    fold = np.zeros(len(labels), dtype=int)
    for cls in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == cls]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def canvas_of(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A PNG slice on the model canvas: grey (0..1), head mask and skull rim."""
    grey = read_gray(path) / 255.0
    mask, crop = head_mask(grey, 0.04)
    cleaned = np.where(mask, grey, 0.0).astype(np.float32)
    cropped = cleaned[crop.row0 : crop.row1, crop.col0 : crop.col1]
    g, _ = letterbox(cropped, SIZE, 0.0)
    head, _ = letterbox(
        mask[crop.row0 : crop.row1, crop.col0 : crop.col1].astype(np.float32), SIZE, 0.0
    )
    head_c = head > 0.5
    extent = max(1, int(np.ptp(np.nonzero(head_c)[0])) if head_c.any() else SIZE)
    rim = head_c & ~erode(head_c, max(2, round(RIM_FRACTION * extent)))
    return np.clip(g, 0, 1), head_c, rim


def eval_channels(g: np.ndarray, head: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """The fixed (no augmentation) input of a PNG slice: window 40/80, skull 1000 HU."""
    return to_channels(pseudo_hu(g, head, rim))


def load_cache(items: list[tuple[Path, int]]) -> dict[str, torch.Tensor]:
    gs, heads, rims = [], [], []
    for path, _ in items:
        g, h, r = canvas_of(path)
        gs.append(g)
        heads.append(h)
        rims.append(r)
    return {
        "g": torch.from_numpy(np.stack(gs)).unsqueeze(1),
        "head": torch.from_numpy(np.stack(heads)).unsqueeze(1),
        "rim": torch.from_numpy(np.stack(rims)).unsqueeze(1),
        "label": torch.tensor([y for _, y in items], dtype=torch.float32),
    }


def _windows(hu: torch.Tensor) -> torch.Tensor:
    chans = [((hu - (w.center - w.width / 2)) / w.width).clamp(0, 1) for w in CHANNELS]
    return torch.cat(chans, 1)


def augmented_batch(cache: dict, bi: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pseudo-HU with a random window, skull density and noise; then geometry; then windows."""
    g, head, rim = cache["g"][bi], cache["head"][bi], cache["rim"][bi]
    b = len(bi)

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) * (hi - lo) + lo).view(b, 1, 1, 1)

    center, width, bone = u(30, 50), u(70, 120), u(500, 1500)
    gamma = torch.exp(u(math.log(0.8), math.log(1.25)))
    hu = center - width / 2 + g.clamp(0, 1) ** gamma * width
    hu = hu + torch.randn(hu.shape, generator=gen) * u(0, 5)
    hu = torch.where(head, hu, torch.full_like(hu, -1000.0))
    hu = torch.where(rim & (g >= 0.97), bone.expand_as(hu), hu)
    angle = u(-15, 15).view(b) * math.pi / 180
    scale = torch.exp(u(math.log(0.88), math.log(1.12))).view(b)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale * flip
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale * flip
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 2] = u(-0.06, 0.06).view(b)
    theta[:, 1, 2] = u(-0.06, 0.06).view(b)
    grid = F.affine_grid(theta, [b, 1, SIZE, SIZE], align_corners=False)
    # grid_sample pads with zeros: shift so that padding is air (-1024 HU)
    hu = F.grid_sample(hu + 1024, grid, mode="bilinear", align_corners=False) - 1024
    blur = (torch.rand(b, generator=gen) < 0.3).view(b, 1, 1, 1).float()
    hu = blur * F.avg_pool2d(hu, 3, 1, 1, count_include_pad=False) + (1 - blur) * hu
    return _windows(hu)


def fit(cache: dict, train_idx: list[int], epochs: int, seed: int) -> BrainNet:
    set_seeds(seed)
    model = BrainNet()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    batch = 16
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(train_idx) / batch)
    step = 0
    for _ in range(epochs):
        model.train()
        order = train_idx[:]
        rng.shuffle(order)
        for s in range(0, len(order), batch):
            bi = torch.tensor(order[s : s + batch])
            x = augmented_batch(cache, bi, gen)
            logit, _ = model(x)
            loss = F.binary_cross_entropy_with_logits(logit, cache["label"][bi])
            lr = 2e-3 * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return model


@torch.no_grad()
def predict(model: BrainNet, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[s : s + 64])[0] for s in range(0, len(x), 64)]).numpy()


def youden(prob: np.ndarray, labels: np.ndarray) -> float:
    best, t_best = -1.0, 0.5
    for t in np.unique(np.round(prob, 4)):
        j = float((prob[labels == 1] >= t).mean() + (prob[labels == 0] < t).mean() - 1)
        if j > best:
            best, t_best = j, float(t)
    return round(t_best, 4)


def export_onnx(model: BrainNet, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, len(CHANNELS), SIZE, SIZE),),
        str(path),
        input_names=["image"],
        output_names=["logit", "cam"],
        dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}, "cam": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def train(data_root: Path, work: Path, epochs: int, folds: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    items = read_items(data_root)
    labels = [y for _, y in items]
    cache = load_cache(items)
    fixed = torch.from_numpy(
        np.stack(
            [
                eval_channels(g.numpy()[0], h.numpy()[0], r.numpy()[0])
                for g, h, r in zip(cache["g"], cache["head"], cache["rim"], strict=True)
            ]
        )
    )
    fold = folds_for(labels, folds)
    oof = np.zeros(len(items))
    for k in range(folds):
        tf = time.time()
        train_idx = [i for i in range(len(items)) if fold[i] != k]
        test_idx = [i for i in range(len(items)) if fold[i] == k]
        model = fit(cache, train_idx, epochs, SEED + k)
        oof[test_idx] = predict(model, fixed[test_idx])
        y = np.array(labels)[test_idx]
        auc, _, _ = auroc_ci(y, oof[test_idx], n_boot=10)
        log.info("fold %d/%d: AUROC %.3f (%.0f s)", k + 1, folds, auc, time.time() - tf)
    y = np.array(labels)
    auc, lo, hi = auroc_ci(y, oof)
    temperature = fit_temperature(oof, y.astype(np.float64), np.ones(len(y)))
    prob = 1 / (1 + np.exp(-oof / temperature))
    threshold = youden(prob, y)
    log.info(
        "CV slice AUROC %.3f (95%% CI %.3f-%.3f), T %.3f, threshold %.4f",
        auc,
        lo,
        hi,
        temperature,
        threshold,
    )
    final = fit(cache, list(range(len(items))), epochs, SEED)
    onnx_path = MODEL_DIR / "ct_brain.onnx"
    export_onnx(final, onnx_path)
    seconds = round(time.time() - t0)
    config = {
        "model": "ct_brain.onnx",
        "architecture": "BrainNet (radsight_train.train_ct_brain)",
        "parameters": count_parameters(final),
        "input": {"size": SIZE, "channels": [w.name for w in CHANNELS], "range": [0.0, 1.0]},
        "outputs": {"logit": "haemorrhage logit", "cam": "haemorrhage logit map at 1/8"},
        "temperature": round(temperature, 4),
        "thresholds": {"haemorrhage": threshold},
        "min_slices": 1,
        "region": {"level": 0.5, "max_slices": 6},
        "cv": {
            "folds": folds,
            "split_seed": SPLIT_SEED,
            "auroc": round(auc, 4),
            "ci": [round(lo, 4), round(hi, 4)],
            "oof": [
                {"id": p.stem, "label": int(yy), "fold": int(f), "probability": round(float(pp), 5)}
                for (p, yy), f, pp in zip(items, fold, prob, strict=True)
            ],
        },
        "training": {
            "seed": SEED,
            "epochs": epochs,
            "threads": threads,
            "seconds": seconds,
            "torch": torch.__version__,
        },
    }
    (MODEL_DIR / "ct_brain.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(final.state_dict(), work / "brainnet.pt")
    log.info("exported %s (%.2f MiB) in %d s", onnx_path, onnx_path.stat().st_size / 2**20, seconds)
    return config
