"""What compressed pixel data declares, read without decoding it (pure: pydicom + stdlib).

A decoder allocates what the codestream inside a fragment declares, not what the data
set's Image Pixel module says: a 73 KB JPEG 2000 codestream declaring 65535 x 60000
pixels inside an instance whose header says 256 x 256 makes a decoder ask for gigabytes.
:func:`check_pixel_data` reads each frame's own header and compares it with Rows,
Columns, Samples per Pixel and Number of Frames (PS3.5 8.2, Annex A.4) before any pixel
is decoded, bounds a frame's size by ``max_frame_pixels`` and the whole instance's
(frames x rows x columns x samples) by ``max_instance_pixels``. Where the headers are read:

* JPEG baseline, extended and lossless (ISO/IEC 10918-1 B.2.2): the SOFn marker segment
  (precision, lines, samples per line, components);
* JPEG-LS (ISO/IEC 14495-1 C.2.2): the SOF55 marker segment, the same layout;
* JPEG 2000 and HTJ2K (ISO/IEC 15444-1 A.5.1, 15444-15 A.3): the SIZ marker segment
  right after SOC (image and offset sizes, components, their subsampling), the CAP
  marker segment of HTJ2K, and the JP2 header box (I.5.3.1) when the codestream is
  wrapped in a JP2 file;
* RLE Lossless (PS3.5 G.4): the 64-byte header, whose number of segments must equal
  Samples per Pixel times bytes per sample and whose offsets must lie in the fragment.

Uncompressed Pixel Data must hold exactly Rows x Columns x frames x samples x bits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRLittleEndian

from radsight.errors import MalformedDicom, MissingPixelData, PixelDataMismatch, TooLarge

__all__ = [
    "FrameGeometry",
    "check_pixel_data",
    "read_frame_geometry",
]

_JPEG = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # baseline
        "1.2.840.10008.1.2.4.51",  # extended
        "1.2.840.10008.1.2.4.57",  # lossless
        "1.2.840.10008.1.2.4.70",  # lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    }
)
_J2K = frozenset(
    {
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 lossless
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)
_RLE = "1.2.840.10008.1.2.5"
#: SOFn markers of ISO/IEC 10918-1 Table B.1 (not DHT C4, JPG C8, DAC CC) and SOF55 (F7)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOF55 = 0xF7
#: markers without a length: TEM, RST0-7, SOI, EOI
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class FrameGeometry:
    """The size one compressed frame declares."""

    rows: int
    columns: int
    samples: int
    #: sample precision in bits (RLE: None, its header does not say)
    precision: int | None
    #: which header said so, for messages: "JPEG SOF1", "JPEG 2000 SIZ", ...
    source: str


def read_frame_geometry(
    frame: bytes,
    transfer_syntax_uid: str,
    *,
    rows: int = 0,
    columns: int = 0,
    samples: int = 1,
    bits: int = 8,
) -> FrameGeometry | None:
    """Read the dimensions a compressed frame declares, without decoding it.

    Parameters
    ----------
    frame : bytes
        One frame's bytes (its fragments joined), as in the encapsulated Pixel Data.
    transfer_syntax_uid : str
        The instance's Transfer Syntax UID.
    rows, columns, samples, bits : int
        Rows, Columns, Samples per Pixel and Bits Allocated of the data set: an RLE header does
        not state the size, so for RLE the geometry is the data set's when its header is
        consistent with them (PS3.5 G.4).

    Returns
    -------
    FrameGeometry or None
        ``None`` for a transfer syntax with no header to read (not a compressed one this
        module knows; pydicom has no decoder for those either).

    Raises
    ------
    radsight.errors.PixelDataMismatch
        When the header is missing, truncated or inconsistent.
    """
    uid = str(transfer_syntax_uid)
    if uid in _JPEG:
        return _jpeg_geometry(frame)
    if uid in _J2K:
        return _j2k_geometry(frame)
    if uid == _RLE:
        return _rle_geometry(frame, rows, columns, samples, bits)
    return None


def check_pixel_data(
    ds: pydicom.Dataset, *, max_frame_pixels: int, max_instance_pixels: int
) -> None:
    """Check that the pixel data is what the Image Pixel module says, before decoding.

    Every frame's declared rows, columns and components must equal Rows (0028,0010),
    Columns (0028,0011) and Samples per Pixel (0028,0002); the encapsulated Pixel Data
    must hold Number of Frames (0028,0008) frames; uncompressed data must be exactly as
    long as its frames need (PS3.5 8.1.1, one byte of padding to an even length allowed).
    A data set without pixel data passes (other checks say whether it needs some).

    Parameters
    ----------
    ds : pydicom.Dataset
        The instance, with its file meta (for the Transfer Syntax UID).
    max_frame_pixels : int
        The most pixels (rows x columns x samples) of one frame that may be decoded.
    max_instance_pixels : int
        The most pixels of all frames together (x Number of Frames): what decoding the
        whole instance would allocate, in pixels.

    Raises
    ------
    radsight.errors.TooLarge
        When a frame has more than ``max_frame_pixels`` pixels, or all frames together
        more than ``max_instance_pixels``.
    radsight.errors.PixelDataMismatch
        When a frame declares another size, the frame count differs, or the length of
        uncompressed data does not match.
    radsight.errors.MissingPixelData
        When Rows, Columns or Bits Allocated are missing or not positive, or encapsulated
        Pixel Data is empty.
    radsight.errors.MalformedDicom
        When the pixel data element holds no bytes (sent with a text or number VR).
    """
    keyword = next(
        (k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), None
    )
    if keyword is None:
        return
    rows, columns, samples, frames, bits = _image_pixel_module(ds, keyword)
    pixels = rows * columns * samples
    if pixels > max_frame_pixels:
        raise TooLarge(
            f"a frame of {rows} x {columns} pixels x {samples} samples ({pixels:,} pixels) is "
            f"over the {max_frame_pixels:,} pixels Radsight decodes (setting max_frame_pixels)"
        )
    if pixels * frames > max_instance_pixels:
        raise TooLarge(
            f"{frames} frames of {rows} x {columns} pixels x {samples} samples "
            f"({pixels * frames:,} pixels) are over the {max_instance_pixels:,} pixels "
            "Radsight decodes of one instance (setting max_instance_pixels)"
        )
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(
        str(meta.get("TransferSyntaxUID", "") if meta is not None else "") or ExplicitVRLittleEndian
    )
    element = ds[keyword]
    value = element.value
    if value is not None and not isinstance(value, bytes | bytearray):
        # e.g. sent with a text VR: pydicom reads it as a string, nothing decodes it
        raise MalformedDicom(
            f"{element.name} {element.tag} is encoded with VR {element.VR}, not a binary VR "
            "(OB, OW, OF or OD, PS3.5 8.2): the pixel data cannot be read"
        )
    if keyword != "PixelData" or not tsyntax.is_encapsulated:
        _check_native_length(ds, keyword, len(value or b""), rows, columns, samples, frames, bits)
        return
    if not value:  # an encapsulated Pixel Data element of no length: no frame at all
        raise MissingPixelData(
            f"Pixel Data (7FE0,0010) is empty: the {tsyntax.name} frames are missing"
        )
    count = 0
    for count, frame in enumerate(_frames(bytes(value or b""), frames), 1):
        if count > frames:
            break
        geometry = read_frame_geometry(
            frame, tsyntax, rows=rows, columns=columns, samples=samples, bits=bits
        )
        if geometry is None:
            return  # a syntax without a known header: nothing decodes it either
        declared = (geometry.rows, geometry.columns, geometry.samples)
        if declared != (rows, columns, samples):
            where = f"frame {count} of " if frames > 1 else ""
            raise PixelDataMismatch(
                f"the {geometry.source} header of {where}the pixel data declares "
                f"{geometry.rows} x {geometry.columns} pixels x {geometry.samples} samples, "
                f"but Rows, Columns and Samples per Pixel say {rows} x {columns} x {samples}: "
                "refused before decoding"
            )
    if count != frames:
        raise PixelDataMismatch(
            f"Number of Frames says {frames} but the encapsulated pixel data holds "
            f"{'more than ' + str(frames) if count > frames else count} frame(s)"
        )


def _image_pixel_module(ds: pydicom.Dataset, keyword: str) -> tuple[int, int, int, int, int]:
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        default_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword)
        bits = int(ds.get("BitsAllocated", default_bits) or default_bits or 0)
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        raise MissingPixelData(
            f"Image Pixel module incomplete (Rows, Columns, Bits Allocated): {exc}"
        ) from exc
    if rows <= 0 or columns <= 0 or frames <= 0 or samples <= 0 or bits <= 0:
        raise MissingPixelData(
            f"image geometry {rows} x {columns} x {samples} samples, {frames} frame(s), "
            f"{bits} bits allocated is empty"
        )
    return rows, columns, samples, frames, bits


def _check_native_length(
    ds: pydicom.Dataset,
    keyword: str,
    actual: int,
    rows: int,
    columns: int,
    samples: int,
    frames: int,
    bits: int,
) -> None:
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if samples == 3 and photometric == "YBR_FULL_422":
        per_frame_bits = rows * columns * 2 * bits  # two samples per pixel on average
    else:
        per_frame_bits = rows * columns * samples * bits
    expected = (per_frame_bits * frames + 7) // 8
    # a tail shorter than a frame (padding, a vendor's slack) is ignored by every decoder;
    # a whole frame more is more frames than Number of Frames says
    if expected <= actual < expected + max(2, per_frame_bits // 8):
        return
    what = "is truncated" if actual < expected else "holds more than its frames"
    raise PixelDataMismatch(
        f"{keyword} holds {actual:,} bytes but {frames} frame(s) of {rows} x {columns} pixels "
        f"x {samples} samples of {bits} bits need {expected:,}: it {what}"
    )


def _frames(data: bytes, number_of_frames: int) -> Iterator[bytes]:
    try:
        yield from generate_frames(data, number_of_frames=number_of_frames)
    except Exception as exc:  # a broken item tag, offset table or length
        raise PixelDataMismatch(
            f"the encapsulated pixel data cannot be split into frames: {exc}"
        ) from exc


def _u16(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">H", data, at)[0])


def _u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from(">I", data, at)[0])


def _jpeg_geometry(frame: bytes) -> FrameGeometry:
    if frame[:2] != b"\xff\xd8":
        raise PixelDataMismatch("a JPEG frame does not start with SOI (FFD8)")
    at, end = 2, len(frame)
    while at + 4 <= end:
        if frame[at] != 0xFF:
            raise PixelDataMismatch(f"the JPEG header is corrupt at byte {at}: no marker")
        marker = frame[at + 1]
        if marker == 0xFF:  # a fill byte before a marker (B.1.1.2)
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        length = _u16(frame, at + 2)
        if length < 2 or at + 2 + length > end:
            raise PixelDataMismatch(f"a JPEG marker segment FF{marker:02X} runs past the frame")
        if marker in _SOF or marker == _SOF55:
            if length < 8:
                raise PixelDataMismatch("the JPEG SOF marker segment is truncated")
            precision = frame[at + 4]
            lines, per_line, components = _u16(frame, at + 5), _u16(frame, at + 7), frame[at + 9]
            source = "JPEG-LS SOF55" if marker == _SOF55 else f"JPEG SOF{marker - 0xC0}"
            if lines == 0 or per_line == 0:
                raise PixelDataMismatch(
                    f"the {source} header declares {lines} x {per_line} pixels (a size given "
                    "later in the stream): refused before decoding"
                )
            return FrameGeometry(lines, per_line, components, precision, source)
        if marker == 0xDA:  # SOS before any SOF
            break
        at += 2 + length
    raise PixelDataMismatch("a JPEG frame has no SOF marker segment before its scan")


def _j2k_geometry(frame: bytes) -> FrameGeometry:
    codestream, box = frame, None
    if frame[:12] == _JP2_SIGNATURE:
        codestream, box = _jp2_codestream(frame)
    if codestream[:4] != b"\xff\x4f\xff\x51":
        raise PixelDataMismatch("a JPEG 2000 frame does not start with SOC and SIZ (FF4F FF51)")
    lsiz = _u16(codestream, 4) if len(codestream) >= 6 else 0
    if lsiz < 41 or 4 + lsiz > len(codestream):
        raise PixelDataMismatch("the JPEG 2000 SIZ marker segment is truncated")
    rsiz = _u16(codestream, 6)
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", codestream, 8)
    csiz = _u16(codestream, 40)
    if csiz == 0 or lsiz != 38 + 3 * csiz:
        raise PixelDataMismatch(
            f"the JPEG 2000 SIZ marker segment declares {csiz} components in {lsiz} bytes"
        )
    ssiz = codestream[42]
    subsampled = any(
        codestream[43 + 3 * i] != 1 or codestream[44 + 3 * i] != 1 for i in range(csiz)
    )
    if xsiz <= xosiz or ysiz <= yosiz or subsampled:
        raise PixelDataMismatch(
            f"the JPEG 2000 SIZ header declares an image of {int(ysiz) - int(yosiz)} x "
            f"{int(xsiz) - int(xosiz)} pixels{' with subsampled components' if subsampled else ''}"
            ": refused before decoding"
        )
    source = "JPEG 2000 SIZ"
    if rsiz & 0x4000:  # the CAP marker segment follows (15444-1 A.5.2, 15444-15 A.3)
        source = "HTJ2K SIZ"
        cap_at = 4 + lsiz
        if codestream[cap_at : cap_at + 2] != b"\xff\x50" or cap_at + 4 > len(codestream):
            raise PixelDataMismatch(
                "an HTJ2K codestream says it has a CAP marker segment but has none"
            )
        lcap = _u16(codestream, cap_at + 2)
        if lcap < 6 or cap_at + 2 + lcap > len(codestream):
            raise PixelDataMismatch("the HTJ2K CAP marker segment runs past the frame")
    geometry = FrameGeometry(int(ysiz - yosiz), int(xsiz - xosiz), csiz, (ssiz & 0x7F) + 1, source)
    if box is not None and box[:3] != (geometry.rows, geometry.columns, geometry.samples):
        raise PixelDataMismatch(
            f"the JP2 header box declares {box[0]} x {box[1]} pixels x {box[2]} components but "
            f"its codestream {geometry.rows} x {geometry.columns} x {geometry.samples}"
        )
    return geometry


def _jp2_codestream(data: bytes) -> tuple[bytes, tuple[int, int, int]]:
    """The contiguous codestream box of a JP2 file and its image header box (15444-1 I.5.3.1)."""
    header: tuple[int, int, int] | None = None
    at = 0
    while at + 8 <= len(data):
        length, kind = _u32(data, at), data[at + 4 : at + 8]
        start = at + 8
        if length == 1:  # the extended length follows
            if at + 16 > len(data):
                break
            length, start = int(struct.unpack_from(">Q", data, at + 8)[0]), at + 16
        elif length == 0:  # the last box runs to the end
            length = len(data) - at
        if length < start - at or at + length > len(data):
            raise PixelDataMismatch(f"the JP2 box {kind!r} runs past the frame")
        if kind == b"jp2h":
            inner = data[start : at + length]
            if inner[4:8] == b"ihdr" and len(inner) >= 18:
                header = (_u32(inner, 8), _u32(inner, 12), _u16(inner, 16))
        elif kind == b"jp2c":
            if header is None:
                raise PixelDataMismatch("a JP2 file has no image header box before its codestream")
            return data[start : at + length], header
        at += length
    raise PixelDataMismatch("a JP2 file holds no codestream box")


def _rle_geometry(frame: bytes, rows: int, columns: int, samples: int, bits: int) -> FrameGeometry:
    if len(frame) < 64:
        raise PixelDataMismatch(f"an RLE frame of {len(frame)} bytes has no 64-byte header")
    header = struct.unpack_from("<16I", frame, 0)
    segments, offsets = header[0], header[1:]
    expected = samples * ((bits + 7) // 8)
    if segments != expected:
        raise PixelDataMismatch(
            f"the RLE header declares {segments} segments, but {samples} sample(s) of "
            f"{bits} bits need {expected}"
        )
    used = offsets[:segments]
    if (
        used[0] != 64
        or any(b <= a for a, b in zip(used, used[1:], strict=False))
        or used[-1] >= len(frame)
    ):
        raise PixelDataMismatch(
            "the RLE header's segment offsets do not lie inside the frame in order"
        )
    if any(offsets[segments:]):
        raise PixelDataMismatch("the RLE header has offsets for more segments than it declares")
    # an RLE segment holds no size: the decoder fills Rows x Columns from the data set
    return FrameGeometry(rows, columns, samples, None, "RLE")
