"""Generated DICOM studies for the demo, tests and benchmarks (no patient data in them)."""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from radsight.dicom.uids import PREFIX

DEMO_PATIENT = "DEMO^SYNTHETIC"


def make_radiograph(
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    patient_id: str = "DEMO-0001",
    rows: int = 512,
    columns: int = 512,
    bits_stored: int = 12,
    bright_spot: tuple[float, float, float] | None = (0.65, 0.4, 0.08),
    photometric: str = "MONOCHROME2",
    view_position: str = "PA",
    body_part: str = "CHEST",
    modality: str = "DX",
    seed: int = 0,
    instance_number: int = 1,
) -> Dataset:
    """A chest-radiograph-like DX image; ``bright_spot`` = (x, y, radius) as fractions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    top = (1 << bits_stored) - 1
    # two dark "lung fields" on a brighter mediastinum, plus noise
    img = np.full((rows, columns), 0.55, np.float32)
    for cx in (0.3, 0.7):
        lung = ((xx / columns - cx) / 0.17) ** 2 + ((yy / rows - 0.5) / 0.33) ** 2 < 1
        img[lung] = 0.25
    if bright_spot is not None:
        sx, sy, sr = bright_spot
        d2 = ((xx / columns - sx) ** 2 + (yy / rows - sy) ** 2) / (sr**2)
        img += 0.6 * np.exp(-d2 * 2)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    pixels = np.clip(img / 1.2, 0, 1) * top
    if photometric == "MONOCHROME1":
        pixels = top - pixels
    ds = _base(
        DigitalXRayImageStorageForPresentation,
        modality,
        study_instance_uid,
        series_instance_uid,
        patient_id,
        instance_number,
    )
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view_position
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.ImageLaterality = "U"
    _pixels(ds, pixels.astype(np.uint16), bits_stored, photometric)
    ds.WindowCenter = top // 2
    ds.WindowWidth = top
    return ds


def make_ct_slice(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    index: int,
    rows: int = 256,
    columns: int = 256,
    body_part: str = "CHEST",
    patient_id: str = "DEMO-0002",
) -> Dataset:
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    body = ((xx / columns - 0.5) / 0.4) ** 2 + ((yy / rows - 0.5) / 0.3) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0)
    ds = _base(CTImageStorage, "CT", study_instance_uid, series_instance_uid, patient_id, index + 1)
    ds.BodyPartExamined = body_part
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.ImagePositionPatient = [-90.0, -90.0, -2.5 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = generate_uid(prefix=PREFIX, entropy_srcs=[study_instance_uid])
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = -2.5 * index
    ds.KVP = 120
    ds.AcquisitionNumber = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    _pixels(ds, (hu + 1024).astype(np.uint16), 12, "MONOCHROME2")
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    return ds


def _base(
    sop_class: str,
    modality: str,
    study_uid: str | None,
    series_uid: str | None,
    patient_id: str,
    instance_number: int,
) -> Dataset:
    now = dt.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = UID(generate_uid(prefix=PREFIX))
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid(prefix=PREFIX)
    ds.SeriesInstanceUID = series_uid or generate_uid(prefix=PREFIX)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = DEMO_PATIENT
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.Modality = modality
    ds.Manufacturer = "Radsight synthetic"
    ds.StudyDescription = "Synthetic demo study"
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int, photometric: str) -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
