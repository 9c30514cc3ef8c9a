"""The shipped mammography model's parts, shared by training, evaluation and experiments.

- ``mmg.onnx``: :class:`BlobFeatures`, a fixed filter bank (no learned weights), written in
  plain torch and exported to ONNX. Inside the breast it normalises the intensity, takes
  difference-of-Gaussian (DoG) blob responses at four scales (sigma 2, 4, 8 and 12 canvas
  pixels: about 1 to 10 mm lesions on mini-MIAS), and gives per image a feature vector (the
  peak and the mean of the 32 strongest responses per scale, the breast's brightness,
  spread and area) and the response maps at 1/4 resolution (for the marks).
- ``mmg.json`` heads: logistic regressions over ``DESIGN`` features plus their difference to
  the contralateral breast (:func:`design`, :func:`fit_heads`, :func:`apply_head`).
- mini-MIAS (``../shared/data/mmg/mini-mias-train``, :func:`mias_items`) with its lesion
  circles (the ``y_top_origin`` column: the MIAS origin is the bottom-left corner; 4 abnormal
  images have no position and keep their image label), and the patient-pair folds
  (:func:`pair_folds`): both breasts of a woman are always on the same side.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from radsight.algorithms.mmg.preprocess import prepare_with_breast
from radsight_train.data import SPLIT_SEED, read_gray

SIZE = 256
SIGMAS = (2.0, 4.0, 8.0, 12.0)
TOP = 32
#: logistic heads: name -> mini-MIAS abnormality classes it is fitted on (against normals)
HEADS = {
    "abnormal": ("CIRC", "SPIC", "MISC", "CALC", "ARCH", "ASYM"),
    "mass": ("CIRC", "SPIC", "MISC"),
    "calcification": ("CALC",),
    "distortion-asymmetry": ("ARCH", "ASYM"),
}
KINDS = ("mass", "calcification", "distortion-asymmetry")
FEATURES = [f"{s}_s{g:g}" for s in ("peak", "top32") for g in SIGMAS] + ["mean", "std", "area"]
#: the logistic regressions' inputs: these features of the image, and the same ones as
#: "this breast minus the other breast" (chosen on the cross-validation: docs/models/mmg.md)
DESIGN = ["top32_s8", "top32_s12", "mean"]
C = 0.05
MODEL_DIR = Path(__file__).resolve().parents[2] / "radsight" / "algorithms" / "mmg"


class BlobFeatures(nn.Module):
    """Fixed DoG filter bank over the breast; inputs 'image' and 'breast' (1 x 256 x 256)."""

    def __init__(self, sigmas: tuple[float, ...] = SIGMAS) -> None:
        super().__init__()
        self.sigmas = sigmas
        for i, s in enumerate(sigmas):
            for j, sig in enumerate((s, 2 * s)):
                r = int(math.ceil(3 * sig))
                x = torch.arange(-r, r + 1, dtype=torch.float32)
                k = torch.exp(-(x**2) / (2 * sig**2))
                self.register_buffer(f"k{i}_{j}", (k / k.sum()).view(1, 1, 1, -1))

    def _blur(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        r = k.shape[-1] // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3))

    def forward(self, image: torch.Tensor, breast: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features, maps, _, _ = self.parts(image, breast)
        return features, maps

    def parts(self, image: torch.Tensor, breast: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features, 1/4 maps, the standardised image and the inner-breast mask."""
        n = breast.sum((2, 3), keepdim=True).clamp(min=1.0)
        mean = (image * breast).sum((2, 3), keepdim=True) / n
        var = (((image - mean) ** 2) * breast).sum((2, 3), keepdim=True) / n
        std = torch.sqrt(var) + 1e-3
        # outside the breast the normalised image is 0 (its mean): no skin-line step
        z = (image - mean) / std * breast
        # responses count only away from the skin line and the image edge
        inner = -F.max_pool2d(-breast, 13, 1, 6)
        maps = []
        for i in range(len(self.sigmas)):
            k1, k2 = getattr(self, f"k{i}_0"), getattr(self, f"k{i}_1")
            maps.append((self._blur(z, k1) - self._blur(z, k2)) * inner - 10.0 * (1 - inner))
        m = torch.cat(maps, 1)
        flat = m.flatten(2)
        peak = flat.amax(-1)
        top = torch.topk(flat, TOP, dim=-1).values.mean(-1)
        features = torch.cat([peak, top, mean.flatten(1), std.flatten(1), breast.mean((2, 3))], 1)
        return features, F.max_pool2d(m, 4), z, inner


@dataclass
class Lesion:
    abn_class: str
    severity: str
    x: float
    #: row from the top (``y_top_origin``)
    y: float
    radius: float


@dataclass
class MiasImage:
    refnum: str
    path: Path
    pair: int
    side: str  # L | R (mini-MIAS: even refnum left, odd right)
    label: str  # normal | benign | malignant
    tissue: str
    classes: list[str] = field(default_factory=list)
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def abnormal(self) -> int:
        return int(self.label != "normal")

    @property
    def kinds(self) -> set[str]:
        return {k for k in KINDS if set(HEADS[k]) & set(self.classes)}


def mias_items(data_root: Path) -> list[MiasImage]:
    base = data_root / "mmg" / "mini-mias-train"
    items: dict[str, MiasImage] = {}
    with open(base / "image_labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            items[row["refnum"]] = MiasImage(
                refnum=row["refnum"],
                path=base / "images" / f"{row['refnum']}.png",
                pair=int(row["patient_pair"]),
                side=row["side"],
                label=row["label"],
                tissue="",
                classes=[c for c in row["classes"].split("|") if c],
            )
    with open(base / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            it = items[row["refnum"]]
            it.tissue = row["bg_tissue"]
            if row["abn_class"] != "NORM" and row["x"] and row["y_top_origin"]:
                it.lesions.append(
                    Lesion(
                        row["abn_class"],
                        row["severity"],
                        float(row["x"]),
                        float(row["y_top_origin"]),
                        float(row["radius"]),
                    )
                )
    return sorted(items.values(), key=lambda it: it.refnum)


def pair_folds(items: list[MiasImage], folds: int, seed: int = SPLIT_SEED) -> dict[int, int]:
    """Patient pair -> fold, dealt round-robin within each worst-label stratum."""
    worst: dict[int, int] = {}
    rank = {"normal": 0, "benign": 1, "malignant": 2}
    for it in items:
        worst[it.pair] = max(worst.get(it.pair, 0), rank[it.label])
    out: dict[int, int] = {}
    rng = random.Random(seed)
    offset = 0
    for stratum in (0, 1, 2):
        pairs = sorted(p for p, w in worst.items() if w == stratum)
        rng.shuffle(pairs)
        for i, p in enumerate(pairs):
            out[p] = (i + offset) % folds
        offset += len(pairs)
    return out


def canvas_and_breast(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The platform's preprocessing: the canvas and the breast mask on it."""
    canvas, breast, _ = prepare_with_breast(pixels, SIZE)
    return canvas, breast


def design(features: np.ndarray, contralateral: np.ndarray) -> np.ndarray:
    """The logistic regressions' inputs: own features, then own minus contralateral."""
    cols = [FEATURES.index(name) for name in DESIGN]
    return np.c_[features[:, cols], features[:, cols] - contralateral[:, cols]]


def fit_head(x: np.ndarray, y: np.ndarray, c: float = C) -> dict:
    """L2 logistic regression on standardised inputs (scikit-learn, lbfgs)."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=c, max_iter=2000).fit((x - mu) / sd, y)
    return {
        "mean": mu.round(6).tolist(),
        "scale": sd.round(6).tolist(),
        "coef": model.coef_[0].round(6).tolist(),
        "intercept": round(float(model.intercept_[0]), 6),
    }


def apply_head(head: dict, x: np.ndarray) -> np.ndarray:
    z = ((x - np.array(head["mean"])) / np.array(head["scale"])) @ np.array(head["coef"])
    return 1 / (1 + np.exp(-(z + head["intercept"])))


def fit_heads(x: np.ndarray, items: list[MiasImage], idx: np.ndarray) -> dict:
    heads = {}
    for name, classes in HEADS.items():
        use = [i for i in idx if items[i].abnormal == 0 or set(items[i].classes) & set(classes)]
        y = np.array([int(items[i].abnormal == 1) for i in use])
        heads[name] = fit_head(x[use], y)
    return heads


def youden(prob: np.ndarray, labels: np.ndarray) -> float:
    best, t_best = -1.0, 0.5
    for t in np.unique(np.round(prob, 4)):
        j = (prob[labels == 1] >= t).mean() + (prob[labels == 0] < t).mean() - 1
        if j > best:
            best, t_best = float(j), float(t)
    return round(t_best, 4)


def screening(prob: np.ndarray, labels: np.ndarray, sensitivity: float = 0.9) -> float:
    """The highest threshold whose sensitivity is at least ``sensitivity``."""
    pos = np.sort(prob[labels == 1])
    k = int(math.floor((1 - sensitivity) * len(pos)))
    return round(float(pos[k]) - 1e-4, 4)


def export_onnx(model: nn.Module, path: Path) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)),
        str(path),
        input_names=["image", "breast"],
        output_names=["features", "maps"],
        dynamic_axes={k: {0: "batch"} for k in ("image", "breast", "features", "maps")},
        opset_version=17,
        dynamo=False,
    )


def image_features(
    items: list[MiasImage], model: Path = MODEL_DIR / "mmg.onnx", canvases: tuple | None = None
) -> np.ndarray:
    """Images through the platform's preprocessing and an exported ONNX model."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = []
    for j, it in enumerate(items):
        if canvases is None:
            canvas, breast = canvas_and_breast(read_gray(it.path))
        else:
            canvas, breast = canvases[0][j], canvases[1][j]
        features, _ = session.run(None, {"image": canvas[None, None], "breast": breast[None, None]})
        out.append(features[0])
    return np.array(out, dtype=np.float64)


def contralateral(items: list[MiasImage], features: np.ndarray) -> np.ndarray:
    """For each image, the features of the other breast of the same woman."""
    by_key = {(it.pair, it.side): i for i, it in enumerate(items)}
    other = {"L": "R", "R": "L"}
    return np.array(
        [features[by_key.get((it.pair, other[it.side]), i)] for i, it in enumerate(items)]
    )
