"""Labelled reference sets for calibration tests (pure: pydicom, numpy, Pillow).

A reference set is a folder with a ``labels.csv`` and either

- DICOM studies (any layout, any file names): columns ``study_instance_uid,label``;
- images (PNG or JPEG): columns ``path,label`` with ``path`` relative to the folder.

``label`` is 1/0 (also positive/negative, abnormal/normal, true/false, yes/no). Optional
columns become subgroups: ``sex``, ``age`` (years, or a DICOM age string like ``045Y``),
``manufacturer``, ``organisation``, ``view`` and any other column with few values. For
DICOM studies sex, age, manufacturer and view are read from the headers when the CSV lacks
them. Images are wrapped in a DX chest data set (an MG one for mammography: see
:func:`mammogram_from_image`) so that they take the same decoding path
(:func:`radsight.dicom.pixels.frames_for_analysis`) as a study received from a modality.
The wrapped image keeps the file's pixels as they are (no resizing, no flipping), so its
pixel coordinates are the file's.

Where the lesions are (optional): a ``regions.csv`` beside ``labels.csv``, one row per
reference region (:func:`read_regions`, scored by :mod:`radsight.monitor.localisation`):

- the case: ``study_instance_uid`` (DICOM sets) or ``path`` (image sets), as in
  ``labels.csv``; the case must be a positive;
- optional ``sop_instance_uid`` (DICOM sets: the image of the study the region is on;
  empty: any image of the study) and ``frame`` (1-based, for multi-frame images);
- optional ``finding``: the finding key the region is a reference for (e.g.
  ``tb-like-lesion``); when any row names one, only the marks of the named findings count;
- one shape, in pixel coordinates (column, row) of the source image, origin at the top
  left: ``x0,y0,x1,y1`` (a box), ``cx,cy,r`` (a circle, as mammography sets give
  abnormalities) or ``points`` (a polygon, ``"x y;x y;x y;..."``, at least 3 points).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

from radsight.dicom.uids import PREFIX
from radsight.errors import ConfigError
from radsight.monitor.localisation import ReferenceRegion, Shape

KNOWN_SUBGROUPS = ("sex", "age_band", "manufacturer", "organisation", "view")
_TRUE = {"1", "positive", "abnormal", "true", "yes", "pos"}
_FALSE = {"0", "negative", "normal", "false", "no", "neg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
#: CT volumes (research sets such as MosMedData ship NIfTI): one axial CT series each
VOLUME_SUFFIXES = (".nii", ".nii.gz")
#: BodyPartExamined given to a NIfTI volume's slices, by study type
VOLUME_BODY_PARTS = {"ct-chest": "CHEST", "ct-brain": "HEAD"}
#: another CSV column becomes a subgroup when it has at most this many values
MAX_SUBGROUP_VALUES = 12


@dataclass
class ReferenceCase:
    case_id: str
    label: int
    #: subgroup name -> value ("" when unknown)
    subgroups: dict[str, str] = field(default_factory=dict)
    #: DICOM files of the study, or the one image file
    files: tuple[Path, ...] = ()
    kind: str = "dicom"  # dicom | image
    #: where the lesions are (``regions.csv``); empty when the set does not say
    regions: tuple[ReferenceRegion, ...] = ()

    def datasets(self, study_type: str = "cxr") -> list[Dataset]:
        if self.kind == "image" and is_volume(self.files[0]):
            return datasets_from_nifti(self.files[0], self.case_id, study_type)
        if self.kind == "image":
            if study_type == "mmg":
                return [
                    mammogram_from_image(
                        self.files[0],
                        self.case_id,
                        self.subgroups.get("view", ""),
                        self.subgroups.get("laterality", ""),
                    )
                ]
            return [dataset_from_image(self.files[0], self.case_id, self.subgroups.get("view", ""))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [pydicom.dcmread(p) for p in self.files]


@dataclass
class ReferenceSet:
    name: str
    root: Path
    kind: str
    cases: list[ReferenceCase]

    @property
    def subgroup_names(self) -> list[str]:
        names: list[str] = []
        for case in self.cases:
            for k in case.subgroups:
                if k not in names:
                    names.append(k)
        return names


def parse_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    raise ConfigError(f"{where}: label {value!r} is not 1/0, positive/negative or abnormal/normal")


def age_band(value: str | float | None) -> str:
    """``045Y`` / ``45`` -> ``40-59``; PS3.5 AS strings in days, weeks, months count as < 18."""
    if value is None or value == "":
        return ""
    text = str(value).strip().upper()
    try:
        if text[-1:] in ("D", "W", "M"):
            years = 0.0
        else:
            years = float(text.rstrip("Y"))
    except ValueError:
        return ""
    for upper, band in ((18, "<18"), (40, "18-39"), (60, "40-59"), (80, "60-79")):
        if years < upper:
            return band
    return "80+"


def read_reference(
    root: Path | str, *, progress: Callable[[str], None] | None = None
) -> ReferenceSet:
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    if not labels_csv.is_file():
        raise ConfigError(f"{root} has no labels.csv (study_instance_uid,label or path,label)")
    with labels_csv.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if "label" not in columns:
        raise ConfigError(f"{labels_csv} has no 'label' column (columns: {columns})")
    if "path" in columns:
        kind, id_col = "image", "path"
    elif "study_instance_uid" in columns:
        kind, id_col = "dicom", "study_instance_uid"
    else:
        raise ConfigError(f"{labels_csv} needs a 'path' or a 'study_instance_uid' column")
    if not rows:
        raise ConfigError(f"{labels_csv} lists no cases")
    extra = [c for c in columns if c not in (id_col, "label")]
    groups = [c for c in extra if c in ("sex", "age", "manufacturer", "organisation", "view")]
    groups += [
        c
        for c in extra
        if c not in groups and len({r.get(c, "") for r in rows}) <= MAX_SUBGROUP_VALUES
    ]
    studies = _index_dicom(root) if kind == "dicom" else {}
    cases = []
    for i, row in enumerate(rows, start=2):
        where = f"{labels_csv.name} line {i}"
        case_id = row.get(id_col, "")
        if not case_id:
            raise ConfigError(f"{where}: empty {id_col}")
        label = parse_label(row["label"], where)
        sub = {("age_band" if c == "age" else c): row.get(c, "") for c in groups}
        if "age_band" in sub:
            sub["age_band"] = age_band(sub["age_band"])
        if kind == "image":
            path = (root / case_id).resolve()
            if not path.is_file():
                raise ConfigError(f"{where}: image {case_id} does not exist")
            if path.suffix.lower() not in IMAGE_SUFFIXES and not is_volume(path):
                raise ConfigError(
                    f"{where}: {case_id} is not a PNG or JPEG image or a NIfTI volume"
                )
            files: tuple[Path, ...] = (path,)
        else:
            if case_id not in studies:
                raise ConfigError(f"{where}: no DICOM files of study {case_id} under {root}")
            files, headers, _ = studies[case_id]
            for key, value in headers.items():
                if not sub.get(key):
                    sub[key] = value
        cases.append(ReferenceCase(case_id, label, sub, files, kind))
    if (root / REGIONS_CSV).is_file():
        instances = {uid: sops for uid, (_, _, sops) in studies.items()}
        regions = read_regions(root / REGIONS_CSV, id_col, cases, instances)
        for case in cases:
            case.regions = tuple(regions.get(case.case_id, ()))
    return ReferenceSet(root.name, root, kind, cases)


REGIONS_CSV = "regions.csv"
_SHAPES: dict[Shape, tuple[str, ...]] = {
    "box": ("x0", "y0", "x1", "y1"),
    "circle": ("cx", "cy", "r"),
    "polygon": ("points",),
}


def read_regions(
    path: Path,
    id_col: str,
    cases: list[ReferenceCase],
    instances: dict[str, set[str]],
) -> dict[str, list[ReferenceRegion]]:
    """``regions.csv`` (the format is in the module docstring) -> case id -> regions.

    Raises ConfigError naming the file, the line and the problem: an unknown or negative
    case, no shape or two, a number that is not one, an empty box, a polygon of fewer than
    3 points, an instance the study does not have.
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if id_col not in columns:
        raise ConfigError(
            f"{path.name} has no {id_col!r} column (the case key of labels.csv; columns: {columns})"
        )
    if not any(c in columns for shape in _SHAPES.values() for c in shape):
        raise ConfigError(f"{path.name} has no shape columns: x0,y0,x1,y1 or cx,cy,r or points")
    by_id = {c.case_id: c for c in cases}
    out: dict[str, list[ReferenceRegion]] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path.name} line {i}"
        case_id = row.get(id_col, "")
        case = by_id.get(case_id)
        if case is None:
            raise ConfigError(f"{where}: {id_col} {case_id!r} is not a case of labels.csv")
        if case.label != 1:
            raise ConfigError(f"{where}: case {case_id} is a negative; regions mark lesions")
        if case.kind == "image" and is_volume(case.files[0]):
            raise ConfigError(f"{where}: regions on NIfTI volumes are not supported")
        given = [s for s, cols in _SHAPES.items() if any(row.get(c, "") for c in cols)]
        if len(given) != 1:
            raise ConfigError(
                f"{where}: give one shape (x0,y0,x1,y1 or cx,cy,r or points), "
                f"not {' and '.join(given) or 'none'}"
            )
        shape = given[0]
        try:
            if shape == "polygon":
                coords = tuple(
                    float(v)
                    for pair in row["points"].split(";")
                    if pair.strip()
                    for v in _pair(pair)
                )
            else:
                missing = [c for c in _SHAPES[shape] if not row.get(c, "")]
                if missing:
                    raise ValueError(f"the {shape} lacks {', '.join(missing)}")
                coords = tuple(_number(row[c], c) for c in _SHAPES[shape])
            frame = None
            if row.get("frame", ""):
                number = _number(row["frame"], "frame")
                if not number.is_integer():
                    raise ValueError(f"frame {row['frame']} must be a whole number")
                frame = int(number)
                if frame < 1:
                    raise ValueError(f"frame {frame} must be 1 or more")
            sop = row.get("sop_instance_uid", "")
            if sop and case.kind == "image":
                raise ValueError("sop_instance_uid applies to DICOM sets only")
            if sop and sop not in instances.get(case_id, set()):
                raise ValueError(f"study {case_id} has no instance {sop}")
            region = ReferenceRegion(shape, coords, sop, frame, row.get("finding", ""))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out.setdefault(case_id, []).append(region)
    return out


def _number(text: str, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None


def _pair(text: str) -> tuple[float, float]:
    parts = text.replace(",", " ").split()
    if len(parts) != 2:
        raise ValueError(f"polygon point {text.strip()!r} is not 'x y'")
    return _number(parts[0], "points"), _number(parts[1], "points")


def _index_dicom(
    root: Path,
) -> dict[str, tuple[tuple[Path, ...], dict[str, str], set[str]]]:
    by_study: dict[str, list[Path]] = {}
    headers: dict[str, dict[str, str]] = {}
    sops: dict[str, set[str]] = {}
    for path in sorted(
        p for p in root.rglob("*") if p.is_file() and p.name not in ("labels.csv", REGIONS_CSV)
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not DICOM: a README, a thumbnail
        uid = str(ds.get("StudyInstanceUID", "") or "")
        if not uid:
            continue
        by_study.setdefault(uid, []).append(path)
        sops.setdefault(uid, set()).add(str(ds.get("SOPInstanceUID", "") or ""))
        headers.setdefault(
            uid,
            {
                "sex": str(ds.get("PatientSex", "") or ""),
                "age_band": age_band(str(ds.get("PatientAge", "") or "")),
                "manufacturer": str(ds.get("Manufacturer", "") or ""),
                "view": str(ds.get("ViewPosition", "") or ""),
            },
        )
    return {uid: (tuple(paths), headers[uid], sops[uid]) for uid, paths in by_study.items()}


#: Pillow modes of one channel wider than 8 bits (16-bit PNG, 32-bit integer or float TIFF)
WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def _grey(path: Path) -> np.ndarray:
    """The image as uint8, or as uint16 when it has more than 8 bits: Pillow's
    ``convert("L")`` clips a 16-bit image at 255 instead of scaling it."""
    try:
        with Image.open(path) as im:
            if im.mode not in WIDE_MODES:
                return np.asarray(im.convert("L"), dtype=np.uint8)
            wide = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"cannot read image {path}: {exc}") from exc
    if wide.dtype == np.uint16:
        return wide
    values = wide.astype(np.float64)
    if not np.isfinite(values).all():
        raise ConfigError(f"cannot read image {path}: pixel values that are not finite")
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0 and hi <= 65535 and np.array_equal(values, np.round(values)):
        return values.astype(np.uint16)
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0  # floats or out-of-range integers
    return np.round((values - lo) * scale).astype(np.uint16)


def mammogram_from_image(path: Path, case_id: str, view: str = "", laterality: str = "") -> Dataset:
    """A greyscale PNG/JPEG as a Digital Mammography For Presentation instance.

    ``laterality`` (a ``laterality`` column: L/R, left/right) and ``view`` (a ``view``
    column: CC, MLO, ...) go into ImageLaterality and ViewPosition. Without a laterality
    the image's own chest-wall side decides, as a unit displays mammograms (the right
    breast with its chest wall on the right edge of the image); sets that flip images
    (mini-MIAS does) need the column. A missing view is left empty: radsight-mmg reads the
    image with the view unknown.
    """
    from radsight.algorithms.mmg.preprocess import breast_mask, chest_wall_side

    pixels = _grey(path)
    side = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(laterality.strip().upper(), "")
    if not side:
        mask, _ = breast_mask(pixels.astype(np.float32))
        side = "R" if mask.any() and chest_wall_side(mask) == "right" else "L"
    ds = dataset_from_image(path, case_id, view, pixels=pixels)
    ds.file_meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.Modality = "MG"
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = side
    ds.ViewPosition = view.strip().upper()
    return ds


def dataset_from_image(
    path: Path, case_id: str, view: str = "", pixels: np.ndarray | None = None
) -> Dataset:
    """A greyscale PNG/JPEG as a DX For Presentation instance (MONOCHROME2; 8 bits, or 16
    for a 16-bit image)."""
    if pixels is None:
        pixels = _grey(path)

    def uid(part: str) -> str:
        return str(
            pydicom.uid.generate_uid(prefix=PREFIX, entropy_srcs=["reference", case_id, part])
        )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = uid("sop")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = (view or "PA").upper()
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientID = "REFERENCE"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def datasets_from_nifti(path: Path, case_id: str, study_type: str = "ct-chest") -> list[Dataset]:
    """A 3-D NIfTI CT volume (values in HU) as one axial CT series, one instance a slice.

    The volume is reoriented to RAS+ (nibabel ``as_closest_canonical``), then each axial
    slice is stored as a radiologist views it: columns towards the patient's left, rows
    towards the back (ImageOrientationPatient 1,0,0,0,1,0 for an axis-aligned volume), with
    ImagePositionPatient, PixelSpacing and SliceThickness from the affine (LPS, mm).
    Values are rounded to int16 HU (RescaleSlope 1, RescaleIntercept 0).
    """
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many kinds on a bad file
        raise ConfigError(f"cannot read NIfTI volume {path}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ConfigError(f"{path} is not a 3-D volume (shape {data.shape})")
    if not np.isfinite(data).all():
        raise ConfigError(f"{path} has voxel values that are not finite")
    to_lps = np.diag([-1.0, -1.0, 1.0])
    affine = np.asarray(img.affine, dtype=np.float64)
    # canonical RAS+: i runs to the right, j to the front; the stored image runs the other
    # way on both (patient left, back), so pixel (row r, column c) is voxel (I-1-c, J-1-r)
    along_row = to_lps @ -affine[:3, 0]
    along_column = to_lps @ -affine[:3, 1]
    spacing_c, spacing_r = float(np.linalg.norm(along_row)), float(np.linalg.norm(along_column))
    thickness = float(np.linalg.norm(affine[:3, 2]))
    if min(spacing_c, spacing_r, thickness) <= 0:
        raise ConfigError(f"{path} has a degenerate affine (zero voxel size)")
    orientation = [*(along_row / spacing_c), *(along_column / spacing_r)]
    n_i, n_j, n_k = data.shape
    hu = np.clip(np.round(data), -32768, 32767).astype(np.int16)

    def uid(part: str) -> str:
        return str(pydicom.uid.generate_uid(prefix=PREFIX, entropy_srcs=["nifti", case_id, part]))

    study, series, frame = uid("study"), uid("series"), uid("frame")
    out = []
    for k in range(n_k):
        pixels = np.ascontiguousarray(hu[::-1, ::-1, k].T)
        corner = to_lps @ (affine @ np.array([n_i - 1, n_j - 1, k, 1.0]))[:3]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid(f"sop-{k}")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = "CT"
        ds.BodyPartExamined = VOLUME_BODY_PARTS.get(study_type, "")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientID = "REFERENCE"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [round(float(v), 4) for v in corner]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in orientation]
        ds.PixelSpacing = [round(spacing_r, 6), round(spacing_c, 6)]
        ds.SliceThickness = round(thickness, 4)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = pixels.tobytes()
        out.append(ds)
    return out
