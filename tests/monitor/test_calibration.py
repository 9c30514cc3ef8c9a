"""``radsight evaluate``: a calibration test on a real reference set, stored and served."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from radsight.cli.main import cli
from radsight.dicom.synthetic import make_radiograph
from tests._limits import LIMITS

from .conftest import dicom_bytes, make_org, token


def run_cli(data_dir, *args):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def evaluate(rt, algorithm: str, reference, out=None):  # type: ignore[no-untyped-def]
    """``radsight evaluate`` without a progress bar, the report under ``out`` if given."""
    args = ["evaluate", "--algorithm", algorithm, "--reference", str(reference), "--no-progress"]
    return run_cli(rt.settings.data_dir, *args, *(["--out", str(out)] if out else []))


def test_calibration_test_on_a_real_reference_set(tmp_path, cxr_reference, rt, client_for):
    out = tmp_path / "out"
    res = evaluate(rt, "radsight-cxr", cxr_reference, out)
    assert res.exit_code == 0, res.output
    assert "AUROC" in res.output and "PASSED" in res.output
    assert "at least 400 are needed" in res.output  # 75 studies: the Moscow warning
    summary = json.loads((out / "summary.json").read_text())
    cases = [c for c in summary["cases"] if c["score"] is not None]
    y = np.array([c["label"] for c in cases])
    x = np.array([c["score"] for c in cases])
    assert summary["num_studies"] == 75 and len(cases) >= 70
    # the figures equal scikit-learn's on the same scores
    assert summary["auroc"]["value"] == pytest.approx(roc_auc_score(y, x), abs=1e-4)
    assert summary["auroc"]["lower"] < summary["auroc"]["value"] < summary["auroc"]["upper"]
    t = summary["thresholds"]["study"]
    tp = int(((x >= t) & (y == 1)).sum())
    assert summary["at_threshold"]["tp"] == tp
    assert summary["at_threshold"]["sensitivity"]["value"] == pytest.approx(tp / y.sum(), abs=1e-4)
    assert summary["auroc"]["value"] >= 0.81 and summary["passed"] is True
    assert {r["group"] for r in summary["subgroups"]} >= {"view"}
    assert summary["time_per_study_s"]["mean"] > 0
    # the report and its plots
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Subgroups" in html
    # opened from disk it keeps its look: the stylesheet is in the file, not linked
    assert "/static/app.css" not in html and "<style>" in html and "table" in html
    for png in ("roc.png", "calibration.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # stored, and served by the API to a signed-in principal only
    client = client_for(rt)
    assert client.get("/api/evaluations").status_code == 401
    h = token(rt, "radiologist", make_org(rt))
    listed = client.get("/api/evaluations", headers=h).json()
    assert listed[0]["algorithm_name"] == "radsight-cxr" and listed[0]["passed"] is True
    detail = client.get(f"/api/evaluations/{listed[0]['id']}", headers=h).json()
    assert detail["summary"]["auroc"] == summary["auroc"]
    page = client.get(f"/api/evaluations/{listed[0]['id']}/report.html?download=true", headers=h)
    assert page.status_code == 200 and "Calibration test: radsight-cxr" in page.text
    assert "attachment" in page.headers["content-disposition"]
    assert "<style>" in page.text and "/static/app.css" not in page.text
    served = client.get(f"/api/evaluations/{listed[0]['id']}/report.html", headers=h)
    assert '<link rel="stylesheet" href="/static/app.css">' in served.text  # under the CSP


def test_dicom_reference_set_with_subgroups_from_headers(tmp_path, rt):
    ref = tmp_path / "dicom-ref"
    (ref / "studies").mkdir(parents=True)
    rows = ["study_instance_uid,label,organisation"]
    for i in range(30):
        positive = i % 3 == 0
        ds = make_radiograph(bright_spot=(0.3, 0.5, 0.1) if positive else None, seed=i)
        ds.PatientSex = "F" if i % 2 else "M"
        ds.PatientAge = f"0{30 + i}Y"
        (ref / "studies" / f"{i}.dcm").write_bytes(dicom_bytes(ds))
        rows.append(f"{ds.StudyInstanceUID},{'positive' if positive else 'negative'},site{i % 2}")
    (ref / "labels.csv").write_text("\n".join(rows) + "\n")
    (ref / "README.txt").write_text("not DICOM: skipped")
    res = evaluate(rt, "radsight-bright-region", ref, tmp_path / "o")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["auroc"]["value"] == 1.0 and summary["positives"] == 10
    groups = {(r["group"], r["value"]) for r in summary["subgroups"]}
    assert {
        ("sex", "F"),
        ("sex", "M"),
        ("organisation", "site0"),
        ("age_band", "40-59"),
        ("manufacturer", "Radsight synthetic"),
    } <= groups
    assert summary["cases"][0]["features"]["pixel_spacing"] == 0.15


def test_failed_test_raises_a_calibration_alert(tmp_path, rt):
    ref = tmp_path / "ref"
    ref.mkdir()
    rows = ["study_instance_uid,label"]
    for i in range(12):  # labels unrelated to the bright spot: AUROC ~ 0.5
        ds = make_radiograph(bright_spot=(0.3, 0.5, 0.1) if i % 2 else None, seed=i)
        (ref / f"{i}.dcm").write_bytes(dicom_bytes(ds))
        rows.append(f"{ds.StudyInstanceUID},{1 if i % 4 < 2 else 0}")
    (ref / "labels.csv").write_text("\n".join(rows) + "\n")
    res = evaluate(rt, "radsight-bright-region", ref)
    assert res.exit_code == 2 and "FAILED" in res.output and "below the bar 0.81" in res.output
    alerts = run_cli(rt.settings.data_dir, "monitor", "alerts")
    assert "calibration" in alerts.output and "failed" in alerts.output


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, "has no labels.csv"),
        ("path,label\nmissing.png,1\n", "image missing.png does not exist"),
        ("path,outcome\nx.png,1\n", "no 'label' column"),
        ("study_instance_uid,label\n1.2.3,maybe\n", "label 'maybe' is not"),
        ("study_instance_uid,label\n1.2.3,1\n", "no DICOM files of study 1.2.3"),
    ],
)
def test_bad_reference_sets_get_a_clear_error(tmp_path, rt, labels, message):
    ref = tmp_path / "bad"
    ref.mkdir()
    if labels is not None:
        (ref / "labels.csv").write_text(labels)
    res = evaluate(rt, "radsight-bright-region", ref)
    assert res.exit_code == 1 and message in res.output, res.output


def test_unknown_algorithm(tmp_path, rt):
    res = run_cli(
        rt.settings.data_dir, "evaluate", "--algorithm", "nope@9", "--reference", str(tmp_path)
    )
    assert res.exit_code == 1 and "error[not_found]" in res.output


def test_mammography_image_reference_set(tmp_path, rt):
    """``radsight evaluate --algorithm radsight-mmg`` on PNG mammograms (mini-MIAS): each
    image becomes an MG For Presentation instance, laterality from the ``laterality``
    column where given (else the chest-wall side), view from ``view``; none is refused."""
    from .conftest import SHARED_DATA

    mias = SHARED_DATA / "mmg" / "mini-mias-train"
    if not mias.is_dir():
        pytest.skip(f"{mias} is absent: the mammography reference-set test needs ../shared/data")
    rows = list(csv.DictReader((mias / "image_labels.csv").open()))
    picked = [r for r in rows if r["label"] == "normal"][:10]
    picked += [r for r in rows if r["label"] != "normal"][:10]
    root = tmp_path / "mias"
    root.mkdir()
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "laterality", "view"])
        for i, r in enumerate(picked):
            side = r["side"] if i % 2 else ""  # half without: inferred from the image
            path = mias / "images" / f"{r['refnum']}.png"
            w.writerow([str(path), int(r["label"] != "normal"), side, "MLO"])
    out = tmp_path / "out"
    res = evaluate(rt, "radsight-mmg", root, out)
    summary = json.loads((out / "summary.json").read_text())
    # 20 images and a weak model: the test itself fails the AUROC bar (exit status 2)
    assert res.exit_code == (0 if summary["passed"] else 2), res.output
    assert "20 studies, 20 analysed" in res.output
    assert summary["num_studies"] == 20
    assert [c["refused"] for c in summary["cases"] if c.get("refused")] == []
    assert all(c["score"] is not None for c in summary["cases"])
    assert 0.0 <= summary["auroc"]["value"] <= 1.0 and "AUROC" in res.output


def test_mammogram_from_image_sets_laterality_and_view(tmp_path):
    from PIL import Image

    from radsight.monitor.reference import mammogram_from_image
    from tests.algorithms.test_mmg import synthetic_breast

    right = synthetic_breast(400, 320, "right", None, seed=1)  # chest wall on the right edge
    path = tmp_path / "breast.png"
    Image.fromarray((right * 255).astype(np.uint8)).save(path)
    ds = mammogram_from_image(path, "case-1")
    assert (ds.Modality, ds.BodyPartExamined, ds.ImageLaterality, ds.ViewPosition) == (
        "MG",
        "BREAST",
        "R",
        "",
    )
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography, presentation
    given = mammogram_from_image(path, "case-1", view="cc", laterality="left")
    assert (given.ImageLaterality, given.ViewPosition) == ("L", "CC")


def test_a_16_bit_png_keeps_its_range(tmp_path):
    """Pillow's convert("L") would clip a 16-bit image at 255 (most of a 12-bit radiograph
    saturated): the reference set keeps 16 bits, and the pixels decode unchanged."""
    from PIL import Image

    from radsight.algorithms.cxr import check_image
    from radsight.monitor.reference import dataset_from_image
    from radsight.pipeline.inputs import study_input_from

    values = (np.add.outer(np.arange(300), np.arange(300)) * 7 % 4096).astype(np.uint16)
    path = tmp_path / "cxr16.png"
    Image.fromarray(values).save(path)
    ds = dataset_from_image(path, "case-16")
    assert (ds.BitsAllocated, ds.BitsStored) == (16, 16)
    (image,) = study_input_from([ds], "cxr", **LIMITS).images
    np.testing.assert_array_equal(image.pixels, values.astype(image.pixels.dtype))
    assert check_image(image) is None  # not "saturated"
    eight = tmp_path / "cxr8.png"
    Image.fromarray((values >> 4).astype(np.uint8)).save(eight)
    assert dataset_from_image(eight, "case-8").BitsStored == 8


def _phantom_nifti(tmp_path, name: str, lesion: bool, seed: int):  # type: ignore[no-untyped-def]
    """A chest phantom (z, y, x as displayed: slice 0 at the head end) as a RAS+ NIfTI."""
    nib = pytest.importorskip("nibabel", reason="nibabel (a runtime dependency)")
    from radsight.algorithms.ct_chest.phantom import chest_phantom

    vol = chest_phantom(24, 256, lesion=lesion, seed=seed)
    # voxel (i, j, k): i to the patient's right, j to the front, k up
    ras = np.ascontiguousarray(vol[::-1, ::-1, ::-1].transpose(2, 1, 0))
    affine = np.diag([1.4, 1.4, 5.0, 1.0])
    affine[:3, 3] = (-180.0, -170.0, -300.0)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(np.round(ras).astype(np.int16), affine), path)
    return path, vol


def test_nifti_ct_volume_becomes_an_axial_series_as_displayed(tmp_path):
    from radsight.monitor.reference import datasets_from_nifti

    path, vol = _phantom_nifti(tmp_path, "sick", True, 3)
    datasets = datasets_from_nifti(path, "case-1", "ct-chest")
    assert len(datasets) == 24 and {d.Modality for d in datasets} == {"CT"}
    assert {d.BodyPartExamined for d in datasets} == {"CHEST"}
    assert list(datasets[0].ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in datasets[0].PixelSpacing] == [1.4, 1.4]
    top = max(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    bottom = min(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    # the head end is the phantom's slice 0, pixel for pixel, in display orientation
    np.testing.assert_array_equal(top.pixel_array, np.round(vol[0]).astype(np.int16))
    np.testing.assert_array_equal(bottom.pixel_array, np.round(vol[-1]).astype(np.int16))
    assert float(top.ImagePositionPatient[2]) - float(bottom.ImagePositionPatient[2]) == 115.0
    # the first pixel lies at the patient's right, front: the lowest LPS x and y
    assert float(top.ImagePositionPatient[0]) == pytest.approx(-(-180.0 + 255 * 1.4))
    assert float(top.ImagePositionPatient[1]) == pytest.approx(-(-170.0 + 255 * 1.4))


def test_nifti_reference_set_through_radsight_evaluate(tmp_path, rt):
    """``radsight evaluate --algorithm radsight-ct-chest`` on NIfTI volumes (path,label)."""
    root = tmp_path / "ct"
    root.mkdir()
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for i in range(2):
            sick, _ = _phantom_nifti(root, f"sick{i}", True, 3 + i)
            clean, _ = _phantom_nifti(root, f"clean{i}", False, 3 + i)
            w.writerow([sick.name, 1])
            w.writerow([clean.name, 0])
    out = tmp_path / "out"
    res = evaluate(rt, "radsight-ct-chest", root, out)
    summary = json.loads((out / "summary.json").read_text())
    assert "4 studies, 4 analysed" in res.output, res.output
    by_label = {c["label"]: [] for c in summary["cases"]}
    for c in summary["cases"]:
        by_label[c["label"]].append(c["score"])
    # the phantom's lesion is found; the clean phantoms score lower
    assert min(by_label[1]) > max(by_label[0])
    assert summary["auroc"]["value"] == 1.0


def test_a_bad_nifti_file_is_a_clear_error(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel (a runtime dependency)")
    from radsight.errors import ConfigError
    from radsight.monitor.reference import datasets_from_nifti

    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), flat)
    with pytest.raises(ConfigError, match="is not a 3-D volume"):
        datasets_from_nifti(flat, "flat")
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti file at all")
    with pytest.raises(ConfigError, match="cannot read NIfTI volume"):
        datasets_from_nifti(junk, "junk")
