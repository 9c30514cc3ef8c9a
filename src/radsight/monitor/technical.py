"""Technical monitoring (pure): output defects, failed jobs, turnaround per stage.

Output defects, checked on each analysed result's stored objects:

- ``sr_invalid``: the SR does not parse, is not a Comprehensive 3D SR, or does not read
  back as one in highdicom (PS3.3 A.35.13, TID 1500);
- ``wrong_study``: the SR or a Secondary Capture names another Study Instance UID than the
  study it is the result of;
- ``sc_count_mismatch``: the number of Secondary Captures differs from the number of frames
  the analysis job was given (one SC per analysed frame);
- ``delivery_failed``: a C-STORE of the result to a destination failed for good.

Job figures: ``failed`` and ``dead`` (dead-lettered) analysis jobs, and ``time_limit``
breaches: jobs stopped at their time limit plus studies slower than the turnaround budget.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
import pydicom

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
DEFECTS = ("sr_invalid", "wrong_study", "sc_count_mismatch", "delivery_failed")
STAGES = ("received_to_ready", "ready_to_analysed", "analysed_to_delivered", "received_to_done")


def check_sr(sr: bytes, study_instance_uid: str) -> list[str]:
    """Defects of one SR object: ``sr_invalid`` and/or ``wrong_study``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(sr))
    except Exception:  # any parse failure is the defect we count
        return ["sr_invalid"]
    defects = []
    if str(ds.get("StudyInstanceUID", "")) != study_instance_uid:
        defects.append("wrong_study")
    if str(ds.get("SOPClassUID", "")) != COMPREHENSIVE_3D_SR or "ContentSequence" not in ds:
        return ["sr_invalid", *defects]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd.sr.Comprehensive3DSR.from_dataset(ds, copy=False)
    except Exception:
        defects.insert(0, "sr_invalid")
    return defects


def check_sc_header(sc: bytes, study_instance_uid: str) -> list[str]:
    try:
        ds = pydicom.dcmread(io.BytesIO(sc), stop_before_pixels=True)
    except Exception:
        return ["sc_invalid"]
    return [] if str(ds.get("StudyInstanceUID", "")) == study_instance_uid else ["wrong_study"]


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


def stage_times(row: dict[str, Any]) -> dict[str, float | None]:
    done = row.get("delivered_at") or row.get("analysed_at")
    return {
        "received_to_ready": _seconds(row["received_at"], row["ready_at"]),
        "ready_to_analysed": _seconds(row["ready_at"], row["analysed_at"]),
        "analysed_to_delivered": _seconds(row["analysed_at"], row.get("delivered_at")),
        "received_to_done": _seconds(row["received_at"], done),
    }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}  # type: ignore[dict-item]
    a = np.asarray(values)
    return {
        "n": len(a),
        "median": round(float(np.median(a)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
    }


def summarise(
    results: list[dict[str, Any]],
    defects: dict[int, list[str]],
    job_counts: list[tuple],
    delivery_failures: list[tuple],
    budget_s: float,
    org_names: dict[int, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Counts and rates per (algorithm version, organisation), and turnaround per stage."""
    org_names = org_names or {}
    groups: dict[tuple[str, str, int], dict[str, Any]] = defaultdict(
        lambda: {
            "results": 0,
            **{d: 0 for d in DEFECTS},
            "jobs": 0,
            "failed": 0,
            "dead": 0,
            "time_limit": 0,
            "stage_times": defaultdict(list),
        }
    )
    for row in results:
        g = groups[(row["algorithm_name"], row["algorithm_version"], row["organisation_id"])]
        g["results"] += 1
        for d in set(defects.get(row["result_id"], [])):
            if d in g:
                g[d] += 1
        times = stage_times(row)
        for stage, value in times.items():
            if value is not None:
                g["stage_times"][stage].append(value)
        if (times["received_to_done"] or 0) > budget_s:
            g["time_limit"] += 1
    for name, version, org, _result_id in delivery_failures:
        groups[(name, version, org)]["delivery_failed"] += 1
    for kind, name, version, org, state, error_code, n in job_counts:
        if kind != "analyse":
            continue
        g = groups[(name, version, org)]
        g["jobs"] += n
        if state in ("failed", "dead"):
            g[state] += n
        if error_code == "algorithm_timeout":
            g["time_limit"] += n
    rows: list[dict[str, Any]] = []
    all_times: dict[str, list[float]] = defaultdict(list)
    for (name, version, org), g in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)
    ):
        n = max(1, g["results"])
        jobs = max(1, g["jobs"])
        for stage, values in g["stage_times"].items():
            all_times[stage] += values
        rows.append(
            {
                "algorithm_name": name,
                "algorithm_version": version,
                "organisation_id": org,
                "organisation": org_names.get(org, ("", ""))[0],
                "results": g["results"],
                "jobs": g["jobs"],
                **{d: g[d] for d in DEFECTS},
                "failed": g["failed"],
                "dead": g["dead"],
                "time_limit": g["time_limit"],
                "rates": {
                    **{d: round(g[d] / n, 4) for d in DEFECTS},
                    "failed": round(g["failed"] / jobs, 4),
                    "dead": round(g["dead"] / jobs, 4),
                    "time_limit": round(g["time_limit"] / n, 4),
                },
                "turnaround_s": {st: _quantiles(g["stage_times"].get(st, [])) for st in STAGES},
            }
        )
    totals = {
        k: sum(r[k] for r in rows)
        for k in (*DEFECTS, "failed", "dead", "time_limit", "results", "jobs")
    }
    return {
        "groups": rows,
        "totals": totals,
        "turnaround_s": {st: _quantiles(all_times.get(st, [])) for st in STAGES},
        "budget_s": budget_s,
    }
