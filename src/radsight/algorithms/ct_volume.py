"""CT series selection, volume assembly and windowing, shared by the CT algorithms.

Pure numpy: no ML runtime, no I/O. The pipeline hands an algorithm every frame of a study
as :class:`~radsight.algorithms.contract.ImageInput` with pixels already through the
Modality LUT (Hounsfield units for CT, :func:`radsight.dicom.pixels.frames_for_analysis`)
and the geometry attributes of PS3.3 C.7.6.2 (Image Plane module) in ``attributes``.

- :func:`select_series` picks the one axial series an algorithm should read: scouts
  (ImageType LOCALIZER, PS3.3 C.8.2.1.1.1), secondary captures, reformats, non-axial
  series and non-CT images are dropped; among the rest ORIGINAL beats DERIVED, a stack
  beats a single slice, then the thinnest slices and the wanted reconstruction kernel win.
- :func:`assemble_volume` sorts the slices along the slice normal (the cross product of
  the two ImageOrientationPatient direction cosines), drops duplicate positions, records
  gaps and uneven spacing, measures gantry tilt and maps padding to air.
- :func:`window` maps HU to [0, 1] through a linear window (PS3.3 C.11.2.1.3.2,
  LINEAR_EXACT).

Gantry tilt. With a tilted gantry each slice is oblique (ImageOrientationPatient has a
column direction such as (0, 0.989, -0.148)) and the table steps along the patient axis,
not along the slice normal, so successive slices are shifted within their own plane.
:func:`assemble_volume` measures that shift per slice (``Volume.offsets``) and, by default,
leaves the pixels as acquired, so a mark found on slice ``k`` is a mark on source image
``k`` with no mapping. ``correct_tilt=True`` shifts every slice back by its offset
(bilinear), which gives an orthogonal grid along the slice normal for 3-D work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radsight.algorithms.contract import ImageInput
from radsight.errors import NotAnalysable

__all__ = [
    "BONE",
    "BRAIN",
    "LUNG",
    "MEDIASTINUM",
    "SUBDURAL",
    "Volume",
    "Window",
    "assemble_volume",
    "geometry_of",
    "select_series",
    "window",
]

AIR_HU = -1024.0
#: Secondary Capture Image Storage SOP classes (PS3.4 B.5): pictures, not CT slices
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: ImageType values of derived pictures that are not a stack of acquired axial slices
_REFORMAT_WORDS = frozenset(
    {"REFORMATTED", "MPR", "MIP", "MINIP", "PROJECTION IMAGE", "CURVED", "VOLUME", "3D", "VR"}
)
#: sharp (bone / lung / edge-enhancing) reconstruction kernels of the common vendors
_SHARP_KERNEL = re.compile(
    r"BONE|LUNG|SHARP|EDGE|DETAIL|HIGH|^B[5-9]\d|^[BH][RI]?[5-9]\d|^H[6-9]\d|^FC5\d|^FC[89]\d"
    r"|^YC|^YD|^L\b|^D\b|^E\b",
)
#: a slice normal within this angle of the patient's z axis counts as axial (gantry tilts
#: of head CT reach about 30 degrees)
MAX_AXIAL_ANGLE_DEG = 35.0
#: two slices closer than this along the normal are the same position (duplicate)
DUPLICATE_MM = 0.01


@dataclass(frozen=True)
class Window:
    """A display window: centre and width in HU."""

    name: str
    center: float
    width: float


BRAIN = Window("brain", 40.0, 80.0)
SUBDURAL = Window("subdural", 80.0, 200.0)
BONE = Window("bone", 600.0, 2800.0)
LUNG = Window("lung", -600.0, 1500.0)
MEDIASTINUM = Window("mediastinum", 40.0, 400.0)


def window(hu: np.ndarray, center: float | Window, width: float | None = None) -> np.ndarray:
    """Map HU to [0, 1] through a linear window (PS3.3 C.11.2.1.3.2, LINEAR_EXACT).

    Parameters
    ----------
    hu : numpy.ndarray
        Values in Hounsfield units, any shape.
    center : float or Window
        The window centre in HU, or a :class:`Window` (then ``width`` is not given).
    width : float, optional
        The window width in HU (> 0).

    Returns
    -------
    numpy.ndarray
        float32 of the same shape, 0 at ``center - width / 2`` and below, 1 at
        ``center + width / 2`` and above.
    """
    if isinstance(center, Window):
        c, w = center.center, center.width
    else:
        c, w = float(center), float(width) if width is not None else 0.0
    if not w > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = c - w / 2.0
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / w)
    return np.clip(out, 0.0, 1.0, out=out)


@dataclass(frozen=True)
class Geometry:
    """Image Plane module values of one slice (PS3.3 C.7.6.2.1)."""

    row_cosines: np.ndarray  # direction of increasing column index
    column_cosines: np.ndarray  # direction of increasing row index
    position: np.ndarray  # ImagePositionPatient: centre of the first pixel, mm
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.row_cosines, self.column_cosines)
        return np.asarray(n / np.linalg.norm(n))


def _floats(value: object, n: int) -> np.ndarray | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


def _float(value: object, default: float | None = None) -> float | None:
    if isinstance(value, list | tuple) and value:
        value = value[0]
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _words(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [w.strip().upper() for w in value.split("\\") if w.strip()]
    try:
        return [str(w).strip().upper() for w in value]  # type: ignore[attr-defined]
    except TypeError:
        return [str(value).strip().upper()]


def geometry_of(image: ImageInput) -> Geometry | None:
    """The slice's plane and position, or None when its attributes do not give them."""
    iop = _floats(image.attributes.get("ImageOrientationPatient"), 6)
    ipp = _floats(image.attributes.get("ImagePositionPatient"), 3)
    if iop is None or ipp is None:
        return None
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 0.05 or abs(np.linalg.norm(col) - 1) > 0.05:
        return None
    if abs(float(row @ col)) > 0.05:  # not orthogonal
        return None
    spacing = image.pixel_spacing or (1.0, 1.0)
    if not (spacing[0] > 0 and spacing[1] > 0):
        return None
    return Geometry(row / np.linalg.norm(row), col / np.linalg.norm(col), ipp, spacing)


def _kernel(image: ImageInput) -> str:
    return " ".join(_words(image.attributes.get("ConvolutionKernel")))


def _series_label(images: Sequence[ImageInput]) -> str:
    number = images[0].attributes.get("SeriesNumber")
    label = f"series {number}" if number not in (None, "") else "a series"
    return f"{label} ({len(images)} image{'s' if len(images) != 1 else ''})"


def _series_problem(images: Sequence[ImageInput]) -> str | None:
    """Why this series is not an axial CT stack, or None."""
    first = images[0]
    modality = (first.modality or "").upper()
    if modality and modality != "CT":
        return f"modality {modality}, not CT"
    if any(i.sop_class_uid.startswith(_SECONDARY_CAPTURE) for i in images):
        return "secondary capture"
    image_type = {w for i in images for w in _words(i.attributes.get("ImageType"))}
    if "LOCALIZER" in image_type:
        return "scout / localizer"
    if image_type & _REFORMAT_WORDS:
        return "reformat (" + ", ".join(sorted(image_type & _REFORMAT_WORDS)) + ")"
    geometries = [geometry_of(i) for i in images]
    if any(g is None for g in geometries):
        return "no usable ImagePositionPatient / ImageOrientationPatient"
    normal = geometries[0].normal  # type: ignore[union-attr]
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if angle > MAX_AXIAL_ANGLE_DEG:
        return f"not axial (slice normal {angle:.0f} degrees from the patient axis)"
    shapes = {i.pixels.shape for i in images}
    if len(shapes) > 1:
        return "slices of different sizes"
    return None


def select_series(
    images: Sequence[ImageInput],
    *,
    min_slices: int = 3,
    kernel: Literal["soft", "sharp"] = "soft",
) -> list[ImageInput]:
    """The study's best axial CT series, its images in the order given.

    Parameters
    ----------
    images : sequence of ImageInput
        Every frame of the study.
    min_slices : int
        The fewest slices the chosen series may have.
    kernel : {"soft", "sharp"}
        Which reconstruction kernel to prefer when several series qualify: soft tissue
        (brain, mediastinum) or sharp (bone, lung).

    Returns
    -------
    list of ImageInput
        The images of one series (unsorted: :func:`assemble_volume` sorts them).

    Raises
    ------
    radsight.errors.NotAnalysable
        When no series qualifies or the best one has fewer than ``min_slices`` slices;
        the message names each series and why it was dropped.
    """
    if not images:
        raise NotAnalysable("the study has no images")
    series: dict[str, list[ImageInput]] = {}
    for image in images:
        series.setdefault(image.series_instance_uid, []).append(image)
    candidates, dropped = [], []
    for members in series.values():
        problem = _series_problem(members)
        if problem is None:
            candidates.append(members)
        else:
            dropped.append(f"{_series_label(members)}: {problem}")
    if not candidates:
        raise NotAnalysable("no axial CT series to analyse: " + "; ".join(dropped))

    def rank(members: list[ImageInput]) -> tuple:
        image_type = _words(members[0].attributes.get("ImageType"))
        thickness = _float(members[0].attributes.get("SliceThickness"), 99.0)
        sharp = bool(_SHARP_KERNEL.search(_kernel(members[0])))
        kernel_miss = sharp if kernel == "soft" else not sharp
        positions = {
            round(float(g.position @ g.normal), 2)
            for g in (geometry_of(i) for i in members)
            if g is not None
        }
        return (
            "DERIVED" in image_type,  # an acquired series before a derived one
            len(positions) < 2,  # a stack before a single slice (a stray or a scout)
            thickness,
            kernel_miss,
            -len(positions),
        )

    candidates.sort(key=rank)
    best = candidates[0]
    n_positions = len(
        {
            round(float(g.position @ g.normal), 2)
            for g in (geometry_of(i) for i in best)
            if g is not None
        }
    )
    if n_positions < min_slices:
        raise NotAnalysable(
            f"too few slices: the best axial CT series, {_series_label(best)}, has "
            f"{n_positions} distinct slice position{'s' if n_positions != 1 else ''}, "
            f"at least {min_slices} needed"
        )
    return list(best)


@dataclass(frozen=True)
class Volume:
    """An axial CT stack in HU, slices sorted along the slice normal."""

    #: float32 (z, y, x) in HU, padding and below-air values set to -1024
    hu: np.ndarray
    #: the source image of each slice, in slice order
    images: tuple[ImageInput, ...]
    #: position of each slice along the slice normal, mm, increasing
    positions: np.ndarray
    #: (z, y, x) voxel size in mm: median step along the normal, PixelSpacing
    spacing: tuple[float, float, float]
    #: gantry tilt in degrees: from the shear of the positions when there are two or more
    #: slices, else from GantryDetectorTilt (0 when neither says)
    gantry_tilt_deg: float
    #: per slice (row, column) in-plane shift relative to slice 0, in pixels (tilt shear)
    offsets: np.ndarray
    #: indices i where the step from slice i to i + 1 is over 1.5 times the median step
    gaps: tuple[int, ...] = ()
    #: duplicate-position slices that were dropped
    duplicates_dropped: int = 0
    #: True when the pixels were shifted to undo the tilt shear
    tilt_corrected: bool = False

    @property
    def uneven(self) -> bool:
        """Steps differ by more than 10 % of the median step (or there are gaps)."""
        if len(self.positions) < 3:
            return False
        steps = np.diff(self.positions)
        return bool(self.gaps) or float(steps.max() - steps.min()) > 0.1 * self.spacing[0]

    @property
    def extent_mm(self) -> float:
        return float(self.positions[-1] - self.positions[0]) if len(self.positions) else 0.0


def _padding_hu(image: ImageInput) -> list[tuple[float, float]]:
    """PixelPaddingValue (and RangeLimit) mapped through Rescale Slope/Intercept to HU."""
    pad = _float(image.attributes.get("PixelPaddingValue"))
    if pad is None:
        return []
    limit = _float(image.attributes.get("PixelPaddingRangeLimit"), pad)
    slope = _float(image.attributes.get("RescaleSlope"), 1.0) or 1.0
    intercept = _float(image.attributes.get("RescaleIntercept"), 0.0) or 0.0
    a, b = sorted((pad * slope + intercept, (limit or pad) * slope + intercept))
    return [(a, b)]


def _shift(img: np.ndarray, dy: float, dx: float, fill: float) -> np.ndarray:
    """Bilinear shift of a 2-D array by (dy, dx) pixels, filling with ``fill``."""
    out = img
    for axis, d in ((0, dy), (1, dx)):
        if abs(d) < 1e-3:
            continue
        whole = math.floor(d)
        frac = d - whole
        a = _roll_fill(out, whole, axis, fill)
        b = _roll_fill(out, whole + 1, axis, fill)
        out = (1 - frac) * a + frac * b
    return out.astype(np.float32, copy=False)


def _roll_fill(img: np.ndarray, n: int, axis: int, fill: float) -> np.ndarray:
    out = np.full_like(img, fill)
    size = img.shape[axis]
    if abs(n) >= size:
        return out
    src = [slice(None)] * 2
    dst = [slice(None)] * 2
    if n >= 0:
        src[axis], dst[axis] = slice(0, size - n), slice(n, size)
    else:
        src[axis], dst[axis] = slice(-n, size), slice(0, size + n)
    out[tuple(dst)] = img[tuple(src)]
    return out


def assemble_volume(images: Sequence[ImageInput], *, correct_tilt: bool = False) -> Volume:
    """Sort one series' slices into a HU volume (see the module docstring on tilt).

    Parameters
    ----------
    images : sequence of ImageInput
        The slices of one axial series (e.g. from :func:`select_series`), any order.
    correct_tilt : bool
        Shift each slice within its plane so that the volume is an orthogonal grid along
        the slice normal (undoes gantry-tilt shear). Off by default: slices stay as
        acquired, so marks on a slice apply to its source image unchanged.

    Returns
    -------
    Volume

    Raises
    ------
    radsight.errors.NotAnalysable
        When a slice has no usable geometry, the slices are not parallel or not of one
        size, an image has more than one frame without per-frame geometry, or the pixels
        are unusable (not finite, or no contrast in the whole volume).
    """
    if not images:
        raise NotAnalysable("no CT slices to assemble")
    if any(i.frame_number is not None for i in images):
        raise NotAnalysable(
            "multi-frame (enhanced) CT is not supported yet: the per-frame geometry is "
            "not available to the algorithm"
        )
    geometries = []
    for image in images:
        g = geometry_of(image)
        if g is None:
            raise NotAnalysable(
                f"slice {image.sop_instance_uid} has no usable ImagePositionPatient / "
                "ImageOrientationPatient / PixelSpacing"
            )
        geometries.append(g)
    shapes = {i.pixels.shape for i in images}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise NotAnalysable(f"the slices differ in size or are not 2-D: {sorted(shapes)}")
    normal = geometries[0].normal
    for image, g in zip(images, geometries, strict=True):
        if float(abs(g.normal @ normal)) < math.cos(math.radians(1.0)):
            raise NotAnalysable(
                f"slice {image.sop_instance_uid} is not parallel to the others "
                "(more than 1 degree apart)"
            )
    along = np.array([float(g.position @ normal) for g in geometries])

    def instance_number(i: int) -> float:
        return _float(images[i].attributes.get("InstanceNumber"), float(i)) or 0.0

    order = sorted(range(len(images)), key=lambda i: (along[i], instance_number(i)))
    kept: list[int] = []
    for i in order:
        if kept and abs(along[i] - along[kept[-1]]) < DUPLICATE_MM:
            continue  # the same position twice (a resent or duplicated slice)
        kept.append(i)
    duplicates = len(order) - len(kept)
    positions = along[kept]
    steps = np.diff(positions)
    step = (
        float(np.median(steps))
        if len(steps)
        else _float(images[kept[0]].attributes.get("SliceThickness"), 1.0) or 1.0
    )
    gaps = tuple(int(i) for i in np.nonzero(steps > 1.5 * step)[0]) if len(steps) else ()

    g0 = geometries[kept[0]]
    row_mm, col_mm = g0.pixel_spacing
    offsets = np.zeros((len(kept), 2), dtype=np.float64)
    for k, i in enumerate(kept):
        delta = geometries[i].position - g0.position
        # in-plane components: along the column direction is a row shift, and vice versa
        offsets[k] = (
            float(delta @ g0.column_cosines) / row_mm,
            float(delta @ g0.row_cosines) / col_mm,
        )
    if len(kept) >= 2:
        span = geometries[kept[-1]].position - g0.position
        in_plane = span - float(span @ normal) * normal
        tilt = math.degrees(math.atan2(float(np.linalg.norm(in_plane)), abs(float(span @ normal))))
    else:
        tilt = abs(_float(images[kept[0]].attributes.get("GantryDetectorTilt"), 0.0) or 0.0)

    hu = np.empty((len(kept),) + next(iter(shapes)), dtype=np.float32)
    for k, i in enumerate(kept):
        pixels = np.asarray(images[i].pixels, dtype=np.float32)
        if not np.isfinite(pixels).all():
            raise NotAnalysable(f"slice {images[i].sop_instance_uid} has non-finite pixels")
        slab = pixels.copy()
        for lo, hi in _padding_hu(images[i]):
            slab[(slab >= lo - 0.5) & (slab <= hi + 0.5)] = AIR_HU
        np.maximum(slab, AIR_HU, out=slab)  # padding and out-of-field values are air
        if correct_tilt and (abs(offsets[k, 0]) > 1e-3 or abs(offsets[k, 1]) > 1e-3):
            slab = _shift(slab, offsets[k, 0], offsets[k, 1], AIR_HU)
        hu[k] = slab
    if float(hu.max() - hu.min()) < 1.0:
        raise NotAnalysable("unusable pixels: the CT series has no contrast (blank slices)")
    return Volume(
        hu=hu,
        images=tuple(images[i] for i in kept),
        positions=positions,
        spacing=(step, float(row_mm), float(col_mm)),
        gantry_tilt_deg=round(tilt, 3),
        offsets=offsets,
        gaps=gaps,
        duplicates_dropped=duplicates,
        tilt_corrected=correct_tilt,
    )
