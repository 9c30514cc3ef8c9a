"""Shipped evidence: run a calibration test the way ``radsight evaluate`` does and write
its summary as the ``evidence.json`` an algorithm ships (:mod:`radsight.algorithms.evidence`).

    python -m radsight_train evidence radsight-cxr --card-set cxr-test --out PATH
    python -m radsight_train evidence radsight-cxr --reference DIR --out PATH
    python -m radsight_train evidence radsight-bright-region --synthetic 400 --out PATH

The reference is a folder as ``radsight evaluate`` reads it (``labels.csv``), N synthetic
bright-region studies, or a model card's own test split in the shared data
(:data:`CARD_SETS`: a temporary reference folder whose ``labels.csv`` lists the split's
images through links into the data, so nothing is copied).

The summary is :func:`radsight.monitor.calibration.summarise`'s, judged by the default
acceptance rule, with each case reduced to its id, label, score and verdict (enough for
ROC figures and threshold picking; the drift baseline comes from a site's own tests, which
keep each case's input features). Each case is one line of the file.
"""

from __future__ import annotations

import csv
import datetime
import json
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radsight.admission import AcceptanceRule, evidence_problems
from radsight.algorithms.contract import Algorithm
from radsight.monitor import calibration
from radsight.monitor.reference import read_reference
from radsight.operating_points import points_in_force
from radsight_train import OFFLINE_LIMITS

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
    """A calibration test of ``algorithm`` on the reference set at ``reference`` as shipped
    evidence: :func:`radsight.monitor.calibration.summarise`'s summary at the operating
    points in force, judged by the default acceptance rule, cases without input features,
    with how and when it was measured and ``note`` (what the set is)."""
    ref = read_reference(reference)
    rule = AcceptanceRule()
    points = points_in_force(algorithm)
    results = calibration.run_cases(
        algorithm,
        ref.cases,
        points,
        study_type=study_type,
        total=len(ref.cases),
        max_frame_pixels=OFFLINE_LIMITS["max_frame_pixels"],
        max_instance_pixels=OFFLINE_LIMITS["max_instance_pixels"],
    )
    summary = calibration.summarise(
        algorithm.name,
        algorithm.version,
        reference_name or ref.name,
        results,
        points,
        rule,
    )
    # the admission's judgement (set size and class balance too, not only the AUROC), so
    # that the file's verdict is the one a fresh install reaches under the default rule
    summary["failures"] = evidence_problems(summary, rule)
    summary["passed"] = not summary["failures"]
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


@dataclass(frozen=True)
class CardSet:
    """A model card's test split in the shared data, as a reference set."""

    #: what the data is, for the error when it is absent
    what: str
    #: folders under the data root that must exist
    folders: tuple[str, ...]
    #: writes ``labels.csv`` (and links into the data) in a folder; returns the reference's
    #: name and the evidence's note
    build: Callable[[Path, Path], tuple[str, str]]

    def missing(self, data: Path) -> list[Path]:
        return [data / f for f in self.folders if not (data / f).is_dir()]


def cxr_test_reference(data: Path, root: Path) -> tuple[str, str]:
    """The internal test splits of docs/models/cxr.md ("Classification"): COVID-QU-Ex adult
    test (Normal, Non-COVID opacity, COVID-19) and Kermany pediatric test, split exactly as
    ``python -m radsight_train evaluate cxr`` splits them (:mod:`radsight_train.data`)."""
    from radsight_train.data import adult_items, pediatric_items

    root.mkdir(parents=True, exist_ok=True)
    sets = {
        "adult": (data / "cxr" / "covid-qu-ex-adult", adult_items(data)),
        "pediatric": (data / "cxr" / "kermany-pediatric-pneumonia-224", pediatric_items(data)),
    }
    counts: dict[tuple[str, str], int] = {}
    with (root / "labels.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "source", "class"])
        for source, (base, items) in sets.items():
            (root / source).symlink_to(base, target_is_directory=True)
            for item in items:
                if item.split != "test":
                    continue
                rel = item.path.relative_to(base).as_posix()
                out.writerow([f"{source}/{rel}", item.label, source, item.subgroup])
                counts[source, item.subgroup] = counts.get((source, item.subgroup), 0) + 1

    def n(source: str, cls: str) -> int:
        return counts.get((source, cls), 0)

    adult = n("adult", "Normal") + n("adult", "Non-COVID") + n("adult", "COVID-19")
    pediatric = n("pediatric", "normal") + n("pediatric", "bacteria") + n("pediatric", "virus")
    name = (
        f"radsight-cxr internal test splits ({adult + pediatric} images): COVID-QU-Ex adult "
        f"official test ({n('adult', 'Normal')} Normal, {n('adult', 'Non-COVID')} Non-COVID "
        f"opacity, {n('adult', 'COVID-19')} COVID-19) and Kermany pediatric official test "
        f"({n('pediatric', 'normal')} normal, {n('pediatric', 'bacteria')} bacterial and "
        f"{n('pediatric', 'virus')} viral pneumonia)"
    )
    note = (
        "Internal test splits (docs/models/cxr.md, Classification): the same sources as the "
        "training data, never used for training or tuning, but not an external test. "
        "Positive: Non-COVID opacity, COVID-19 or pediatric pneumonia; negative: Normal. "
        "Source-confounded parts: the adult COVID-19 images come from other hospitals than "
        "the adult Normal ones (RSNA), so COVID-19 vs Normal is inflated (the honest adult "
        "figure is Non-COVID vs Normal, one source); Kermany images were squashed to "
        "224 px. Each PNG/JPEG is wrapped in a DX chest data set as `radsight evaluate` "
        "wraps a reference image; per-source figures are in the subgroups."
    )
    return name, note


#: model cards' test splits that ``--card-set`` names
CARD_SETS: dict[str, CardSet] = {
    "cxr-test": CardSet(
        "COVID-QU-Ex adult and Kermany pediatric chest radiograph",
        ("cxr/covid-qu-ex-adult", "cxr/kermany-pediatric-pneumonia-224"),
        cxr_test_reference,
    ),
}


def write_evidence(path: Path, evidence: dict[str, Any]) -> None:
    """The evidence as JSON that stays small and reads well in a diff: an object that holds
    objects or lists is spread over lines, anything else (a figure with its CI, the ROC's
    coordinates) is one line, and so is each element of a list of objects (a case)."""
    path.write_text(_json(evidence, 0) + "\n")


def _json(value: Any, level: int) -> str:
    if isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values()):
        pad = " " * (level + 1)
        items = [f"{pad}{json.dumps(k)}: {_json(value[k], level + 1)}" for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        pad = " " * (level + 1)
        items = [pad + json.dumps(v, sort_keys=True) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * level + "]"
    return json.dumps(value, sort_keys=True)


def main(
    algorithm: Algorithm,
    *,
    out: Path,
    reference: Path | None,
    synthetic: int,
    study_type: str | None,
    note: str,
    argv: list[str],
    card_set: str | None = None,
    data: Path | None = None,
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
    elif card_set is not None:
        assert data is not None
        with tempfile.TemporaryDirectory() as tmp:
            ref = Path(tmp) / card_set
            name, card_note = CARD_SETS[card_set].build(data, ref)
            evidence = evidence_for(
                algorithm,
                ref,
                measured_with=command,
                study_type=study_type,
                reference_name=name,
                note=f"{card_note} {note}".strip(),
            )
    else:
        assert reference is not None
        evidence = evidence_for(
            algorithm, reference, measured_with=command, study_type=study_type, note=note
        )
    write_evidence(out, evidence)
    return evidence
