"""Pixel data as algorithms and people see it (pure: numpy and pydicom only).

Two steps of the grayscale pipeline of PS3.4 Annex N.2 are implemented here:

* :func:`frames_for_analysis` decodes the stored pixels and applies the Modality LUT
  (PS3.3 C.11.1), so that CT values are in HU; MONOCHROME1 is inverted so that larger
  values are always brighter and colour images become luminance.
* :func:`display_image` applies the VOI LUT (PS3.3 C.11.2) to such an array and gives
  8-bit pixels ready to be drawn on.

MONOCHROME1 is inverted about the midpoint of the modality value range (the stored
range of PS3.3 C.7.6.3.1 mapped through the Modality LUT), so values stay in their usual
range and a window from the data set can be mirrored the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import ExplicitVRLittleEndian

from radsight.dicom.codestream import check_pixel_data
from radsight.errors import MalformedDicom, MissingPixelData, TooLarge

__all__ = ["display_image", "frames_for_analysis", "raise_decompression_bomb"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: ITU-R BT.601 luma weights, as used by PS3.3 C.7.6.3.1.2 for YBR_FULL
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: enough samples for a stable percentile window on any image size
_WINDOW_SAMPLES = 512 * 512


def frames_for_analysis(
    ds: pydicom.Dataset, *, max_frame_pixels: int, max_instance_pixels: int
) -> list[tuple[int | None, np.ndarray]]:
    """Decode every frame of an image and bring it to modality values.

    Nothing is decoded before :func:`radsight.dicom.codestream.check_pixel_data` has
    compared what the pixel data declares (each compressed frame's own header) with the
    Image Pixel module and bounded a frame by ``max_frame_pixels`` and all frames together
    by ``max_instance_pixels`` (both required: a caller cannot forget the settings): every decode in
    Radsight goes through here or through :func:`radsight.dicom.rendering.native_frame`,
    which checks the same.
    Compressed transfer syntaxes are decoded through pydicom's plugins (pylibjpeg,
    Pillow). Each frame then goes through the Modality LUT or Rescale Slope/Intercept
    (PS3.3 C.11.1, per frame for enhanced multi-frame images, C.7.6.16.2.9);
    MONOCHROME1 frames are inverted so that larger values are brighter; RGB, YBR and
    PALETTE COLOR frames become luminance (PS3.3 C.7.6.3.1.2).

    Parameters
    ----------
    ds : pydicom.Dataset
        A composite image instance with Pixel Data (7FE0,0010), Float Pixel Data or
        Double Float Pixel Data.
    max_frame_pixels : int
        The most pixels of one frame that may be decoded (setting ``max_frame_pixels``).
    max_instance_pixels : int
        The most pixels of all frames together (setting ``max_instance_pixels``): this
        decodes every frame, so its memory is bounded by this total.

    Returns
    -------
    list of (int or None, numpy.ndarray)
        ``(frame_number, pixels)`` in frame order: ``frame_number`` is ``None`` for a
        single-frame image and 1-based for a multi-frame one (Number of Frames present
        and greater than one); ``pixels`` is a 2-D float32 array ``(rows, columns)``.

    Raises
    ------
    radsight.errors.MissingPixelData
        When the data set carries no pixel data.
    radsight.errors.PixelDataMismatch
        When the pixel data declares other dimensions or frames than the data set says,
        or uncompressed data has another length (nothing is decoded).
    radsight.errors.TooLarge
        When a frame has more than ``max_frame_pixels`` pixels, all frames more than
        ``max_instance_pixels``, or a decoder refuses it
        as a decompression bomb (Pillow's ``DecompressionBombError``).
    radsight.errors.MalformedDicom
        When the pixel data cannot be decoded (no decoder for the transfer syntax,
        corrupt data, inconsistent Image Pixel module).
    """
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise MissingPixelData(f"instance {_uid(ds)} has no pixel data")
    transfer_syntax_uid = _transfer_syntax_uid(ds)
    check_pixel_data(ds, max_frame_pixels=max_frame_pixels, max_instance_pixels=max_instance_pixels)
    try:
        decoder = get_decoder(transfer_syntax_uid)
        array, properties = decoder.as_array(ds)
    except MemoryError:  # the worker's memory ceiling: not the data's fault
        raise
    except Exception as exc:  # the plugins raise anything from ValueError to KeyError
        raise_decompression_bomb(exc, ds)
        raise MalformedDicom(
            f"cannot decode the pixel data of instance {_uid(ds)} "
            f"({transfer_syntax_uid.name or transfer_syntax_uid}): {exc}"
        ) from exc

    photometric = str(properties.get("photometric_interpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    multi_frame = n_frames > 1
    if not multi_frame:
        array = array[np.newaxis, ...]
    if array.ndim != (4 if samples > 1 else 3):
        raise MalformedDicom(
            f"instance {_uid(ds)}: decoded pixel array has shape {array.shape}, which does "
            f"not match {n_frames} frame(s) of {samples} sample(s) per pixel"
        )

    frames: list[tuple[int | None, np.ndarray]] = []
    for index in range(array.shape[0]):
        frame = array[index]
        if samples > 1:
            pixels = _luminance(frame, photometric)
        elif photometric == "PALETTE COLOR":
            try:
                pixels = _luminance(apply_color_lut(frame, ds), "RGB")
            except Exception as exc:
                raise MalformedDicom(
                    f"instance {_uid(ds)}: cannot apply its palette colour LUT: {exc}"
                ) from exc
        else:
            pixels = _modality_values(frame, ds, index)
            if photometric == "MONOCHROME1":
                pixels = np.float32(_monochrome1_pivot(ds, index)) - pixels
        frames.append((index + 1 if multi_frame else None, pixels))
    return frames


def display_image(pixels: np.ndarray, ds: pydicom.Dataset | None = None) -> np.ndarray:
    """Window modality values to 8-bit display values.

    The window is the data set's first Window Center (0028,1050) and Window Width
    (0028,1051), top-level or in the shared Frame VOI LUT functional group, applied
    with its VOI LUT Function (0028,1056): LINEAR (the default, PS3.3 C.11.2.1.2.1),
    LINEAR_EXACT (C.11.2.1.3.2) or SIGMOID (C.11.2.1.3.1). For MONOCHROME1 the centre
    is mirrored as :func:`frames_for_analysis` mirrors the pixels. Without a usable
    window the 1st to 99th percentile range of the image is used. Colour images
    (luminance from :func:`frames_for_analysis`) get no VOI LUT, which is defined for
    grayscale only: their stored range maps to 0-255.

    Parameters
    ----------
    pixels : numpy.ndarray
        A 2-D array as returned by :func:`frames_for_analysis`.
    ds : pydicom.Dataset, optional
        The instance the pixels come from, for its window.

    Returns
    -------
    numpy.ndarray
        2-D uint8 array, 0 black and 255 white, of the same shape as ``pixels``.

    Raises
    ------
    ValueError
        When ``pixels`` is not a 2-D array.
    """
    if pixels.ndim != 2:
        raise ValueError(f"display_image takes a 2-D array, got shape {pixels.shape}")
    values = np.asarray(pixels, dtype=np.float32)
    window = _window(ds) if ds is not None else None
    if ds is not None and _is_colour(ds):
        # the VOI LUT applies to grayscale only (PS3.3 C.11.2): luminance is shown as is
        top = 2 ** int(ds.get("BitsStored", 8) or 8) - 1
        out = values * np.float32(255.0 / top)
    elif ds is not None and window is not None:
        center, width, function = window
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            center = _monochrome1_pivot(ds, 0) - center
        if function == "SIGMOID":
            out = 255.0 / (1.0 + np.exp(-4.0 * (values - np.float32(center)) / np.float32(width)))
        elif function == "LINEAR_EXACT":
            lo = center - width / 2.0
            out = (values - np.float32(lo)) * np.float32(255.0 / width)
        else:  # LINEAR, C.11.2.1.2.1: width - 1 spans the output range
            lo = center - 0.5 - (width - 1.0) / 2.0
            out = (values - np.float32(lo)) * np.float32(255.0 / (width - 1.0))
    else:
        lo, hi = _percentile_window(values)
        out = (values - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out).astype(np.uint8)


def raise_decompression_bomb(exc: BaseException, ds: pydicom.Dataset) -> None:
    """Raise :class:`~radsight.errors.TooLarge` where a decoder gave up on an image as a
    decompression bomb: Pillow's ``DecompressionBombError`` (over twice
    ``Image.MAX_IMAGE_PIXELS``), possibly wrapped by pydicom's plugin loop."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError) or "decompression bomb" in str(exc):
        raise TooLarge(
            f"instance {_uid(ds)}: a decoder refused the pixel data as a decompression bomb "
            f"(it declares more pixels than Pillow's limit): {exc}"
        ) from exc


def _uid(ds: pydicom.Dataset) -> str:
    return str(ds.get("SOPInstanceUID", "<no SOP Instance UID>"))


def _transfer_syntax_uid(ds: pydicom.Dataset) -> pydicom.uid.UID:
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid:
        return pydicom.uid.UID(uid)
    # a data set built in memory or received without file meta: native pixels only
    if "PixelData" in ds and bytes(ds.PixelData[:4]) == b"\xfe\xff\x00\xe0":
        raise MalformedDicom(
            f"instance {_uid(ds)} has encapsulated pixel data but no Transfer Syntax UID"
        )
    return ExplicitVRLittleEndian


def _is_colour(ds: pydicom.Dataset) -> bool:
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    return int(ds.get("SamplesPerPixel", 1) or 1) > 1 or photometric == "PALETTE COLOR"


def _luminance(frame: np.ndarray, photometric: str) -> np.ndarray:
    if photometric.startswith("YBR"):
        # not converted by the decoder: the first component is already luma
        return frame[..., 0].astype(np.float32)
    return frame[..., :3].astype(np.float32) @ _LUMA


def _frame_group(ds: pydicom.Dataset, index: int, sequence: str) -> pydicom.Dataset | None:
    """The first item of a functional group macro for a frame (PS3.3 C.7.6.16)."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _rescale(ds: pydicom.Dataset, index: int) -> tuple[float, float] | None:
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    item = _frame_group(ds, index, "PixelValueTransformationSequence")
    if item is not None:
        return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return None


def _modality_values(frame: np.ndarray, ds: pydicom.Dataset, index: int) -> np.ndarray:
    if ds.get("ModalityLUTSequence") or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        try:
            return np.asarray(apply_modality_lut(frame, ds), dtype=np.float32)
        except Exception as exc:
            raise MalformedDicom(
                f"instance {_uid(ds)}: cannot apply its Modality LUT: {exc}"
            ) from exc
    rescale = _rescale(ds, index)
    values = frame.astype(np.float32)
    if rescale is not None and rescale != (1.0, 0.0):
        slope, intercept = rescale
        values = values * np.float32(slope) + np.float32(intercept)
    return values


def _monochrome1_pivot(ds: pydicom.Dataset, index: int) -> float:
    """Lowest plus highest possible modality value: MONOCHROME1 is mirrored about it."""
    lut = ds.get("ModalityLUTSequence")
    if lut:
        data = lut[0].get("LUTData")
        if data is not None and not isinstance(data, bytes | bytearray):
            values = np.atleast_1d(np.asarray(data, dtype=np.float64))
            return float(values.min() + values.max())
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        lo, hi = -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    else:
        lo, hi = 0, 2**bits_stored - 1
    slope, intercept = _rescale(ds, index) or (1.0, 0.0)
    return (lo + hi) * slope + 2.0 * intercept


def _window(ds: pydicom.Dataset) -> tuple[float, float, str] | None:
    source: pydicom.Dataset | None = ds
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        source = _frame_group(ds, 0, "FrameVOILUTSequence")
    if source is None or "WindowCenter" not in source or "WindowWidth" not in source:
        return None
    try:
        center = float(_first(source.WindowCenter))
        width = float(_first(source.WindowWidth))
    except (TypeError, ValueError):
        return None
    function = str(source.get("VOILUTFunction", "") or ds.get("VOILUTFunction", "") or "LINEAR")
    function = function.upper()
    # LINEAR needs width > 1 (C.11.2.1.2.1), the others width > 0 (C.11.2.1.3)
    if not np.isfinite(center) or not np.isfinite(width):
        return None
    if width <= (1.0 if function == "LINEAR" else 0.0):
        return None
    return center, width, function


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple | MultiValue):
        return value[0] if len(value) else None
    return value


def _percentile_window(values: np.ndarray) -> tuple[float, float]:
    step = max(1, int(np.sqrt(values.size / _WINDOW_SAMPLES)))
    sample = values[::step, ::step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    if hi <= lo:
        # a nearly uniform image: spread its whole range, or show one value as mid-grey
        lo, hi = float(sample.min()), float(sample.max())
        if hi <= lo:
            return lo - 1.0, lo + 1.0
    return lo, hi
