"""The analysis as a DICOM SR: a TID 1500 Measurement Report in a Comprehensive 3D SR.

Content tree (PS3.16 TID 1500), built with highdicom's template classes::

    Imaging Measurement Report (TID 1500)
    ├── Language of Content Item and Descendants (TID 1204)
    ├── Observer Context (TID 1002): Device (TID 1004), the algorithm
    ├── Procedure Reported: one per modality of the sources (CID 100)
    └── Imaging Measurements
        ├── per finding and region: Planar ROI group (TID 1410)
        │     Finding = finding code, Algorithm Identification (TID 4019),
        │     Probability and Operating threshold (TID 300), the region's own
        │     Region probability where the algorithm gives one (a CT slice's),
        │     finding code = Present/Absent,
        │     Image Region = SCOORD on the source image (and frame)
        ├── per finding without a region: Measurement group (TID 1501), same content
        └── the study: Measurement group (TID 1501), Study abnormality score, Operating
              threshold, Overall Assessment = Abnormal/Normal

Coded concepts used by the encoder itself (the findings bring their own codes):

========================================== =========================================
concept                                    why
========================================== =========================================
(RS-PROB, 99RADSIGHT, "Probability")       no standard code means "model output
                                           probability" in general (DCM 111047 is
                                           "Probability of cancer"); unit (1, UCUM,
                                           "no units"), value in [0, 1]
(RS-THRESH, 99RADSIGHT,                    the operating point the call was made at
"Operating threshold")
(RS-RPROB, 99RADSIGHT,                     one marked area's own probability (the
"Region probability")                      slice's, for a finding over many slices)
(RS-SCORE, 99RADSIGHT,                     the algorithm's study-level score
"Study abnormality score")
(52101004, SCT, "Present") /               the positive/negative call, as the value of
(272519000, SCT, "Absent")                 a CODE item named by the finding code
(111413, DCM, "Overall Assessment")        the study-level verdict, valued
                                           (263654008, SCT, "Abnormal") /
                                           (17621005, SCT, "Normal") from CID 222
========================================== =========================================

The private scheme 99RADSIGHT is declared in the Coding Scheme Identification Sequence
(PS3.3 C.12.1.1.2) of every SR that uses it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from radsight.algorithms.contract import Code, Region
from radsight.errors import EncodingError
from radsight.results.report import AnalysisReport, ReportedFinding

__all__ = [
    "OPERATING_THRESHOLD",
    "PROBABILITY",
    "RADSIGHT_SCHEME",
    "REGION_PROBABILITY",
    "STUDY_SCORE",
    "build_measurement_report",
]

RADSIGHT_SCHEME = "99RADSIGHT"
PROBABILITY = hd.sr.CodedConcept("RS-PROB", RADSIGHT_SCHEME, "Probability")
OPERATING_THRESHOLD = hd.sr.CodedConcept("RS-THRESH", RADSIGHT_SCHEME, "Operating threshold")
STUDY_SCORE = hd.sr.CodedConcept("RS-SCORE", RADSIGHT_SCHEME, "Study abnormality score")
REGION_PROBABILITY = hd.sr.CodedConcept("RS-RPROB", RADSIGHT_SCHEME, "Region probability")
PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
ABSENT = hd.sr.CodedConcept("272519000", "SCT", "Absent")
OVERALL_ASSESSMENT = hd.sr.CodedConcept("111413", "DCM", "Overall Assessment")
ABNORMAL = hd.sr.CodedConcept("263654008", "SCT", "Abnormal")
NORMAL = hd.sr.CodedConcept("17621005", "SCT", "Normal")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")

#: Procedure Reported (TID 1500 row 4, CID 100 and its extensions) by source modality
_PROCEDURE_FOR_MODALITY = {
    "CT": hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
    "CR": hd.sr.CodedConcept("43468-8", "LN", "XR unspecified body region"),
    "DX": hd.sr.CodedConcept("43468-8", "LN", "XR unspecified body region"),
    "RG": hd.sr.CodedConcept("43468-8", "LN", "XR unspecified body region"),
    "MG": hd.sr.CodedConcept("71651007", "SCT", "Mammography"),
    "MR": hd.sr.CodedConcept("25056-3", "LN", "MRI unspecified body region"),
    "NM": hd.sr.CodedConcept("49118-3", "LN", "NM unspecified body region"),
    "PT": hd.sr.CodedConcept("44136-0", "LN", "PET unspecified body region"),
    "US": hd.sr.CodedConcept("16310003", "SCT", "Diagnostic ultrasonography"),
}
_IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")

#: SCOORD point counts, PS3.3 C.18.6.1.2
_POINTS = {"POINT": (1, 1), "CIRCLE": (2, 2), "ELLIPSE": (4, 4), "POLYGON": (3, None)}
#: SR SCOORD has no POLYGON (that is SCOORD3D and presentation states): an area is a
#: closed POLYLINE (PS3.3 C.18.6.1.2)
_SCOORD_GRAPHIC_TYPE = {
    "POINT": "POINT",
    "CIRCLE": "CIRCLE",
    "ELLIPSE": "ELLIPSE",
    "POLYGON": "POLYLINE",
}

#: Type 2 attributes highdicom reads from the first source; empty when a source lacks them.
#: Every output copies them, so the analysis input checks them too (pipeline/inputs.py)
PATIENT_STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def build_measurement_report(
    source_images: Sequence[pydicom.Dataset],
    report: AnalysisReport,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int = 9001,
    instance_number: int = 1,
    institution_name: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Encode an analysis as a Measurement Report (PS3.16 TID 1500) in a Comprehensive 3D
    SR document (PS3.3 A.35.13).

    Parameters
    ----------
    source_images : Sequence[pydicom.Dataset]
        The analysed images of one study (pixel data is neither needed nor copied).
        They are listed in the Current Requested Procedure Evidence Sequence (PS3.3
        C.17.2.3) and the SR copies their Patient and General Study modules.
    report : radsight.results.AnalysisReport
        The findings with their probabilities, thresholds and regions, and the study
        score, of one algorithm version.
    series_instance_uid : str
        Series Instance UID of the new SR series.
    sop_instance_uid : str
        SOP Instance UID of the SR. Tracking UIDs of the measurement groups derive from
        it, so the same inputs give the same content.
    series_number : int, optional
        Series Number of the SR series.
    instance_number : int, optional
        Instance Number of the SR.
    institution_name : str, optional
        Institution Name (0008,0080) of the SR equipment.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The SR document: COMPLETE, UNVERIFIED and PRELIMINARY (AI output that no person
        has verified).

    Raises
    ------
    ValueError
        When ``source_images`` is empty, lacks a UID, holds an instance twice or spans
        more than one study; when a region references an image that is not among
        ``source_images``, a frame that image does not have, no frame of a multi-frame
        image, or has the wrong number of points for its graphic type.
    radsight.errors.EncodingError
        When highdicom refuses the content built from valid input (for instance a
        source image with attribute values it cannot carry over).
    """
    sources = _index_sources(source_images)
    study_instance_uid = str(source_images[0].StudyInstanceUID)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=report.algorithm_name,
        version=report.algorithm_version,
        manufacturer=report.manufacturer,
    )
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    # regions are checked first, so that bad input gives a ValueError before any encoding
    regions = [
        [part for region in finding.regions for part in _split(region, sources)]
        for finding in report.findings
    ]
    try:
        for finding, finding_regions in zip(report.findings, regions, strict=True):
            groups.extend(
                _finding_groups(finding, finding_regions, sources, algorithm_id, sop_instance_uid)
            )
        groups.append(_study_group(report, algorithm_id, sop_instance_uid))
        content = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(
                observer_device_context=_device_observer(report)
            ),
            procedure_reported=_procedures(source_images),
            imaging_measurements=groups,
        )
        with warnings.catch_warnings():
            # the patient's name is the source's, whatever its form: not ours to judge
            warnings.filterwarnings("ignore", "The string .* person name", UserWarning)
            return hd.sr.Comprehensive3DSR(
                evidence=[_source_header(ds) for ds in source_images],
                content=content[0],
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                sop_instance_uid=sop_instance_uid,
                instance_number=instance_number,
                manufacturer=report.manufacturer,
                is_complete=True,
                is_final=False,
                is_verified=False,
                institution_name=institution_name,
                series_description=_lo(
                    f"AI results {report.algorithm_name} {report.algorithm_version}"
                ),
                manufacturer_model_name=_lo(report.algorithm_name),
                software_versions=_lo(report.algorithm_version),
                coding_schemes=_coding_schemes(report),
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(
            f"cannot encode the SR of {report.algorithm_name} {report.algorithm_version} "
            f"for study {study_instance_uid}: {exc}"
        ) from exc


def _index_sources(
    source_images: Sequence[pydicom.Dataset],
) -> dict[str, pydicom.Dataset]:
    if not source_images:
        raise ValueError("source_images is empty: an SR must reference the analysed images")
    by_uid: dict[str, pydicom.Dataset] = {}
    study_uids: set[str] = set()
    for position, ds in enumerate(source_images):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            if not ds.get(keyword):
                raise ValueError(f"source image {position} has no {keyword}")
        uid = str(ds.SOPInstanceUID)
        if uid in by_uid:
            raise ValueError(f"source image {uid} is given twice")
        by_uid[uid] = ds
        study_uids.add(str(ds.StudyInstanceUID))
    if len(study_uids) > 1:
        raise ValueError(
            "source images belong to more than one study: " + ", ".join(sorted(study_uids))
        )
    return by_uid


def _split(region: Region, sources: dict[str, pydicom.Dataset]) -> list[Region]:
    """Check a region against its image. MULTIPOINT becomes one POINT per point: an Image
    Region of TID 1410 (and highdicom's ImageRegion) takes no MULTIPOINT."""
    ds = sources.get(region.sop_instance_uid)
    if ds is None:
        raise ValueError(
            f"a {region.graphic_type} region references image {region.sop_instance_uid}, "
            "which is not among the source images"
        )
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1:
        if region.frame_number is None:
            raise ValueError(
                f"a region on multi-frame image {region.sop_instance_uid} has no frame number"
            )
        if not 1 <= region.frame_number <= n_frames:
            raise ValueError(
                f"a region references frame {region.frame_number} of image "
                f"{region.sop_instance_uid}, which has {n_frames} frame(s)"
            )
    elif region.frame_number not in (None, 1):
        raise ValueError(
            f"a region references frame {region.frame_number} of single-frame image "
            f"{region.sop_instance_uid}"
        )
    if region.graphic_type == "MULTIPOINT":
        return [
            Region(
                region.sop_instance_uid,
                "POINT",
                (point,),
                region.frame_number,
                region.probability,
            )
            for point in region.points
        ]
    low, high = _POINTS[region.graphic_type]
    count = len(region.points)
    if count < low or (high is not None and count > high):
        expected = f"{low}" if low == high else f"at least {low}"
        raise ValueError(
            f"a {region.graphic_type} region on image {region.sop_instance_uid} has "
            f"{count} point(s), expected {expected} (PS3.3 C.18.6.1.2)"
        )
    if region.graphic_type == "POLYGON" and region.points[0] != region.points[-1]:
        # an area: the outline is closed (first and last vertices the same point)
        closed = (*region.points, region.points[0])
        return [
            Region(
                region.sop_instance_uid,
                "POLYGON",
                closed,
                region.frame_number,
                region.probability,
            )
        ]
    return [region]


def _finding_groups(
    finding: ReportedFinding,
    regions: list[Region],
    sources: dict[str, pydicom.Dataset],
    algorithm_id: hd.sr.AlgorithmIdentification,
    sop_instance_uid: str,
) -> list[
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
]:
    finding_type = _coded(finding.spec.code)
    measurements = _score_and_threshold(
        PROBABILITY, finding.probability, finding.threshold, algorithm_id
    )
    call = hd.sr.QualitativeEvaluation(
        name=finding_type, value=PRESENT if finding.positive else ABSENT
    )
    if not regions:
        return [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(sop_instance_uid, finding.spec.key, 0),
                finding_type=finding_type,
                algorithm_id=algorithm_id,
                measurements=measurements,
                qualitative_evaluations=[call],
            )
        ]
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for number, region in enumerate(regions, start=1):
        ds = sources[region.sop_instance_uid]
        frame_numbers = None
        if int(ds.get("NumberOfFrames", 1) or 1) > 1 and region.frame_number is not None:
            frame_numbers = [region.frame_number]
        region_measurements = list(measurements)
        if region.probability is not None:
            region_measurements.append(
                hd.sr.Measurement(
                    name=REGION_PROBABILITY,
                    value=float(region.probability),
                    unit=NO_UNITS,
                    algorithm_id=algorithm_id,
                )
            )
        source_image = hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=str(ds.SOPClassUID),
            referenced_sop_instance_uid=str(ds.SOPInstanceUID),
            referenced_frame_numbers=frame_numbers,
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(sop_instance_uid, finding.spec.key, number),
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=_SCOORD_GRAPHIC_TYPE[region.graphic_type],
                    graphic_data=np.asarray(region.points, dtype=np.float32),
                    source_image=source_image,
                ),
                finding_type=finding_type,
                algorithm_id=algorithm_id,
                measurements=region_measurements,
                qualitative_evaluations=[call],
            )
        )
    return groups


def _score_and_threshold(
    name: hd.sr.CodedConcept,
    score: float,
    threshold: float,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.Measurement]:
    """A score (unitless, TID 300) and the operating threshold in force beside it."""
    return [
        hd.sr.Measurement(
            name=concept, value=float(value), unit=NO_UNITS, algorithm_id=algorithm_id
        )
        for concept, value in ((name, score), (OPERATING_THRESHOLD, threshold))
    ]


def _study_group(
    report: AnalysisReport,
    algorithm_id: hd.sr.AlgorithmIdentification,
    sop_instance_uid: str,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(sop_instance_uid, "study", 0),
        algorithm_id=algorithm_id,
        measurements=_score_and_threshold(
            STUDY_SCORE, report.study_score, report.study_threshold, algorithm_id
        ),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=OVERALL_ASSESSMENT,
                value=ABNORMAL if report.verdict == "abnormal" else NORMAL,
            )
        ],
    )


def _tracking(sop_instance_uid: str, key: str, number: int) -> hd.sr.TrackingIdentifier:
    """TID 4108: a readable identifier and a UID derived from the SR's own UID."""
    label = f"{key} region {number}" if number else key
    return hd.sr.TrackingIdentifier(
        uid=generate_uid(entropy_srcs=[sop_instance_uid, key, str(number)]),
        identifier=label,
    )


def _device_observer(report: AnalysisReport) -> hd.sr.ObserverContext:
    """TID 1002 with TID 1004: the algorithm version is the observing device."""
    return hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[report.algorithm_name, report.algorithm_version]),
            name=report.algorithm_name,
            manufacturer_name=report.manufacturer,
            model_name=report.algorithm_name,
            serial_number=report.algorithm_version,
        ),
    )


def _procedures(source_images: Sequence[pydicom.Dataset]) -> list[hd.sr.CodedConcept]:
    procedures: dict[str, hd.sr.CodedConcept] = {}
    for ds in source_images:
        code = _PROCEDURE_FOR_MODALITY.get(str(ds.get("Modality", "")), _IMAGING_PROCEDURE)
        procedures.setdefault(code.value, code)
    return list(procedures.values())


def _coding_schemes(
    report: AnalysisReport,
) -> list[hd.coding_schemes.CodingSchemeIdentificationItem]:
    designators = {RADSIGHT_SCHEME} | {
        f.spec.code.scheme_designator
        for f in report.findings
        if f.spec.code.scheme_designator.startswith("99")
    }
    # Radsight owns 99RADSIGHT; any other private scheme belongs to the algorithm's maker
    owner = {RADSIGHT_SCHEME: "Radsight"}
    return [
        hd.coding_schemes.CodingSchemeIdentificationItem(
            designator=designator,
            name=f"{owner.get(designator, report.manufacturer)} private codes"[:64],
            responsible_organization=owner.get(designator, report.manufacturer),
        )
        for designator in sorted(designators)
    ]


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def _source_header(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The source without pixel data, fit to have its Patient and Study modules copied.

    Type 2 Patient and Study attributes that are missing become empty. Dates, times, ages
    and code strings in forms the standard does not allow (the retired ACR-NEMA
    ``1999.05.24`` and ``11:42:21``, ``75Y``, lower case) are mended where the meaning is
    plain, else emptied (PS3.5 6.2). A source marked Patient Identity Removed without
    saying how gets a De-identification Method (Type 1C, PS3.3 C.7.1.1).
    """
    header = pydicom.Dataset()
    for element in ds:
        if element.tag.group < 0x7FE0:
            header.add(element)
    for element in list(header):
        if element.VR in _MENDED_VRS and element.value not in (None, ""):
            value = _mended(element.VR, element.value)
            if value is not element.value:
                header[element.tag] = pydicom.DataElement(element.tag, element.VR, value)
    for keyword in PATIENT_STUDY_ATTRIBUTES:
        if keyword not in header:
            setattr(header, keyword, None)
    if (
        str(header.get("PatientIdentityRemoved", "")).upper() == "YES"
        and not header.get("DeidentificationMethod")
        and not header.get("DeidentificationMethodCodeSequence")
    ):
        header.DeidentificationMethod = "Not recorded in the source images"
    return header


_MENDED_VRS = ("AS", "CS", "DA", "TM")


def _valid(vr: str, value: str) -> bool:
    try:
        pydicom.valuerep.validate_value(vr, value, pydicom.config.RAISE)
    except ValueError:
        return False
    return True


def _mended(vr: str, value: object) -> object:
    """``value`` itself when valid, else a mended value, else ``None`` (empty)."""
    values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    if all(_valid(vr, str(v)) for v in values):
        return value
    mended = []
    for v in (str(v).strip() for v in values):
        if vr == "DA":
            v = v.replace(".", "")
        elif vr == "TM":
            v = v.replace(":", "")
        elif vr == "AS" and v[:-1].isdigit() and len(v) < 4:
            v = v[:-1].zfill(3) + v[-1:].upper()
        elif vr == "CS":
            v = v.upper()
        if not _valid(vr, v):
            return None
        mended.append(v)
    return mended if len(mended) > 1 else mended[0]


def _lo(text: str) -> str:
    """A Long String value (PS3.5 6.2: at most 64 characters)."""
    return text[:64]
