"""Rendered images and frames for WADO-RS (PS3.18 8.3.5.1 and 9.5): pure, pydicom + Pillow.

A rendered frame goes through :func:`radsight.dicom.pixels.frames_for_analysis` (Modality
LUT, MONOCHROME1 inverted) and :func:`radsight.dicom.pixels.display_image` (the VOI LUT:
the data set's window, or the ``window`` query parameter), is cropped and scaled to the
``viewport`` and encoded as JPEG or PNG. :func:`native_frame` gives a frame's pixels
uncompressed, as ``application/octet-stream`` frames need them.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from radsight.config import DEFAULT_MAX_RENDER_PIXELS
from radsight.dicom.codestream import check_pixel_data
from radsight.dicom.pixels import display_image, frames_for_analysis, raise_decompression_bomb
from radsight.errors import InvalidInput, MalformedDicom, TooLarge

__all__ = ["RenderOptions", "native_frame", "parse_render_options", "render_frame"]

#: what a rendered response can be, and what the query's ``quality`` means for it
RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png")
_COPIED_FOR_WINDOW = (
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "SamplesPerPixel",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
)


@dataclass(frozen=True)
class RenderOptions:
    """The query parameters of a rendered request (PS3.18 Table 8.3.5-1)."""

    #: (center, width, function) or None for the data set's own window
    window: tuple[float, float, str] | None = None
    #: output (width, height) the image is fitted into, keeping its aspect ratio
    viewport: tuple[int, int] | None = None
    #: source region (x, y, width, height) in pixels, before scaling
    crop: tuple[int, int, int, int] | None = None
    #: JPEG quality 1-100
    quality: int = 90


def parse_render_options(
    window: str | None,
    viewport: str | None,
    quality: str | None,
    *,
    max_render_pixels: int = DEFAULT_MAX_RENDER_PIXELS,
) -> RenderOptions:
    """Read ``window=center,width[,function]``, ``viewport=vw,vh[,sx,sy,sw,sh]``, ``quality``.

    The output size ``vw x vh`` and the source region ``sw x sh`` are each bounded by
    ``max_render_pixels`` (the setting of that name): Pillow allocates both.

    Raises :class:`~radsight.errors.InvalidInput` (a ``ValueError``) with a message for the
    caller when a value is malformed, and :class:`~radsight.errors.TooLarge` (413) when
    the viewport or its region is over ``max_render_pixels``.
    """
    win = None
    if window:
        parts = [p.strip() for p in window.split(",")]
        if len(parts) not in (2, 3):
            raise InvalidInput(f"window must be center,width[,function], not {window!r}")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise InvalidInput(f"window center and width must be numbers: {window!r}") from None
        function = (parts[2] if len(parts) == 3 else "linear").upper()
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise InvalidInput(
                f"window function must be linear, linear-exact or sigmoid: {window!r}"
            )
        if not np.isfinite(center) or not np.isfinite(width) or width <= 1.0:
            raise InvalidInput(f"window width must be greater than 1: {window!r}")
        win = (center, width, function)
    view = crop = None
    if viewport:
        shown = viewport if len(viewport) <= 80 else viewport[:80] + "..."
        try:
            numbers = [int(float(p)) for p in viewport.split(",") if p.strip() != ""]
        except (ValueError, OverflowError):  # OverflowError: "1e999" is infinite
            raise InvalidInput(f"viewport must be vw,vh[,sx,sy,sw,sh]: {shown!r}") from None
        if len(numbers) not in (2, 6) or numbers[0] <= 0 or numbers[1] <= 0:
            raise InvalidInput(f"viewport must be vw,vh[,sx,sy,sw,sh] with vw, vh > 0: {shown!r}")
        _check_render_size("viewport vw x vh", numbers[0], numbers[1], max_render_pixels)
        view = (numbers[0], numbers[1])
        if len(numbers) == 6:
            if numbers[4] <= 0 or numbers[5] <= 0:
                raise InvalidInput("viewport sw and sh must be positive")
            if max(abs(numbers[2]), abs(numbers[3])) > 2**31:
                raise InvalidInput(f"viewport sx and sy are out of range: {shown!r}")
            _check_render_size("viewport region sw x sh", numbers[4], numbers[5], max_render_pixels)
            crop = (numbers[2], numbers[3], numbers[4], numbers[5])
    q = 90
    if quality:
        try:
            q = int(quality)
        except ValueError:
            raise InvalidInput(f"quality must be an integer 1-100: {quality!r}") from None
        if not 1 <= q <= 100:
            raise InvalidInput(f"quality must be 1-100, not {q}")
    return RenderOptions(win, view, crop, q)


def _check_render_size(what: str, width: int, height: int, max_render_pixels: int) -> None:
    if width * height > max_render_pixels:
        raise TooLarge(
            f"the {what} of {width} x {height} pixels is over the {max_render_pixels:,} pixels "
            "an image may be rendered at (setting max_render_pixels)"
        )


def render_frame(
    ds: Dataset,
    frame_number: int,
    options: RenderOptions,
    media_type: str = "image/jpeg",
    *,
    max_frame_pixels: int,
    max_instance_pixels: int,
) -> bytes:
    """One frame (1-based) as an 8-bit JPEG or PNG image, windowed and fitted to the viewport.

    The pixel data is checked (:func:`radsight.dicom.codestream.check_pixel_data`) before
    anything is decoded; of a multi-frame image only the frame asked for is decoded.

    Raises
    ------
    ValueError
        When the frame number is out of range or the media type is not rendered (the
        caller checks both first: a programming error).
    radsight.errors.MalformedDicom, radsight.errors.MissingPixelData
        When the pixel data cannot be decoded.
    radsight.errors.PixelDataMismatch, radsight.errors.TooLarge
        When the pixel data declares other dimensions than the data set, or a frame is
        over ``max_frame_pixels``, or all frames over ``max_instance_pixels`` (nothing is
        decoded).
    """
    if media_type not in RENDERED_MEDIA_TYPES:
        raise ValueError(f"cannot render as {media_type}")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame_number <= count:
        raise ValueError(f"frame {frame_number} is out of range 1-{count}")
    limits = {"max_frame_pixels": max_frame_pixels, "max_instance_pixels": max_instance_pixels}
    check_pixel_data(ds, **limits)
    display = _display_by_lookup(ds, options.window, limits) if count == 1 else None
    if display is None:
        single = one_frame(ds, frame_number, **limits) if count > 1 else ds
        frames = frames_for_analysis(single, **limits)
        display = display_image(frames[0][1], _with_window(ds, options.window))
    image = Image.fromarray(display, mode="L")
    if options.crop is not None:
        x, y, w, h = options.crop
        image = image.crop((x, y, x + w, y + h))
    if options.viewport is not None:
        vw, vh = options.viewport
        scale = min(vw / image.width, vh / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            # reduce() first: a box filter is fast and keeps detail for big downscales
            factor = int(1 / scale) if scale < 1 else 1
            if factor >= 2:
                image = image.reduce(factor)
            image = image.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format="JPEG", quality=options.quality)
    return out.getvalue()


def _display_by_lookup(
    ds: Dataset, window: tuple[float, float, str] | None, limits: dict[str, int]
) -> np.ndarray | None:
    """:func:`display_image` of a single native grayscale frame through a lookup table.

    Every stored bit pattern goes once through the same Modality LUT
    (:func:`frames_for_analysis` of a one-row image of all patterns) and VOI LUT
    (:func:`display_image`), and the image is then one table look-up: the same pixels,
    several times faster than windowing millions of float values. ``None`` where this
    does not apply (colour, compressed, float pixel data, more than 16 bits).
    """
    if "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    if str(ds.get("PhotometricInterpretation", "")).upper() not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    if UID(_ts(ds) or pydicom.uid.ExplicitVRLittleEndian).is_compressed:
        return None
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16):
        return None
    try:
        stored = ds.pixel_array
    except Exception:  # let the general path raise its precise error
        return None
    unsigned = np.dtype(f"uint{bits}")
    patterns = np.arange(2**bits, dtype=unsigned)
    row = _copy_without_pixels(ds)
    row.file_meta = copy.deepcopy(ds.file_meta)  # not shared: its elements change
    row.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    row.Rows, row.Columns = (256, 256) if bits == 16 else (1, 256)
    row.PixelData = patterns.astype(unsigned.newbyteorder("<")).tobytes()
    for keyword in ("NumberOfFrames", "PerFrameFunctionalGroupsSequence"):
        if keyword in row:
            delattr(row, keyword)
    values = frames_for_analysis(row, **limits)[0][1].reshape(1, -1)  # modality value per pattern
    index = stored.view(unsigned) if stored.dtype != unsigned else stored
    if window is not None or _has_window(ds):
        table = display_image(values, _with_window(ds, window))[0]
    else:  # the 1st-99th percentile window of display_image, from this image's values
        step = max(1, int(np.sqrt(stored.size / (512 * 512))))
        sample = values[0][index[::step, ::step]]
        lo, hi = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
        if not hi > lo:
            return None
        scaled = (values[0] - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        table = np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 255.0)).astype(np.uint8)
    return table[index]


def _copy_without_pixels(ds: Dataset) -> Dataset:
    """A new data set with new elements (setting one must not change ``ds``), no pixels."""
    out = pydicom.Dataset()
    for elem in ds:
        if elem.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            out.add(copy.copy(elem))
    return out


def _has_window(ds: Dataset) -> bool:
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return True
    shared = ds.get("SharedFunctionalGroupsSequence")
    return bool(shared and shared[0].get("FrameVOILUTSequence"))


def _with_window(ds: Dataset, window: tuple[float, float, str] | None) -> Dataset:
    if window is None:
        return ds
    override = Dataset()
    for keyword in _COPIED_FOR_WINDOW:
        if keyword in ds:
            setattr(override, keyword, ds.data_element(keyword).value)  # type: ignore[union-attr]
    override.WindowCenter = window[0]
    override.WindowWidth = window[1]
    override.VOILUTFunction = window[2]
    return override


def one_frame(
    ds: Dataset, frame_number: int, *, max_frame_pixels: int, max_instance_pixels: int
) -> Dataset:
    """A copy of a multi-frame data set holding only frame ``frame_number`` (1-based),
    uncompressed: only that frame is decoded (:func:`native_frame`)."""
    single = _copy_without_pixels(ds)
    single.NumberOfFrames = 1
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) >= frame_number:
        single.PerFrameFunctionalGroupsSequence = [per_frame[frame_number - 1]]
    single.PixelData = native_frame(
        ds, frame_number, max_frame_pixels=max_frame_pixels, max_instance_pixels=max_instance_pixels
    )
    single.file_meta = copy.deepcopy(ds.file_meta)  # not shared: its elements change
    single.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1 and UID(_ts(ds)).is_compressed:
        single.PhotometricInterpretation = "RGB"  # decoders hand colour back as RGB
        single.PlanarConfiguration = 0
    return single


def _ts(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def native_frame(
    ds: Dataset, frame_number: int, *, max_frame_pixels: int, max_instance_pixels: int
) -> bytes:
    """A frame's pixels, uncompressed little-endian (PS3.18 8.7.3.3.2), 1-based.

    Uncompressed data is sliced without decoding; of compressed data that frame alone is
    decoded (pydicom's ``pixel_array(ds, index=...)``) once
    :func:`radsight.dicom.codestream.check_pixel_data` has passed (it raises
    :class:`~radsight.errors.PixelDataMismatch` or :class:`~radsight.errors.TooLarge`).
    """
    (data,) = native_frames(
        ds,
        [frame_number],
        max_frame_pixels=max_frame_pixels,
        max_instance_pixels=max_instance_pixels,
    )
    return data


def native_frames(
    ds: Dataset, frame_numbers: Sequence[int], *, max_frame_pixels: int, max_instance_pixels: int
) -> Iterator[bytes]:
    """:func:`native_frame` of each of ``frame_numbers`` in turn, the pixel data checked
    once, before the first: one decoded frame at a time, for a streamed answer.

    Raises
    ------
    ValueError
        When a frame number is out of range (the caller checks first).
    radsight.errors.PixelDataMismatch, radsight.errors.TooLarge
        From :func:`radsight.dicom.codestream.check_pixel_data`, raised at once (before
        the first frame), not when the first frame is asked for.
    """
    count = int(ds.get("NumberOfFrames", 1) or 1)
    bad = [n for n in frame_numbers if not 1 <= n <= count]
    if bad:
        raise ValueError(f"frame {bad[0]} is out of range 1-{count}")
    if "PixelData" not in ds:
        raise MalformedDicom("the instance has no Pixel Data")
    check_pixel_data(ds, max_frame_pixels=max_frame_pixels, max_instance_pixels=max_instance_pixels)
    return (_decode_frame(ds, n) for n in frame_numbers)


def _decode_frame(ds: Dataset, frame_number: int) -> bytes:
    """One checked frame (:func:`native_frames`), uncompressed little-endian."""
    ts = UID(_ts(ds) or pydicom.uid.ExplicitVRLittleEndian)
    try:
        if not ts.is_compressed and ts.is_little_endian:
            rows, cols = int(ds.Rows), int(ds.Columns)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            bits = int(ds.BitsAllocated)
            if bits % 8 == 0:
                size = rows * cols * samples * bits // 8
                data = ds.PixelData
                start = (frame_number - 1) * size
                if len(data) < start + size:
                    raise MalformedDicom("the Pixel Data is shorter than its frames")
                return bytes(data[start : start + size])
        array = pixel_array(ds, index=frame_number - 1)
        return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    except (MalformedDicom, MemoryError):
        raise
    except Exception as exc:  # the decoders raise anything from ValueError to KeyError
        raise_decompression_bomb(exc, ds)
        raise MalformedDicom(f"cannot decode frame {frame_number}: {exc}") from exc


def encapsulated_frame(ds: Dataset, frame_number: int) -> bytes:
    """A compressed frame as stored (for a client that accepts the stored syntax)."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame_number <= count:
        raise ValueError(f"frame {frame_number} is out of range 1-{count}")
    try:
        for n, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count), 1):
            if n == frame_number:
                return bytes(frame)
    except Exception as exc:  # a broken item tag or length in the encapsulation
        raise MalformedDicom(f"cannot read encapsulated frame {frame_number}: {exc}") from exc
    raise MalformedDicom(f"the encapsulated Pixel Data has no frame {frame_number}")
