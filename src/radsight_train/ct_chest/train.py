"""Train the chest CT lesion model (GGO / consolidation) and export it to ONNX.

``python -m radsight_train ct-chest`` runs all of it with fixed seeds; see
docs/models/ct-chest.md. The data are the 50 Inf-Net training slices
(``ct-chest/covid-semiseg-infnet/train``); the 48 test slices are never read here.

The slices are 8-bit lung-window screenshots, not HU. The platform shows the model the
same thing: HU through the lung window (-600/1500, :mod:`radsight.algorithms.ct_volume`)
scaled to 0..1, so one grey level of a training JPEG stands for about 1500/255 = 5.9 HU.
The source windows of the screenshots are unknown and vary, so gamma, contrast and
brightness jitter cover a band of windows around it.
"""

from __future__ import annotations

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

from radsight.algorithms.ct_chest.preprocess import SIZE, to_canvas
from radsight_train.data import read_gray, read_mask
from radsight_train.model import Block, _conv_bn, count_parameters

log = logging.getLogger(__name__)

SEED = 11
#: training crops of the augmented canvas (a 160 px crop costs 0.4 of the whole canvas)
CROP = 160
MODEL_DIR = Path(__file__).resolve().parents[2] / "radsight" / "algorithms" / "ct_chest"
DATA_SUBDIR = Path("ct-chest") / "covid-semiseg-infnet"


class LesionUNet(nn.Module):
    """A compact U-Net: the CxrNet residual blocks down to 1/32, one conv per skip on the way up.

    One grey channel in (``SIZE`` x ``SIZE``, lung window 0..1), one lesion logit map out
    at 1/2 resolution.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64, 96)) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(_conv_bn(1, w0, 2), _conv_bn(w0, w0))  # /2
        self.enc1 = Block(w0, w1, 2)  # /4
        self.enc2 = nn.Sequential(Block(w1, w2, 2), Block(w2, w2, 1))  # /8
        self.enc3 = nn.Sequential(Block(w2, w3, 2), Block(w3, w3, 1))  # /16
        self.enc4 = nn.Sequential(Block(w3, w4, 2), Block(w4, w4, 1))  # /32
        self.dec3 = _conv_bn(w4 + w3, w3)
        self.dec2 = _conv_bn(w3 + w2, w2)
        self.dec1 = _conv_bn(w2 + w1, w1)
        self.dec0 = _conv_bn(w1 + w0, w0)
        self.head = nn.Conv2d(w0, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        f0 = self.stem(x)
        f1 = self.enc1(f0)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        d = self.enc4(f3)
        for conv, skip in ((self.dec3, f3), (self.dec2, f2), (self.dec1, f1), (self.dec0, f0)):
            d = F.interpolate(d, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            d = conv(torch.cat([d, skip], 1))
        return self.head(d)


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def slice_paths(data_root: Path, split: str) -> list[tuple[Path, Path]]:
    base = data_root / DATA_SUBDIR / split
    images = sorted((base / "images").glob("*.jpg"), key=lambda p: int(p.stem))
    return [(p, base / "mask_infection" / f"{p.stem}.png") for p in images]


def load_cache(pairs: list[tuple[Path, Path]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every slice on the model canvas the way the platform letterboxes it (float 0..1)."""
    imgs = np.zeros((len(pairs), 1, SIZE, SIZE), np.float32)
    masks = np.zeros((len(pairs), 1, SIZE, SIZE), np.float32)
    for i, (img_path, mask_path) in enumerate(pairs):
        imgs[i, 0], box = to_canvas(read_gray(img_path) / 255.0, SIZE)
        masks[i, 0], _ = to_canvas(read_mask(mask_path), SIZE)
        del box
    return torch.from_numpy(imgs), torch.from_numpy((masks > 0.5).astype(np.float32))


def augment(img: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> tuple:
    """Any of the 8 flips/quarter turns (the slices come transposed and flipped), a small
    rotation, zoom and shift, then intensity jitter for the unknown screenshot windows."""
    b = img.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) * (hi - lo) + lo

    x = torch.cat([img, mask], 1)
    out = []
    for i in range(b):
        k = int(torch.randint(0, 4, (1,), generator=gen))
        xi = torch.rot90(x[i], k, (1, 2))
        if torch.rand(1, generator=gen) < 0.5:
            xi = torch.flip(xi, (2,))
        out.append(xi)
    x = torch.stack(out)
    angle = u(-15, 15) * math.pi / 180
    scale = torch.exp(u(math.log(0.7), math.log(1.25)))  # < 1 zooms in
    aspect = torch.exp(u(-0.12, 0.12))
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    tx, ty = u(-0.1, 0.1), u(-0.1, 0.1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sx, -sin * sx, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * sy, cos * sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    img, mask = x[:, :1], x[:, 1:]
    gamma = torch.exp(u(math.log(0.7), math.log(1.45))).view(b, 1, 1, 1)
    img = img.clamp(0, 1) ** gamma
    contrast = u(0.8, 1.2).view(b, 1, 1, 1)
    bright = u(-0.08, 0.08).view(b, 1, 1, 1)
    img = (img - 0.5) * contrast + 0.5 + bright
    blur = (torch.rand(b, generator=gen) < 0.3).view(b, 1, 1, 1).float()
    img = blur * F.avg_pool2d(img, 3, 1, 1, count_include_pad=False) + (1 - blur) * img
    img = img + torch.randn(img.shape, generator=gen) * u(0, 0.03).view(b, 1, 1, 1)
    return img.clamp(0, 1), mask


def random_crop(img: torch.Tensor, mask: torch.Tensor, size: int, gen: torch.Generator) -> tuple:
    """One ``size`` crop per batch (the net is fully convolutional; smaller is cheaper)."""
    top, left = (int(torch.randint(0, SIZE - size + 1, (1,), generator=gen)) for _ in range(2))
    return img[..., top : top + size, left : left + size], mask[
        ..., top : top + size, left : left + size
    ]


def seg_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice against the mask averaged down to the output grid."""
    target = F.adaptive_avg_pool2d(mask, logits.shape[-1])
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def export_onnx(model: LesionUNet, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        str(path),
        input_names=["image"],
        output_names=["lesion"],
        dynamic_axes={"image": {0: "batch"}, "lesion": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def train(data_root: Path, work: Path, steps: int, threads: int, max_minutes: float = 0) -> dict:
    torch.set_num_threads(threads)
    set_seeds(SEED)
    work.mkdir(parents=True, exist_ok=True)
    pairs = slice_paths(data_root, "train")
    if not pairs:
        raise FileNotFoundError(f"no Inf-Net training slices under {data_root / DATA_SUBDIR}")
    t0 = time.time()
    imgs, masks = load_cache(pairs)
    log.info("cached %d training slices in %.1f s", len(pairs), time.time() - t0)
    model = LesionUNet()
    log.info("LesionUNet: %d parameters", count_parameters(model))
    lr_max, batch, warm = 2e-3, 8, 100
    opt = torch.optim.AdamW(model.parameters(), lr=lr_max, weight_decay=1e-2)
    rng = random.Random(SEED)
    gen = torch.Generator().manual_seed(SEED)
    start = time.time()
    budget = max_minutes * 60 if max_minutes else math.inf

    def progress(step: int) -> float:
        # a shared machine: if the wall-clock budget runs out first, the cosine follows it
        return min(1.0, max(step / steps, (time.time() - start) / budget))

    order: list[int] = []
    history, running, step = [], 0.0, 0
    while progress(step) < 1.0:
        if len(order) < batch:
            order += rng.sample(range(len(pairs)), len(pairs))
        idx, order = order[:batch], order[batch:]
        p = progress(step)
        for group in opt.param_groups:
            group["lr"] = lr_max * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * p))
        model.train()
        img, mask = augment(imgs[idx], masks[idx], gen)
        img, mask = random_crop(img, mask, CROP, gen)
        loss = seg_loss(model(img), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0:
            history.append({"step": step, "loss": round(running, 4), "s": round(time.time() - t0)})
            log.info("step %d loss %.4f (%.0f s)", step, running, time.time() - start)
            torch.save(model.state_dict(), work / "lesion_unet.pt")
    train_seconds = time.time() - start
    torch.save(model.state_dict(), work / "lesion_unet.pt")
    (work / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    onnx_path = MODEL_DIR / "ct_chest.onnx"
    export_onnx(model, onnx_path)
    config = {
        "model": "ct_chest.onnx",
        "architecture": "LesionUNet (radsight_train.ct_chest.train)",
        "parameters": count_parameters(model),
        "input": {"size": SIZE, "window": "LUNG", "range": [0.0, 1.0], "letterbox": True},
        "outputs": {"lesion": "GGO/consolidation logit map at 1/2 resolution"},
        "lesion_threshold": 0.5,
        "training": {
            "seed": SEED,
            "data": "Inf-Net COVID-SemiSeg train (50 slices)",
            "planned_steps": steps,
            "steps_done": step,
            "batch": batch,
            "crop": CROP,
            "max_minutes": max_minutes,
            "seconds": round(train_seconds),
            "threads": threads,
            "torch": torch.__version__,
        },
    }
    (MODEL_DIR / "ct_chest.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("exported %s (%.2f MiB)", onnx_path, onnx_path.stat().st_size / 2**20)
    return config
