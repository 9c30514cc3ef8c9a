"""Chest radiograph data sets from ../shared/data/cxr, with the splits the model card names.

- ``adult``: COVID-QU-Ex adult subset. Official Train/Val/Test splits. Label 1 = Non-COVID
  opacity or COVID-19, 0 = Normal. Infection and lung masks for Train/Val.
- ``pediatric``: Kermany. Official train/test; ``val`` is 10 % of the train *patients*
  (``patient_key``), drawn with a fixed seed, so no patient is on both sides.
- ``tb``: TBX11K, 200 TB-positive adults with boxes. Never used for training: it is the
  external adult set (another source, another disease).
"""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SPLIT_SEED = 20240601


def default_data_root() -> Path:
    env = os.environ.get("RADSIGHT_SHARED_DATA")
    if env:
        return Path(env)
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


@dataclass
class Item:
    path: Path
    source: str  # adult | pediatric | tb
    split: str  # train | val | test | external
    label: int  # 1 abnormal (opacity / pneumonia / TB), 0 normal
    subgroup: str  # Normal, Non-COVID, COVID-19, normal, bacteria, virus, active, ...
    infection_mask: Path | None = None
    lung_mask: Path | None = None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    patient_key: str = ""


def read_gray(path: Path) -> np.ndarray:
    """Decode an image file to a 2-D float32 array (RGB copies of grey become grey)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return (np.asarray(im.convert("L")) > 127).astype(np.float32)


def adult_items(root: Path) -> list[Item]:
    base = root / "cxr" / "covid-qu-ex-adult"
    items = []
    with open(base / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            split = row["official_split"].lower()
            cls = row["label"]
            inf = row["infection_mask"]
            # Non-COVID infection masks are empty because nobody drew them, not because
            # there is no opacity: only COVID-19 and Normal masks are used as targets.
            use_inf = bool(inf) and cls in ("COVID-19", "Normal")
            items.append(
                Item(
                    path=base / row["file"],
                    source="adult",
                    split=split,
                    label=int(cls != "Normal"),
                    subgroup=cls,
                    infection_mask=base / inf if use_inf else None,
                    lung_mask=base / row["lung_mask"] if row["lung_mask"] else None,
                )
            )
    return items


def pediatric_items(root: Path, val_fraction: float = 0.1) -> list[Item]:
    base = root / "cxr" / "kermany-pediatric-pneumonia-224"
    items = []
    with open(base / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            items.append(
                Item(
                    path=base / row["path"],
                    source="pediatric",
                    split=row["split"],
                    label=int(row["label"] == "pneumonia"),
                    subgroup=row["subtype"],
                    patient_key=row["patient_key"],
                )
            )
    keys = sorted({it.patient_key for it in items if it.split == "train"})
    rng = random.Random(SPLIT_SEED)
    rng.shuffle(keys)
    val_keys = set(keys[: round(len(keys) * val_fraction)])
    for it in items:
        if it.split == "train" and it.patient_key in val_keys:
            it.split = "val"
    return items


def pediatric_native_items(root: Path) -> list[Item]:
    """The 16 Kermany val images at native size (968-1776 px): a large-image check."""
    base = root / "cxr" / "kermany-pediatric-pneumonia-224" / "val_native"
    items = []
    for label_dir, label in (("NORMAL", 0), ("PNEUMONIA", 1)):
        for p in sorted((base / label_dir).glob("*.jpeg")):
            sub = "normal" if label == 0 else ("virus" if "virus" in p.name else "bacteria")
            items.append(Item(p, "pediatric-native", "test", label, sub))
    return items


def tb_items(root: Path) -> list[Item]:
    base = root / "cxr" / "tbx11k-tb-boxes-256"
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    with open(base / "boxes.csv", newline="") as f:
        for row in csv.DictReader(f):
            x0, y0, x1, y1 = (float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            boxes.setdefault(row["file"], []).append((x0, y0, x1, y1))
    items = []
    with open(base / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            items.append(
                Item(
                    path=base / row["file"],
                    source="tb",
                    split="external",
                    label=1,
                    subgroup=row["tb_subtype"],
                    boxes=boxes.get(row["file"], []),
                )
            )
    return items


def nonchest_items(root: Path) -> list[Item]:
    """Images that are not chest radiographs (mammograms, head CT, chest CT slices).

    They teach the lung-field map to stay empty on what is not a frontal chest radiograph,
    and nothing else (no classification loss). 80 % train / 20 % test per set, seeded.
    """
    sets = {
        "mammogram": sorted((root / "mmg" / "mini-mias-train" / "images").glob("*.png")),
        "head-ct": sorted((root / "ct-brain" / "head-ct-hemorrhage-256" / "images").glob("*.png")),
        "chest-ct": sorted((root / "ct-chest" / "covid-semiseg-infnet").glob("*/images/*.jpg")),
    }
    items = []
    for name, paths in sets.items():
        rng = random.Random(SPLIT_SEED)
        paths = list(paths)
        rng.shuffle(paths)
        n_test = round(len(paths) * 0.2)
        for i, p in enumerate(paths):
            items.append(Item(p, "nonchest", "test" if i < n_test else "train", 0, name))
    return items


def all_items(root: Path) -> list[Item]:
    return adult_items(root) + pediatric_items(root) + tb_items(root)
