"""The algorithm's input built from stored instances (pure: pydicom and numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import pydicom
from pydicom.datadict import dictionary_VR

from radsight.algorithms.contract import ImageInput, StudyInput
from radsight.dicom.pixels import frames_for_analysis
from radsight.errors import NotAnalysable
from radsight.results.sr import PATIENT_STUDY_ATTRIBUTES

#: attributes passed to algorithms besides the ImageInput fields (PS3.3 keywords)
EXTRA_ATTRIBUTES = (
    "PhotometricInterpretation",
    "BitsStored",
    "ImageType",
    "Manufacturer",
    "PatientAge",
    "PatientSex",
    "SliceThickness",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "ConvolutionKernel",
    "PresentationIntentType",
    # mammography laterality and view (radsight.algorithms.mmg.views)
    "ImageLaterality",
    "Laterality",
    "ViewCodeSequence",
    "AnatomicRegionSequence",
    "PatientOrientation",
    "ImageComments",
    # CT volume assembly (radsight.algorithms.ct_volume)
    "SeriesNumber",
    "InstanceNumber",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "GantryDetectorTilt",
    "SpacingBetweenSlices",
    "NumberOfFrames",
)


#: data set keyword -> the file meta's copy (PS3.10 7.1), which ingest accepts in its place
_META_COPIES = {
    "SOPClassUID": "MediaStorageSOPClassUID",
    "SOPInstanceUID": "MediaStorageSOPInstanceUID",
}

#: the UIDs that identify a source image in the algorithm's input and in every output
IDENTIFYING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def check_source(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Make a stored data set fit to be analysed and referenced, or say why it is not.

    Ingest (:func:`radsight.dicom.instances.check_dataset`) accepts an instance whose data
    set leaves its SOP Class or Instance UID empty when the file meta has them (some
    modalities do); everything after ingest (the algorithm's input, the SR's evidence)
    reads the data set, so the file meta's values are put there. An identifying UID
    encoded with another VR than UI, or any standard element sent with a VR of another
    kind than PS3.6 gives it (a name as numbers, say), is a sender's encoding error the
    outputs would copy (the SR's evidence emptied a SOP Class UID sent as a date; its
    Manufacturer sent as US could not be written), and so are several values in a
    Patient or Study attribute of multiplicity 1 (:data:`IDENTITY_ATTRIBUTES`): the
    instance is not analysable.
    Returns ``ds``, changed in place.

    Raises
    ------
    radsight.errors.NotAnalysable
        Naming the element and what is wrong with it.
    """
    meta = getattr(ds, "file_meta", None)
    for keyword, meta_keyword in _META_COPIES.items():
        if str(ds.get(keyword, "") or "").strip():
            continue
        value = str(meta.get(meta_keyword, "") or "").strip() if meta is not None else ""
        if not value:  # ingest refuses this; an instance stored before the check was added
            raise NotAnalysable(
                f"an instance has no {keyword} in its data set or its file meta: "
                "the sender must fill it (PS3.3 C.12.1)"
            )
        setattr(ds, keyword, value)
    for keyword in IDENTIFYING_UIDS:
        element = ds[keyword]
        if element.VR != "UI":
            raise NotAnalysable(
                f"instance {str(ds.get('SOPInstanceUID', ''))[:64]} encodes {keyword} "
                f"{element.tag} with VR {element.VR}, not UI (PS3.6): the sender must fix "
                "its encoding"
            )
    for element in ds:  # the top level: what the algorithm reads and the outputs copy
        if element.tag.is_private or element.VR == "UN":
            continue
        try:
            expected = dictionary_VR(element.tag)
        except KeyError:  # not in the data dictionary (a retired or future tag)
            continue
        kinds = {_VR_KINDS.get(vr) for vr in expected.split(" or ")}
        if _VR_KINDS.get(element.VR) not in kinds:
            raise NotAnalysable(
                f"instance {str(ds.SOPInstanceUID)[:64]} encodes {element.name} "
                f"{element.tag} with VR {element.VR} where PS3.6 says {expected}: its value "
                "cannot be read as meant; the sender must fix its encoding"
            )
    for keyword in IDENTITY_ATTRIBUTES:
        if keyword not in ds:
            continue
        element = ds[keyword]
        expected = dictionary_VR(element.tag)
        if element.VR != expected:  # copied as is: a time sent as IS fails to convert
            raise NotAnalysable(
                f"instance {str(ds.SOPInstanceUID)[:64]} encodes {element.name} "
                f"{element.tag} with VR {element.VR} where PS3.6 says {expected}: every "
                "output copies it, so the sender must fix its encoding"
            )
        if element.VM > 1:
            raise NotAnalysable(
                f"instance {str(ds.SOPInstanceUID)[:64]} holds {element.VM} values in "
                f"{element.name} {element.tag}, which has one (PS3.6): every output copies "
                "it, so the sender must fix it"
            )
    return ds


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """Pixel Spacing (else Imager Pixel Spacing) in mm, row then column; None if absent."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword not in ds:
            continue
        try:
            value = ds.get(keyword)  # a DS read lazily: '0>15' raises here
            if not value:
                continue
            values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
            row, column = (float(v) for v in values)
        except (TypeError, ValueError):
            raw = ds.get_item(keyword).value
            text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
            raise NotAnalysable(
                f"instance {str(ds.SOPInstanceUID)[:64]} has {keyword} {text[:60]}, not "
                "two decimal numbers (PS3.3 10.7.1.3): the image's size in mm is unknown"
            ) from None
        return row, column
    return None


#: the Patient and Study attributes every output copies (PS3.3 C.7.1.1, C.7.2.1), each
#: of value multiplicity 1 (several values would name several patients or studies) and
#: copied with their VR
IDENTITY_ATTRIBUTES = PATIENT_STUDY_ATTRIBUTES

#: a VR's kind of value: an element sent with a VR of another kind reads as another
#: type (a person name as numbers, a time as a list of integers)
_VR_KINDS = {
    **dict.fromkeys("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split(), "text"),
    **dict.fromkeys("AT FD FL SL SS SV UL US UV".split(), "number"),
    **dict.fromkeys("OB OD OF OL OV OW".split(), "bytes"),
    "SQ": "sequence",
}


def study_input_from(
    datasets: Sequence[pydicom.Dataset],
    study_type: str,
    *,
    max_frame_pixels: int,
    max_instance_pixels: int,
) -> StudyInput:
    """Decode the study's routed instances into what an algorithm reads (every frame).

    Each instance's pixel data is checked before it is decoded (a
    :class:`~radsight.errors.PixelDataMismatch` or :class:`~radsight.errors.TooLarge`
    when it declares other dimensions or is over ``max_frame_pixels`` or
    ``max_instance_pixels``: the memory an instance's frames take is bounded by the latter).
    """
    images = []
    for ds in datasets:
        for frame_number, pixels in frames_for_analysis(
            ds, max_frame_pixels=max_frame_pixels, max_instance_pixels=max_instance_pixels
        ):
            spacing = _pixel_spacing(ds)
            images.append(
                ImageInput(
                    study_instance_uid=str(ds.StudyInstanceUID),
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    pixels=pixels,
                    modality=str(ds.get("Modality", "") or ""),
                    body_part_examined=str(ds.get("BodyPartExamined", "") or "").upper(),
                    view_position=str(ds.get("ViewPosition", "") or "").upper(),
                    image_laterality=str(
                        ds.get("ImageLaterality", "") or ds.get("Laterality", "") or ""
                    ),
                    pixel_spacing=spacing,
                    frame_number=frame_number,
                    attributes={kw: ds.get(kw) for kw in EXTRA_ATTRIBUTES if kw in ds},
                )
            )
    if not images:
        raise NotAnalysable("the study has no images with pixel data")
    return StudyInput(str(datasets[0].StudyInstanceUID), study_type, tuple(images))
