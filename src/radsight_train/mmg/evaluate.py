"""Evaluate the mammography model by patient-pair cross-validation, through the platform code.

Each image is read by :class:`radsight.algorithms.mmg.MammographyAlgorithm` (input checks,
numpy preprocessing, ONNX Runtime on one thread, calibration, marks), exactly as the
platform runs it, with the logistic heads and the mark ranker of the fold that held the
woman out (``build/mmg-train/folds.json``, written by ``python -m radsight_train mmg``);
both breasts of a woman form one study, so each is compared with the other as on the
platform. Prints the figures, writes ``metrics.json`` and PNG figures.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radsight.algorithms.contract import ImageInput, NotAnalysable, StudyInput
from radsight.algorithms.mmg import CONFIG, ImagePrediction, MammographyAlgorithm
from radsight.algorithms.mmg.views import FOR_PRESENTATION_SOP_CLASS
from radsight.monitor.metrics import auroc, auroc_ci, calibration_curve, roc_points, wilson
from radsight_train.cxr.evaluate import _print
from radsight_train.data import read_gray
from radsight_train.mmg.model import KINDS, MiasImage, mias_items, pair_folds

log = logging.getLogger(__name__)


@dataclass
class Result:
    item: MiasImage
    fold: int
    prediction: ImagePrediction | None = None
    refused: str = ""
    seconds: float = 0.0

    @property
    def probability(self) -> float:
        return self.prediction.probability if self.prediction else float("nan")


def mias_image_input(item: MiasImage, pixels: np.ndarray) -> ImageInput:
    """A mini-MIAS image as the platform would hand it over: MG, MLO, its laterality."""
    return ImageInput(
        study_instance_uid=f"2.25.{item.pair}",
        series_instance_uid=f"2.25.{item.pair}.1",
        sop_instance_uid=f"2.25.{item.pair}.1.{item.refnum[3:]}",
        sop_class_uid=FOR_PRESENTATION_SOP_CLASS,
        pixels=pixels,
        modality="MG",
        body_part_examined="BREAST",
        view_position="MLO",
        image_laterality=item.side,
        attributes={"PresentationIntentType": "FOR PRESENTATION"},
    )


def run(algorithm: MammographyAlgorithm, items: list[MiasImage], fold: int) -> list[Result]:
    """Each woman's two images as one study (each breast is compared with the other)."""
    by_pair: dict[int, list[MiasImage]] = {}
    for item in items:
        by_pair.setdefault(item.pair, []).append(item)
    out = []
    for pair_items in by_pair.values():
        t0 = time.perf_counter()
        images = [mias_image_input(it, read_gray(it.path)) for it in pair_items]
        results = [Result(it, fold) for it in pair_items]
        try:
            predicted = dict(
                (im.sop_instance_uid, p)
                for im, p in algorithm.predictions(
                    StudyInput(images[0].study_instance_uid, "mmg", tuple(images))
                )
            )
        except NotAnalysable as exc:
            predicted = {}
            for r in results:
                r.refused = str(exc)
        seconds = (time.perf_counter() - t0) / len(images)
        for r, im in zip(results, images, strict=True):
            r.prediction = predicted.get(im.sop_instance_uid)
            if r.prediction is None and not r.refused:
                r.refused = "no breast found"
            r.seconds = seconds
        out += results
    return out


def _auc(pos: list[float], neg: list[float]) -> dict:
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    point, lo, hi = auroc_ci(labels, scores).as_tuple()
    return {"auroc": point, "ci": [lo, hi], "positives": len(pos), "negatives": len(neg)}


def _hit(prediction: ImagePrediction | None, item: MiasImage, top: int) -> bool:
    """A mark's centre inside an annotated lesion circle (radius at least 10 px)."""
    if prediction is None:
        return False
    marks = prediction.marks["all"][:top]
    return any(
        (m.x - les.x) ** 2 + (m.y - les.y) ** 2 <= max(les.radius, 10.0) ** 2
        for m in marks
        for les in item.lesions
    )


def _operating(pos: list[float], neg: list[float], thresholds: dict) -> dict:
    return {
        name: {
            "threshold": t,
            "sensitivity": wilson(sum(p >= t for p in pos), len(pos)).as_tuple(),
            "specificity": wilson(sum(p < t for p in neg), len(neg)).as_tuple(),
        }
        for name, t in thresholds.items()
    }


def evaluate(data_root: Path, out: Path, work: Path) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out.mkdir(parents=True, exist_ok=True)
    items = mias_items(data_root)
    folds = int(CONFIG["training"]["folds"])
    fold_of = pair_folds(items, folds)
    saved = work / "folds.json"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} is missing: run `python -m radsight_train mmg`")
    fold_heads = json.loads(saved.read_text())["heads"]
    results: list[Result] = []
    for k in range(folds):
        held_out = [it for it in items if fold_of[it.pair] == k]
        results += run(MammographyAlgorithm(fold_heads[k]), held_out, k)
        log.info("fold %d: %d held-out images", k, len(held_out))
    ok = [r for r in results if not r.refused]
    normal = [r.probability for r in ok if not r.item.abnormal]
    thresholds = {k: CONFIG["thresholds"][k] for k in ("study", "screening")}
    m: dict = {
        "cross_validation": f"{folds} folds by patient pair, stratified by the pair's worst label",
        "images": len(results),
        "refused": [r.refused for r in results if r.refused],
        "thresholds": CONFIG["thresholds"],
    }
    m["image_normal_vs_abnormal"] = _auc([r.probability for r in ok if r.item.abnormal], normal)
    m["image_malignant_vs_normal"] = _auc(
        [r.probability for r in ok if r.item.label == "malignant"], normal
    )
    m["image_benign_vs_normal"] = _auc(
        [r.probability for r in ok if r.item.label == "benign"], normal
    )
    by_pair: dict[int, list[Result]] = {}
    for r in ok:
        by_pair.setdefault(r.item.pair, []).append(r)
    woman = [
        (max(r.probability for r in rs), max(r.item.abnormal for r in rs))
        for rs in by_pair.values()
    ]
    m["woman_normal_vs_abnormal (max over both breasts)"] = _auc(
        [p for p, y in woman if y], [p for p, y in woman if not y]
    )
    m["operating_points_image"] = _operating(
        [r.probability for r in ok if r.item.abnormal], normal, thresholds
    )
    m["kinds_vs_normal"] = {
        kind: _auc(
            [r.prediction.kinds[kind] for r in ok if kind in r.item.kinds and r.prediction],
            [r.prediction.kinds[kind] for r in ok if not r.item.abnormal and r.prediction],
        )
        for kind in KINDS
    }
    m["abnormality_class_vs_normal"] = {
        cls: _auc([r.probability for r in ok if cls in r.item.classes], normal)
        for cls in ("CIRC", "SPIC", "MISC", "CALC", "ARCH", "ASYM")
    }
    m["tissue_normal_vs_abnormal"] = {
        t: _auc(
            [r.probability for r in ok if r.item.abnormal and r.item.tissue == t],
            [r.probability for r in ok if not r.item.abnormal and r.item.tissue == t],
        )
        for t in ("F", "G", "D")
    }
    located = [r for r in ok if r.item.lesions and r.prediction]
    m["localisation"] = {
        "images_with_lesion_circles": len(located),
        "top_mark_hit": wilson(
            sum(_hit(r.prediction, r.item, 1) for r in located), len(located)
        ).as_tuple(),
        "any_of_top3_marks_hit": wilson(
            sum(_hit(r.prediction, r.item, 3) for r in located), len(located)
        ).as_tuple(),
        "top_mark_hit_by_kind": {
            kind: wilson(
                sum(_hit(r.prediction, r.item, 1) for r in located if kind in r.item.kinds),
                sum(kind in r.item.kinds for r in located),
            ).as_tuple()
            for kind in KINDS
        },
        "rule": "a mark's centre inside an annotated circle (radius at least 10 px = 2 mm)",
    }
    labels = np.array([r.item.abnormal for r in ok], dtype=float)
    probs = np.array([r.probability for r in ok])
    cal = calibration_curve(labels, probs)
    m["calibration"] = {"ece": cal.ece, "brier": cal.brier, "prevalence": labels.mean()}
    secs = np.array([r.seconds for r in results])
    m["speed_one_thread"] = {
        "ms_median_per_image": float(np.median(secs) * 1000),
        "ms_p95_per_image": float(np.percentile(secs, 95) * 1000),
        "note": "1024x1024 PNG, two per study: decode + checks + preprocess + ONNX + heads + marks",
    }
    committed = run(MammographyAlgorithm(), items, -1)
    c_ok = [r for r in committed if not r.refused]
    m["committed_model_on_its_training_images (resubstitution, NOT an accuracy figure)"] = {
        "auroc_resubstitution": auroc(
            np.array([r.item.abnormal for r in c_ok]), np.array([r.probability for r in c_ok])
        ),
        "images": len(c_ok),
        "top_mark_hit_resubstitution": wilson(
            sum(_hit(r.prediction, r.item, 1) for r in c_ok if r.item.lesions),
            sum(1 for r in c_ok if r.item.lesions),
        ).as_tuple(),
    }
    _plots(ok, by_pair, out)
    _examples(ok, out)
    (out / "metrics.json").write_text(json.dumps(m, indent=2, default=float) + "\n")
    _print(m)
    return m


def _plots(ok: list[Result], by_pair: dict[int, list[Result]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    curves: list[tuple[str, list[tuple[float, bool]]]] = [
        ("image: abnormal vs normal", [(r.probability, bool(r.item.abnormal)) for r in ok]),
        (
            "image: malignant vs normal",
            [(r.probability, r.item.label == "malignant") for r in ok if r.item.label != "benign"],
        ),
        (
            "woman: max of both breasts",
            [
                (max(r.probability for r in rs), bool(max(r.item.abnormal for r in rs)))
                for rs in by_pair.values()
            ],
        ),
    ]
    for label, pairs in curves:
        scores = np.array([p for p, _ in pairs])
        labels = np.array([y for _, y in pairs], dtype=bool)
        fpr, tpr, _ = roc_points(labels, scores)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auroc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("radsight-mmg ROC, patient-pair cross-validation")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)


def _examples(ok: list[Result], out: Path) -> None:
    """Held-out images with the annotation (green) and the model's marks (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    picks = []
    for label, qs in (
        ("malignant", (0.75, 0.25)),
        ("benign", (0.75, 0.25)),
        ("normal", (0.5, 0.9)),
    ):
        cands = sorted(
            (r for r in ok if r.item.label == label and (r.item.lesions or label == "normal")),
            key=lambda r: r.probability,
        )
        picks += [cands[int(q * (len(cands) - 1))] for q in qs]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8.6))
    for ax, r in zip(axes.T.ravel(), picks, strict=False):
        ax.imshow(read_gray(r.item.path), cmap="gray")
        for les in r.item.lesions:
            ax.add_patch(Circle((les.x, les.y), les.radius, fill=False, ec="lime", lw=1.2))
        assert r.prediction is not None
        for j, mk in enumerate(r.prediction.marks["all"]):
            ax.add_patch(
                Circle(
                    (mk.x, mk.y),
                    mk.radius,
                    fill=False,
                    ec="red",
                    lw=2 if j == 0 else 1,
                    ls="-" if j == 0 else "--",
                )
            )
        ax.set_title(
            f"{r.item.refnum} {r.item.label} {'/'.join(r.item.classes) or ''}: "
            f"p={r.probability:.2f}",
            fontsize=9,
        )
        ax.axis("off")
    fig.suptitle(
        "Held-out images (fold heads). Red: the image's marks (thick: top mark); "
        "green: annotation. Images at fixed probability quantiles of their class. "
        "Not a diagnosis.",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=80)
    plt.close(fig)
