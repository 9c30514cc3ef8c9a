"""Charts as PNG bytes (matplotlib, Agg backend: no display, no network, no CDN)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def roc_png(summary: dict) -> bytes:
    roc = summary["roc"]
    auc = summary["auroc"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", c="#999", lw=1)
    ax.plot(
        roc["fpr"],
        roc["tpr"],
        c="#1f5fa8",
        lw=2,
        label=f"AUROC {auc['value']:.3f} ({auc['lower']:.3f}-{auc['upper']:.3f})",
    )
    op = summary.get("at_threshold")
    if op and op["specificity"]["value"] is not None and op["sensitivity"]["value"] is not None:
        ax.plot(
            1 - op["specificity"]["value"],
            op["sensitivity"]["value"],
            "o",
            c="#c0392b",
            label=f"threshold in force {summary['thresholds'].get('study', '')}",
        )
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def calibration_png(summary: dict) -> bytes:
    cal = summary["calibration"]
    bins = cal["bins"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", c="#999", lw=1, label="perfect calibration")
    ax.plot(
        [b[0] for b in bins],
        [b[1] for b in bins],
        "o-",
        c="#1f5fa8",
        label=f"ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}",
    )
    ax.set_xlabel("predicted probability (study score)")
    ax.set_ylabel("observed share of positives")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("Calibration curve")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def bar_png(
    title: str, labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str = ""
) -> bytes:
    """Grouped bars: one group per label, one bar per series."""
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    n = max(1, len(series))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, list(values), width=width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(list(labels), rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    if ylabel:
        ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def froc_png(summary: dict) -> bytes:
    """The FROC curve (lesion sensitivity against false-positive marks per case) with its
    bootstrap band and the point of the marks kept at the operating thresholds."""
    loc = summary["localisation"]
    froc = loc["froc"]
    curve, band = froc["curve"], froc["band"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.fill_between(
        band["fp_per_case"],
        band["lower"],
        band["upper"],
        step="post",
        color="#1f5fa8",
        alpha=0.15,
        lw=0,
        label=f"95% CI ({froc['bootstrap']['resamples']} case resamples)",
    )
    # the curve carries on flat past its last point: no lower threshold adds marks
    xs = [*curve["fp_per_case"], band["fp_per_case"][-1]]
    ys = [*curve["sensitivity"], curve["sensitivity"][-1]]
    ax.step(xs, ys, where="post", c="#1f5fa8", lw=2, label=f"{froc['lesions']} lesions")
    op = froc["at_threshold"]
    if op["sensitivity"]["value"] is not None:
        ax.plot(
            op["fp_per_case"]["value"],
            op["sensitivity"]["value"],
            "o",
            c="#c0392b",
            label="marks at the thresholds in force",
        )
    pg = loc["pointing_game"]
    ax.set_title(
        f"FROC; pointing game {pg['value']:.2f} ({pg['lower']:.2f}-{pg['upper']:.2f})",
        fontsize=10,
    )
    ax.set_xlabel("false-positive marks per case")
    ax.set_ylabel("lesion sensitivity")
    ax.set_xlim(0, band["fp_per_case"][-1])
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)
