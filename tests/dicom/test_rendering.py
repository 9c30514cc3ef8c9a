"""Rendered frames (radsight.dicom.rendering): same pixels as display_image, sizes, errors."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from radsight.dicom import rendering
from radsight.dicom.pixels import display_image, frames_for_analysis
from radsight.dicom.synthetic import make_ct_slice, make_radiograph
from tests._limits import LIMITS


def _roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _signed_ct() -> pydicom.Dataset:
    ds = make_ct_slice(study_instance_uid="1.2.3", series_instance_uid="1.2.3.4", index=0)
    values = ds.pixel_array.astype(np.int16) - 1024
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.PixelData = values.tobytes()
    return ds


def _no_window(ds: pydicom.Dataset) -> pydicom.Dataset:
    del ds.WindowCenter, ds.WindowWidth
    return ds


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_radiograph(rows=300, columns=200),
        lambda: make_radiograph(rows=300, columns=200, photometric="MONOCHROME1"),
        lambda: _no_window(make_radiograph(rows=300, columns=200)),
        lambda: _no_window(make_radiograph(rows=300, columns=200, photometric="MONOCHROME1")),
        _signed_ct,
        lambda: _no_window(_signed_ct()),
    ],
)
@pytest.mark.parametrize("window", [None, (40.0, 400.0, "LINEAR"), (100.0, 50.0, "SIGMOID")])
def test_lookup_rendering_equals_display_image(make, window):
    ds = _roundtrip(make())
    expected = display_image(
        frames_for_analysis(ds, **LIMITS)[0][1], rendering._with_window(ds, window)
    )
    got = rendering._display_by_lookup(ds, window, LIMITS)
    assert got is not None and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_render_sizes_and_formats():
    ds = _roundtrip(make_radiograph(rows=400, columns=300))
    full = Image.open(
        io.BytesIO(rendering.render_frame(ds, 1, rendering.RenderOptions(), **LIMITS))
    )
    assert full.format == "JPEG" and full.size == (300, 400)
    fitted = rendering.parse_render_options(None, "150,150", None)
    png = Image.open(io.BytesIO(rendering.render_frame(ds, 1, fitted, "image/png", **LIMITS)))
    assert png.format == "PNG" and png.size == (112, 150)
    cropped = rendering.parse_render_options(None, "50,50,10,10,100,100", "50")
    assert Image.open(io.BytesIO(rendering.render_frame(ds, 1, cropped, **LIMITS))).size == (50, 50)
    with pytest.raises(ValueError, match="out of range"):
        rendering.render_frame(ds, 2, rendering.RenderOptions(), **LIMITS)


@pytest.mark.parametrize(
    ("window", "viewport", "quality", "message"),
    [
        ("40", None, None, "center,width"),
        ("a,b", None, None, "numbers"),
        ("40,400,cubic", None, None, "window function"),
        (None, "0,10", None, "vw, vh > 0"),
        (None, "10,10,1", None, "vw,vh"),
        (None, None, "101", "quality must be 1-100"),
    ],
)
def test_bad_render_parameters(window, viewport, quality, message):
    with pytest.raises(ValueError, match=message):
        rendering.parse_render_options(window, viewport, quality)


def test_native_frames_of_a_multiframe_image():
    ds = make_radiograph(rows=20, columns=10)
    frames = [ds.pixel_array + i for i in range(3)]
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack(frames).astype(np.uint16).tobytes()
    ds = _roundtrip(ds)
    assert rendering.native_frame(ds, 2, **LIMITS) == frames[1].astype("<u2").tobytes()
    image = Image.open(
        io.BytesIO(rendering.render_frame(ds, 3, rendering.RenderOptions(), **LIMITS))
    )
    assert image.size == (10, 20)
