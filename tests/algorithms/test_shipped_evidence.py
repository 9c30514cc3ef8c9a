"""The evidence each built-in algorithm ships (issue 14, point 4): it parses, it names its
exact version, the acceptance rule judges it as its model card says, its figures are the
card's, the wheel carries it; and ``python -m radsight_train evidence`` writes such a file.

The shipped files are committed, so these tests need no data; the end-to-end run on the
chest radiograph test split needs ../shared/data and skips without it.
"""

from __future__ import annotations

import copy
import csv
import json
import tomllib
from pathlib import Path

import pytest

from radsight.admission import AcceptanceRule, evidence_problems
from radsight.algorithms.evidence import load_evidence
from radsight.algorithms.registry import Registry
from radsight_train.__main__ import main as train_main
from radsight_train.evidence import CARD_SETS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "radsight"
MODELS = REPO / "docs" / "models"

#: what the default acceptance rule says about each built-in's shipped evidence
EXPECTED: dict[str, list[str]] = {
    "radsight-bright-region": [],
    "radsight-cxr": [],
    "radsight-flg": [],
    "radsight-mmg": [
        "the reference set has 242 studies; the acceptance rule needs at least 400",
        "AUROC 0.648 is below the bar 0.81",
    ],
    "radsight-ct-brain": [
        "the reference set has 200 studies; the acceptance rule needs at least 400",
    ],
    "radsight-ct-chest": [
        "the reference set has 48 studies; the acceptance rule needs at least 400",
        "0.0% of the studies are negative; the acceptance rule needs at least 10% in each class",
        "the evaluation has no AUROC",
    ],
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_entry_points()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_built_in_ships_evidence_of_its_exact_version(registry: Registry, name: str) -> None:
    algorithm = registry.resolve(name)
    evidence = algorithm.shipped_evidence()
    assert evidence is not None
    assert evidence["algorithm"] == {"name": name, "version": algorithm.version}
    assert evidence["reference"] and evidence["measured_with"]
    assert evidence["num_studies"] == evidence["positives"] + evidence["negatives"]


@pytest.mark.parametrize(("name", "problems"), sorted(EXPECTED.items()))
def test_the_default_rule_judges_the_shipped_evidence(
    registry: Registry, name: str, problems: list[str]
) -> None:
    evidence = registry.resolve(name).shipped_evidence()
    assert evidence is not None
    assert evidence_problems(evidence, AcceptanceRule()) == problems
    # the file's own record agrees (a fresh install ignores it and judges by the rule)
    assert (evidence["passed"], evidence["failures"]) == (not problems, problems)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_new_version_must_ship_its_own_evidence(registry: Registry, name: str) -> None:
    newer = copy.copy(registry.resolve(name))
    newer.version = "99.0.0"
    assert newer.shipped_evidence() is None


def test_evidence_of_another_algorithm_or_version_is_no_evidence(tmp_path: Path) -> None:
    path = PACKAGE / "algorithms" / "cxr" / "cxr.evidence.json"
    assert load_evidence(path, "radsight-cxr", "1.1.0") is not None
    assert load_evidence(path, "radsight-flg", "1.1.0") is None
    assert load_evidence(path, "radsight-cxr", "1.0.0") is None
    assert load_evidence(tmp_path / "absent.json", "radsight-cxr", "1.1.0") is None


def test_the_wheel_carries_every_shipped_evidence_file() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["radsight"]
    files = sorted(PACKAGE.glob("algorithms/**/*evidence.json"))
    assert len(files) == len(EXPECTED)  # one per built-in (cxr and flg have one each)
    for path in files:
        rel = path.relative_to(PACKAGE)
        assert any(rel.match(p) for p in patterns), f"{rel} is not in the package data"


def card(name: str) -> dict:
    return json.loads((MODELS / name / "metrics.json").read_text())


def test_the_chest_radiograph_evidence_has_the_cards_figures(registry: Registry) -> None:
    """The same images and the same code as the card's evaluation, at each algorithm's own
    operating point: the per-source figures are the card's to four decimals."""
    metrics = card("cxr")
    by_key = {
        "adult": metrics["adult_test"]["any_vs_normal"],
        "pediatric": metrics["pediatric_test"]["pneumonia_vs_normal"],
    }
    for key in ("cxr", "flg"):
        algorithm = registry.resolve(f"radsight-{key}")
        evidence = algorithm.shipped_evidence()
        assert evidence is not None
        assert (evidence["num_studies"], evidence["positives"], evidence["negatives"]) == (
            849,
            540,
            309,
        )
        assert evidence["num_not_analysed"] == 0
        assert evidence["thresholds"]["study"] == metrics["thresholds"][key]
        assert "internal test split" in evidence["note"].lower()
        assert "source-confounded" in evidence["note"].lower()
        sources = {g["value"]: g for g in evidence["subgroups"] if g["group"] == "source"}
        for source, figure in by_key.items():
            auroc = sources[source]["auroc"]
            assert auroc["value"] == round(figure["auroc"], 4)
            assert [auroc["lower"], auroc["upper"]] == [round(v, 4) for v in figure["ci"]]
            assert sources[source]["positives"] == figure["positives"]
        pediatric = metrics["pediatric_test"]["operating_points"][key]
        assert sources["pediatric"]["sensitivity"]["value"] == round(pediatric["sensitivity"][0], 4)
    cxr, flg = (registry.resolve(n).shipped_evidence() for n in ("radsight-cxr", "radsight-flg"))
    assert cxr and flg and cxr["auroc"] == flg["auroc"]  # one model, two operating points
    assert flg["at_threshold"]["sensitivity"]["value"] > cxr["at_threshold"]["sensitivity"]["value"]


def test_the_transcribed_evidence_has_the_cards_figures(registry: Registry) -> None:
    """mmg, ct-brain and ct-chest carry their cards' out-of-fold / test figures."""
    mmg = registry.resolve("radsight-mmg").shipped_evidence()
    image = card("mmg")["image_normal_vs_abnormal"]
    assert mmg is not None and mmg["auroc"]["value"] == round(image["auroc"], 4)
    assert (mmg["positives"], mmg["negatives"]) == (image["positives"], image["negatives"])
    brain = registry.resolve("radsight-ct-brain").shipped_evidence()
    cv = card("ct-brain")["cv"]
    assert brain is not None and brain["auroc"]["value"] == round(cv["auroc"], 4)
    assert [brain["auroc"]["lower"], brain["auroc"]["upper"]] == [round(v, 4) for v in cv["ci"]]
    assert brain["num_studies"] == cv["slices"] == 200
    assert brain["at_threshold"]["threshold"] == cv["threshold"]
    chest = registry.resolve("radsight-ct-chest").shipped_evidence()
    test = card("ct-chest")["test"]
    assert chest is not None and "auroc" not in chest
    assert chest["segmentation"]["dice_mean"]["value"] == round(test["mean_dice"][0], 4)
    assert chest["num_studies"] == chest["positives"] == test["slices"] == 48


def test_the_evidence_tool_writes_what_load_evidence_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence.json"
    argv = ["evidence", "radsight-bright-region", "--synthetic", "40", "--out", str(out)]
    assert train_main(argv + ["--note", "a smoke test"]) == 0
    printed = capsys.readouterr().out
    assert "40 studies (20 positive, 20 negative, 0 not analysed)" in printed
    assert "fails the default acceptance rule; the reference set has 40 studies" in printed
    evidence = load_evidence(out, "radsight-bright-region", "1.0.0")
    assert evidence is not None
    assert (evidence["num_studies"], evidence["positives"]) == (40, 20)
    assert evidence["auroc"]["value"] == 1.0 and evidence["note"] == "a smoke test"
    assert evidence["measured_with"].startswith("python -m radsight_train evidence")
    assert set(evidence["cases"][0]) == {"id", "label", "score", "verdict"}  # no features
    problems = ["the reference set has 40 studies; the acceptance rule needs at least 400"]
    assert evidence_problems(evidence, AcceptanceRule()) == problems
    assert (evidence["passed"], evidence["failures"]) == (False, problems)


def test_the_evidence_tool_says_when_the_card_data_is_absent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence.json"
    argv = ["evidence", "radsight-cxr", "--card-set", "cxr-test", "--data", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        train_main(argv + ["--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no COVID-QU-Ex adult and Kermany pediatric chest radiograph data" in err
    assert str(tmp_path / "cxr" / "covid-qu-ex-adult") in err and "RADSIGHT_SHARED_DATA" in err
    assert not out.exists()


def small_data_root(shared: Path, root: Path, per_class: int = 2) -> Path:
    """The layout of ../shared/data/cxr with a few rows of each labels.csv (every class of
    each split), the images linked, not copied."""
    for folder, split_col, class_col in (
        ("covid-qu-ex-adult", "official_split", "label"),
        ("kermany-pediatric-pneumonia-224", "split", "subtype"),
    ):
        source, target = shared / "cxr" / folder, root / "cxr" / folder
        target.mkdir(parents=True)
        with (source / "labels.csv").open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            kept: list[dict[str, str]] = []
            seen: dict[tuple[str, str], int] = {}
            for row in reader:
                key = (row[split_col].lower(), row[class_col])
                if seen.get(key, 0) < per_class:
                    seen[key] = seen.get(key, 0) + 1
                    kept.append(row)
        with (target / "labels.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(kept)
        for entry in source.iterdir():
            if entry.is_dir():
                (target / entry.name).symlink_to(entry, target_is_directory=True)
    return root


def test_the_evidence_tool_measures_the_cards_test_split(shared_data: Path, tmp_path: Path) -> None:
    data = small_data_root(shared_data, tmp_path / "data")
    out = tmp_path / "flg.evidence.json"
    argv = ["evidence", "radsight-flg", "--card-set", "cxr-test", "--data", str(data)]
    assert train_main(argv + ["--out", str(out)]) == 0
    evidence = load_evidence(out, "radsight-flg", "1.1.0")
    assert evidence is not None
    # test rows only: 2 of each adult class and of each pediatric subtype
    assert (evidence["num_studies"], evidence["positives"], evidence["negatives"]) == (12, 8, 4)
    ids = sorted(c["id"] for c in evidence["cases"])
    assert all(i.startswith(("adult/images/test/", "pediatric/test/")) for i in ids)
    assert "(2 Normal, 2 Non-COVID opacity, 2 COVID-19)" in evidence["reference"]
    assert evidence["thresholds"]["study"] == 0.1299
    assert "cxr-test" in CARD_SETS
