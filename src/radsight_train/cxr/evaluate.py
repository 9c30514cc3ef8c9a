"""Evaluate the exported chest radiograph model through the platform's own algorithm code.

Every image goes through :class:`radsight.algorithms.cxr.ChestRadiographAlgorithm` (input
checks, numpy preprocessing, ONNX Runtime on one thread, calibration, regions), exactly as
the platform runs it. Prints the figures, writes ``metrics.json`` and PNG figures.
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

from radsight.algorithms.contract import ImageInput, NotAnalysable, StudyInput
from radsight.algorithms.cxr import (
    CONFIG,
    ChestRadiographAlgorithm,
    FluorographyAlgorithm,
    predict_image,
)
from radsight.monitor.metrics import auroc_ci, calibration_curve, roc_points, wilson
from radsight_train.data import (
    Item,
    adult_items,
    nonchest_items,
    pediatric_items,
    pediatric_native_items,
    read_gray,
    read_mask,
)

log = logging.getLogger(__name__)


@dataclass
class Result:
    item: Item
    probability: float = float("nan")
    refused: str = ""
    #: the map's peak as a source (column, row); None: not analysed, or no peak
    peak: tuple[float, float] | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    seconds: float = 0.0
    lung_fraction: float = 0.0


def image_input(item: Item, pixels: np.ndarray, i: int) -> ImageInput:
    return ImageInput(
        study_instance_uid=f"2.25.{i}",
        series_instance_uid=f"2.25.{i}.1",
        sop_instance_uid=f"2.25.{i}.1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        pixels=pixels,
        modality="DX",
        body_part_examined="CHEST",
        view_position="PA",
    )


def run(algorithm: ChestRadiographAlgorithm, items: list[Item]) -> list[Result]:
    results = []
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        image = image_input(item, read_gray(item.path), i)
        study = StudyInput(image.study_instance_uid, "cxr", (image,))
        res = Result(item)
        try:
            algorithm.check(study)
            analysis = algorithm.analyse(study)
            # the opacity finding (the TB finding carries the same probability)
            res.probability = next(f.probability for f in analysis.findings if f.key == "pneumonia")
        except NotAnalysable as exc:
            res.refused = str(exc)
        res.seconds = time.perf_counter() - t0
        if not res.refused or "lung" in res.refused:
            pred = predict_image(image)  # the maps behind the marks, for localisation
            res.peak = pred.peak
            res.boxes = tuple(r.bounds() for _, r in pred.regions)
            res.lung_fraction = pred.lung_fraction
        results.append(res)
    return results


def _auc_entry(pos: Sequence[Result], neg: Sequence[Result]) -> dict:
    scores = np.array([r.probability for r in [*pos, *neg]])
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    auc, lo, hi = auroc_ci(labels, scores).as_tuple()
    return {"auroc": auc, "ci": [lo, hi], "positives": len(pos), "negatives": len(neg)}


def _operating(pos: Sequence[Result], neg: Sequence[Result], thresholds: dict) -> dict:
    out = {}
    for name, t in thresholds.items():
        se = wilson(sum(r.probability >= t for r in pos), len(pos)).as_tuple()
        sp = wilson(sum(r.probability < t for r in neg), len(neg)).as_tuple() if neg else None
        out[name] = {"threshold": t, "sensitivity": se, "specificity": sp}
    return out


def _box_mask(boxes, shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return m


def _localisation(results: Sequence[Result], truth: list[np.ndarray]) -> dict:
    """Pointing game (map peak inside the annotation), top box hit, and IoU of the boxes."""
    peak_hits = top_hits = 0
    ious, top_ious = [], []
    for res, gt in zip(results, truth, strict=True):
        if res.peak is not None:  # no peak (not analysed, no lung cells) is a miss
            px, py = res.peak
            r, c = min(int(py), gt.shape[0] - 1), min(int(px), gt.shape[1] - 1)
            peak_hits += bool(gt[r, c])
        top = _box_mask(res.boxes[:1], gt.shape)
        top_hits += bool((top & gt).any())
        union = _box_mask(res.boxes, gt.shape)
        ious.append((union & gt).sum() / max(1, (union | gt).sum()))
        top_ious.append((top & gt).sum() / max(1, (top | gt).sum()))
    n = len(results)
    return {
        "images": n,
        "pointing_game": wilson(peak_hits, n).as_tuple(),
        "top_box_hit": wilson(top_hits, n).as_tuple(),
        "iou_all_boxes": float(np.mean(ious)),
        "iou_top_box": float(np.mean(top_ious)),
    }


def _fmt(x) -> str:
    if isinstance(x, dict) and "auroc" in x:
        return (
            f"AUROC {x['auroc']:.3f} (95% CI {x['ci'][0]:.3f}-{x['ci'][1]:.3f}; "
            f"{x['positives']} pos / {x['negatives']} neg)"
        )
    if isinstance(x, (tuple, list)) and len(x) == 3:
        return f"{x[0]:.3f} ({x[1]:.3f}-{x[2]:.3f})"
    return str(x)


def evaluate(data_root: Path, out: Path, limit: int = 0) -> dict:
    """Run every evaluation set; ``limit`` keeps every n-th image (a smoke run only)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out.mkdir(parents=True, exist_ok=True)
    cxr = ChestRadiographAlgorithm()
    thresholds = {
        "cxr": cxr.findings[0].threshold,
        "flg": FluorographyAlgorithm().findings[0].threshold,
    }
    adult = adult_items(data_root)
    ped = pediatric_items(data_root)
    from radsight_train.data import tb_items

    sets = {
        "adult-test": [it for it in adult if it.split == "test"],
        "adult-val": [it for it in adult if it.split == "val"],
        "pediatric-test": [it for it in ped if it.split == "test"],
        "pediatric-native": pediatric_native_items(data_root),
        "tb-external": tb_items(data_root),
        "nonchest-test": [it for it in nonchest_items(data_root) if it.split == "test"],
    }
    if limit:
        sets = {k: v[:: max(1, len(v) // limit)] for k, v in sets.items()}
    res = {}
    for name, items in sets.items():
        t0 = time.time()
        res[name] = run(cxr, items)
        log.info("%s: %d images in %.0f s", name, len(items), time.time() - t0)

    def ok(name: str, pred=lambda r: True) -> list[Result]:
        return [r for r in res[name] if not r.refused and pred(r)]

    def sub(name: str, *groups: str) -> list[Result]:
        return ok(name, lambda r: r.item.subgroup in groups)

    m: dict = {"thresholds": thresholds, "temperature": CONFIG["temperature"]}
    adult_normal = sub("adult-test", "Normal")
    m["adult_test"] = {
        "opacity_vs_normal (Non-COVID vs Normal, one source: primary)": _auc_entry(
            sub("adult-test", "Non-COVID"), adult_normal
        ),
        "covid_vs_normal (source-confounded)": _auc_entry(
            sub("adult-test", "COVID-19"), adult_normal
        ),
        "any_vs_normal": _auc_entry(sub("adult-test", "Non-COVID", "COVID-19"), adult_normal),
        "operating_points (any vs normal)": _operating(
            sub("adult-test", "Non-COVID", "COVID-19"), adult_normal, thresholds
        ),
        "operating_points (Non-COVID vs normal)": _operating(
            sub("adult-test", "Non-COVID"), adult_normal, thresholds
        ),
    }
    m["adult_val (used for temperature and thresholds)"] = {
        "any_vs_normal": _auc_entry(
            sub("adult-val", "Non-COVID", "COVID-19"), sub("adult-val", "Normal")
        ),
    }
    ped_normal = sub("pediatric-test", "normal")
    m["pediatric_test"] = {
        "pneumonia_vs_normal": _auc_entry(sub("pediatric-test", "bacteria", "virus"), ped_normal),
        "bacterial_vs_normal": _auc_entry(sub("pediatric-test", "bacteria"), ped_normal),
        "viral_vs_normal": _auc_entry(sub("pediatric-test", "virus"), ped_normal),
        "operating_points": _operating(
            sub("pediatric-test", "bacteria", "virus"), ped_normal, thresholds
        ),
    }
    m["pediatric_native_resolution (16 images, 968-1776 px)"] = {
        "pneumonia_vs_normal": _auc_entry(
            ok("pediatric-native", lambda r: r.item.label == 1),
            ok("pediatric-native", lambda r: r.item.label == 0),
        ),
    }
    tb = ok("tb-external")
    m["tb_external (TBX11K, never trained on; TB-positive only)"] = {
        "sensitivity": _operating(tb, [], thresholds),
        "sensitivity_active_or_both": _operating(
            [r for r in tb if r.item.subgroup in ("active", "both")], [], thresholds
        ),
        "sensitivity_obsolete_only": _operating(
            [r for r in tb if r.item.subgroup == "obsolete"], [], thresholds
        ),
        "tb_vs_adult_test_normals (source-confounded, not a valid AUROC)": _auc_entry(
            tb, adult_normal
        ),
    }
    # localisation: COVID-19 val infection masks (test has none) and TBX11K boxes
    covid_val = sub("adult-val", "COVID-19")
    covid_masks = [read_mask(r.item.infection_mask) > 0 for r in covid_val if r.item.infection_mask]
    tb_truth = [_box_mask(r.item.boxes, (256, 256)) for r in tb]
    m["localisation"] = {
        "covid_val_infection_masks": _localisation(covid_val, covid_masks),
        "tb_boxes_all": _localisation(tb, tb_truth),
        "tb_boxes_active_or_both": _localisation(
            [r for r in tb if r.item.subgroup != "obsolete"],
            [t for r, t in zip(tb, tb_truth, strict=True) if r.item.subgroup != "obsolete"],
        ),
    }
    chest = [
        r
        for n in ("adult-test", "pediatric-test", "pediatric-native", "tb-external")
        for r in res[n]
    ]
    nonchest = res["nonchest-test"]
    m["subgroups"] = _subgroups(data_root, res, sub, thresholds)
    m["input_checks"] = {
        "chest_images_refused": wilson(sum(bool(r.refused) for r in chest), len(chest)).as_tuple(),
        "nonchest_images_refused": wilson(
            sum(bool(r.refused) for r in nonchest), len(nonchest)
        ).as_tuple(),
        "nonchest_refused_by_kind": {
            k: wilson(
                sum(bool(r.refused) for r in nonchest if r.item.subgroup == k),
                sum(r.item.subgroup == k for r in nonchest),
            ).as_tuple()
            for k in sorted({r.item.subgroup for r in nonchest})
        },
        "refusal_reasons": sorted({r.refused for r in chest + nonchest if r.refused})[:10],
    }
    cal = {}
    for name, pos, neg in (
        ("adult_test", sub("adult-test", "Non-COVID", "COVID-19"), adult_normal),
        ("pediatric_test", sub("pediatric-test", "bacteria", "virus"), ped_normal),
    ):
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        probs = np.array([r.probability for r in pos + neg])
        cal[name] = calibration_curve(labels, probs)
    m["calibration"] = {k: {"ece": v.ece, "brier": v.brier} for k, v in cal.items()}
    secs = np.array([r.seconds for n in ("adult-test", "tb-external") for r in res[n]])
    native = np.array([r.seconds for r in res["pediatric-native"]])
    m["speed_one_thread"] = {
        "256px_png_ms_median": float(np.median(secs) * 1000),
        "256px_png_ms_p95": float(np.percentile(secs, 95) * 1000),
        "native_jpeg_ms_median": float(np.median(native) * 1000),
        "note": "decode + checks + preprocess + ONNX Runtime (1 thread) + regions, per image",
    }
    _plots(res, sub, cal, out)
    _examples(res, out)
    (out / "metrics.json").write_text(json.dumps(m, indent=2, default=float) + "\n")
    _print(m)
    return m


#: why there is no per-view figure (issue 7 asks for PA vs AP where the data tells)
NO_VIEW_LABELS = (
    "not measurable: none of the staged sets records the view. COVID-QU-Ex and Kermany "
    "ship PNG/JPEG without DICOM headers or a view column, and COVID-QU-Ex file names "
    "cannot be traced to RSNA patientIds (whose DICOM headers carry ViewPosition); "
    "TBX11K has no view field either. The sets are described as frontal (PA or AP)."
)


def _covid_sources(data_root: Path) -> dict[str, str]:
    """COVID-QU-Ex file -> the collection its perceptual hash matched (SOURCE.md)."""
    import csv

    base = data_root / "cxr" / "covid-qu-ex-adult"
    with open(base / "labels.csv", newline="") as f:
        return {str(base / r["file"]): r["matched_source"] for r in csv.DictReader(f)}


def _tb_splits(data_root: Path) -> dict[str, str]:
    import csv

    base = data_root / "cxr" / "tbx11k-tb-boxes-256"
    with open(base / "labels.csv", newline="") as f:
        return {str(base / r["file"]): r["official_split"] for r in csv.DictReader(f)}


def _subgroups(data_root: Path, res: dict, sub, thresholds: dict) -> dict:
    """Figures per source (and per view, which the data does not tell)."""
    covid_src = _covid_sources(data_root)
    tb_split = _tb_splits(data_root)
    normal = sub("adult-test", "Normal")
    covid = sub("adult-test", "COVID-19")
    by_db = [r for r in covid if covid_src.get(str(r.item.path)) == "COVID-19_Radiography_DB_COVID"]
    other = [r for r in covid if r not in by_db]
    tb = [r for r in res["tb-external"] if not r.refused]
    ped_normal = sub("pediatric-test", "normal")
    return {
        "view (PA vs AP)": NO_VIEW_LABELS,
        "source": {
            "RSNA / NIH ChestX-ray14 (USA; adult test Non-COVID vs Normal)": {
                "abnormal_vs_normal": _auc_entry(sub("adult-test", "Non-COVID"), normal),
                "operating_points": _operating(sub("adult-test", "Non-COVID"), normal, thresholds),
            },
            "COVID-19 Radiography Database (BIMCV/PadChest, SIRM, GitHub; adult test COVID-19,"
            " positives only)": {"sensitivity": _operating(by_db, [], thresholds)},
            "COVID-19 of unknown collection (no hash match; adult test, positives only)": {
                "sensitivity": _operating(other, [], thresholds)
            },
            "Kermany, Guangzhou (pediatric test)": {
                "abnormal_vs_normal": _auc_entry(
                    sub("pediatric-test", "bacteria", "virus"), ped_normal
                ),
                "operating_points": _operating(
                    sub("pediatric-test", "bacteria", "virus"), ped_normal, thresholds
                ),
            },
            "TBX11K, Chinese hospitals (external, TB-positive only)": {
                f"official {split} split": _operating(
                    [r for r in tb if tb_split.get(str(r.item.path)) == split], [], thresholds
                )
                for split in ("train", "val")
            }
            | {
                f"subtype {kind}": _operating(
                    [r for r in tb if r.item.subgroup == kind], [], thresholds
                )
                for kind in ("active", "both", "obsolete")
            },
        },
    }


def _print(m: dict, indent: int = 0) -> None:
    for k, v in m.items():
        if (
            isinstance(v, dict)
            and "auroc" not in v
            and not ("sensitivity" in v and "threshold" in v)
        ):
            print(" " * indent + f"{k}:")
            _print(v, indent + 2)
        elif isinstance(v, dict) and "threshold" in v:
            spec, sens = v["specificity"], v["sensitivity"]
            parts = [f"sensitivity {_fmt(sens)}"] if sens[0] == sens[0] else []  # nan: no pos
            parts += [f"specificity {_fmt(spec)}"] if spec else []
            print(" " * indent + f"{k} (t={v['threshold']:.4f}): " + ", ".join(parts))
        else:
            print(" " * indent + f"{k}: {_fmt(v)}")


def _plots(res, sub, cal, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    curves = (
        (
            "adult: Non-COVID opacity vs normal",
            sub("adult-test", "Non-COVID"),
            sub("adult-test", "Normal"),
        ),
        ("adult: COVID-19 vs normal", sub("adult-test", "COVID-19"), sub("adult-test", "Normal")),
        (
            "pediatric: pneumonia vs normal",
            sub("pediatric-test", "bacteria", "virus"),
            sub("pediatric-test", "normal"),
        ),
    )
    for label, pos, neg in curves:
        scores = np.array([r.probability for r in pos + neg])
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        fpr, tpr, _ = roc_points(labels, scores)
        auc = np.trapezoid(tpr, fpr)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("radsight-cxr ROC, test splits")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, c in cal.items():
        conf, acc, _ = zip(*c.bins, strict=True)
        ax.plot(conf, acc, "o-", label=f"{name} (ECE {c.ece:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("predicted probability (temperature-scaled)")
    ax.set_ylabel("observed fraction abnormal")
    ax.set_title("radsight-cxr calibration, test splits")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=110)
    plt.close(fig)


def draw_boxes(ax, r: Result, show_marks: bool, marker_size: int) -> None:
    """On a matplotlib axis: the annotated boxes (green), the model's boxes (red; the top
    one solid) when ``show_marks``, and its map peak (+)."""
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1 in r.item.boxes:
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.2))
    if show_marks:
        for j, (x0, y0, x1, y1) in enumerate(r.boxes):
            top = j == 0
            ax.add_patch(
                Rectangle(
                    (x0, y0),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    ec="red",
                    lw=2 if top else 1,
                    ls="-" if top else "--",
                )
            )
    if r.peak is not None:
        ax.plot(*r.peak, "r+", ms=marker_size)


def _examples(res, out: Path) -> None:
    """Source images with the ground truth (green) and the model's marks (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = []
    for name, n in (("adult-val", 2), ("tb-external", 2), ("pediatric-test", 1), ("adult-test", 1)):
        want = {
            "adult-val": "COVID-19",
            "tb-external": "active",
            "pediatric-test": "bacteria",
            "adult-test": "Normal",
        }[name]
        cands = [r for r in res[name] if r.item.subgroup == want and not r.refused]
        # representative, not cherry-picked: the probability quartiles (or median) of the class
        cands.sort(key=lambda r: r.probability)
        qs = (0.75, 0.25) if n == 2 else (0.5,)
        picks += [cands[int(q * (len(cands) - 1))] for q in qs]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.4))
    for ax, r in zip(axes.ravel(), picks, strict=False):
        img = read_gray(r.item.path)
        ax.imshow(img, cmap="gray")
        if r.item.infection_mask is not None and r.item.label == 1:
            ax.contour(read_mask(r.item.infection_mask), levels=[0.5], colors="lime", linewidths=1)
        draw_boxes(ax, r, r.probability >= CONFIG["thresholds"]["cxr"], marker_size=10)
        ax.set_title(f"{r.item.source}/{r.item.subgroup}: p={r.probability:.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        "AI marks (red: boxes shown when p >= cxr threshold, +: map peak); green: annotation. "
        "Images at the upper/lower probability quartile (or median) of their class. "
        "Not a diagnosis.",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=90)
    plt.close(fig)
