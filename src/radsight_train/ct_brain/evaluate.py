"""Evaluate the brain CT haemorrhage model: CV figures, the real CQ500 cases, speed, pictures.

``python -m radsight_train evaluate ct-brain`` prints the figures, writes ``metrics.json``
and PNG figures to ``docs/models/ct-brain``:

- slice-level figures from the out-of-fold predictions saved by training (every slice was
  predicted by a model that never saw it): AUROC with a bootstrap CI, sensitivity and
  specificity at the operating threshold with Wilson CIs, calibration;
- the two real CQ500 DICOM cases through :class:`radsight.algorithms.ct_brain.BrainCTAlgorithm`
  exactly as the platform runs it (series selection, HU, ONNX Runtime on one thread);
- speed and peak memory of a 40-slice 512 x 512 study;
- pictures of the marks on the CQ500 slices, and of the synthetic collections that
  training paints on normal slices (``radsight_train.ct_brain.train.add_collections``).
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

import numpy as np
import pydicom

from radsight.algorithms.contract import ImageInput, StudyInput
from radsight.algorithms.ct_brain import CONFIG, BrainCTAlgorithm, SlicePrediction
from radsight.algorithms.ct_volume import BRAIN, assemble_volume, select_series, window
from radsight.monitor.metrics import auroc, auroc_ci, calibration_curve, roc_points, wilson
from radsight.pipeline.inputs import study_input_from
from radsight.results.report import AnalysisReport
from radsight_train import OFFLINE_LIMITS

log = logging.getLogger(__name__)

CQ500 = Path("ct-brain") / "cq500-samples"


def cv_figures() -> dict:
    cv = CONFIG["cv"]
    labels = np.array([p["label"] for p in cv["oof"]])
    probs = np.array([p["probability"] for p in cv["oof"]])
    folds = np.array([p["fold"] for p in cv["oof"]])
    auc, lo, hi = auroc_ci(labels, probs).as_tuple()
    t = float(CONFIG["thresholds"]["haemorrhage"])
    se = wilson(int((probs[labels == 1] >= t).sum()), int((labels == 1).sum())).as_tuple()
    sp = wilson(int((probs[labels == 0] < t).sum()), int((labels == 0).sum())).as_tuple()
    per_fold = [round(auroc(labels[folds == k], probs[folds == k]), 4) for k in range(cv["folds"])]
    cal = calibration_curve(labels, probs)
    return {
        "slices": len(labels),
        "auroc": auc,
        "ci": [lo, hi],
        "per_fold_auroc": per_fold,
        "threshold": t,
        "sensitivity": se,
        "specificity": sp,
        "ece": cal.ece,
        "brier": cal.brier,
        "calibration_table": cal.bins,
        # held-out normal slices with a synthetic collection painted on, against the same
        # slices as they are (written by training; absent for models trained without them)
        "synthetic_collections": cv.get("synthetic_collections", {}),
    }


def _case(paths: list[Path]) -> StudyInput:
    return study_input_from([pydicom.dcmread(p) for p in paths], "ct-brain", **OFFLINE_LIMITS)


def cq500_cases(data: Path, algorithm: BrainCTAlgorithm) -> dict:
    base = data / CQ500
    cases = {
        "CQ500-CT-0 series 6 (no ICH by 2 of 3 readers; 30 tilted slices)": sorted(
            (base / "CQ500-CT-0" / "series6_thin_0.625mm_every8th").glob("*.dcm")
        ),
        "CQ500-CT-310 (ICH, SDH; 3 of 3 readers; one slice)": [
            base / "CQ500-CT-310" / "CQ500-CT-310_series_5mm_inst021_uncompressed.dcm"
        ],
        "CQ500-CT-1 (ICH by 3 of 3 readers; its one slice, filed in CQ500-CT-0's folder)": [
            base / "CQ500-CT-0" / "series2_single_slice" / "CT_inst021.dcm"
        ],
        "CQ500-CT-310 JPEG 2000 copy": [
            base / "CQ500-CT-310" / "CQ500-CT-310_series_5mm_inst021_j2k_lossless.dcm"
        ],
    }
    out = {}
    for name, paths in cases.items():
        study = _case(paths)
        t0 = time.perf_counter()
        analysis = algorithm.analyse(study)
        seconds = time.perf_counter() - t0
        slices = algorithm.predict_slices(study)
        volume = assemble_volume(select_series(study.images, min_slices=1))
        out[name] = {
            "study_score": analysis.study_score,
            "positive": analysis.study_score >= algorithm.study_threshold,
            # marked at the declared point (the algorithm returns its candidate slices)
            "marked_slices": len(
                {
                    r.sop_instance_uid
                    for r in AnalysisReport.from_analysis(algorithm, analysis).findings[0].regions
                }
            ),
            "analysed_slices": len(slices),
            "slice_probabilities": [round(s.probability, 4) for s in slices],
            "gantry_tilt_deg": volume.gantry_tilt_deg,
            "seconds": round(seconds, 3),
        }
        log.info(
            "%s: score %.3f, %d slices in %.2f s", name, analysis.study_score, len(slices), seconds
        )
    return out


def synthetic_study(n: int = 40) -> StudyInput:
    """A 40-slice 512 x 512 head-sized phantom (skull ring, brain, noise) for speed."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512].astype(np.float32)
    r = np.sqrt(((xx - 256) / 170) ** 2 + ((yy - 256) / 205) ** 2)
    images = []
    for k in range(n):
        px = np.full((512, 512), -1000.0, np.float32)
        px[r <= 1.0] = 1200.0
        px[r <= 0.93] = 35.0
        px += rng.normal(0, 4, px.shape).astype(np.float32)
        images.append(
            ImageInput(
                "2.25.1",
                "2.25.1.1",
                f"2.25.1.1.{k}",
                "1.2.840.10008.5.1.4.1.1.2",
                px,
                modality="CT",
                pixel_spacing=(0.45, 0.45),
                attributes={
                    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                    "ImagePositionPatient": [-115.0, -115.0, 5.0 * k],
                    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
                },
            )
        )
    return StudyInput("2.25.1", "ct-brain", tuple(images))


def speed(algorithm: BrainCTAlgorithm) -> dict:
    study = synthetic_study()
    algorithm.analyse(study)  # warm-up: session creation
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        algorithm.analyse(study)
        times.append(time.perf_counter() - t0)
    return {
        "study": "40 slices 512x512 (synthetic phantom), analyse (input checks included)",
        "seconds_median": round(float(np.median(times)), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _draw_box(rgb: np.ndarray, bounds: tuple[float, float, float, float], width: int = 3) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in bounds)
    h, w = rgb.shape[:2]
    x0, x1 = max(0, x0), min(w - 1, x1)
    y0, y1 = max(0, y0), min(h - 1, y1)
    colour = np.array([255, 200, 0], np.uint8)
    rgb[y0 : y0 + width, x0:x1] = colour
    rgb[y1 - width + 1 : y1 + 1, x0:x1] = colour
    rgb[y0:y1, x0 : x0 + width] = colour
    rgb[y0:y1, x1 - width + 1 : x1 + 1] = colour


def pictures(data: Path, algorithm: BrainCTAlgorithm, out: Path) -> list[str]:
    from PIL import Image, ImageDraw

    base = data / CQ500
    written = []
    for name, paths in (
        (
            "cq500-ct-310",
            [base / "CQ500-CT-310" / "CQ500-CT-310_series_5mm_inst021_uncompressed.dcm"],
        ),
        (
            "cq500-ct-0",
            sorted((base / "CQ500-CT-0" / "series6_thin_0.625mm_every8th").glob("*.dcm")),
        ),
        ("cq500-ct-0-series2", [base / "CQ500-CT-0" / "series2_single_slice" / "CT_inst021.dcm"]),
    ):
        study = _case(paths)
        volume = assemble_volume(select_series(study.images, min_slices=1))
        slices = algorithm.predict_slices(study)
        top: SlicePrediction = max(slices, key=lambda s: s.probability)
        grey = np.round(window(volume.hu[top.index], BRAIN) * 255).astype(np.uint8)
        rgb = np.stack([grey] * 3, axis=-1)
        _draw_box(rgb, top.bounds)
        im = Image.fromarray(rgb)
        ImageDraw.Draw(im).text(
            (8, 8),
            f"{name} slice {top.index + 1}/{len(volume.hu)}: ICH p={top.probability:.2f} "
            f"(threshold {algorithm.study_threshold:.2f}). "
            + (
                "AI mark, not a diagnosis."
                if top.probability >= algorithm.study_threshold
                else "Below threshold: no mark in the SC; box = where the map peaks."
            ),
            fill=(255, 255, 0),
        )
        path = out / f"{name}-top-slice.png"
        im.save(path)
        written.append(path.name)
    return written


def roc_figure(out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cv = CONFIG["cv"]
    labels = np.array([p["label"] for p in cv["oof"]])
    probs = np.array([p["probability"] for p in cv["oof"]])
    fpr, tpr, _ = roc_points(labels, probs)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.plot(fpr, tpr, lw=2)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"Slice-level ICH, {cv['folds']}-fold CV (AUROC {cv['auroc']:.3f})")
    fig.tight_layout()
    fig.savefig(out / "roc-cv.png")
    plt.close(fig)
    return "roc-cv.png"


def synthetic_figure(data: Path, out: Path, count: int = 4) -> str:
    """Brain-window pictures of normal training slices as they are and with a synthetic
    chronic and acute collection, as training paints them (fixed seed; no scores: the
    shipped model was trained on these slices)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radsight_train.ct_brain.train import (
        eval_channels,
        load_cache,
        read_items,
        synthetic_channels,
    )

    normals = [it for it in read_items(data) if it[1] == 0][::25][:count]
    cache = load_cache(normals)
    idx = list(range(len(normals)))
    rows = [
        (
            "as is",
            np.stack(
                [
                    eval_channels(*(cache[k][i, 0].numpy() for k in ("g", "head", "rim")))
                    for i in idx
                ]
            ),
        ),
        ("chronic (2-25 HU)", synthetic_channels(cache, idx, True, 7).numpy()),
        ("acute (55-80 HU)", synthetic_channels(cache, idx, False, 7).numpy()),
    ]
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(2 * len(idx), 2.1 * len(rows)), dpi=100)
    for r, (title, x) in enumerate(rows):
        for c in idx:
            ax = axes[r, c]
            ax.imshow(x[c, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title)
            if r == 0:
                ax.set_title(normals[c][0].stem, fontsize=9)
    fig.suptitle("Synthetic extra-axial collections on normal training slices (brain window)")
    fig.tight_layout()
    fig.savefig(out / "synthetic-collections.png")
    plt.close(fig)
    return "synthetic-collections.png"


def evaluate(data: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    algorithm = BrainCTAlgorithm()
    metrics: dict = {"cv": cv_figures()}
    cv = metrics["cv"]
    print(
        f"CV slice AUROC {cv['auroc']:.3f} (95% CI {cv['ci'][0]:.3f}-{cv['ci'][1]:.3f}); "
        f"per fold {cv['per_fold_auroc']}"
    )
    print(
        "at threshold {t:.3f}: sensitivity {s[0]:.3f} ({s[1]:.3f}-{s[2]:.3f}), "
        "specificity {p[0]:.3f} ({p[1]:.3f}-{p[2]:.3f}); ECE {e:.3f}, Brier {b:.3f}".format(
            t=cv["threshold"], s=cv["sensitivity"], p=cv["specificity"], e=cv["ece"], b=cv["brier"]
        )
    )
    for kind, fig in cv["synthetic_collections"].items():
        print(
            f"held-out normals with a synthetic {kind} collection vs as they are: AUROC "
            f"{fig['auroc_vs_normals']:.3f} ({fig['ci'][0]:.3f}-{fig['ci'][1]:.3f}), "
            f"sensitivity {fig['sensitivity']:.3f} at the threshold ({fig['n']} slices)"
        )
    if (data / CQ500).is_dir():
        metrics["cq500"] = cq500_cases(data, algorithm)
        for name, res in metrics["cq500"].items():
            print(
                f"{name}: study score {res['study_score']:.3f}, {res['analysed_slices']} slices, "
                f"{res['marked_slices']} marked, {res['seconds']:.2f} s"
            )
        metrics["pictures"] = pictures(data, algorithm, out)
    metrics["speed"] = speed(algorithm)
    print(f"speed: {metrics['speed']}")
    metrics["roc_figure"] = roc_figure(out)
    metrics["synthetic_figure"] = synthetic_figure(data, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return metrics
