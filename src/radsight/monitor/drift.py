"""Drift (pure): live inputs and scores against the calibration test's (the baseline).

Features: the study score, and the input characteristics manufacturer (categorical),
pixel spacing, image size (rows x columns, as the larger side) and patient age. Numbers
are compared with the PSI (baseline deciles) and the two-sample KS test; categories with
the PSI. A feature drifts when its PSI reaches the bar and, for numbers, the KS p-value is
also under its bar: both a large and a statistically clear shift, so that a stable stream
stays silent.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from radsight.monitor.metrics import ks_test, psi, psi_categorical

NUMERIC = ("score", "pixel_spacing", "image_size", "patient_age")
CATEGORICAL = ("manufacturer",)


def _first_float(value: Any) -> float | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _age(birth: str, study: str) -> float | None:
    try:
        b = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        s = date(int(study[:4]), int(study[4:6]), int(study[6:8]))
    except (ValueError, TypeError, IndexError):
        return None
    return (s - b).days / 365.25


def live_features(row: dict[str, Any]) -> dict[str, Any]:
    """A stored result (score, dates, first instance's attributes) as drift features."""
    attrs = row.get("attributes") or {}
    spacing = _first_float(attrs.get("PixelSpacing") or attrs.get("ImagerPixelSpacing"))
    rows, cols = _first_float(attrs.get("Rows")), _first_float(attrs.get("Columns"))
    return {
        "score": row.get("score"),
        "manufacturer": str(attrs.get("Manufacturer", "") or ""),
        "pixel_spacing": spacing,
        "image_size": max(rows or 0, cols or 0) or None,
        "patient_age": _age(row.get("birth_date") or "", row.get("study_date") or ""),
    }


def baseline_features(case: dict[str, Any]) -> dict[str, Any]:
    """A calibration-test case (``summary["cases"]``) as drift features."""
    f = case.get("features") or {}
    size = max(f.get("rows") or 0, f.get("columns") or 0) or None
    return {
        "score": case.get("score"),
        "manufacturer": str(f.get("manufacturer", "") or ""),
        "pixel_spacing": f.get("pixel_spacing"),
        "image_size": size,
        "patient_age": f.get("patient_age"),
    }


def compare(
    baseline: list[dict[str, Any]],
    current: list[dict[str, Any]],
    psi_bar: float = 0.25,
    ks_p_bar: float = 0.01,
    min_values: int = 30,
) -> list[dict[str, Any]]:
    """One row per feature with enough values on both sides: PSI, KS and whether it drifts."""
    out = []
    for feature in (*NUMERIC, *CATEGORICAL):
        b = [x[feature] for x in baseline if x.get(feature) not in (None, "")]
        c = [x[feature] for x in current if x.get(feature) not in (None, "")]
        if len(b) < min_values or len(c) < min_values:
            continue
        if feature in CATEGORICAL:
            value = psi_categorical(b, c)
            out.append(
                {
                    "feature": feature,
                    "psi": round(value, 4),
                    "ks": None,
                    "ks_p": None,
                    "baseline_n": len(b),
                    "current_n": len(c),
                    "drift": value >= psi_bar,
                }
            )
            continue
        value = psi(b, c)
        stat, p = ks_test(b, c)
        out.append(
            {
                "feature": feature,
                "psi": round(value, 4),
                "ks": round(stat, 4),
                "ks_p": float(f"{p:.3g}"),
                "baseline_n": len(b),
                "current_n": len(c),
                "drift": value >= psi_bar and p < ks_p_bar,
            }
        )
    return out
