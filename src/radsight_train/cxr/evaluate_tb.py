"""Evaluate the tuberculosis-like lesion finding of radsight-cxr / radsight-flg.

``python -m radsight_train evaluate cxr-tb``: every image goes through
:class:`radsight.algorithms.cxr.ChestRadiographAlgorithm` (checks, numpy preprocessing, ONNX
Runtime on one thread, the numpy TB head, regions), as the platform runs it. Prints the
figures, writes ``tb_metrics.json`` and ``tb_examples.png``.

- TB sensitivity and localisation: TBX11K official **val** (50 images, never used by the
  head, its calibration or its thresholds).
- Specificity: COVID-QU-Ex **test** normals; firing rate on test Non-COVID opacity, COVID-19
  and pediatric test images. These are other sources than TBX11K: every TB-vs-normal figure
  is source-confounded, and is labelled so.
- The TB head's own image-level score (top lung-cell logit) is measured the same way: it is
  the reason the finding's probability is the abnormality probability instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radsight.algorithms.contract import NotAnalysable, StudyInput
from radsight.algorithms.cxr import (
    TB_CONFIG,
    ChestRadiographAlgorithm,
    FluorographyAlgorithm,
    predict_image,
)
from radsight_train.cxr.evaluate import (
    Result,
    _auc_entry,
    _box_mask,
    _localisation,
    _operating,
    _print,
    draw_boxes,
    image_input,
)
from radsight_train.cxr.train_tb import tb_images
from radsight_train.data import Item, adult_items, pediatric_items, read_gray

log = logging.getLogger(__name__)

KEY = "tb-like-lesion"


@dataclass
class TbResult(Result):
    #: the TB head's top lung-cell logit (its own image-level score)
    head_score: float = float("nan")


def run_tb(algorithm: ChestRadiographAlgorithm, items: list[Item]) -> list[TbResult]:
    """TB probability, top-mark peak and TB boxes per image (``Result.probability`` = TB)."""
    results = []
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        image = image_input(item, read_gray(item.path), i)
        study = StudyInput(image.study_instance_uid, "cxr", (image,))
        res = TbResult(item)
        try:
            algorithm.check(study)
            analysis = algorithm.analyse(study)
            res.probability = next(f.probability for f in analysis.findings if f.key == KEY)
        except NotAnalysable as exc:
            res.refused = str(exc)
        res.seconds = time.perf_counter() - t0
        if not res.refused:
            pred = predict_image(image)  # the TB map behind the marks, for localisation
            res.peak = pred.tb_peak
            res.boxes = tuple(r.bounds() for _, r in pred.tb_regions)
            res.head_score = pred.tb_score
        results.append(res)
    return results


def tb_val_items(data_root: Path) -> list[Item]:
    return [
        Item(im.path, "tb", "val", 1, im.subtype, boxes=list(im.boxes))
        for im in tb_images(data_root)
        if im.split == "val"
    ]


def _as_head(r: TbResult) -> Result:
    return Result(r.item, probability=r.head_score)


def _rate(results: Sequence[Result], thresholds: dict) -> dict:
    """Share of images on which the finding fires, per operating point (no negatives)."""
    return _operating(results, [], thresholds)


def evaluate_tb(data_root: Path, out: Path, limit: int = 0) -> dict:
    """Run every set; ``limit`` keeps every n-th image (a smoke run only)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not TB_CONFIG:
        raise SystemExit(
            "cxr.json has no `tb` section: run `python -m radsight_train cxr-tb` first"
        )
    out.mkdir(parents=True, exist_ok=True)
    cxr = ChestRadiographAlgorithm()
    thresholds = {
        "cxr": cxr.finding_spec(KEY).threshold,
        "flg": FluorographyAlgorithm().finding_spec(KEY).threshold,
    }
    adult = adult_items(data_root)
    children = pediatric_items(data_root)

    def adult_set(split: str, cls: str) -> list[Item]:
        return [it for it in adult if it.split == split and it.subgroup == cls]

    sets = {
        "tb-val": tb_val_items(data_root),
        "normal-test": adult_set("test", "Normal"),
        "noncovid-test": adult_set("test", "Non-COVID"),
        "covid-test": adult_set("test", "COVID-19"),
        "pediatric-test": [it for it in children if it.split == "test"],
    }
    if limit:
        sets = {k: v[:: max(1, len(v) // limit)] for k, v in sets.items()}
    res: dict[str, list[TbResult]] = {}
    for name, items in sets.items():
        t0 = time.time()
        res[name] = [r for r in run_tb(cxr, items) if not r.refused]
        log.info(
            "%s: %d images (%d analysed) in %.0f s",
            name,
            len(items),
            len(res[name]),
            time.time() - t0,
        )
    tb = res["tb-val"]
    active = [r for r in tb if r.item.subgroup in ("active", "both")]
    obsolete = [r for r in tb if r.item.subgroup == "obsolete"]
    normal = res["normal-test"]
    kermany = res["pediatric-test"]
    m: dict = {
        "thresholds": thresholds,
        "tbx11k_val (TB sensitivity; head trained on TBX11K train only)": {
            "all": _rate(tb, thresholds),
            "active (active only or active + obsolete)": _rate(active, thresholds),
            "obsolete only": _rate(obsolete, thresholds),
        },
        "specificity on COVID-QU-Ex test Normal (another source)": _operating(
            [], normal, thresholds
        ),
        "firing rate on other test images (another source)": {
            "COVID-QU-Ex Non-COVID opacity": _rate(res["noncovid-test"], thresholds),
            "COVID-QU-Ex COVID-19": _rate(res["covid-test"], thresholds),
            "Kermany pediatric normal": _rate(
                [r for r in kermany if r.item.label == 0], thresholds
            ),
            "Kermany pediatric pneumonia": _rate(
                [r for r in kermany if r.item.label == 1], thresholds
            ),
        },
        "auroc (source-confounded: TBX11K val vs COVID-QU-Ex test Normal)": {
            "all": _auc_entry(tb, normal),
            "active": _auc_entry(active, normal),
            "obsolete only": _auc_entry(obsolete, normal),
        },
    }
    m["the head's own top-cell score, rejected as the probability (source-confounded)"] = {
        "TBX11K val vs COVID-QU-Ex test Normal": _auc_entry(
            [_as_head(r) for r in tb], [_as_head(r) for r in normal]
        ),
        "TBX11K val vs COVID-QU-Ex test Non-COVID opacity": _auc_entry(
            [_as_head(r) for r in tb], [_as_head(r) for r in res["noncovid-test"]]
        ),
    }
    truth = [_box_mask(r.item.boxes, (256, 256)) for r in tb]
    pairs = list(zip(tb, truth, strict=True))
    m["localisation on TBX11K val boxes (top mark's peak / top box)"] = {
        "all": _localisation(tb, truth),
        "active": _localisation(active, [t for r, t in pairs if r.item.subgroup != "obsolete"]),
        "obsolete only": _localisation(
            obsolete, [t for r, t in pairs if r.item.subgroup == "obsolete"]
        ),
    }
    secs = np.array([r.seconds for rs in res.values() for r in rs])
    m["ms_per_image_median (analyse, 1 thread, 256-px PNG)"] = float(np.median(secs) * 1000)
    _examples(res, thresholds, out)
    (out / "tb_metrics.json").write_text(json.dumps(_no_nan(m), indent=2, default=float) + "\n")
    _print(m)
    return m


def _examples(res: dict, thresholds: dict, out: Path) -> None:
    """TBX11K val images at TB-probability quartiles, a test normal and a test opacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tb = sorted(res["tb-val"], key=lambda r: r.probability)
    picks = [tb[int(q * (len(tb) - 1))] for q in (0.9, 0.75, 0.5, 0.25)]
    for name in ("normal-test", "noncovid-test"):
        cands = sorted(res[name], key=lambda r: r.probability)
        picks.append(cands[len(cands) // 2])
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    for ax, r in zip(axes.ravel(), picks, strict=False):
        ax.imshow(read_gray(r.item.path), cmap="gray")
        draw_boxes(ax, r, r.probability >= thresholds["flg"], marker_size=12)
        label = "TBX11K val" if r.item.source == "tb" else f"COVID-QU-Ex test {r.item.subgroup}"
        sub = f"/{r.item.subgroup}" if r.item.source == "tb" else ""
        ax.set_title(f"{label}{sub}: TB p={r.probability:.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        "Tuberculosis-like lesion marks (red: boxes, shown when p >= flg threshold "
        f"{thresholds['flg']:.2f}; +: top cell of the TB map); green: TBX11K boxes.\n"
        "TBX11K val images at the 90/75/50/25th percentile of p, COVID-QU-Ex test images at "
        "the median of their class. Not a diagnosis.",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / "tb_examples.png", dpi=90)
    plt.close(fig)


def _no_nan(value):
    """NaN (a sensitivity with no positives) as null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
