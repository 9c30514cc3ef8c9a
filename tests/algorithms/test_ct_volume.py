"""CT series selection, volume assembly and windowing (radsight.algorithms.ct_volume).

Real series from ../shared/data (the CQ500 head CT with its 8.5 degree gantry tilt and a
stray slice of another series, the TotalSegmentator 20-slice body CT, a CT scout) and
synthetic stacks for what real files do not cover (shuffled order, duplicates, gaps).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radsight.algorithms.contract import ImageInput
from radsight.algorithms.ct_volume import (
    BONE,
    BRAIN,
    LUNG,
    MEDIASTINUM,
    SUBDURAL,
    assemble_volume,
    select_series,
    window,
)
from radsight.errors import NotAnalysable
from radsight.pipeline.inputs import study_input_from
from tests._limits import LIMITS

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RADSIGHT_SHARED_DATA") or (REPO / ".." / "shared" / "data")).resolve()
CQ500 = DATA / "ct-brain" / "cq500-samples"
SAMPLES = DATA / "dicom-samples"


def _needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not path.is_dir(), reason=f"real CT data not found at {path} (set RADSIGHT_SHARED_DATA)"
    )


def _read(paths: list[Path]) -> tuple[ImageInput, ...]:
    return study_input_from([pydicom.dcmread(p) for p in paths], "ct-brain", **LIMITS).images


def _slice(
    z: float,
    *,
    series: str = "2.25.1",
    uid: str | None = None,
    tilt_deg: float = 0.0,
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    thickness: float = 5.0,
    kernel: str = "STANDARD",
    sop_class_uid: str = "1.2.840.10008.5.1.4.1.1.2",
    shape: tuple[int, int] = (32, 32),
    value: float = 40.0,
    padding: bool = False,
) -> ImageInput:
    """A synthetic CT slice at table position z (mm); a tilt makes the plane oblique."""
    t = math.radians(tilt_deg)
    pixels = np.full(shape, value, np.float32)
    pixels[:4] = -1000.0
    if padding:
        pixels[:, :3] = -2000.0 * 1.0 - 1024.0  # PixelPaddingValue -2000 after rescale
    attrs: dict[str, object] = {
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t)],
        "ImagePositionPatient": [-100.0, -100.0, z],
        "ImageType": image_type.split("\\"),
        "SliceThickness": thickness,
        "ConvolutionKernel": kernel,
        "SeriesNumber": int(series.rsplit(".", 1)[-1]),
        "InstanceNumber": int(z),
        "RescaleSlope": 1.0,
        "RescaleIntercept": -1024.0,
    }
    if padding:
        attrs["PixelPaddingValue"] = -2000
    return ImageInput(
        "2.25.9",
        series,
        uid or f"{series}.{int(z * 10)}",
        sop_class_uid,
        pixels,
        modality="CT",
        pixel_spacing=(0.5, 0.5),
        attributes=attrs,
    )


@pytest.mark.parametrize(
    ("named", "hu", "expected"),
    [
        (BRAIN, 0.0, 0.0),
        (BRAIN, 40.0, 0.5),
        (BRAIN, 80.0, 1.0),
        (SUBDURAL, 80.0, 0.5),
        (BONE, 600.0, 0.5),
        (LUNG, -600.0, 0.5),
        (MEDIASTINUM, 240.0, 1.0),
        (BRAIN, -1000.0, 0.0),
        (BONE, 3000.0, 1.0),
    ],
)
def test_named_windows_map_hu_to_unit_range(named, hu, expected):
    assert window(np.array([hu]), named)[0] == pytest.approx(expected)
    assert window(np.array([hu]), named.center, named.width)[0] == pytest.approx(expected)


def test_window_refuses_a_zero_width():
    with pytest.raises(ValueError, match="width"):
        window(np.zeros(3), 40.0, 0.0)


def test_shuffled_slices_are_sorted_along_the_normal():
    stack = [_slice(float(z)) for z in range(0, 50, 5)]
    shuffled = stack[:]
    random.Random(3).shuffle(shuffled)
    vol = assemble_volume(shuffled)
    assert [i.sop_instance_uid for i in vol.images] == [i.sop_instance_uid for i in stack]
    assert vol.positions.tolist() == pytest.approx(list(range(0, 50, 5)))
    assert vol.spacing == pytest.approx((5.0, 0.5, 0.5))
    assert vol.hu.shape == (10, 32, 32) and vol.hu.dtype == np.float32
    assert vol.gantry_tilt_deg == pytest.approx(0.0)
    assert not vol.uneven and vol.gaps == ()


def test_duplicate_positions_are_dropped():
    stack = [_slice(float(z)) for z in range(0, 30, 5)]
    again = _slice(10.0, uid="2.25.1.dup")
    vol = assemble_volume([*stack, again])
    assert len(vol.images) == 6 and vol.duplicates_dropped == 1


def test_a_gap_is_recorded():
    stack = [_slice(float(z)) for z in (0, 5, 10, 15, 30, 35)]
    vol = assemble_volume(stack)
    assert vol.gaps == (3,) and vol.uneven
    assert vol.spacing[0] == pytest.approx(5.0)


def test_padding_becomes_air():
    vol = assemble_volume([_slice(float(z), padding=True) for z in (0, 5, 10)])
    assert vol.hu.min() == -1024.0
    assert (vol.hu[:, 10, :3] == -1024.0).all()


def test_synthetic_tilt_is_measured_and_can_be_undone():
    tilt = 12.0
    stack = [_slice(float(z), tilt_deg=tilt, shape=(64, 64)) for z in range(0, 40, 5)]
    vol = assemble_volume(stack)
    assert vol.gantry_tilt_deg == pytest.approx(tilt, abs=0.01)
    # the table steps 5 mm along z: 5 cos(t) along the normal, 5 sin(t) within the plane
    assert vol.spacing[0] == pytest.approx(5.0 * math.cos(math.radians(tilt)))
    assert vol.offsets[1, 0] == pytest.approx(-5.0 * math.sin(math.radians(tilt)) / 0.5)
    fixed = assemble_volume(stack, correct_tilt=True)
    assert fixed.tilt_corrected
    # the air band at the top of each slice moves up by the accumulated shear
    first_tissue = [int(np.argmax(s[:, 32] > -500)) for s in fixed.hu]
    assert first_tissue[0] == 4 and first_tissue[-1] < first_tissue[0]


def test_scouts_and_secondary_captures_are_passed_over():
    axial = [_slice(float(z), series="2.25.2") for z in range(0, 30, 5)]
    scout = _slice(0.0, series="2.25.1", image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    capture = _slice(0.0, series="2.25.3", sop_class_uid="1.2.840.10008.5.1.4.1.1.7")
    chosen = select_series([scout, capture, *axial])
    assert {i.series_instance_uid for i in chosen} == {"2.25.2"}


def test_thin_soft_series_wins_and_kernel_preference_is_honoured():
    thick = [_slice(float(z), series="2.25.2", thickness=5.0) for z in range(0, 30, 5)]
    thin_soft = [_slice(float(z), series="2.25.3", thickness=1.0) for z in range(0, 30, 1)]
    thin_bone = [
        _slice(float(z), series="2.25.4", thickness=1.0, kernel="BONE") for z in range(0, 30, 1)
    ]
    images = [*thick, *thin_bone, *thin_soft]
    assert select_series(images)[0].series_instance_uid == "2.25.3"
    assert select_series(images, kernel="sharp")[0].series_instance_uid == "2.25.4"


def test_a_stack_beats_a_single_slice_of_another_series():
    single = [_slice(0.0, series="2.25.5", thickness=0.5)]
    stack = [_slice(float(z), series="2.25.6") for z in range(0, 30, 5)]
    assert select_series([*single, *stack], min_slices=1)[0].series_instance_uid == "2.25.6"


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([_slice(0.0, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")], "scout / localizer"),
        ([_slice(0.0, sop_class_uid="1.2.840.10008.5.1.4.1.1.7")], "secondary capture"),
        ([_slice(0.0, tilt_deg=90.0)], "not axial"),
        ([_slice(0.0, image_type="DERIVED\\SECONDARY\\MPR")], "reformat"),
        ([_slice(0.0), _slice(5.0)], "too few slices"),
    ],
)
def test_nothing_to_analyse_says_why(images, message):
    with pytest.raises(NotAnalysable, match=message):
        select_series(images, min_slices=3)


def test_non_ct_is_refused():
    image = _slice(0.0)
    mr = ImageInput(
        image.study_instance_uid,
        image.series_instance_uid,
        image.sop_instance_uid,
        image.sop_class_uid,
        image.pixels,
        modality="MR",
        attributes=image.attributes,
    )
    with pytest.raises(NotAnalysable, match="modality MR, not CT"):
        select_series([mr], min_slices=1)


def test_blank_or_geometry_less_slices_are_refused():
    blank = [_slice(float(z), value=-1000.0) for z in (0, 5, 10)]
    for s in blank:
        s.pixels[:] = -1000.0
    with pytest.raises(NotAnalysable, match="no contrast"):
        assemble_volume(blank)
    bare = ImageInput("1", "1", "1", "1.2.840.10008.5.1.4.1.1.2", np.zeros((8, 8), np.float32))
    with pytest.raises(NotAnalysable, match="ImagePositionPatient"):
        assemble_volume([bare])


@_needs(CQ500)
def test_cq500_tilted_series_is_chosen_and_its_tilt_measured():
    paths = sorted((CQ500 / "CQ500-CT-0").rglob("*.dcm"))
    images = list(_read(paths))
    random.Random(5).shuffle(images)
    chosen = select_series(images, min_slices=1)
    # the 30-slice thin series 6, not the stray single slice of series 2
    assert len(chosen) == 30
    assert {i.attributes["SeriesNumber"] for i in chosen} == {6}
    vol = assemble_volume(chosen)
    assert vol.gantry_tilt_deg == pytest.approx(8.5, abs=0.05)
    assert vol.spacing[0] == pytest.approx(5.0 * math.cos(math.radians(8.5)), abs=0.01)
    numbers = [int(i.attributes["InstanceNumber"]) for i in vol.images]
    assert numbers == sorted(numbers) and numbers[0] == 1 and numbers[-1] == 233
    assert not vol.uneven
    # RescaleIntercept -1024 applied and the -2000 padding mapped to air
    assert vol.hu.min() == -1024.0 and vol.hu.max() > 1000.0
    brain = vol.hu[15][200:300, 200:300]
    assert 10.0 < float(np.median(brain)) < 60.0  # grey/white matter in HU


@_needs(CQ500)
def test_cq500_single_slice_needs_min_slices_one():
    path = CQ500 / "CQ500-CT-310" / "CQ500-CT-310_series_5mm_inst021_uncompressed.dcm"
    images = _read([path])
    with pytest.raises(NotAnalysable, match="too few slices"):
        select_series(images)
    vol = assemble_volume(select_series(images, min_slices=1))
    assert vol.hu.shape == (1, 512, 512) and vol.gantry_tilt_deg == 0.0


@_needs(SAMPLES / "totalsegmentator-ct-series")
def test_real_body_ct_series_assembles_in_order():
    paths = sorted((SAMPLES / "totalsegmentator-ct-series").glob("*.dcm"))
    images = list(_read(paths))
    random.Random(1).shuffle(images)
    vol = assemble_volume(select_series(images))
    assert vol.hu.shape[0] == 20
    assert np.all(np.diff(vol.positions) > 0)
    assert vol.spacing[0] == pytest.approx(float(np.median(np.diff(vol.positions))))
    assert vol.gantry_tilt_deg == pytest.approx(0.0, abs=0.01)


@_needs(SAMPLES / "orthanc-tests")
def test_real_scout_is_not_a_series_to_analyse():
    scout = _read(
        [SAMPLES / "orthanc-tests" / "CT_chest_localizer_JPEGLossless_1.2.840.10008.1.2.4.70.dcm"]
    )
    with pytest.raises(NotAnalysable, match="scout / localizer"):
        select_series(scout, min_slices=1)
