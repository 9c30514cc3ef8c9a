"""One frame of an instance, packed for the viewer's canvas (pure: numpy and pydicom).

The browser does window/level itself, so it needs the modality values, not an 8-bit
picture: the frame goes out as 16-bit unsigned integers with a linear map back to
modality values (``value = stored * slope + intercept``), plus a default window.
Integer images up to 16 bits travel exactly; anything else is quantised to 65,536
levels over its range, far finer than any display.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pydicom

from radsight.dicom.pixels import frames_for_analysis
from radsight.dicom.rendering import one_frame
from radsight.dicom.stored import decoding_stored, read_stored
from radsight.errors import NotFound, TooLarge


@dataclass(frozen=True)
class DisplayFrame:
    rows: int
    columns: int
    slope: float
    intercept: float
    window_center: float
    window_width: float
    #: little-endian uint16, row by row
    data: bytes


def _default_window(ds: pydicom.Dataset, values: np.ndarray) -> tuple[float, float]:
    """The data set's first window for MONOCHROME2 (PS3.3 C.11.2), else the 1-99 % range."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if photometric == "MONOCHROME2" and center is not None and width is not None:
            c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
            w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
            if w > 0:
                return c, w
    except (TypeError, ValueError):
        pass  # an unusable window falls back to the image's own range
    step = max(1, values.size // (512 * 512))
    lo, hi = np.percentile(values.ravel()[::step], [1.0, 99.0])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max()) + 1.0
    return float(lo + hi) / 2.0, float(hi - lo)


def read_display_frame(
    dicom_bytes: bytes,
    frame_index: int,
    what: str = "",
    *,
    max_frame_pixels: int,
    max_instance_pixels: int,
    max_render_pixels: int,
) -> DisplayFrame:
    """Decode frame ``frame_index`` (0-based) of a stored instance for the viewer.

    ``what`` names the stored object (its key) in an error. The frame goes to the
    browser at full size, so it must be at most ``max_render_pixels``; decoding is
    checked as everywhere (:func:`radsight.dicom.codestream.check_pixel_data`, both
    limits), and of a multi-frame image only that frame is decoded.

    Raises
    ------
    radsight.errors.TooLarge
        When the frame is over ``max_render_pixels`` (nothing is decoded).
    radsight.errors.NotFound
        When the instance has no such frame.
    radsight.errors.StoredObjectUnreadable
        When the stored file cannot be read or its pixel data cannot be decoded.
    radsight.errors.MissingPixelData
        When the instance has no pixel data.
    """
    ds = read_stored(dicom_bytes, what or "instance")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * columns > max_render_pixels:
        raise TooLarge(
            f"the image of {rows} x {columns} pixels is over the {max_render_pixels:,} pixels "
            "the viewer may be sent (setting max_render_pixels)"
        )
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame_index < count:
        raise NotFound(f"the instance has {count} frame(s); there is no frame {frame_index}")
    limits = {"max_frame_pixels": max_frame_pixels, "max_instance_pixels": max_instance_pixels}
    with warnings.catch_warnings(), decoding_stored(what or "instance"):
        warnings.simplefilter("ignore")  # odd values were reported at ingest
        single = one_frame(ds, frame_index + 1, **limits) if count > 1 else ds
        ((_, pixels),) = frames_for_analysis(single, **limits)
    values = np.nan_to_num(pixels.astype(np.float64))
    lo, hi = float(values.min()), float(values.max())
    integral = bool(np.all(values == np.round(values)))
    if integral and hi - lo <= 65535:
        slope = 1.0
    else:
        slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.rint((values - lo) / slope).clip(0, 65535).astype("<u2")
    center, width = _default_window(ds, values)
    return DisplayFrame(
        rows=int(values.shape[0]),
        columns=int(values.shape[1]),
        slope=slope,
        intercept=lo,
        window_center=center,
        window_width=width,
        data=stored.tobytes(),
    )
