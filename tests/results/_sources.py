"""Source images and checks shared by the encoder and pixel tests.

The synthetic sources are small images built with pydicom, each with one bright block at a
known place, so that :class:`BrightRegionAlgorithm` marks it. Real files from
``../shared/data`` are used where present; tests that need them skip otherwise.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

from radsight.algorithms.bright_region import BrightRegionAlgorithm
from radsight.pipeline.inputs import study_input_from
from radsight.results.report import AnalysisReport
from tests._limits import LIMITS

#: ../shared/data next to the repository, as tests/conftest.py finds it
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
#: the TotalSegmentator series: JPEG 2000, but its SOP and study UIDs are blanked
REAL_CT_JPEG2000 = SHARED / "dicom-samples" / "totalsegmentator-ct-series"
REAL_CT_JPEG_LOSSLESS = SHARED / "ct-brain" / "cq500-samples" / "CQ500-CT-0"
ORTHANC_TESTS = SHARED / "dicom-samples" / "orthanc-tests"

STUDY_UID = "1.2.826.0.1.3680043.8.498.1000"

#: (column, row) corners of the bright block put into every synthetic source, as a
#: fraction of the image size (x0, y0, x1, y1)
BLOCK = (0.55, 0.20, 0.80, 0.45)


@dataclass(frozen=True)
class Variant:
    """How to build one synthetic source."""

    name: str
    modality: str
    sop_class_uid: str
    rows: int = 160
    columns: int = 128
    bits_allocated: int = 16
    bits_stored: int = 12
    photometric: str = "MONOCHROME2"
    frames: int = 1
    window: tuple[float, float] | None = None
    rescale: tuple[float, float] | None = None
    signed: bool = False


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "dx16-mono2",
            "DX",
            DigitalXRayImageStorageForPresentation,
            bits_stored=16,
            window=(30000.0, 50000.0),
        ),
        Variant("cr-mono1", "CR", ComputedRadiographyImageStorage, photometric="MONOCHROME1"),
        Variant(
            "dx8", "DX", DigitalXRayImageStorageForPresentation, bits_allocated=8, bits_stored=8
        ),
        Variant(
            "ct-signed",
            "CT",
            CTImageStorage,
            rows=128,
            columns=128,
            signed=True,
            rescale=(1.0, -1024.0),
            window=(40.0, 400.0),
        ),
        Variant(
            "multiframe",
            "OT",
            MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            rows=128,
            columns=112,
            frames=3,
        ),
        Variant(
            "us-rgb",
            "US",
            UltrasoundImageStorage,
            rows=128,
            columns=160,
            bits_allocated=8,
            bits_stored=8,
            photometric="RGB",
        ),
    )
}


def stored_pixels(variant: Variant, frame: int = 0) -> np.ndarray:
    """Stored values: a gradient background and the bright block (brighter per frame)."""
    rows, cols = variant.rows, variant.columns
    top = 2**variant.bits_stored - 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    background = 0.15 + 0.15 * (xx / cols) + 0.05 * np.sin(yy / 7.0)
    image = background.copy()
    x0, y0, x1, y1 = block_box(variant)
    image[y0:y1, x0:x1] = 0.85 - 0.05 * frame
    if variant.photometric == "MONOCHROME1":
        image = 1.0 - image  # the block is bright on display, so low stored values
    values = np.rint(image * top).astype(np.int64)
    if variant.signed:
        values -= 2 ** (variant.bits_stored - 1)
    dtype = {8: np.uint8, 16: np.int16 if variant.signed else np.uint16}[variant.bits_allocated]
    return values.astype(dtype)


def block_box(variant: Variant) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = BLOCK
    return (
        int(x0 * variant.columns),
        int(y0 * variant.rows),
        int(x1 * variant.columns),
        int(y1 * variant.rows),
    )


def make_source(
    variant: Variant | str,
    *,
    study_instance_uid: str = STUDY_UID,
    series_instance_uid: str | None = None,
    rows: int | None = None,
    columns: int | None = None,
) -> pydicom.Dataset:
    """A small image of the variant, with file meta, as a modality would send it."""
    if isinstance(variant, str):
        variant = VARIANTS[variant]
    if rows is not None or columns is not None:
        variant = Variant(
            **{
                **variant.__dict__,
                "rows": rows or variant.rows,
                "columns": columns or variant.columns,
            }
        )
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = variant.sop_class_uid
    ds.SOPClassUID = variant.sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Test^Synthetic"
    ds.PatientID = "RS-TEST-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality = variant.modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "Synthetic"
    ds.Rows = variant.rows
    ds.Columns = variant.columns
    ds.BitsAllocated = variant.bits_allocated
    ds.BitsStored = variant.bits_stored
    ds.HighBit = variant.bits_stored - 1
    ds.PixelRepresentation = 1 if variant.signed else 0
    ds.PhotometricInterpretation = variant.photometric
    ds.PatientOrientation = ["L", "F"] if variant.modality in ("DX", "CR", "MG") else ""
    if variant.photometric == "RGB":
        gray = stored_pixels(variant)
        rgb = np.stack([gray, (gray * 0.9).astype(np.uint8), (gray * 0.5).astype(np.uint8)], -1)
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.PixelData = rgb.tobytes()
    else:
        ds.SamplesPerPixel = 1
        frames = [stored_pixels(variant, f) for f in range(variant.frames)]
        ds.PixelData = np.stack(frames).tobytes()
    if variant.frames > 1:
        ds.NumberOfFrames = variant.frames
    if variant.window is not None:
        ds.WindowCenter, ds.WindowWidth = variant.window
    if variant.rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = variant.rescale
        ds.RescaleType = "HU"
    return ds


def real_cq500(n: int) -> list[pydicom.Dataset]:
    files = sorted((REAL_CT_JPEG_LOSSLESS / "series6_thin_0.625mm_every8th").glob("*.dcm"))[:n]
    if not files:
        pytest.skip(f"real CQ500 JPEG lossless CT absent under {REAL_CT_JPEG_LOSSLESS}")
    return [pydicom.dcmread(f) for f in files]


def real_orthanc_jpegls() -> list[pydicom.Dataset]:
    path = ORTHANC_TESTS / "CT2_JLSN_JPEGLSNearLossless_1.2.840.10008.1.2.4.81.dcm"
    if not path.exists():
        pytest.skip(f"real JPEG-LS CT absent: {path}")
    return [pydicom.dcmread(path)]


def analyse(sources: list[pydicom.Dataset], thresholds: dict[str, float] | None = None):
    """Run the deterministic test algorithm on the sources, as the pipeline would."""
    algorithm = BrightRegionAlgorithm()
    study = study_input_from(sources, "cxr", **LIMITS)
    algorithm.check(study)
    return AnalysisReport.from_analysis(algorithm, algorithm.analyse(study), thresholds)


def to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def read_strict(data: bytes) -> pydicom.Dataset:
    """Read back with pydicom raising on any invalid value (VR, length, character)."""
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.RAISE
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        for _ in ds.iterall():  # convert every raw element now, while strict
            pass
        return ds
    finally:
        settings.reading_validation_mode = previous


def _run_tool(tool: str, data: bytes) -> subprocess.CompletedProcess[str]:
    if shutil.which(tool) is None:
        # as tests/conftest.py: a missing validator fails, it does not pass silently
        pytest.fail(f"{tool} is not installed: apt-get install dcmtk dicom3tools")
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        return subprocess.run(
            [tool, handle.name], capture_output=True, text=True, timeout=120, check=False
        )


def dciodvfy(data: bytes) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dicom3tools' IOD verifier for an encoded instance."""
    result = _run_tool("dciodvfy", data)
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def assert_valid_iod(data: bytes) -> list[str]:
    """Fail on any dciodvfy error; return the warnings so a test can print them."""
    errors, warnings = dciodvfy(data)
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors + warnings)
    for line in warnings:
        print("dciodvfy:", line)
    return warnings


def dsrdump(data: bytes) -> str:
    result = _run_tool("dsrdump", data)
    assert result.returncode == 0, f"dsrdump failed ({result.returncode}): {result.stderr}"
    return result.stdout
