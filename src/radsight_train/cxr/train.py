"""Train the chest radiograph model, calibrate it on validation, export it to ONNX.

``python -m radsight_train cxr`` runs all of it with fixed seeds; see docs/models/cxr.md.
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
from torch.nn import functional as F

from radsight.algorithms.cxr.preprocess import bilinear_resize, preprocess
from radsight_train.data import (
    Item,
    adult_items,
    nonchest_items,
    pediatric_items,
    read_gray,
    read_mask,
)
from radsight_train.model import CxrNet, count_parameters

log = logging.getLogger(__name__)

SIZE = 224
SEG = 56
SEED = 7
MODEL_DIR = Path(__file__).resolve().parents[2] / "radsight" / "algorithms" / "cxr"
OUTPUTS = {
    "logit": "abnormality logit",
    "seg": "[infection, lung] logits at 1/4",
    "feat16": "stage-3 features (96 x 14 x 14), input of the TB head",
    "feat32": "stage-4 features (160 x 7 x 7), input of the TB head",
}


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_cache(items: list[Item]) -> dict[str, torch.Tensor]:
    """Preprocess every image once (the platform's numpy path) and keep uint8 tensors."""
    n = len(items)
    imgs = np.zeros((n, SIZE, SIZE), np.uint8)
    masks = np.zeros((n, 2, SIZE, SIZE), np.uint8)
    has = np.zeros((n, 2), np.float32)
    for i, it in enumerate(items):
        canvas, box = preprocess(read_gray(it.path), SIZE)
        imgs[i] = np.round(canvas * 255).astype(np.uint8)
        if it.source == "nonchest":  # no lung fields anywhere; opacity: no target
            has[i, 1] = 1.0
            continue
        for c, mpath in enumerate((it.infection_mask, it.lung_mask)):
            if mpath is None and not (c == 0 and it.label == 0):
                continue
            if mpath is None:  # a normal image: no opacity anywhere
                m = np.zeros((box.height, box.width), np.float32)
            else:
                m = bilinear_resize(read_mask(mpath), box.height, box.width)
            t, left = int(box.top), int(box.left)
            masks[i, c, t : t + box.height, left : left + box.width] = m > 0.5
            has[i, c] = 1.0
    return {
        "img": torch.from_numpy(imgs),
        "mask": torch.from_numpy(masks),
        "has": torch.from_numpy(has),
        "label": torch.tensor([it.label for it in items], dtype=torch.float32),
    }


def augment(img: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> tuple:
    """Geometry and intensity jitter, applied the same way to every source.

    The aspect jitter (x0.78..x1.28) is wider than the aspect distortion that tells Kermany
    normals from pneumonia; gamma, contrast, blur and noise hide JPEG texture and
    processing differences between sources.
    """
    b = img.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=gen) * (hi - lo) + lo

    angle = u(-10, 10) * math.pi / 180
    scale = torch.exp(u(math.log(0.85), math.log(1.18)))
    aspect = torch.exp(u(-0.25, 0.25))
    sx, sy = scale * aspect.sqrt(), scale / aspect.sqrt()
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    tx, ty = u(-0.07, 0.07), u(-0.07, 0.07)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    # output -> input sampling grid: inverse of scale, so divide
    theta[:, 0, 0] = cos / sx * flip
    theta[:, 0, 1] = -sin / sx
    theta[:, 1, 0] = sin / sy * flip
    theta[:, 1, 1] = cos / sy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    x = torch.cat([img, mask], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    img, mask = x[:, :1], x[:, 1:]
    valid = img > 0
    gamma = torch.exp(u(math.log(0.65), math.log(1.5))).view(b, 1, 1, 1)
    img = img.clamp(0, 1) ** gamma
    contrast = u(0.75, 1.25).view(b, 1, 1, 1)
    bright = u(-0.1, 0.1).view(b, 1, 1, 1)
    img = (img - 0.5) * contrast + 0.5 + bright
    blur = (torch.rand(b, generator=gen) < 0.3).view(b, 1, 1, 1).float()
    img = blur * F.avg_pool2d(img, 3, 1, 1, count_include_pad=False) + (1 - blur) * img
    img = img + torch.randn(img.shape, generator=gen) * u(0, 0.03).view(b, 1, 1, 1)
    img = torch.where(valid, img.clamp(0, 1), torch.zeros_like(img))
    return img, mask


def seg_loss(seg: torch.Tensor, mask: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    target = F.adaptive_avg_pool2d(mask, SEG)
    bce = F.binary_cross_entropy_with_logits(seg, target, reduction="none").mean((2, 3))
    p = torch.sigmoid(seg)
    inter = (p * target).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((2, 3)) + target.sum((2, 3)) + 1)
    # dice only where the target has foreground (empty masks: BCE alone)
    fg = (target.sum((2, 3)) > 0).float()
    per = bce + 0.5 * dice * fg
    return (per * has).sum() / has.sum().clamp(min=1)


def epoch_indices(items: list[Item], rng: random.Random, ped_per_class: int) -> list[int]:
    adult = [i for i, it in enumerate(items) if it.source == "adult"]
    ped0 = [i for i, it in enumerate(items) if it.source == "pediatric" and it.label == 0]
    ped1 = [i for i, it in enumerate(items) if it.source == "pediatric" and it.label == 1]
    # adult twice per epoch, pediatric class-balanced: adult and pediatric weigh alike
    idx = adult * 2 + rng.sample(ped0, min(ped_per_class, len(ped0)))
    idx += rng.sample(ped1, ped_per_class)
    other = [i for i, it in enumerate(items) if it.source == "nonchest"]
    idx += rng.sample(other, min(150, len(other)))
    rng.shuffle(idx)
    return idx


@torch.no_grad()
def predict(model: CxrNet, img: torch.Tensor, batch: int = 128) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(img), batch):
        x = img[s : s + batch].float().unsqueeze(1) / 255
        out.append(model(x)[0])
    return torch.cat(out).numpy()


def fit_temperature(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): minimise the weighted NLL over T."""
    best = (math.inf, 1.0)
    for t in np.exp(np.linspace(math.log(0.25), math.log(8), 400)):
        z = logits / t
        nll = np.logaddexp(0, z) - labels * z
        loss = float((nll * weights).sum() / weights.sum())
        best = min(best, (loss, float(t)))
    return best[1]


def choose_thresholds(prob: np.ndarray, labels: np.ndarray, source: np.ndarray) -> dict:
    """Operating points on validation, every source weighing alike.

    ``cxr``: maximises the mean over sources of Youden's J. ``flg`` (screening): the highest
    threshold whose sensitivity is at least 0.95 in every source.
    """
    cand = np.unique(np.round(prob, 4))
    sources = sorted(set(source))
    best_j, t_cxr, t_flg = -1.0, 0.5, 0.0
    for t in cand:
        js, sens = [], []
        for s in sources:
            m = source == s
            se = float((prob[m & (labels == 1)] >= t).mean())
            sp = float((prob[m & (labels == 0)] < t).mean())
            js.append(se + sp - 1)
            sens.append(se)
        if np.mean(js) > best_j:
            best_j, t_cxr = float(np.mean(js)), float(t)
        if min(sens) >= 0.95:
            t_flg = max(t_flg, float(t))
    return {"cxr": round(t_cxr, 4), "flg": round(t_flg, 4)}


def export_onnx(model: CxrNet, path: Path) -> None:
    model.eval()
    x = torch.zeros(1, 1, SIZE, SIZE)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["image"],
        output_names=["logit", "seg"],
        dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}, "seg": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    from radsight_train.cxr.train_tb import add_feature_outputs

    add_feature_outputs(path)  # the TB head's inputs (python -m radsight_train cxr-tb)


def train(
    data_root: Path,
    work: Path,
    epochs: int,
    ped_per_class: int,
    threads: int,
    max_minutes: float = 0,
) -> dict:
    torch.set_num_threads(threads)
    set_seeds(SEED)
    work.mkdir(parents=True, exist_ok=True)
    items = adult_items(data_root) + pediatric_items(data_root)
    train_items = [it for it in items if it.split == "train"]
    train_items += [it for it in nonchest_items(data_root) if it.split == "train"]
    val_items = [it for it in items if it.split == "val"]
    t0 = time.time()
    tr, va = load_cache(train_items), load_cache(val_items)
    log.info(
        "cached %d train / %d val images in %.0f s",
        len(train_items),
        len(val_items),
        time.time() - t0,
    )
    # adult normals are 1/3 of adult images: weigh them so both classes count alike
    # non-chest images train the lung map only
    class_weight = {
        ("adult", 0): 1.5,
        ("adult", 1): 0.75,
        ("pediatric", 0): 1.0,
        ("pediatric", 1): 1.0,
        ("nonchest", 0): 0.0,
    }
    w = torch.tensor([class_weight[(it.source, it.label)] for it in train_items])
    model = CxrNet()
    log.info("CxrNet: %d parameters", count_parameters(model))
    if epochs == 0:  # --recalibrate: the last checkpoint, calibrated and exported again
        model.load_state_dict(torch.load(work / "cxrnet.pt"))
        previous = json.loads((MODEL_DIR / "cxr.json").read_text()).get("training", {})
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    batch = 32
    rng = random.Random(SEED)
    gen = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil((2 * 900 + 2 * ped_per_class + 150) / batch)
    total = epochs * steps_per_epoch
    warm = steps_per_epoch
    # Progress is steps done / planned steps, unless the wall-clock budget runs out first
    # (a shared machine): then elapsed / budget drives the cosine, so the run still anneals.
    start = time.time()
    budget = max_minutes * 60 if max_minutes else math.inf

    def progress(step: int) -> float:
        return min(1.0, max(step / total, (time.time() - start) / budget))

    def set_lr(step: int) -> None:
        p = progress(step)
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * p))

    history = []
    step = 0
    for ep in range(epochs):
        if progress(step) >= 1.0:
            log.info("wall-clock budget of %s min spent after %d epochs", max_minutes, ep)
            break
        model.train()
        idx = epoch_indices(train_items, rng, ped_per_class)
        te, sums = time.time(), np.zeros(3)
        for s in range(0, len(idx), batch):
            bi = torch.tensor(idx[s : s + batch])
            img = tr["img"][bi].float().unsqueeze(1) / 255
            mask = tr["mask"][bi].float()
            img, mask = augment(img, mask, gen)
            logit, seg = model(img)
            cls = (
                F.binary_cross_entropy_with_logits(logit, tr["label"][bi], reduction="none") * w[bi]
            ).mean()
            sl = seg_loss(seg, mask, tr["has"][bi])
            loss = cls + sl
            set_lr(step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            sums += (cls.item(), sl.item(), 1)
        vlogit = predict(model, va["img"])
        from sklearn.metrics import roc_auc_score

        aucs = {}
        for src in ("adult", "pediatric"):
            m = np.array([it.source == src for it in val_items])
            aucs[src] = round(float(roc_auc_score(va["label"].numpy()[m], vlogit[m])), 4)
        history.append(
            {
                "epoch": ep + 1,
                "cls": sums[0] / sums[2],
                "seg": sums[1] / sums[2],
                "val_auc": aucs,
                "seconds": round(time.time() - te, 1),
            }
        )
        log.info(
            "epoch %d/%d cls %.4f seg %.4f val AUROC %s (%.0f s)",
            ep + 1,
            epochs,
            sums[0] / sums[2],
            sums[1] / sums[2],
            aucs,
            time.time() - te,
        )
        torch.save(model.state_dict(), work / "cxrnet.pt")
    train_seconds = time.time() - t0

    # calibration and operating points on validation (never on test)
    vlogit = predict(model, va["img"])
    labels = va["label"].numpy()
    source = np.array([it.source for it in val_items])
    weights = np.array([1.0 / (source == s).sum() for s in source])
    temperature = fit_temperature(vlogit, labels, weights)
    prob = 1 / (1 + np.exp(-vlogit / temperature))
    thresholds = choose_thresholds(prob, labels, source)
    log.info("temperature %.3f thresholds %s", temperature, thresholds)

    onnx_path = MODEL_DIR / "cxr.onnx"
    export_onnx(model, onnx_path)
    training = {
        "seed": SEED,
        "epochs": epochs,
        "pediatric_per_class": ped_per_class,
        "split_seed": 20240601,
        "seconds": round(train_seconds),
        "epochs_done": len(history),
        "steps_done": step,
        "planned_steps": total,
        "max_minutes": max_minutes,
        "threads": threads,
        "torch": torch.__version__,
    }
    tb_head: dict = {}
    if epochs == 0:
        training = previous | {"recalibrated": True}
        # same weights: the TB head still fits them (a retrained backbone needs cxr-tb again)
        tb_head = json.loads((MODEL_DIR / "cxr.json").read_text()).get("tb", {})
    else:
        log.info("backbone retrained: run `python -m radsight_train cxr-tb` for the TB head")
    config = {
        "model": "cxr.onnx",
        "architecture": "CxrNet (radsight_train.model)",
        "parameters": count_parameters(model),
        "input": {
            "size": SIZE,
            "percentile_low": 1.0,
            "percentile_high": 99.0,
            "letterbox": True,
            "range": [0.0, 1.0],
        },
        "outputs": OUTPUTS,
        "temperature": round(temperature, 4),
        "thresholds": thresholds,
        "region": {"threshold": 0.5, "min_area_fraction": 0.002, "max_regions": 3},
        "training": training,
    }
    (MODEL_DIR / "cxr.json").write_text(json.dumps(config, indent=2) + "\n")
    if history:
        (work / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    config["min_lung_fraction"] = choose_lung_fraction(data_root, val_items)
    if tb_head:
        config["tb"] = tb_head
    (MODEL_DIR / "cxr.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("exported %s (%.2f MiB)", onnx_path, onnx_path.stat().st_size / 2**20)
    return config


def choose_lung_fraction(data_root: Path, val_items: list[Item]) -> float:
    """Lung-field threshold of the input check, from the exported model as the platform runs it.

    Chest validation images and the *training* non-chest images only (the non-chest test
    images stay for evaluation): midway between the highest non-chest and the lowest chest
    fraction when they separate, else the 0.5th percentile of the chest fractions.
    """
    import importlib

    import radsight.algorithms.cxr as cxr
    from radsight.algorithms.contract import ImageInput

    importlib.reload(cxr)  # the JSON just written

    def fraction(it: Item) -> float:
        image = ImageInput("1", "1", "1", "1", read_gray(it.path), modality="DX")
        return cxr.predict_image(image).lung_fraction

    chest = np.array([fraction(it) for it in val_items])
    other = np.array([fraction(it) for it in nonchest_items(data_root) if it.split == "train"])
    if other.max() < chest.min():
        t = float((other.max() + chest.min()) / 2)
    else:
        t = float(np.percentile(chest, 0.5))
    log.info(
        "lung fraction: chest val min %.3f, non-chest train max %.3f; refused below %.3f: %.1f %%",
        chest.min(),
        other.max(),
        t,
        100 * float((other < t).mean()),
    )
    return round(t, 4)
