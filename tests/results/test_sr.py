"""The TID 1500 SR: built, written, read back strictly, verified by dciodvfy and dsrdump."""

from __future__ import annotations

import io
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from radsight.algorithms.bright_region import BRIGHT_REGION
from radsight.algorithms.contract import Code, FindingSpec, Region
from radsight.errors import EncodingError
from radsight.results import AnalysisReport, ReportedFinding, build_measurement_report
from radsight.results.sr import (
    OPERATING_THRESHOLD,
    PROBABILITY,
    REGION_PROBABILITY,
    STUDY_SCORE,
)
from tests.results._sources import (
    REAL_CT_JPEG2000,
    analyse,
    assert_valid_iod,
    dsrdump,
    make_source,
    read_strict,
    real_cq500,
    real_orthanc_jpegls,
    to_bytes,
)

SPEC = FindingSpec("bright-region", BRIGHT_REGION, threshold=0.5)


def _one_study(*names: str) -> list[pydicom.Dataset]:
    return [make_source(name) for name in names]


SOURCE_SETS = {
    "dx16-mono2": lambda: _one_study("dx16-mono2"),
    "cr-mono1": lambda: _one_study("cr-mono1"),
    "dx8": lambda: _one_study("dx8"),
    "multiframe": lambda: _one_study("multiframe"),
    "us-rgb": lambda: _one_study("us-rgb"),
    "dx-and-cr-two-series": lambda: _one_study("dx16-mono2", "cr-mono1", "ct-signed"),
    "real-ct-jpeg-lossless": lambda: real_cq500(3),
    "real-ct-jpeg-ls": real_orthanc_jpegls,
}


def _build(sources, report, **kwargs):
    return build_measurement_report(
        sources,
        report,
        series_instance_uid=kwargs.pop("series_instance_uid", generate_uid()),
        sop_instance_uid=kwargs.pop("sop_instance_uid", generate_uid()),
        **kwargs,
    )


def _round_trip(sr) -> tuple[bytes, pydicom.Dataset, hd.sr.MeasurementReport]:
    data = to_bytes(sr)
    ds = read_strict(data)
    document = hd.sr.srread(io.BytesIO(data))
    return data, ds, hd.sr.MeasurementReport.from_sequence(document.content)


def _texts(dataset: pydicom.Dataset, code_value: str) -> list[str]:
    found = hd.sr.utils.find_content_items(
        dataset,
        name=hd.sr.CodedConcept(code_value, "DCM", "x"),
        recursive=True,
    )
    return [item.TextValue for item in found]


@pytest.mark.parametrize("name", sorted(SOURCE_SETS))
def test_sr_round_trips_and_validates(name):
    sources = SOURCE_SETS[name]()
    report = analyse(sources)
    sop_instance_uid = generate_uid()

    sr = _build(sources, report, sop_instance_uid=sop_instance_uid, institution_name="Test Clinic")
    data, ds, content = _round_trip(sr)

    assert_valid_iod(data)
    dump = dsrdump(data)
    assert "Bright region (test finding)" in dump
    assert "radsight-bright-region" in dump

    # identity: a new SR series in the sources' study, for the same patient
    assert ds.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert ds.SOPInstanceUID == sop_instance_uid
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.PatientID == sources[0].PatientID
    assert ds.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    assert ds.SeriesNumber == 9001
    assert ds.InstitutionName == "Test Clinic"

    # every analysed image is listed as evidence, under its own series
    evidence = {
        (study.StudyInstanceUID, series.SeriesInstanceUID, image.ReferencedSOPInstanceUID)
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for image in series.ReferencedSOPSequence
    }
    assert evidence == {
        (s.StudyInstanceUID, s.SeriesInstanceUID, s.SOPInstanceUID) for s in sources
    }

    # one planar ROI group per region, with probability, threshold and call
    (finding,) = report.findings
    groups = content.get_planar_roi_measurement_groups()
    assert len(groups) == len(finding.regions)
    for group, region in zip(groups, finding.regions, strict=True):
        assert group.finding_type == hd.sr.CodedConcept(
            BRIGHT_REGION.value, BRIGHT_REGION.scheme_designator, BRIGHT_REGION.meaning
        )
        (probability,) = group.get_measurements(name=PROBABILITY)
        (threshold,) = group.get_measurements(name=OPERATING_THRESHOLD)
        assert probability.value == pytest.approx(finding.probability)
        assert threshold.value == pytest.approx(finding.threshold)
        (call,) = group.get_qualitative_evaluations()
        assert call.value == (
            codes.SCT.Present
            if finding.positive
            else hd.sr.CodedConcept("272519000", "SCT", "Absent")
        )
        roi = group.roi
        assert roi.GraphicType == "POLYLINE"
        points = roi.value
        np.testing.assert_allclose(points, np.asarray(region.points), atol=1e-3)
        reference = roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == region.sop_instance_uid
        if region.frame_number is not None:
            assert reference.ReferencedFrameNumber == region.frame_number
        else:
            assert "ReferencedFrameNumber" not in reference

    # the study verdict and score (after a group for each finding without a mark)
    *unmarked, study_group = content.get_image_measurement_groups()
    assert len(unmarked) == sum(not f.regions for f in report.findings)
    (score,) = study_group.get_measurements(name=STUDY_SCORE)
    assert score.value == pytest.approx(report.study_score)
    (verdict,) = study_group.get_qualitative_evaluations()
    assert verdict.value.meaning == ("Abnormal" if report.verdict == "abnormal" else "Normal")

    # the algorithm: device observer and TID 4019 on every group and measurement
    (observer,) = content.get_observer_contexts()
    attributes = observer.observer_identifying_attributes
    assert attributes.name == "radsight-bright-region"
    assert attributes.serial_number == "1.0.0"
    # three per group (the group, probability, threshold), one more per region probability
    n_texts = 3 * (len(groups) + len(unmarked) + 1) + sum(
        r.probability is not None for r in finding.regions
    )
    assert _texts(ds, "111001").count("radsight-bright-region") == n_texts
    assert _texts(ds, "111003").count("1.0.0") == n_texts


def test_multiframe_regions_reference_their_frames():
    sources = _one_study("multiframe")
    report = analyse(sources)
    _, _, content = _round_trip(_build(sources, report))
    frames = [
        group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber
        for group in content.get_planar_roi_measurement_groups()
    ]
    assert frames == [1, 2, 3]


def test_negative_study_is_normal_with_absent_findings():
    sources = _one_study("dx16-mono2")
    report = analyse(sources, thresholds={"bright-region": 1.0, "study": 1.0})
    assert report.verdict == "normal"
    data, _, content = _round_trip(_build(sources, report))
    assert_valid_iod(data)
    # an Absent finding is not marked: one group without a region carries its call
    assert content.get_planar_roi_measurement_groups() == []
    finding_group, study_group = content.get_image_measurement_groups()
    (call,) = finding_group.get_qualitative_evaluations()
    assert call.value.meaning == "Absent"
    (threshold,) = finding_group.get_measurements(name=OPERATING_THRESHOLD)
    assert threshold.value == 1.0
    (verdict,) = study_group.get_qualitative_evaluations()
    assert verdict.value == hd.sr.CodedConcept("17621005", "SCT", "Normal")
    (threshold,) = study_group.get_measurements(name=OPERATING_THRESHOLD)
    assert threshold.value == 1.0


def _report(*findings: ReportedFinding, score: float = 0.7) -> AnalysisReport:
    return AnalysisReport(
        algorithm_name="radsight-bright-region",
        algorithm_version="1.0.0",
        manufacturer="Radsight",
        findings=findings,
        study_score=score,
        study_threshold=0.5,
    )


def test_finding_without_region_is_an_image_level_group():
    sources = _one_study("dx16-mono2")
    other = FindingSpec("effusion", Code("RS-EFF", "99RADSIGHT", "Effusion (test)"), 0.4)
    report = _report(
        ReportedFinding(other, probability=0.25, threshold=0.4),
        ReportedFinding(
            SPEC, 0.8, 0.5, (Region.box(str(sources[0].SOPInstanceUID), 10, 10, 30, 40),)
        ),
    )
    data, _, content = _round_trip(_build(sources, report))
    assert_valid_iod(data)
    assert "Effusion (test)" in dsrdump(data)

    image_groups = content.get_image_measurement_groups()
    assert len(image_groups) == 2  # the effusion finding and the study
    effusion = next(g for g in image_groups if g.finding_type is not None)
    assert effusion.finding_type.value == "RS-EFF"
    (probability,) = effusion.get_measurements(name=PROBABILITY)
    assert probability.value == pytest.approx(0.25)
    (call,) = effusion.get_qualitative_evaluations()
    assert call.value.meaning == "Absent"
    assert len(content.get_planar_roi_measurement_groups()) == 1


@pytest.mark.parametrize(
    ("graphic_type", "points", "encoded_type", "n_groups"),
    [
        ("POINT", ((20.5, 30.5),), "POINT", 1),
        ("CIRCLE", ((40, 40), (40, 55)), "CIRCLE", 1),
        ("ELLIPSE", ((20, 40), (60, 40), (40, 30), (40, 50)), "ELLIPSE", 1),
        ("POLYGON", ((10, 10), (50, 10), (30, 40)), "POLYLINE", 1),
        ("MULTIPOINT", ((10, 10), (20, 20), (30, 30)), "POINT", 3),
    ],
)
def test_graphic_types(graphic_type, points, encoded_type, n_groups):
    sources = _one_study("dx16-mono2")
    uid = str(sources[0].SOPInstanceUID)
    region = Region(uid, graphic_type, points)
    data, _, content = _round_trip(
        _build(sources, _report(ReportedFinding(SPEC, 0.9, 0.5, (region,))))
    )
    assert_valid_iod(data)
    groups = content.get_planar_roi_measurement_groups()
    assert len(groups) == n_groups
    assert {g.roi.GraphicType for g in groups} == {encoded_type}
    if graphic_type == "POLYGON":
        encoded = groups[0].roi.value
        assert tuple(encoded[0]) == tuple(encoded[-1])  # closed outline
        assert len(encoded) == len(points) + 1


def test_each_region_carries_its_own_probability_where_it_has_one():
    """A CT finding marks several slices: each slice's probability goes beside the
    finding's (and the threshold), so a reader of the SR sees which slice scored what."""
    sources = real_cq500(3)
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    report = _report(
        ReportedFinding(
            SPEC,
            0.93,
            0.5,
            (
                Region.box(uids[0], 10, 10, 60, 60, probability=0.93),
                Region.box(uids[1], 20, 20, 80, 70, probability=0.61),
                Region.box(uids[2], 30, 30, 50, 50),  # none of its own
            ),
        )
    )
    data, _, content = _round_trip(_build(sources, report))
    assert_valid_iod(data)
    assert "Region probability" in dsrdump(data)
    by_image = {
        g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID: g
        for g in content.get_planar_roi_measurement_groups()
    }
    own = {
        uid: [m.value for m in by_image[uid].get_measurements(name=REGION_PROBABILITY)]
        for uid in uids
    }
    assert own[uids[0]] == [pytest.approx(0.93)]
    assert own[uids[1]] == [pytest.approx(0.61)]
    assert own[uids[2]] == []
    for uid in uids:  # the finding's probability stays on every region
        (probability,) = by_image[uid].get_measurements(name=PROBABILITY)
        assert probability.value == pytest.approx(0.93)
    regions = report.to_json()["findings"][0]["regions"]
    assert [r["probability"] for r in regions] == [0.93, 0.61, None]


def test_a_multipoint_region_passes_its_probability_to_every_point():
    sources = _one_study("dx16-mono2")
    uid = str(sources[0].SOPInstanceUID)
    region = Region(uid, "MULTIPOINT", ((10, 10), (20, 20)), probability=np.float32(0.7))
    assert type(region.probability) is float  # a numpy scalar is kept as a plain float
    data, _, content = _round_trip(
        _build(sources, _report(ReportedFinding(SPEC, 0.9, 0.5, (region,))))
    )
    assert_valid_iod(data)
    groups = content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    for group in groups:
        (own,) = group.get_measurements(name=REGION_PROBABILITY)
        assert own.value == pytest.approx(0.7)


def test_a_region_probability_outside_0_1_is_refused():
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="not in \\[0, 1\\]"):
            Region.box("1.2.3", 0, 0, 5, 5, probability=bad)


def test_tracking_uids_are_stable_for_the_same_sr_uid():
    sources = _one_study("dx16-mono2", "cr-mono1")
    report = analyse(sources)
    uid = generate_uid()
    first = _round_trip(_build(sources, report, sop_instance_uid=uid))[2]
    second = _round_trip(_build(sources, report, sop_instance_uid=uid))[2]
    uids = [
        [g.tracking_uid for g in c.get_planar_roi_measurement_groups()] for c in (first, second)
    ]
    assert uids[0] == uids[1]
    assert len(set(uids[0])) == len(uids[0])


def test_private_coding_scheme_is_declared():
    sources = _one_study("dx8")
    ds = read_strict(to_bytes(_build(sources, analyse(sources))))
    designators = [item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence]
    assert designators == ["99RADSIGHT"]


@pytest.mark.parametrize(
    ("modality", "code_value"),
    [
        ("CT", "25045-6"),
        ("DX", "43468-8"),
        ("CR", "43468-8"),
        ("MG", "71651007"),
        ("OT", "363679005"),
    ],
)
def test_procedure_reported_follows_the_modality(modality, code_value):
    source = make_source("dx8")
    source.Modality = modality
    ds = read_strict(to_bytes(_build([source], analyse([source]))))
    procedures = [
        item.ConceptCodeSequence[0].CodeValue
        for item in ds.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedures == [code_value]


def test_odd_source_headers_are_mended():
    """ACR-NEMA dates and times, a short age, identity removed without a method."""
    source = make_source("dx8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns: these values are invalid on purpose
        source.StudyDate = "1999.05.24"
        source.StudyTime = "11:42:21"
        source.PatientAge = "75Y"
    source.PatientIdentityRemoved = "YES"
    del source.AccessionNumber  # Type 2, missing
    data = to_bytes(_build([source], analyse([source])))
    ds = read_strict(data)
    assert_valid_iod(data)
    assert (ds.StudyDate, ds.StudyTime, ds.PatientAge) == ("19990524", "114221", "075Y")
    assert ds.DeidentificationMethod
    assert ds.AccessionNumber == ""


# errors -------------------------------------------------------------------------------


def test_no_sources():
    with pytest.raises(ValueError, match="source_images is empty"):
        _build([], _report())


def test_sources_from_two_studies():
    sources = [make_source("dx8"), make_source("dx8", study_instance_uid=generate_uid())]
    with pytest.raises(ValueError, match="more than one study"):
        _build(sources, _report())


def test_the_same_source_twice():
    source = make_source("dx8")
    with pytest.raises(ValueError, match="given twice"):
        _build([source, source], _report())


def test_region_on_an_image_that_is_not_a_source():
    sources = _one_study("dx8")
    stranger = generate_uid()
    report = _report(ReportedFinding(SPEC, 0.9, 0.5, (Region.box(stranger, 1, 1, 5, 5),)))
    with pytest.raises(ValueError, match=f"{stranger}, which is not among the source images"):
        _build(sources, report)


@pytest.mark.parametrize(
    ("frame_number", "message"),
    [(None, "has no frame number"), (4, "references frame 4"), (0, "references frame 0")],
)
def test_region_frames_must_exist(frame_number, message):
    sources = _one_study("multiframe")
    region = Region.box(str(sources[0].SOPInstanceUID), 1, 1, 5, 5, frame_number)
    with pytest.raises(ValueError, match=message):
        _build(sources, _report(ReportedFinding(SPEC, 0.9, 0.5, (region,))))


def test_region_with_too_few_points():
    sources = _one_study("dx8")
    region = Region(str(sources[0].SOPInstanceUID), "CIRCLE", ((1.0, 1.0),))
    with pytest.raises(ValueError, match="CIRCLE region .* has 1 point"):
        _build(sources, _report(ReportedFinding(SPEC, 0.9, 0.5, (region,))))


def test_a_source_without_uids_is_refused():
    """The TotalSegmentator sample has its SOP and study UIDs blanked."""
    files = sorted(REAL_CT_JPEG2000.glob("*.dcm"))[:1]
    if files:
        source = pydicom.dcmread(files[0])
    else:
        source = make_source("ct-signed")
        source.StudyInstanceUID = ""
    with pytest.raises(ValueError, match="source image 0 has no"):
        _build([source], _report())


def test_highdicom_refusal_is_an_encoding_error():
    source = make_source("dx8")
    # a series number highdicom does not take (IS, positive): EncodingError, not ValueError
    with pytest.raises(EncodingError, match="cannot encode the SR") as caught:
        _build([source], _report(), series_number=0)
    assert not isinstance(caught.value, ValueError)
