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
from scipy import ndimage
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
from radsight.monitor.metrics import auroc, auroc_ci
from radsight_train.cxr.train import set_seeds
from radsight_train.data import read_gray
from radsight_train.model import Block, _conv_bn, count_parameters

log = logging.getLogger(__name__)

SIZE = 96
SEED = 11
SPLIT_SEED = 20240601
MODEL_DIR = Path(__file__).resolve().parents[2] / "radsight" / "algorithms" / "ct_brain"
DATASET = Path("ct-brain") / "head-ct-hemorrhage-256"
#: share of the head size treated as the skull rim of a PNG slice
RIM_FRACTION = 0.07
#: share of normal training slices that get a synthetic extra-axial collection per step
#: (:func:`add_collections`); 0 trains on the 200 real slices only (1.0.0)
COLLECTION_SHARE = 0.5
#: grey level above which a pixel in the outer band of a PNG head is skull (inner table)
SKULL_GREY = 0.8


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


def _uniform(b: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    """``b`` draws from U(lo, hi), shaped to broadcast over a (b, 1, H, W) batch."""
    return (torch.rand(b, generator=gen) * (hi - lo) + lo).view(b, 1, 1, 1)


def _calibrated(logits: np.ndarray, temperature: float, shift: float) -> np.ndarray:
    """The probabilities the platform reports: ``sigmoid((logit - shift) / T)``."""
    return 1 / (1 + np.exp(-(logits - shift) / temperature))


def intracranial(g: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Pixels inside the skull's inner table on a PNG canvas (for synthetic collections).

    The skull is every bright pixel of the head (grey >= :data:`SKULL_GREY`; only normal
    slices get collections, so bright blood is not an issue); the intracranial space is the
    largest non-skull region that does not touch the head's outline (the scalp and a grey
    PNG background do). Where the skull ring is open and no such region is found, the
    head eroded by the rim is used instead. Empty when the slice has no head.
    """
    if not head.any():
        return np.zeros_like(head)
    extent = max(1, int(np.ptp(np.nonzero(head)[0])))
    labels, count = ndimage.label(head & (g < SKULL_GREY))
    outline = head & ~erode(head, 1)
    touching = set(np.unique(labels[outline]).tolist())
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    inner = [k for k in range(1, count + 1) if k not in touching]
    region = labels == max(inner, key=lambda k: sizes[k]) if inner else np.zeros_like(head)
    if region.sum() < 0.3 * head.sum():
        region = erode(head, max(2, round(RIM_FRACTION * extent)))
    return region


def collection_geometry(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth below the inner table (px) and angle around the region's centre, per pixel."""
    depth = ndimage.distance_transform_edt(region).astype(np.float32)
    if not region.any():
        return depth, np.zeros_like(depth)
    rows, cols = np.nonzero(region)
    yy, xx = np.mgrid[0 : region.shape[0], 0 : region.shape[1]]
    theta = np.arctan2(yy - rows.mean(), xx - cols.mean()).astype(np.float32)
    return depth, theta


def add_collections(
    hu: torch.Tensor,
    cache: dict,
    bi: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    share: float = COLLECTION_SHARE,
    chronic_share: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint a synthetic extra-axial (subdural-like) collection on some normal slices.

    The 200 training slices show acute, hyperdense blood only; a chronic subdural haematoma
    is a hypodense crescent against the inner table (CQ500-CT-310 was missed). For a share
    ``share`` of the normal slices in a batch, a crescent is drawn inside the skull: it
    spans 60-160 degrees of arc around the head's centre, is 2.5-10 canvas px (about
    5-20 mm) thick at its middle and tapers to nothing at its ends, and holds either
    chronic fluid (hypodense, 2-25 HU; ``chronic_share`` of them) or acute blood
    (hyperdense, 55-80 HU), with noise and a soft edge. Such slices are labelled
    haemorrhage. No mass effect is drawn.
    """
    b = len(bi)
    depth, theta = cache["depth"][bi], cache["theta"][bi]
    pick = (labels == 0) & (torch.rand(b, generator=gen) < share)
    pick &= depth.flatten(1).amax(1) > 12
    if not bool(pick.any()):
        return hu, labels

    def u(lo: float, hi: float) -> torch.Tensor:
        return _uniform(b, lo, hi, gen)

    centre, half, thick = u(-math.pi, math.pi), u(math.radians(30), math.radians(80)), u(2.5, 10)
    off = torch.remainder(theta - centre + math.pi, 2 * math.pi) - math.pi
    profile = (1 - (off / half) ** 2).clamp(min=0).sqrt()
    alpha = ((thick * profile - depth + 1).clamp(0, 1)) * (depth > 0)
    chronic = torch.rand(b, generator=gen).view(b, 1, 1, 1) < chronic_share
    density = torch.where(chronic, u(2, 25), u(55, 80))
    fluid = density + torch.randn(hu.shape, generator=gen) * 3
    painted = hu * (1 - alpha) + fluid * alpha
    hu = torch.where(pick.view(b, 1, 1, 1), painted, hu)
    return hu, torch.where(pick, torch.ones_like(labels), labels)


def synthetic_channels(cache: dict, idx: list[int], chronic: bool, seed: int) -> torch.Tensor:
    """Held-out check: these (normal) slices at the fixed 40/80 window, each with a synthetic
    collection (chronic or acute), as the model input. Slices too small to hold one stay
    as they are (:func:`add_collections`)."""
    bi = torch.tensor(idx)
    hu = torch.from_numpy(
        np.stack([pseudo_hu(*(cache[k][i, 0].numpy() for k in ("g", "head", "rim"))) for i in idx])
    ).unsqueeze(1)
    gen = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(len(idx))
    hu, _ = add_collections(hu, cache, bi, zeros, gen, 1.0, 1.0 if chronic else 0.0)
    return _windows(hu)


def eval_channels(g: np.ndarray, head: np.ndarray, rim: np.ndarray) -> np.ndarray:
    """The fixed (no augmentation) input of a PNG slice: window 40/80, skull 1000 HU."""
    return to_channels(pseudo_hu(g, head, rim))


def load_cache(items: list[tuple[Path, int]]) -> dict[str, torch.Tensor]:
    gs, heads, rims, depths, thetas = [], [], [], [], []
    for path, _ in items:
        g, h, r = canvas_of(path)
        depth, theta = collection_geometry(intracranial(g, h))
        gs.append(g)
        heads.append(h)
        rims.append(r)
        depths.append(depth)
        thetas.append(theta)
    return {
        "g": torch.from_numpy(np.stack(gs)).unsqueeze(1),
        "head": torch.from_numpy(np.stack(heads)).unsqueeze(1),
        "rim": torch.from_numpy(np.stack(rims)).unsqueeze(1),
        "depth": torch.from_numpy(np.stack(depths)).unsqueeze(1),
        "theta": torch.from_numpy(np.stack(thetas)).unsqueeze(1),
        "label": torch.tensor([y for _, y in items], dtype=torch.float32),
    }


def _windows(hu: torch.Tensor) -> torch.Tensor:
    chans = [((hu - (w.center - w.width / 2)) / w.width).clamp(0, 1) for w in CHANNELS]
    return torch.cat(chans, 1)


def augmented_batch(
    cache: dict, bi: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-HU with a random window, skull density and noise, synthetic collections on
    some normal slices; then geometry; then windows. Returns the batch and its labels."""
    g, head, rim = cache["g"][bi], cache["head"][bi], cache["rim"][bi]
    b = len(bi)

    def u(lo: float, hi: float) -> torch.Tensor:
        return _uniform(b, lo, hi, gen)

    center, width, bone = u(30, 50), u(70, 120), u(500, 1500)
    gamma = torch.exp(u(math.log(0.8), math.log(1.25)))
    hu = center - width / 2 + g.clamp(0, 1) ** gamma * width
    hu = hu + torch.randn(hu.shape, generator=gen) * u(0, 5)
    hu = torch.where(head, hu, torch.full_like(hu, -1000.0))
    hu = torch.where(rim & (g >= 0.97), bone.expand_as(hu), hu)
    hu, labels = add_collections(hu, cache, bi, cache["label"][bi], gen)
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
    return _windows(hu), labels


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
            x, y = augmented_batch(cache, bi, gen)
            logit, _ = model(x)
            loss = F.binary_cross_entropy_with_logits(logit, y)
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


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling as ``sigmoid((logit - shift) / T)``: the pair with the least NLL on a
    grid. Temperature alone (1.0.0) cannot undo the shift in the logits' base rate that
    training with synthetic positives brings (half the normal slices of a batch painted)."""
    ts = np.exp(np.linspace(math.log(0.25), math.log(8), 200))
    shifts = np.linspace(-6, 6, 241)
    z = (logits[None, None, :] - shifts[None, :, None]) / ts[:, None, None]
    nll = (np.logaddexp(0, z) - labels[None, None, :] * z).mean(axis=2)
    i, j = np.unravel_index(int(np.argmin(nll)), nll.shape)
    return float(ts[i]), float(shifts[j])


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
    synthetic = {"chronic": np.full(len(items), np.nan), "acute": np.full(len(items), np.nan)}
    for k in range(folds):
        tf = time.time()
        train_idx = [i for i in range(len(items)) if fold[i] != k]
        test_idx = [i for i in range(len(items)) if fold[i] == k]
        model = fit(cache, train_idx, epochs, SEED + k)
        oof[test_idx] = predict(model, fixed[test_idx])
        normals = [i for i in test_idx if labels[i] == 0]
        for kind in synthetic:
            x = synthetic_channels(cache, normals, kind == "chronic", SPLIT_SEED + k)
            synthetic[kind][normals] = predict(model, x)
        y = np.array(labels)[test_idx]
        auc = auroc(y, oof[test_idx])
        log.info("fold %d/%d: AUROC %.3f (%.0f s)", k + 1, folds, auc, time.time() - tf)
    y = np.array(labels)
    auc, lo, hi = auroc_ci(y, oof).as_tuple()
    temperature, shift = fit_platt(oof, y.astype(np.float64))
    prob = _calibrated(oof, temperature, shift)
    threshold = youden(prob, y)
    log.info(
        "CV slice AUROC %.3f (95%% CI %.3f-%.3f), T %.3f, shift %.3f, threshold %.4f",
        auc,
        lo,
        hi,
        temperature,
        shift,
        threshold,
    )
    synthetic_figures = {}
    normal = y == 0
    for kind, logits in synthetic.items():
        held = logits[normal]
        s_auc, s_lo, s_hi = auroc_ci(
            np.r_[np.ones(len(held)), np.zeros(len(held))], np.r_[held, oof[normal]]
        ).as_tuple()
        sens = float((_calibrated(held, temperature, shift) >= threshold).mean())
        synthetic_figures[kind] = {
            "auroc_vs_normals": round(s_auc, 4),
            "ci": [round(s_lo, 4), round(s_hi, 4)],
            "sensitivity": round(sens, 4),
            "n": len(held),
        }
        log.info(
            "held-out normals with a synthetic %s collection vs as they are: AUROC %.3f "
            "(%.3f-%.3f), sensitivity %.3f at the threshold",
            kind,
            s_auc,
            s_lo,
            s_hi,
            sens,
        )
    final = fit(cache, list(range(len(items))), epochs, SEED)
    onnx_path = MODEL_DIR / "ct_brain.onnx"
    export_onnx(final, onnx_path)
    seconds = round(time.time() - t0)
    config = {
        "model": "ct_brain.onnx",
        "architecture": "BrainNet (radsight_train.ct_brain.train)",
        "parameters": count_parameters(final),
        "input": {"size": SIZE, "channels": [w.name for w in CHANNELS], "range": [0.0, 1.0]},
        "outputs": {"logit": "haemorrhage logit", "cam": "haemorrhage logit map at 1/8"},
        "temperature": round(temperature, 4),
        "logit_shift": round(shift, 4),
        "thresholds": {"haemorrhage": threshold},
        "min_slices": 1,
        "region": {"level": 0.5, "max_slices": 6},
        "cv": {
            "folds": folds,
            "split_seed": SPLIT_SEED,
            "auroc": round(auc, 4),
            "ci": [round(lo, 4), round(hi, 4)],
            "synthetic_collections": synthetic_figures,
            "oof": [
                {"id": p.stem, "label": int(yy), "fold": int(f), "probability": round(float(pp), 5)}
                for (p, yy), f, pp in zip(items, fold, prob, strict=True)
            ],
        },
        "training": {
            "seed": SEED,
            "epochs": epochs,
            "collection_share": COLLECTION_SHARE,
            "threads": threads,
            "seconds": seconds,
            "torch": torch.__version__,
        },
    }
    (MODEL_DIR / "ct_brain.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.save(final.state_dict(), work / "brainnet.pt")
    log.info("exported %s (%.2f MiB) in %d s", onnx_path, onnx_path.stat().st_size / 2**20, seconds)
    return config
