"""What compressed frames declare, read without decoding: bombs refused, real files pass."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID

from radsight.dicom.codestream import check_pixel_data, read_frame_geometry
from radsight.dicom.pixels import frames_for_analysis, raise_decompression_bomb
from radsight.dicom.rendering import RenderOptions, native_frame, parse_render_options, render_frame
from radsight.dicom.synthetic import make_radiograph
from radsight.errors import InvalidInput, MissingPixelData, PixelDataMismatch, TooLarge
from tests._limits import LIMITS
from tests.dicom import _bombs

LIMIT = 200_000_000
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom-samples"
#: real files whose codestream really is inconsistent (fuzzing artefacts shipped with pydicom)
KNOWN_BAD = {"JPEG2000-embedded-sequence-delimiter.dcm"}  # SIZ declares ~3.8e12 pixels


def _real_files() -> list[Path]:
    roots = [Path(pydicom.__file__).parent / "data" / "test_files", SHARED]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:  # pragma: no cover
        pass
    return [p for r in roots if r.is_dir() for p in sorted(r.rglob("*")) if p.is_file()]


def _read(path: Path) -> pydicom.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            ds.get("PixelData")
        return ds
    except Exception:  # not DICOM, or broken on purpose
        return None


def _compressed_files() -> list[tuple[str, pydicom.Dataset]]:
    out = []
    for path in _real_files():
        ds = _read(path)
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if ds is not None and "PixelData" in ds and ts and UID(ts).is_encapsulated:
            out.append((path.name, ds))
    return out


def test_no_real_compressed_file_is_refused():
    """Every compressed file of pydicom, pydicom-data and the shared samples passes, and
    each transfer syntax with a header this module reads is among them."""
    files = _compressed_files()
    refused = []
    syntaxes = set()
    for name, ds in files:
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        try:
            check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
        except (PixelDataMismatch, TooLarge) as exc:
            if name not in KNOWN_BAD:
                refused.append(f"{name}: {exc.message}")
    assert refused == []
    assert len(files) > 80
    wanted = {f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 70, 80, 81, 90, 91)}
    assert wanted | {"1.2.840.10008.1.2.5"} <= syntaxes


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("JPEG2000.dcm", "JPEG 2000 SIZ"),
        ("J2K_pixelrep_mismatch.dcm", "JPEG 2000 SIZ"),
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG SOF0"),
        ("JPEG-lossy.dcm", "JPEG SOF1"),
        ("SC_rgb_jpeg_gdcm.dcm", "JPEG SOF3"),
        ("JPEG-LL.dcm", "JPEG SOF3"),
        ("JPEGLSNearLossless_16.dcm", "JPEG-LS SOF55"),
        ("emri_small_jpeg_ls_lossless.dcm", "JPEG-LS SOF55"),
        ("MR_small_RLE.dcm", "RLE"),
        ("SC_rgb_rle_32bit.dcm", "RLE"),
    ],
)
def test_geometry_of_real_files_is_their_header(name, source):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
    geometry = read_frame_geometry(
        frame,
        ds.file_meta.TransferSyntaxUID,
        rows=ds.Rows,
        columns=ds.Columns,
        samples=ds.SamplesPerPixel,
        bits=ds.BitsAllocated,
    )
    assert geometry is not None
    assert (geometry.rows, geometry.columns, geometry.samples) == (
        ds.Rows,
        ds.Columns,
        ds.SamplesPerPixel,
    )
    assert geometry.source == source


BOMBS = [
    # (name, builder, error, what the message must name)
    ("JPEG 2000 65535 x 60000", lambda: _bombs.jpeg2000(60000, 65535), PixelDataMismatch,
     "JPEG 2000 SIZ header of the pixel data declares 60000 x 65535 pixels x 1 samples, but "
     "Rows, Columns and Samples per Pixel say 256 x 256 x 1"),
    ("JPEG 2000 30000 x 30000", lambda: _bombs.jpeg2000(30000, 30000), PixelDataMismatch,
     "declares 30000 x 30000 pixels"),
    ("JPEG baseline", lambda: _bombs.jpeg_baseline(60000, 65535), PixelDataMismatch,
     "JPEG SOF0 header of the pixel data declares 60000 x 65535"),
    ("JPEG-LS", lambda: _bombs.jpeg_ls(60000, 65535), PixelDataMismatch,
     "JPEG-LS SOF55 header of the pixel data declares 60000 x 65535"),
    ("RLE 30000 x 30000", lambda: _bombs.rle(30000, 30000), TooLarge,
     "30000 x 30000 pixels x 1 samples (900,000,000 pixels) is over the 200,000,000 pixels"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "build", "error", "message"), BOMBS, ids=[b[0] for b in BOMBS])
def test_a_bomb_is_refused_before_any_decode(name, build, error, message):
    ds = build()
    assert len(_bombs.part10(ds)) < 100_000  # a small file
    with pytest.raises(error) as caught:
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    assert message in caught.value.message
    # every decode path refuses it the same way, before decoding
    with pytest.raises(error):
        frames_for_analysis(ds, **LIMITS)
    with pytest.raises(error):
        native_frame(ds, 1, **LIMITS)
    with pytest.raises(error):
        render_frame(ds, 1, RenderOptions(viewport=(128, 128)), **LIMITS)


@pytest.mark.parametrize(
    "build", [_bombs.jpeg2000, _bombs.jpeg_ls, _bombs.jpeg_baseline, _bombs.rle]
)
def test_the_unpatched_instances_pass_and_decode(build):
    ds = build()
    check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    ((_, pixels),) = frames_for_analysis(ds, **LIMITS)
    assert pixels.shape == (256, 256)


def test_the_frame_limit_is_the_setting():
    ds = _bombs.jpeg2000()
    check_pixel_data(ds, max_frame_pixels=256 * 256, max_instance_pixels=LIMIT)
    with pytest.raises(TooLarge, match="setting max_frame_pixels"):
        check_pixel_data(ds, max_frame_pixels=256 * 256 - 1, max_instance_pixels=LIMIT)


def test_a_jp2_wrapped_codestream_is_read_and_checked():
    ds = _bombs.jpeg2000()
    codestream = next(generate_frames(ds.PixelData, number_of_frames=1))

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    def jp2(height: int, width: int) -> bytes:
        ihdr = box(b"ihdr", struct.pack(">IIHBBBB", height, width, 1, 15, 7, 0, 0))
        return (
            b"\x00\x00\x00\x0cjP  \r\n\x87\n"
            + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
            + box(b"jp2h", ihdr)
            + box(b"jp2c", codestream)
        )

    geometry = read_frame_geometry(jp2(256, 256), "1.2.840.10008.1.2.4.90")
    assert geometry is not None and (geometry.rows, geometry.columns) == (256, 256)
    with pytest.raises(PixelDataMismatch, match="JP2 header box declares 60000 x 65535"):
        read_frame_geometry(jp2(60000, 65535), "1.2.840.10008.1.2.4.90")


def _htj2k(rows: int, columns: int, cap: bool = True) -> bytes:
    siz = struct.pack(">HHIIIIIIIIH", 41, 0x4000, columns, rows, 0, 0, columns, rows, 0, 0, 1)
    siz += b"\x0f\x01\x01"
    cap_segment = b"\xff\x50" + struct.pack(">HIH", 8, 0x00020000, 0) if cap else b""
    return b"\xff\x4f\xff\x51" + siz + cap_segment + b"\xff\x90" + b"\x00" * 16


def test_htj2k_siz_and_cap_are_read():
    geometry = read_frame_geometry(_htj2k(512, 256), "1.2.840.10008.1.2.4.201")
    assert geometry is not None
    assert (geometry.rows, geometry.columns, geometry.source) == (512, 256, "HTJ2K SIZ")
    with pytest.raises(PixelDataMismatch, match="CAP"):
        read_frame_geometry(_htj2k(512, 256, cap=False), "1.2.840.10008.1.2.4.203")
    ds = make_radiograph(rows=256, columns=256)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"
    ds.PixelData = encapsulate([_htj2k(60000, 65535)])
    with pytest.raises(PixelDataMismatch, match="HTJ2K SIZ header .* 60000 x 65535"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)


def test_rle_header_must_fit_the_samples():
    ds = _bombs.rle()
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    struct.pack_into("<I", frame, 0, 3)  # three segments for one 16-bit sample
    ds.PixelData = encapsulate([bytes(frame)])
    with pytest.raises(PixelDataMismatch, match="declares 3 segments, but 1 sample"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    frame = bytearray(next(generate_frames(_bombs.rle().PixelData, number_of_frames=1)))
    struct.pack_into("<I", frame, 8, 10**9)  # second segment far past the fragment
    ds.PixelData = encapsulate([bytes(frame)])
    with pytest.raises(PixelDataMismatch, match="offsets"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)


def test_frames_must_match_number_of_frames():
    ds = _bombs.jpeg2000()
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate([frame, frame], has_bot=True)
    with pytest.raises(PixelDataMismatch, match="Number of Frames says 3 but .* holds 2"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    ds.NumberOfFrames = 1
    with pytest.raises(PixelDataMismatch, match="more than 1"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)


@pytest.mark.parametrize("empty", [None, b""])
def test_empty_pixel_data_is_refused_as_missing(empty):
    """Found by the fuzzer: an empty encapsulated Pixel Data was a TypeError (a 500)."""
    ds = _bombs.jpeg2000()
    ds.PixelData = empty
    with pytest.raises(MissingPixelData, match=r"Pixel Data \(7FE0,0010\) is empty"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)


def test_uncompressed_length_must_match():
    ds = make_radiograph(rows=64, columns=64)
    check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    ds.PixelData = bytes(ds.PixelData) + b"\0" * 100  # slack shorter than a frame: fine
    check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    ds.PixelData = bytes(ds.PixelData) * 3  # more frames than Number of Frames says
    with pytest.raises(PixelDataMismatch, match="holds more than its frames"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)
    ds.PixelData = bytes(ds.PixelData)[:1000]
    with pytest.raises(PixelDataMismatch, match="truncated"):
        check_pixel_data(ds, max_frame_pixels=LIMIT, max_instance_pixels=LIMIT)


@pytest.mark.parametrize(
    ("viewport", "error", "message"),
    [
        ("100000,100000", TooLarge, "viewport vw x vh of 100000 x 100000 pixels is over"),
        ("8192,8192", TooLarge, "setting max_render_pixels"),
        ("64,64,0,0,99999999,99999999", TooLarge, "viewport region sw x sh"),
        ("1e999,5", InvalidInput, "viewport must be"),
        ("nan,5", InvalidInput, "viewport must be"),
    ],
)
def test_absurd_viewports_are_refused(viewport, error, message):
    with pytest.raises(error, match=message):
        parse_render_options(None, viewport, None)


def test_viewport_limit_is_the_setting():
    assert parse_render_options(None, "4096,4096", None).viewport == (4096, 4096)
    with pytest.raises(TooLarge):
        parse_render_options(None, "4096,4096", None, max_render_pixels=4096 * 4095)


def test_pillow_decompression_bomb_is_too_large():
    from PIL import Image

    ds = make_radiograph(rows=64, columns=64)
    with pytest.raises(TooLarge, match="decompression bomb"):
        raise_decompression_bomb(Image.DecompressionBombError("Image size (9 pixels)"), ds)
    # pydicom wraps each plugin's error in one message: still recognised
    wrapped = RuntimeError("pillow: ... could be decompression bomb DOS attack.")
    with pytest.raises(TooLarge):
        raise_decompression_bomb(wrapped, ds)
    raise_decompression_bomb(ValueError("something else"), ds)  # not a bomb: no error
