"""Secondary Captures with burned-in marks: built, written, read back strictly, verified."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from radsight.algorithms.bright_region import BRIGHT_REGION
from radsight.algorithms.contract import FindingSpec, Region
from radsight.dicom.pixels import display_image, frames_for_analysis
from radsight.errors import MissingPixelData
from radsight.results import AnalysisReport, ReportedFinding, build_secondary_captures
from radsight.results.sc import BELOW_THRESHOLD_COLOUR, POSITIVE_COLOUR
from tests._limits import LIMITS
from tests.results._sources import (
    analyse,
    assert_valid_iod,
    make_source,
    read_strict,
    real_cq500,
    real_orthanc_jpegls,
    to_bytes,
)

CAPTION = "AI marks, not a diagnosis - radsight-bright-region 1.0.0"
SPEC = FindingSpec("bright-region", BRIGHT_REGION, threshold=0.5)


SOURCE_SETS = {
    "dx16-mono2": lambda: [make_source("dx16-mono2")],
    "cr-mono1": lambda: [make_source("cr-mono1")],
    "dx8": lambda: [make_source("dx8")],
    "multiframe": lambda: [make_source("multiframe")],
    "us-rgb": lambda: [make_source("us-rgb")],
    "three-images": lambda: [make_source(n) for n in ("ct-signed", "multiframe", "dx8")],
    "real-ct-jpeg-lossless": lambda: real_cq500(2),
    "real-ct-jpeg-ls": real_orthanc_jpegls,
}


def _frames(sources) -> list[tuple[pydicom.Dataset, int | None]]:
    return [(ds, number) for ds in sources for number, _ in frames_for_analysis(ds, **LIMITS)]


def _build(sources, report, **kwargs):
    n = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in sources)
    return build_secondary_captures(
        sources,
        report,
        series_instance_uid=kwargs.pop("series_instance_uid", generate_uid()),
        sop_instance_uids=kwargs.pop("sop_instance_uids", [generate_uid() for _ in range(n)]),
        **kwargs,
        **LIMITS,
    )


def _rendering(ds: pydicom.Dataset, frame_number: int | None) -> np.ndarray:
    pixels = dict(frames_for_analysis(ds, **LIMITS))[frame_number]
    return display_image(pixels, ds)


def _caption_text(rgb: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """(row, column) of white pixels in the bottom 15% that the plain rendering lacks."""
    top = int(rgb.shape[0] * 0.85)
    white = (rgb[top:].min(axis=2) > 200) & (gray[top:] < 128)
    rows, columns = np.nonzero(white)
    return np.stack([rows + top, columns], axis=1)


@pytest.mark.parametrize("name", sorted(SOURCE_SETS))
def test_captures_round_trip_and_validate(name):
    sources = SOURCE_SETS[name]()
    report = analyse(sources)
    frames = _frames(sources)
    series_uid = generate_uid()
    uids = [generate_uid() for _ in frames]

    captures = _build(sources, report, series_instance_uid=series_uid, sop_instance_uids=uids)

    assert len(captures) == len(frames)
    regions = {(r.sop_instance_uid, r.frame_number): r for f in report.findings for r in f.regions}
    for number, (capture, (source, frame_number)) in enumerate(zip(captures, frames, strict=True)):
        data = to_bytes(capture)
        ds = read_strict(data)
        assert_valid_iod(data)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian

        # a derived image in a new series of the source's study
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert ds.SOPInstanceUID == uids[number]
        assert ds.InstanceNumber == number + 1
        assert ds.SeriesInstanceUID == series_uid
        assert ds.SeriesNumber == 9002
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.ConversionType == "WSD"
        assert ds.BurnedInAnnotation == "YES"
        assert ds.ImageComments == CAPTION
        (reference,) = ds.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        if frame_number is None:
            assert "ReferencedFrameNumber" not in reference
        else:
            assert reference.ReferencedFrameNumber == frame_number

        # the source's size, in RGB
        assert (ds.Rows, ds.Columns) == (source.Rows, source.Columns)
        assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (3, "RGB")
        rgb = ds.pixel_array
        assert rgb.shape == (source.Rows, source.Columns, 3)

        # the caption band: black at the bottom, with white text
        gray = _rendering(source, frame_number)
        assert rgb[-1].max() < 10
        assert len(_caption_text(rgb, gray)) > 30

        # the marks: pixels on the region's outline differ from the plain rendering
        region = regions.get((str(source.SOPInstanceUID), frame_number))
        if region is None:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in region.bounds())
        outline = rgb[y0 : y1 + 1, x0]  # the left edge
        plain = gray[y0 : y1 + 1, x0]
        assert (np.abs(outline.astype(int) - plain[:, None]).max(axis=1) > 40).mean() > 0.8
        (finding,) = report.findings
        colour = POSITIVE_COLOUR if finding.positive else BELOW_THRESHOLD_COLOUR
        middle = outline[len(outline) // 2]
        assert np.abs(middle.astype(int) - colour).max() < 10


def _report(*findings: ReportedFinding) -> AnalysisReport:
    return AnalysisReport(
        algorithm_name="radsight-bright-region",
        algorithm_version="1.0.0",
        manufacturer="Radsight",
        findings=findings,
        study_score=0.7,
        study_threshold=0.5,
    )


def test_below_threshold_findings_are_drawn_weaker():
    source = make_source("dx16-mono2", rows=256, columns=256)
    uid = str(source.SOPInstanceUID)
    report = _report(
        ReportedFinding(SPEC, 0.9, 0.5, (Region.box(uid, 20, 20, 80, 80),)),
        ReportedFinding(SPEC, 0.3, 0.5, (Region.box(uid, 150, 150, 220, 220),)),
    )
    (capture,) = _build([source], report)
    rgb = capture.pixel_array
    assert tuple(rgb[50, 20]) == POSITIVE_COLOUR
    assert tuple(rgb[185, 150]) == BELOW_THRESHOLD_COLOUR


@pytest.mark.parametrize(
    ("graphic_type", "points", "probe"),
    [
        ("POINT", ((64.5, 64.5),), (64, 64)),
        ("MULTIPOINT", ((30.5, 30.5), (90.5, 90.5)), (90, 90)),
        ("CIRCLE", ((64, 64), (64, 94)), (64, 34)),
        ("ELLIPSE", ((24, 64), (104, 64), (64, 49), (64, 79)), (24, 64)),
        ("POLYGON", ((20, 20), (100, 20), (60, 90)), (60, 20)),
    ],
)
def test_each_graphic_type_is_drawn(graphic_type, points, probe):
    source = make_source("dx8", rows=128, columns=128)
    region = Region(str(source.SOPInstanceUID), graphic_type, points)
    (capture,) = _build([source], _report(ReportedFinding(SPEC, 0.9, 0.5, (region,))))
    x, y = probe
    patch = capture.pixel_array[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
    assert any(tuple(p) == POSITIVE_COLOUR for p in patch), patch


def test_large_source_keeps_its_size_and_a_readable_caption():
    source = make_source("cr-mono1", rows=2500, columns=2000)
    report = analyse([source])
    (capture,) = _build([source], report)
    data = to_bytes(capture)
    assert_valid_iod(data)
    rgb = read_strict(data).pixel_array
    assert rgb.shape == (2500, 2000, 3)
    text = _caption_text(rgb, _rendering(source, None))
    # letters about 40 px high or more on a 2500-row image, across most of its width
    assert np.ptp(text[:, 0]) >= 40
    assert np.ptp(text[:, 1]) >= 0.6 * 2000


def test_tiny_images_keep_most_of_the_picture():
    source = make_source("dx8", rows=64, columns=48)
    report = analyse([source])
    (capture,) = _build([source], report)
    rgb = capture.pixel_array
    gray = _rendering(source, None)
    below_marks = int(max(r.bounds()[3] for f in report.findings for r in f.regions)) + 2
    changed = (rgb[below_marks:].max(axis=2) != gray[below_marks:]).mean(axis=1) > 0.5
    band_top = below_marks + int(np.argmax(changed))
    assert changed[band_top - below_marks :].all()
    assert band_top >= 0.8 * 64 - 1
    assert (rgb[band_top:].max(axis=2) > 60).sum() > 10  # there is text in it, if tiny


# errors -------------------------------------------------------------------------------


def test_one_uid_per_source_frame():
    sources = [make_source("multiframe"), make_source("dx8")]
    with pytest.raises(ValueError, match="holds 2 UID.* for 4 source frame"):
        _build(sources, analyse(sources), sop_instance_uids=[generate_uid(), generate_uid()])


def test_no_sources():
    with pytest.raises(ValueError, match="source_images is empty"):
        _build([], _report())


def test_sources_from_two_studies():
    sources = [make_source("dx8"), make_source("dx8", study_instance_uid=generate_uid())]
    with pytest.raises(ValueError, match="more than one study"):
        _build(sources, _report())


def test_region_on_an_image_that_is_not_a_source():
    stranger = generate_uid()
    report = _report(ReportedFinding(SPEC, 0.9, 0.5, (Region.box(stranger, 1, 1, 5, 5),)))
    with pytest.raises(ValueError, match="not among the source images"):
        _build([make_source("dx8")], report)


def test_region_on_a_frame_the_image_lacks():
    source = make_source("multiframe")
    region = Region.box(str(source.SOPInstanceUID), 1, 1, 5, 5, frame_number=7)
    with pytest.raises(ValueError, match="references frame 7"):
        _build([source], _report(ReportedFinding(SPEC, 0.9, 0.5, (region,))))


def test_source_without_pixels():
    source = make_source("dx8")
    del source.PixelData
    with pytest.raises(MissingPixelData):
        _build([source], _report())


def test_mark_label_shows_the_region_probability_where_there_is_one():
    from radsight.algorithms.contract import Code, FindingSpec, Region
    from radsight.results.report import ReportedFinding
    from radsight.results.sc import mark_label

    spec = FindingSpec("ich", Code("1386000", "SCT", "Intracranial hemorrhage"), 0.4)
    finding = ReportedFinding(spec, probability=0.95, threshold=0.4)
    slice_mark = Region.box("1.2.3", 0, 0, 9, 9, probability=0.61)
    plain = Region.box("1.2.3", 0, 0, 9, 9)
    assert mark_label(finding, slice_mark) == "Intracranial hemorrhage p=0.61"
    assert mark_label(finding, plain) == "Intracranial hemorrhage p=0.95"
    low = Region.box("1.2.3", 0, 0, 9, 9, probability=0.2)
    assert mark_label(finding, low) == "Intracranial hemorrhage p=0.20 (below 0.40)"
