"""frames_for_analysis and display_image on synthetic and real images."""

from __future__ import annotations

import struct

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from radsight.dicom.pixels import display_image, frames_for_analysis
from radsight.errors import MalformedDicom, MissingPixelData, PixelDataMismatch
from tests._limits import LIMITS
from tests.results._sources import (
    ORTHANC_TESTS,
    REAL_CT_JPEG2000,
    SHARED,
    VARIANTS,
    block_box,
    make_source,
    stored_pixels,
)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_frames_are_2d_float32_with_frame_numbers(name):
    variant = VARIANTS[name]
    frames = frames_for_analysis(make_source(variant), **LIMITS)

    assert len(frames) == variant.frames
    expected_numbers = list(range(1, variant.frames + 1)) if variant.frames > 1 else [None]
    assert [number for number, _ in frames] == expected_numbers
    for _, pixels in frames:
        assert pixels.dtype == np.float32
        assert pixels.shape == (variant.rows, variant.columns)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_block_is_brighter_than_the_background(name):
    """Larger is brighter for every photometric interpretation, MONOCHROME1 included."""
    variant = VARIANTS[name]
    x0, y0, x1, y1 = block_box(variant)
    for _, pixels in frames_for_analysis(make_source(variant), **LIMITS):
        block = pixels[y0:y1, x0:x1].mean()
        background = pixels[:, : x0 - 2].mean()
        assert block > background + 0.3 * (pixels.max() - pixels.min())


def test_rescale_gives_modality_values():
    variant = VARIANTS["ct-signed"]
    ((_, pixels),) = frames_for_analysis(make_source(variant), **LIMITS)
    stored = stored_pixels(variant).astype(np.float32)
    np.testing.assert_array_equal(pixels, stored - 1024.0)


def test_monochrome1_is_mirrored_about_the_stored_range():
    variant = VARIANTS["cr-mono1"]
    ((_, pixels),) = frames_for_analysis(make_source(variant), **LIMITS)
    stored = stored_pixels(variant).astype(np.float32)
    np.testing.assert_array_equal(pixels, (2**variant.bits_stored - 1) - stored)


def test_enhanced_multiframe_rescale_comes_from_the_functional_groups():
    ds = make_source("multiframe")
    group = pydicom.Dataset()
    transformation = pydicom.Dataset()
    transformation.RescaleSlope = 2
    transformation.RescaleIntercept = -100
    transformation.RescaleType = "US"
    group.PixelValueTransformationSequence = [transformation]
    ds.SharedFunctionalGroupsSequence = [group]

    frames = frames_for_analysis(ds, **LIMITS)

    stored = stored_pixels(VARIANTS["multiframe"], frame=1).astype(np.float32)
    np.testing.assert_array_equal(frames[1][1], stored * 2 - 100)


def test_rgb_becomes_luminance():
    ds = make_source("us-rgb")
    ((_, pixels),) = frames_for_analysis(ds, **LIMITS)
    gray = stored_pixels(VARIANTS["us-rgb"]).astype(np.float32)
    expected = 0.299 * gray + 0.587 * np.floor(gray * 0.9) + 0.114 * np.floor(gray * 0.5)
    np.testing.assert_allclose(pixels, expected, atol=0.01)


def test_no_pixel_data_is_missing_pixel_data():
    ds = make_source("dx8")
    del ds.PixelData
    with pytest.raises(MissingPixelData, match=str(ds.SOPInstanceUID)):
        frames_for_analysis(ds, **LIMITS)


def test_truncated_pixel_data_is_refused_before_decoding():
    ds = make_source("dx16-mono2")
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(PixelDataMismatch, match="holds 100 bytes .* it is truncated"):
        frames_for_analysis(ds, **LIMITS)


def test_corrupt_jpeg2000_is_refused_before_decoding():
    ds = make_source("dx16-mono2")
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    with pytest.raises(PixelDataMismatch, match="JPEG 2000 SIZ"):
        frames_for_analysis(ds, **LIMITS)


def test_corrupt_jpeg2000_with_a_good_header_is_malformed():
    ds = make_source("dx8")
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    rows, columns = int(ds.Rows), int(ds.Columns)
    siz = (
        b"\xff\x4f\xff\x51\x00\x29\x00\x00"
        + struct.pack(">IIIIIIII", columns, rows, 0, 0, columns, rows, 0, 0)
        + b"\x00\x01\x07\x01\x01"
    )
    ds.PixelData = encapsulate([siz + b"\x00" * 64])
    with pytest.raises(MalformedDicom, match="JPEG 2000"):
        frames_for_analysis(ds, **LIMITS)


# display_image ------------------------------------------------------------------------


def _linear(value: float, center: float, width: float) -> float:
    """PS3.3 C.11.2.1.2.1 with an 8-bit output range."""
    if value <= center - 0.5 - (width - 1) / 2:
        return 0.0
    if value > center - 0.5 + (width - 1) / 2:
        return 255.0
    return ((value - (center - 0.5)) / (width - 1) + 0.5) * 255.0


def test_window_from_the_data_set_is_applied_linearly():
    ds = make_source("dx16-mono2")
    center, width = 30000.0, 50000.0
    values = np.array([[0.0, 5000.0, 20000.0, 30000.0, 41000.0, 55000.0, 65535.0]], np.float32)

    shown = display_image(values, ds)

    assert shown.dtype == np.uint8
    expected = [round(_linear(float(v), center, width)) for v in values[0]]
    assert np.abs(shown[0].astype(int) - expected).max() <= 1


@pytest.mark.parametrize(
    ("function", "value", "expected"),
    [
        ("LINEAR_EXACT", 30000.0, 127.5),
        ("LINEAR_EXACT", 5000.0, 0.0),
        ("SIGMOID", 30000.0, 127.5),
        ("SIGMOID", 55000.0, 255.0 / (1 + np.exp(-2.0))),
    ],
)
def test_voi_lut_function(function, value, expected):
    ds = make_source("dx16-mono2")
    ds.VOILUTFunction = function
    shown = display_image(np.array([[value]], np.float32), ds)
    assert abs(int(shown[0, 0]) - expected) <= 1


def test_monochrome1_window_is_mirrored_with_the_pixels():
    """A window chosen on stored MONOCHROME1 values still shows the block bright."""
    ds = make_source("cr-mono1")
    variant = VARIANTS["cr-mono1"]
    stored = stored_pixels(variant)
    x0, y0, x1, y1 = block_box(variant)
    ds.WindowCenter = float(np.median(stored))
    ds.WindowWidth = float(np.ptp(stored))
    ((_, pixels),) = frames_for_analysis(ds, **LIMITS)

    shown = display_image(pixels, ds)

    assert shown[y0:y1, x0:x1].mean() > 200
    assert shown[:, : x0 - 2].mean() < 120


def test_without_a_window_the_percentiles_span_the_output():
    values = np.linspace(-1000, 3000, 100 * 100, dtype=np.float32).reshape(100, 100)
    shown = display_image(values)
    assert shown.min() == 0
    assert shown.max() == 255
    assert 120 <= shown[50, 0] <= 135


def test_a_blank_image_is_shown_without_dividing_by_zero():
    shown = display_image(np.full((8, 8), 7.0, np.float32))
    assert np.unique(shown).size == 1


def test_colour_images_ignore_the_grayscale_window():
    ds = make_source("us-rgb")
    ds.WindowCenter, ds.WindowWidth = 40, 80
    ((_, pixels),) = frames_for_analysis(ds, **LIMITS)
    shown = display_image(pixels, ds)
    np.testing.assert_allclose(shown, np.rint(pixels), atol=1)


def test_display_image_takes_2d_only():
    with pytest.raises(ValueError, match="2-D"):
        display_image(np.zeros((2, 4, 4), np.float32))


# real files ---------------------------------------------------------------------------

#: (file, whether it is an axial slice in HU: the localizer is a projection)
REAL_FILES = [
    (ORTHANC_TESTS / "CT2_JLSN_JPEGLSNearLossless_1.2.840.10008.1.2.4.81.dcm", True),
    (ORTHANC_TESTS / "CT1_J2KI_JPEG2000Lossy_1.2.840.10008.1.2.4.91.dcm", True),
    (ORTHANC_TESTS / "CT_chest_localizer_JPEGLossless_1.2.840.10008.1.2.4.70.dcm", False),
    (
        SHARED / "ct-brain/cq500-samples/CQ500-CT-0/series6_thin_0.625mm_every8th/CT_inst041.dcm",
        True,
    ),
]


@pytest.mark.parametrize(("path", "axial"), REAL_FILES, ids=lambda p: getattr(p, "name", "")[:24])
def test_real_compressed_ct_decodes(path, axial):
    if not path.exists():
        pytest.skip(f"real sample absent: {path}")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID.is_compressed
    ((number, pixels),) = frames_for_analysis(ds, **LIMITS)
    assert number is None
    assert pixels.shape == (ds.Rows, ds.Columns)
    if axial:
        # air around the patient is about -1000 HU, bone well above water
        assert np.percentile(pixels, 5) < -500
        assert pixels.max() > 300
    shown = display_image(pixels, ds)
    assert shown.shape == pixels.shape
    assert 10 < shown.mean() < 245


def test_jpeg2000_and_uncompressed_copies_give_the_same_values():
    folder = SHARED / "ct-brain" / "cq500-samples" / "CQ500-CT-310"
    j2k = folder / "CQ500-CT-310_series_5mm_inst021_j2k_lossless.dcm"
    raw = folder / "CQ500-CT-310_series_5mm_inst021_uncompressed.dcm"
    if not (j2k.exists() and raw.exists()):
        pytest.skip(f"CQ500-CT-310 pair absent under {folder}")
    ((_, a),) = frames_for_analysis(pydicom.dcmread(j2k), **LIMITS)
    ((_, b),) = frames_for_analysis(pydicom.dcmread(raw), **LIMITS)
    np.testing.assert_array_equal(a, b)


def test_real_jpeg2000_series_decodes():
    files = sorted(REAL_CT_JPEG2000.glob("*.dcm"))[:2]
    if not files:
        pytest.skip(f"real CT samples absent: {REAL_CT_JPEG2000}")
    for path in files:
        ((_, pixels),) = frames_for_analysis(pydicom.dcmread(path), **LIMITS)
        assert pixels.shape == (512, 512)
        assert pixels.min() >= -1024
