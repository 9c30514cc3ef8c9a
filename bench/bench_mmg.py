"""A four-view screening mammogram analysed end to end by radsight-mmg, as a worker does it.

Four MG files (L/R x CC/MLO) are written once to a temporary folder: the real GE Senographe
for-presentation header from ../shared/data/dicom-samples with a synthetic breast as its
pixels, at a detector's matrix (default 3328 x 4096, 14 bits stored; one view MONOCHROME1).
Each run then does what the analysis job does for a study
(:func:`radsight.pipeline.analyse.run_analysis` without the database): read the files,
decode them (Modality LUT, MONOCHROME1 inversion), check, analyse (ONNX Runtime, one
thread), and encode the SR and the four Secondary Captures to bytes. It prints the wall
time per stage and in total, median of ``--repeats`` runs after a warm-up, and the peak
resident memory. The peer is the platform's test algorithm (radsight-bright-region) on the
same files in the same run: the same I/O and encoding, a trivial analysis.

    python bench/bench_mmg.py [--rows 4096 --columns 3328 --repeats 5]

Goal (issue 6): <= 5 s per four-view study on this 2-core machine.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402

from radsight.config import DEFAULT_MAX_FRAME_PIXELS, DEFAULT_MAX_INSTANCE_PIXELS

LIMITS = {
    "max_frame_pixels": DEFAULT_MAX_FRAME_PIXELS,
    "max_instance_pixels": DEFAULT_MAX_INSTANCE_PIXELS,
}

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or REPO / ".." / "shared" / "data").resolve()
GOAL_S = 5.0


def write_study(folder: Path, rows: int, columns: int, bits: int) -> list[Path]:
    from tests.algorithms.test_mmg import mg_dataset, synthetic_breast

    paths = []
    top = (1 << bits) - 1
    views = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for i, (side, view_name) in enumerate(views):
        mass = (0.35, 0.45, 0.04) if side == "R" else None
        img = synthetic_breast(rows, columns, "right" if side == "R" else "left", mass, seed=i)
        ds = mg_dataset(
            "MG-Im-GE_Seno_1_ForPresentation.dcm",
            np.round(img * top).astype(np.uint16),
            side=side,
            view_name=view_name,
            photometric="MONOCHROME1" if i == 0 else "MONOCHROME2",
            bits_stored=bits,
            study=study,
            series=series,
        )
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def analyse_once(paths: list[Path], algorithm) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from pydicom.uid import generate_uid

    from radsight.pipeline.inputs import study_input_from
    from radsight.results.report import AnalysisReport
    from radsight.results.sc import build_secondary_captures
    from radsight.results.sr import build_measurement_report

    times = {}
    t = time.perf_counter()
    datasets = [pydicom.dcmread(p) for p in paths]
    times["read"] = time.perf_counter() - t
    t = time.perf_counter()
    study = study_input_from(datasets, "mmg", **LIMITS)
    times["decode"] = time.perf_counter() - t
    t = time.perf_counter()
    algorithm.check(study)
    analysis = algorithm.analyse(study)
    times["analyse"] = time.perf_counter() - t
    t = time.perf_counter()
    report = AnalysisReport.from_analysis(algorithm, analysis)
    sr = build_measurement_report(
        datasets, report, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid()
    )
    scs = build_secondary_captures(
        datasets,
        report,
        series_instance_uid=generate_uid(),
        sop_instance_uids=[generate_uid() for _ in datasets],
        **LIMITS,
    )
    for ds in [sr, *scs]:
        ds.save_as(io.BytesIO(), enforce_file_format=True)
    times["encode SR + 4 SC"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    times["score"] = analysis.study_score
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--columns", type=int, default=3328)
    parser.add_argument("--bits", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not (DATA / "dicom-samples" / "openrem-mg-dx-headers").is_dir():
        print(f"no MG headers under {DATA}; set RADSIGHT_SHARED_DATA", file=sys.stderr)
        return 2
    from radsight.algorithms.bright_region import BrightRegionAlgorithm
    from radsight.algorithms.mmg import MammographyAlgorithm

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_study(Path(tmp), args.rows, args.columns, args.bits)
        size_mib = sum(p.stat().st_size for p in paths) / 2**20
        results = {}
        for name, algorithm in (
            ("radsight-mmg", MammographyAlgorithm()),
            ("radsight-bright-region (peer: same I/O, trivial analysis)", BrightRegionAlgorithm()),
        ):
            analyse_once(paths, algorithm)  # warm-up: ONNX session, fonts, first allocations
            runs = [analyse_once(paths, algorithm) for _ in range(args.repeats)]
            results[name] = runs
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"four-view MG study: 4 x {args.columns}x{args.rows}, {args.bits} bits stored "
        f"({size_mib:.0f} MiB), {args.repeats} runs after a warm-up, ONNX Runtime 1 thread; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for name, runs in results.items():
        stages = [k for k in runs[0] if k not in ("total", "score")]
        parts = ", ".join(f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in stages)
        total = statistics.median(r["total"] for r in runs)
        worst = max(r["total"] for r in runs)
        print(f"{name}: median {total:.2f} s (max {worst:.2f}) = {parts} s")
    mmg = statistics.median(r["total"] for r in results["radsight-mmg"])
    verdict = "met" if mmg <= GOAL_S else "MISSED"
    print(f"goal <= {GOAL_S:.0f} s per four-view study: {verdict} ({mmg:.2f} s)")
    print(f"peak RSS of this process: {rss_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
