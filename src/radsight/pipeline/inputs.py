"""The algorithm's input built from stored instances (pure: pydicom and numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import pydicom

from radsight.algorithms.contract import ImageInput, StudyInput
from radsight.dicom.pixels import frames_for_analysis
from radsight.errors import NotAnalysable

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
            spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
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
                    pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
                    frame_number=frame_number,
                    attributes={kw: ds.get(kw) for kw in EXTRA_ATTRIBUTES if kw in ds},
                )
            )
    if not images:
        raise NotAnalysable("the study has no images with pixel data")
    return StudyInput(str(datasets[0].StudyInstanceUID), study_type, tuple(images))
