"""Smoke runs of ``radsight-train evaluate cxr`` and ``evaluate cxr-tb`` (every set thinned to
about 12 images): the figures the model card quotes are written, with their intervals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or (REPO / ".." / "shared" / "data")).resolve()
CXR = DATA / "cxr"
needs_cxr = pytest.mark.skipif(
    not (CXR / "covid-qu-ex-adult").is_dir()
    or not (CXR / "kermany-pediatric-pneumonia-224").is_dir(),
    reason=f"chest radiograph data not found under {CXR} (set RADSIGHT_SHARED_DATA)",
)
needs_tb = pytest.mark.skipif(
    not (CXR / "tbx11k-tb-boxes-256").is_dir() or not (CXR / "covid-qu-ex-adult").is_dir(),
    reason=f"TBX11K or COVID-QU-Ex not found under {CXR} (set RADSIGHT_SHARED_DATA)",
)


@needs_cxr
def test_evaluation_reports_tb_external_localisation_and_subgroups(tmp_path, capsys) -> None:
    """A smoke run of ``radsight-train evaluate cxr`` (every set thinned to ~12 images)."""
    pytest.importorskip("matplotlib", reason="the evaluation draws PNGs (train extra)")
    if not (CXR / "tbx11k-tb-boxes-256").is_dir():
        pytest.skip("TBX11K not found under the shared data")
    from radsight_train.__main__ import main

    assert (
        main(["evaluate", "cxr", "--out", str(tmp_path), "--bootstrap", "50", "--limit", "12"]) == 0
    )
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "metrics.json").read_text())
    tb = m["tb_external (TBX11K, never trained on; TB-positive only)"]["sensitivity"]
    for name in ("cxr", "flg"):
        p, lo, hi = tb[name]["sensitivity"]
        assert 0 <= lo <= p <= hi <= 1 and tb[name]["specificity"] is None
    loc = m["localisation"]["tb_boxes_all"]
    assert loc["images"] > 0 and 0 <= loc["iou_top_box"] <= 1
    assert 0 <= loc["pointing_game"][0] <= 1
    groups = m["subgroups"]
    assert groups["view (PA vs AP)"].startswith("not measurable")
    sources = groups["source"]
    assert any(k.startswith("TBX11K") for k in sources) and any(
        k.startswith("RSNA") for k in sources
    )
    assert "subgroups:" in printed and "official val split" in printed
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "roc.png",
        "calibration.png",
        "examples.png",
    }


@needs_tb
def test_evaluation_prints_tb_sensitivity_specificity_and_pointing_game(tmp_path, capsys) -> None:
    """A smoke run of ``radsight-train evaluate cxr-tb`` (every set thinned to ~12 images)."""
    pytest.importorskip("matplotlib", reason="the evaluation draws PNGs (train extra)")
    from radsight_train.__main__ import main

    args = ["evaluate", "cxr-tb", "--out", str(tmp_path), "--bootstrap", "50", "--limit", "12"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "tb_metrics.json").read_text())
    sens = m["tbx11k_val (TB sensitivity; head trained on TBX11K train only)"]["all"]
    spec = m["specificity on COVID-QU-Ex test Normal (another source)"]
    for name in ("cxr", "flg"):
        p, lo, hi = sens[name]["sensitivity"]
        assert 0 <= lo <= p <= hi <= 1
        p, lo, hi = spec[name]["specificity"]
        assert 0 <= lo <= p <= hi <= 1
    # screening catches at least as many TB films as the diagnostic operating point
    assert sens["flg"]["sensitivity"][0] >= sens["cxr"]["sensitivity"][0]
    loc = m["localisation on TBX11K val boxes (top mark's peak / top box)"]
    assert set(loc) == {"all", "active", "obsolete only"}
    assert loc["all"]["images"] >= 10 and 0 <= loc["all"]["iou_top_box"] <= 1
    assert "source-confounded" in printed and "pointing_game" in printed
    assert (tmp_path / "tb_examples.png").stat().st_size > 10_000
