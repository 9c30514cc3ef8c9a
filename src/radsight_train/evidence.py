"""Shipped evidence: run a calibration test the way ``radsight evaluate`` does and write
its summary as the ``evidence.json`` an algorithm ships (:mod:`radsight.algorithms.evidence`).

    python -m radsight_train evidence radsight-cxr --reference DIR --out PATH
    python -m radsight_train evidence radsight-bright-region --synthetic 400 --out PATH

The summary is :func:`radsight.monitor.calibration.summarise`'s, judged by the default
acceptance rule, with each case reduced to its id, label, score and verdict (enough for
ROC figures and threshold picking; the drift baseline comes from a site's own tests).
"""

from __future__ import annotations

import datetime
import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

from radsight.admission import AcceptanceRule
from radsight.algorithms.contract import Algorithm
from radsight.monitor import calibration
from radsight.monitor.reference import read_reference
from radsight.operating_points import points_in_force

#: per-case fields kept in shipped evidence
CASE_FIELDS = ("id", "label", "score", "verdict")


def evidence_for(
    algorithm: Algorithm,
    reference: Path,
    *,
    measured_with: str,
    study_type: str | None = None,
    reference_name: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    ref = read_reference(reference)
    points = points_in_force(algorithm)
    results = calibration.run_cases(
        algorithm, ref.cases, points, study_type=study_type, total=len(ref.cases)
    )
    summary = calibration.summarise(
        algorithm.name,
        algorithm.version,
        reference_name or ref.name,
        results,
        points,
        AcceptanceRule(),
    )
    summary["cases"] = [{k: c[k] for k in CASE_FIELDS} for c in summary["cases"]]
    summary["measured_with"] = measured_with
    summary["measured_on"] = datetime.date.today().isoformat()
    if note:
        summary["note"] = note
    return summary


def synthetic_bright_reference(root: Path, n: int, seed: int = 20261207) -> Path:
    """``n`` synthetic DX studies, half with a bright round region (the positives), half
    without: the domain of the test algorithm ``radsight-bright-region``."""
    from pydicom.filebase import DicomBytesIO  # noqa: F401 - pydicom is a base dependency

    from radsight.dicom.synthetic import make_radiograph

    root.mkdir(parents=True, exist_ok=True)
    rows = ["study_instance_uid,label"]
    for i in range(n):
        positive = i % 2 == 0
        # inside a "lung field" (x 0.3 or 0.7), at varying heights
        spot = (0.3 if i % 4 == 0 else 0.7, 0.4 + 0.2 * ((i * 53) % 100) / 100, 0.1)
        ds = make_radiograph(
            bright_spot=spot if positive else None,
            seed=seed + i,
            patient_id=f"SYN-{i:04d}",
        )
        ds.save_as(root / f"{i:04d}.dcm", enforce_file_format=True)
        rows.append(f"{ds.StudyInstanceUID},{int(positive)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def main(
    algorithm: Algorithm,
    *,
    out: Path,
    reference: Path | None,
    synthetic: int,
    study_type: str | None,
    note: str,
    argv: list[str],
) -> dict[str, Any]:
    command = "python -m radsight_train " + shlex.join(argv)
    if synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            ref = synthetic_bright_reference(Path(tmp) / "synthetic", synthetic)
            evidence = evidence_for(
                algorithm,
                ref,
                measured_with=command,
                study_type=study_type,
                reference_name=f"synthetic bright-region studies ({synthetic}, "
                "radsight.dicom.synthetic)",
                note=note,
            )
    else:
        assert reference is not None
        evidence = evidence_for(
            algorithm, reference, measured_with=command, study_type=study_type, note=note
        )
    out.write_text(json.dumps(evidence, indent=1, sort_keys=True) + "\n")
    return evidence
