"""Decompression bombs: small real compressed instances whose codestream lies about its size.

Each starts from a 256 x 256 radiograph compressed by a real encoder (OpenJPEG, CharLS,
pydicom's RLE, Pillow's libjpeg), then the codestream's own header is patched to declare a
huge image while Rows/Columns still say 256 x 256: the instance stays about 70 KB.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from radsight.dicom.synthetic import make_radiograph

SIZE = 256


def part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _frame(ds: pydicom.Dataset) -> bytes:
    return next(generate_frames(ds.PixelData, number_of_frames=1))


def jpeg2000(rows: int = SIZE, columns: int = SIZE, **kw: object) -> pydicom.Dataset:
    """A JPEG 2000 instance whose SIZ marker (and its one tile) declares rows x columns."""
    ds = make_radiograph(rows=SIZE, columns=SIZE, **kw)  # type: ignore[arg-type]
    ds.compress(JPEG2000Lossless)
    frame = bytearray(_frame(ds))
    assert frame[:4] == b"\xff\x4f\xff\x51"
    struct.pack_into(">II", frame, 8, columns, rows)  # Xsiz, Ysiz
    struct.pack_into(">II", frame, 24, columns, rows)  # XTsiz, YTsiz: one tile
    ds.PixelData = encapsulate([bytes(frame)])
    return ds


def jpeg_ls(rows: int = SIZE, columns: int = SIZE) -> pydicom.Dataset:
    ds = make_radiograph(rows=SIZE, columns=SIZE)
    ds.compress(JPEGLSLossless)
    frame = bytearray(_frame(ds))
    at = frame.index(b"\xff\xf7")
    struct.pack_into(">HH", frame, at + 5, rows, columns)
    ds.PixelData = encapsulate([bytes(frame)])
    return ds


def jpeg_baseline(rows: int = SIZE, columns: int = SIZE) -> pydicom.Dataset:
    """8-bit JPEG baseline encoded by Pillow, SOF0 patched to rows x columns."""
    ds = make_radiograph(rows=SIZE, columns=SIZE)
    pixels = (ds.pixel_array >> 4).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=90)
    frame = bytearray(buf.getvalue())
    at = frame.index(b"\xff\xc0")
    struct.pack_into(">HH", frame, at + 5, rows, columns)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    return ds


def rle(rows: int = SIZE, columns: int = SIZE) -> pydicom.Dataset:
    """RLE Lossless: a segment holds no size, so the bomb is the header's Rows/Columns."""
    ds = make_radiograph(rows=SIZE, columns=SIZE)
    ds.compress(RLELossless)
    ds.Rows, ds.Columns = rows, columns
    return ds


def rle_zero_frame(size: int) -> bytes:
    """One RLE Lossless frame of size x size 16-bit zeros, honest about its size: two
    segments (high and low bytes, PS3.5 G.2), each runs of 128 zeros (header byte -127)."""
    segment = b"\x81\x00" * (size * size // 128)
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    return header + segment + segment


def multiframe_rle(frames: int, size: int = 2048, **kw: object) -> pydicom.Dataset:
    """A multi-frame RLE instance of ``frames`` frames of size x size zeros: every frame's
    header is true (it passes a per-frame check), yet decoding all of it takes frames x
    size x size x 2 bytes (48 frames of 2048 x 2048: 6.3 MB stored, 400 MB decoded)."""
    ds = make_radiograph(rows=SIZE, columns=SIZE, **kw)  # type: ignore[arg-type]
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel = 1
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([rle_zero_frame(size)] * frames)
    ds["PixelData"].VR = "OB"
    return ds
