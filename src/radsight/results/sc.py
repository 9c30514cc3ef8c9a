"""The analysis as pictures: one Secondary Capture per analysed image frame (PS3.3 A.8.1).

Each capture is the source frame rendered for display (:func:`display_image`), in RGB,
with every region of every finding drawn on it and a caption band reading
``AI marks, not a diagnosis - <algorithm> <version>``. Positive findings are drawn in red
with a thick line; each region is labelled with the finding's meaning and probability.
The platform gives the encoder only the regions it keeps (Present findings, by
:func:`radsight.operating_points.regions_to_mark`); a report built by hand that carries
regions of a finding below its threshold gets them in amber with a thin line.

The capture keeps the source's size (rows and columns), so the SR's SCOORDs apply to it
unchanged; the caption band covers the bottom rows of the picture. It is a derived image
(Image Type DERIVED\\SECONDARY, Conversion Type WSD, Burned In Annotation YES) in a new
series of the source's study, and references its source image and frame in the Source
Image Sequence (PS3.3 C.7.6.1.1.4).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.uid import ExplicitVRLittleEndian

from radsight.algorithms.contract import Region
from radsight.dicom.pixels import display_image, frames_for_analysis
from radsight.errors import EncodingError
from radsight.results.report import AnalysisReport, ReportedFinding
from radsight.results.sr import _source_header

__all__ = ["CAPTION_PREFIX", "build_secondary_captures", "caption"]

CAPTION_PREFIX = "AI marks, not a diagnosis"
POSITIVE_COLOUR = (255, 40, 40)
BELOW_THRESHOLD_COLOUR = (230, 180, 40)
_PURPOSE_SOURCE_IMAGE = hd.sr.CodedConcept(
    "121322", "DCM", "Source image for image processing operation"
)
#: direction cosine axes to patient orientation letters (PS3.3 C.7.6.1.1.1)
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))


def caption(report: AnalysisReport) -> str:
    """The caption burned into every capture: the disclaimer, algorithm and version."""
    return f"{CAPTION_PREFIX} - {report.algorithm_name} {report.algorithm_version}"


def build_secondary_captures(
    source_images: Sequence[pydicom.Dataset],
    report: AnalysisReport,
    *,
    series_instance_uid: str,
    sop_instance_uids: Sequence[str],
    max_frame_pixels: int,
    max_instance_pixels: int,
    series_number: int = 9002,
) -> list[pydicom.Dataset]:
    """Render the findings on the analysed images as Secondary Capture images.

    Parameters
    ----------
    source_images : Sequence[pydicom.Dataset]
        The analysed images of one study, with their pixel data (any transfer syntax
        :func:`radsight.dicom.pixels.frames_for_analysis` decodes).
    report : radsight.results.AnalysisReport
        The findings, with regions in SCOORD image coordinates (PS3.3 C.18.6.1.2).
    series_instance_uid : str
        Series Instance UID of the new capture series.
    sop_instance_uids : Sequence[str]
        One SOP Instance UID per capture, in order: one per frame of every source
        (Number of Frames, or 1), sources in the given order.
    max_frame_pixels, max_instance_pixels : int
        The decode limits (the settings of those names), checked before each source is
        decoded (:func:`radsight.dicom.codestream.check_pixel_data`).
    series_number : int, optional
        Series Number of the capture series.

    Returns
    -------
    list of pydicom.Dataset
        Secondary Capture Image Storage instances (highdicom ``SCImage``), RGB 8-bit,
        Explicit VR Little Endian, of the source's size, numbered from 1, one per source
        frame in source order.

    Raises
    ------
    ValueError
        When ``source_images`` is empty, lacks a UID, holds an instance twice or spans
        more than one study; when ``sop_instance_uids`` does not hold one UID per source
        frame; when a region references an image that is not among the sources or a
        frame it does not have.
    radsight.errors.MissingPixelData, radsight.errors.MalformedDicom
        When a source has no pixel data or it cannot be decoded.
    radsight.errors.EncodingError
        When highdicom refuses the capture built from valid input.
    """
    frame_counts = _check_sources(source_images)
    if len(sop_instance_uids) != sum(frame_counts):
        raise ValueError(
            f"sop_instance_uids holds {len(sop_instance_uids)} UID(s) for "
            f"{sum(frame_counts)} source frame(s)"
        )
    marks = _marks_by_frame(report, source_images, frame_counts)
    text = caption(report)
    uids = iter(sop_instance_uids)
    captures: list[pydicom.Dataset] = []
    for ds in source_images:
        for frame_number, pixels in frames_for_analysis(
            ds, max_frame_pixels=max_frame_pixels, max_instance_pixels=max_instance_pixels
        ):
            rgb = _draw(
                display_image(pixels, ds),
                marks.get((str(ds.SOPInstanceUID), frame_number), []),
                text,
            )
            captures.append(
                _capture(
                    ds,
                    frame_number,
                    rgb,
                    report,
                    text,
                    series_instance_uid=series_instance_uid,
                    series_number=series_number,
                    sop_instance_uid=next(uids),
                    instance_number=len(captures) + 1,
                )
            )
    return captures


def _check_sources(source_images: Sequence[pydicom.Dataset]) -> list[int]:
    if not source_images:
        raise ValueError("source_images is empty: there is nothing to capture")
    seen: set[str] = set()
    studies: set[str] = set()
    counts = []
    for position, ds in enumerate(source_images):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            if not ds.get(keyword):
                raise ValueError(f"source image {position} has no {keyword}")
        if ds.SOPInstanceUID in seen:
            raise ValueError(f"source image {ds.SOPInstanceUID} is given twice")
        seen.add(str(ds.SOPInstanceUID))
        studies.add(str(ds.StudyInstanceUID))
        counts.append(int(ds.get("NumberOfFrames", 1) or 1))
    if len(studies) > 1:
        raise ValueError(
            "source images belong to more than one study: " + ", ".join(sorted(studies))
        )
    return counts


def _marks_by_frame(
    report: AnalysisReport,
    source_images: Sequence[pydicom.Dataset],
    frame_counts: list[int],
) -> dict[tuple[str, int | None], list[tuple[ReportedFinding, Region]]]:
    frames = {str(ds.SOPInstanceUID): n for ds, n in zip(source_images, frame_counts, strict=True)}
    marks: dict[tuple[str, int | None], list[tuple[ReportedFinding, Region]]] = {}
    for finding in report.findings:
        for region in finding.regions:
            n_frames = frames.get(region.sop_instance_uid)
            if n_frames is None:
                raise ValueError(
                    f"a {region.graphic_type} region references image "
                    f"{region.sop_instance_uid}, which is not among the source images"
                )
            if n_frames > 1:
                if region.frame_number is None or not 1 <= region.frame_number <= n_frames:
                    raise ValueError(
                        f"a region on image {region.sop_instance_uid} references frame "
                        f"{region.frame_number}; the image has {n_frames} frames"
                    )
                frame: int | None = region.frame_number
            elif region.frame_number in (None, 1):
                frame = None
            else:
                raise ValueError(
                    f"a region references frame {region.frame_number} of single-frame "
                    f"image {region.sop_instance_uid}"
                )
            marks.setdefault((region.sop_instance_uid, frame), []).append((finding, region))
    for frame_marks in marks.values():
        # positives are drawn last, on top of the weaker marks
        frame_marks.sort(key=lambda mark: mark[0].positive)
    return marks


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise EncodingError("Pillow is built without FreeType: the caption cannot be scaled")
    return font


def _fit(draw: ImageDraw.ImageDraw, text: str, size: int, width: float) -> int:
    """The largest font size up to ``size`` at which ``text`` fits ``width`` pixels."""
    length = draw.textlength(text, font=_font(size))
    if length > width:
        size = max(1, int(size * width / length))
    while size > 1 and draw.textlength(text, font=_font(size)) > width:
        size -= 1
    return size


#: the smallest caption font size worth keeping to one or two lines for
_READABLE = 12
#: the caption band covers at most this share of the image's rows
_BAND_SHARE = 0.2


def _caption_lines(
    draw: ImageDraw.ImageDraw, text: str, size: int, shape: tuple[int, int], margin: int
) -> tuple[list[str], int]:
    """Lines and font size of the caption: one line, else the disclaimer above the
    algorithm, else (small images) wrapped at spaces and hyphens; the largest size at
    which the lines fit the width and the band stays within its share of the rows."""
    rows, columns = shape
    width = columns - 2 * margin

    def tallest(n_lines: int, start: int) -> int:
        size = start
        while size > 1 and n_lines * sum(_font(size).getmetrics()) + 2 * margin > (
            _BAND_SHARE * rows
        ):
            size -= 1
        return size

    def best(lines: list[str]) -> int:
        return tallest(len(lines), min(_fit(draw, line, size, width) for line in lines))

    floor = min(size, _READABLE)
    layouts = [[text], [CAPTION_PREFIX, text[len(CAPTION_PREFIX) + 3 :]]]
    for lines in layouts:
        fitted = best(lines)
        if fitted >= floor:
            return lines, fitted
    candidates = [(best(lines), -len(lines), lines) for lines in layouts]
    for wrap_size in range(floor, 6, -1):
        lines = _wrap(draw, text, wrap_size, width)
        candidates.append((best(lines), -len(lines), lines))
        if candidates[-1][0] >= wrap_size:
            break
    fitted, _, lines = max(candidates)
    return lines, fitted


def _wrap(draw: ImageDraw.ImageDraw, text: str, size: int, width: float) -> list[str]:
    font = _font(size)
    lines = [""]
    for piece in re.split(r"(?<=[ -])", text):
        candidate = lines[-1] + piece
        if lines[-1] and draw.textlength(candidate.rstrip(), font=font) > width:
            lines.append(piece)
        else:
            lines[-1] = candidate
    return [line.strip() for line in lines if line.strip()]


def _draw(
    gray: np.ndarray,
    marks: list[tuple[ReportedFinding, Region]],
    text: str,
) -> np.ndarray:
    rows, columns = gray.shape
    image = Image.fromarray(gray, mode="L").convert("RGB")
    draw = ImageDraw.Draw(image)
    short = min(rows, columns)
    line = max(2, round(max(rows, columns) / 400))
    margin = max(2, round(short * 0.01))

    size = max(12, round(rows * 0.035))
    lines, fitted = _caption_lines(draw, text, size, (rows, columns), margin)
    font = _font(fitted)
    ascent, descent = font.getmetrics()
    line_height = ascent + descent
    band = len(lines) * line_height + 2 * margin
    draw.rectangle((0, rows - band, columns, rows), fill=(0, 0, 0))

    for finding, region in marks:
        colour = POSITIVE_COLOUR if finding.positive else BELOW_THRESHOLD_COLOUR
        width = line if finding.positive else max(1, line // 2)
        _draw_region(draw, region, colour, width)
        label = mark_label(finding, region)
        label_size = _fit(draw, label, max(8, round(size * 0.85)), columns - 2 * margin)
        _draw_label(draw, region, label, _font(label_size), colour, (rows, columns), margin)

    y = rows - band + margin
    for part in lines:
        draw.text((margin, y), part, font=font, fill=(255, 255, 255))
        y += line_height
    return np.asarray(image)


def mark_label(finding: ReportedFinding, region: Region) -> str:
    """The text beside a mark: the finding and a probability, the region's own where it has
    one (a CT slice's), else the finding's; "(below <threshold>)" when under it."""
    shown = finding.probability if region.probability is None else region.probability
    label = f"{finding.spec.code.meaning} p={shown:.2f}"
    if shown < finding.threshold:
        label += f" (below {finding.threshold:.2f})"
    return label


def _draw_region(
    draw: ImageDraw.ImageDraw, region: Region, colour: tuple[int, int, int], width: int
) -> None:
    # SCOORD (0, 0) is the top-left corner of the top-left pixel, so an edge at x lies
    # between pixels x - 1 and x; Pillow draws a line of width w at x over pixels
    # x - w // 2 ... x + (w - 1) // 2, which straddles that edge: no offset is needed
    points = [(float(x), float(y)) for x, y in region.points]
    if region.graphic_type == "POLYGON":
        if points[0] != points[-1]:
            points.append(points[0])
        draw.line(points, fill=colour, width=width, joint="curve")
    elif region.graphic_type == "CIRCLE":
        (cx, cy), (ex, ey) = points[0], points[1]
        r = math.hypot(ex - cx, ey - cy)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=width)
    elif region.graphic_type == "ELLIPSE":
        # PS3.3 C.18.6.1.2: major axis end points, then minor axis end points
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points[:4]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a, b = math.hypot(x1 - x0, y1 - y0) / 2, math.hypot(x3 - x2, y3 - y2) / 2
        angle = math.atan2(y1 - y0, x1 - x0)
        outline = [
            (
                cx + a * math.cos(t) * math.cos(angle) - b * math.sin(t) * math.sin(angle),
                cy + a * math.cos(t) * math.sin(angle) + b * math.sin(t) * math.cos(angle),
            )
            for t in np.linspace(0.0, 2.0 * math.pi, 73)
        ]
        draw.line(outline, fill=colour, width=width, joint="curve")
    else:  # POINT, MULTIPOINT: a cross hair around each point
        arm = 4 * width + 2
        for x, y in points:
            draw.line((x - arm, y, x + arm, y), fill=colour, width=width)
            draw.line((x, y - arm, x, y + arm), fill=colour, width=width)


def _draw_label(
    draw: ImageDraw.ImageDraw,
    region: Region,
    label: str,
    font: ImageFont.FreeTypeFont,
    colour: tuple[int, int, int],
    shape: tuple[int, int],
    margin: int,
) -> None:
    rows, columns = shape
    x0, y0, _, y1 = region.bounds()
    if region.graphic_type in ("POINT", "MULTIPOINT"):
        y0, y1 = y0 - margin * 3, y1 + margin * 3
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    width, height = right - left, bottom - top
    x = min(max(0.0, x0), max(0.0, columns - width - 2))
    y = y0 - height - 2 * margin
    if y < 0:
        y = y1 + margin
    y = min(y, rows - height - 1)
    draw.rectangle((x - 1, y + top - 1, x + width + 1, y + bottom + 1), fill=(0, 0, 0))
    draw.text((x, y), label, font=font, fill=colour)


def _patient_orientation(ds: pydicom.Dataset) -> list[str]:
    """Patient Orientation (PS3.3 C.7.6.1.1.1): the source's, or from its orientation."""
    orientation = ds.get("PatientOrientation")
    if orientation and len(orientation) == 2:
        return [str(v) for v in orientation]
    cosines = ds.get("ImageOrientationPatient")
    if cosines is None and ds.get("SharedFunctionalGroupsSequence"):
        plane = ds.SharedFunctionalGroupsSequence[0].get("PlaneOrientationSequence")
        cosines = plane[0].get("ImageOrientationPatient") if plane else None
    if not cosines or len(cosines) != 6:
        return []
    letters = []
    for vector in (cosines[:3], cosines[3:]):
        parts = sorted(
            (
                (abs(float(v)), _AXIS_LETTERS[i][0 if float(v) > 0 else 1])
                for i, v in enumerate(vector)
            ),
            reverse=True,
        )
        letters.append("".join(letter for weight, letter in parts if weight > 0.25)[:3])
    return letters


def _capture(
    ds: pydicom.Dataset,
    frame_number: int | None,
    rgb: np.ndarray,
    report: AnalysisReport,
    text: str,
    *,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    instance_number: int,
) -> pydicom.Dataset:
    laterality = ds.get("Laterality") or ds.get("ImageLaterality")
    try:
        capture = hd.sc.SCImage(
            pixel_array=rgb,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            manufacturer=report.manufacturer,
            # replaced below: the source's own value may be oblique or empty
            patient_orientation=("L", "F"),
            laterality=laterality if laterality in ("L", "R") else None,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=f"AI marks {report.algorithm_name} {report.algorithm_version}"[:64],
            manufacturer_model_name=report.algorithm_name[:64],
            software_versions=report.algorithm_version[:64],
            specific_character_set=ds.get("SpecificCharacterSet"),
        )
        # Patient, General Study and Patient Study modules as the source has them
        capture.copy_patient_and_study_information(_source_header(ds))
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(
            f"cannot encode the secondary capture of image {ds.SOPInstanceUID}: {exc}"
        ) from exc
    capture.PatientOrientation = _patient_orientation(ds)
    if "Laterality" not in capture:
        # Type 2C (PS3.3 C.7.3.1): present, empty, when the source does not say
        capture.Laterality = ""
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.ConversionType = "WSD"
    capture.BurnedInAnnotation = "YES"
    capture.SecondaryCaptureDeviceManufacturer = report.manufacturer[:64]
    capture.SecondaryCaptureDeviceManufacturerModelName = report.algorithm_name[:64]
    capture.SecondaryCaptureDeviceSoftwareVersions = report.algorithm_version[:64]
    capture.ImageComments = text
    capture.DerivationDescription = f"{text}; regions and labels burned in"
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = ds.SOPClassUID
    reference.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    if frame_number is not None:
        reference.ReferencedFrameNumber = frame_number
    reference.PurposeOfReferenceCodeSequence = [_PURPOSE_SOURCE_IMAGE]
    capture.SourceImageSequence = [reference]
    return capture
