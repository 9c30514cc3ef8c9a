"""Evaluate the exported chest CT lesion model through the platform's own code.

Each Inf-Net slice goes through :func:`radsight.algorithms.ct_chest.segment_slices`
(letterbox, ONNX Runtime, map back to the slice) exactly as the platform runs every slice
of a CT; the 8-bit slice / 255 stands in for the lung-window image. Prints the figures,
writes ``metrics.json`` and PNG figures to ``out``.

Figures: Dice per slice (mean over slices, the Inf-Net paper's convention) and pooled over
all pixels, each with a 95 % percentile bootstrap interval over slices; pixel sensitivity
and precision; how much of the ground-glass and of the consolidation area is found; the
share of slices with Dice >= 0.5 (Wilson interval).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from radsight.monitor.metrics import case_bootstrap, wilson
from radsight_train import OFFLINE_LIMITS
from radsight_train.data import read_gray, read_mask

log = logging.getLogger(__name__)
SEED = 20240601
SUBDIR = Path("ct-chest") / "covid-semiseg-infnet"


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    denominator = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / denominator) if denominator else 1.0


def bootstrap(
    values: np.ndarray, stat: Callable[[np.ndarray], float], n_boot: int
) -> tuple[float, float, float]:
    """``stat`` of the slice indices and its 95 % percentile bootstrap interval over slices
    (:func:`radsight.monitor.metrics.case_bootstrap`, seed SEED)."""
    return case_bootstrap(len(values), stat, n_boot, SEED).as_tuple()


def _slices(data_root: Path, split: str) -> list[dict]:
    base = data_root / SUBDIR / split
    out = []
    for p in sorted((base / "images").glob("*.jpg"), key=lambda q: int(q.stem)):
        item = {"id": p.stem, "image": p, "infection": base / "mask_infection" / f"{p.stem}.png"}
        for kind in ("ggo", "consolidation"):
            mask = base / f"mask_{kind}" / f"{p.stem}.png"
            item[kind] = mask if mask.exists() else None
        out.append(item)
    return out


def evaluate_split(data_root: Path, split: str, n_boot: int, limit: int = 0) -> dict:
    from radsight.algorithms.ct_chest import CONFIG, segment_slices

    threshold = float(CONFIG.get("lesion_threshold", 0.5))
    items = _slices(data_root, split)
    if limit:
        items = items[:: max(1, len(items) // limit)]
    rows = []
    for item in items:
        img = read_gray(item["image"]) / 255.0
        t0 = time.perf_counter()
        (prob,) = segment_slices([img])
        seconds = time.perf_counter() - t0
        pred = prob >= threshold
        truth = read_mask(item["infection"]) > 0.5
        row = {
            "id": item["id"],
            "dice": dice(pred, truth),
            "tp": int((pred & truth).sum()),
            "pred": int(pred.sum()),
            "truth": int(truth.sum()),
            "seconds": seconds,
            "truth_fraction": float(truth.mean()),
            "pred_fraction": float(pred.mean()),
        }
        for kind in ("ggo", "consolidation"):
            if item[kind] is not None:
                m = read_mask(item[kind]) > 0.5
                row[f"{kind}_px"], row[f"{kind}_found"] = int(m.sum()), int((pred & m).sum())
        rows.append(row)
    d = np.array([r["dice"] for r in rows])
    tp, pr, tr = (np.array([r[k] for r in rows], np.float64) for k in ("tp", "pred", "truth"))

    def pooled(idx: np.ndarray) -> float:
        return float(2 * tp[idx].sum() / (pr[idx].sum() + tr[idx].sum()))

    result = {
        "split": split,
        "slices": len(rows),
        "threshold": threshold,
        "mean_dice": bootstrap(d, lambda i: float(d[i].mean()), n_boot),
        "median_dice": float(np.median(d)),
        "pooled_dice": bootstrap(d, pooled, n_boot),
        "sensitivity": bootstrap(d, lambda i: float(tp[i].sum() / tr[i].sum()), n_boot),
        "precision": bootstrap(d, lambda i: float(tp[i].sum() / max(1.0, pr[i].sum())), n_boot),
        "slices_dice_ge_0.5": wilson(int((d >= 0.5).sum()), len(d)).as_tuple(),
        "area_fraction_mae": float(
            np.mean([abs(r["pred_fraction"] - r["truth_fraction"]) for r in rows])
        ),
        "ms_per_slice_median": 1000 * float(np.median([r["seconds"] for r in rows])),
        "per_slice": rows,
    }
    for kind in ("ggo", "consolidation"):
        have = [r for r in rows if r.get(f"{kind}_px")]
        if have:
            px = np.array([r[f"{kind}_px"] for r in have], np.float64)
            found = np.array([r[f"{kind}_found"] for r in have], np.float64)

            def share(i: np.ndarray, px: np.ndarray = px, found: np.ndarray = found) -> float:
                return float(found[i].sum() / px[i].sum())

            result[f"{kind}_found"] = bootstrap(px, share, n_boot)
    return result


def _fmt(value: object) -> str:
    if isinstance(value, tuple | list) and len(value) == 3:
        return f"{value[0]:.3f} (95% CI {value[1]:.3f}-{value[2]:.3f})"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def examples_figure(data_root: Path, out: Path, ids: list[str]) -> None:
    """Test slices with the truth (green) and the model's marks (red) outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radsight.algorithms.ct_chest import CONFIG, segment_slices

    base = data_root / SUBDIR / "test"
    fig, axes = plt.subplots(2, (len(ids) + 1) // 2, figsize=(3.2 * ((len(ids) + 1) // 2), 6.6))
    for ax, sid in zip(axes.ravel(), ids, strict=False):
        img = read_gray(base / "images" / f"{sid}.jpg") / 255.0
        truth = read_mask(base / "mask_infection" / f"{sid}.png") > 0.5
        (prob,) = segment_slices([img])
        pred = prob >= float(CONFIG.get("lesion_threshold", 0.5))
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.contour(truth, levels=[0.5], colors="lime", linewidths=1.0)
        ax.contour(pred, levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(f"test/{sid}: Dice {dice(pred, truth):.2f}", fontsize=9)
        ax.axis("off")
    for ax in axes.ravel()[len(ids) :]:
        ax.axis("off")
    fig.suptitle("Inf-Net test slices: truth (green), radsight-ct-chest (red)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=90)
    plt.close(fig)


def platform_figure(data_root: Path, out: Path) -> None:
    """The lung mask on a real chest CT slice, and the marks on the synthetic phantom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pydicom

    from radsight.algorithms.contract import ImageInput, StudyInput
    from radsight.algorithms.ct_chest import assess
    from radsight.algorithms.ct_chest.lungs import lung_mask
    from radsight.algorithms.ct_chest.phantom import chest_phantom
    from radsight.algorithms.ct_volume import LUNG, window
    from radsight.dicom.pixels import frames_for_analysis

    fig, axes = plt.subplots(1, 2, figsize=(9, 5.3))
    sample = (
        data_root
        / "dicom-samples"
        / "orthanc-tests"
        / "CT1_J2KI_JPEG2000Lossy_1.2.840.10008.1.2.4.91.dcm"
    )
    if sample.exists():
        ds = pydicom.dcmread(sample)
        ((_, hu),) = frames_for_analysis(ds, **OFFLINE_LIMITS)
        hu = np.maximum(hu, -1024)
        sp = [float(v) for v in ds.PixelSpacing]
        lungs = lung_mask(hu[None], (5.0, sp[0], sp[1]))
        lung_px = np.kron(lungs.region[0], np.ones((lungs.step, lungs.step), bool))
        axes[0].imshow(window(hu, LUNG), cmap="gray", vmin=0, vmax=1)
        axes[0].contour(lung_px, levels=[0.5], colors="cyan", linewidths=1.0)
        axes[0].set_title(
            f"real chest CT slice (NEMA CT1): lung region\n{100 * lungs.slice_fraction()[0]:.0f} % "
            "of the body cross-section",
            fontsize=9,
        )
    axes[0].axis("off")
    hu = chest_phantom(40, 512, seed=1)
    images = tuple(
        ImageInput(
            "2.25.1", "2.25.1.1", f"2.25.1.1.{k}", "1.2.840.10008.5.1.4.1.1.2", hu[k],
            modality="CT", body_part_examined="CHEST", pixel_spacing=(0.7, 0.7),
            attributes={
                "ImagePositionPatient": [0.0, 0.0, -2.5 * k],
                "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            },
        )
        for k in range(hu.shape[0])
    )  # fmt: skip
    result = assess(StudyInput("2.25.1", "ct-chest", images))
    k = 22
    axes[1].imshow(window(hu[k], LUNG), cmap="gray", vmin=0, vmax=1)
    for region in result.regions:
        if region.sop_instance_uid == images[k].sop_instance_uid:
            xs, ys = zip(*region.points, strict=True)
            axes[1].plot(xs, ys, color="red", linewidth=1.2)
    lung = np.kron(result.lungs.region[k], np.ones((result.lungs.step,) * 2, bool))
    axes[1].contour(lung, levels=[0.5], colors="cyan", linewidths=0.8)
    axes[1].set_title(
        f"synthetic phantom, slice {k + 1}/40: marks (red), lungs (cyan)\n"
        f"{100 * result.share:.1f} % of lung involved: CT-{result.grade}",
        fontsize=9,
    )
    axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(out / "platform.png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def evaluate(data_root: Path, out: Path, n_boot: int = 2000, limit: int = 0) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out.mkdir(parents=True, exist_ok=True)
    metrics = {s: evaluate_split(data_root, s, n_boot, limit) for s in ("test", "train")}
    for split, m in metrics.items():
        print(f"{split}: {m['slices']} slices, threshold {m['threshold']}")
        for key in (
            "mean_dice",
            "median_dice",
            "pooled_dice",
            "sensitivity",
            "precision",
            "slices_dice_ge_0.5",
            "ggo_found",
            "consolidation_found",
            "area_fraction_mae",
            "ms_per_slice_median",
        ):
            if key in m:
                print(f"  {key}: {_fmt(m[key])}")
    test = sorted(metrics["test"]["per_slice"], key=lambda r: r["dice"])
    picks = [test[i]["id"] for i in np.linspace(0, len(test) - 1, 6).round().astype(int)]
    examples_figure(data_root, out, picks)
    platform_figure(data_root, out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log.info("wrote %s", out / "metrics.json")
    return metrics
