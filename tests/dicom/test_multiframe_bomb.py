"""Issue 16, review: a multi-frame bomb, every frame honest, too many of them together.

48 frames of 2048 x 2048 zeros are 6.3 MB as RLE and 400 MB as 16-bit pixels (1.2 GB
once as float values): each frame passes ``max_frame_pixels``, so the instance is bounded
by ``max_instance_pixels``, and the paths that need one frame decode only that frame.
Memory is measured with tracemalloc (numpy reports its buffers to it).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from radsight.dicom.codestream import check_pixel_data
from radsight.dicom.pixels import frames_for_analysis
from radsight.dicom.rendering import RenderOptions, native_frame, render_frame
from radsight.dicom.stored import stored_as_explicit_little
from radsight.errors import StoredObjectUnreadable, TooLarge
from radsight.review.frames import read_display_frame
from tests._limits import LIMITS
from tests.dicom import _bombs

FRAME = 2048 * 2048
MB = 1 << 20


def _peak_mb(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def bomb():  # type: ignore[no-untyped-def]
    return _bombs.multiframe_rle(48)


def test_an_instance_over_max_instance_pixels_is_refused_before_decoding(bomb):
    check_pixel_data(bomb, max_frame_pixels=FRAME, max_instance_pixels=48 * FRAME)
    with pytest.raises(TooLarge) as refused:
        check_pixel_data(bomb, max_frame_pixels=FRAME, max_instance_pixels=48 * FRAME - 1)
    assert refused.value.code == "too_large"
    assert "48 frames of 2048 x 2048 pixels" in refused.value.message
    assert "setting max_instance_pixels" in refused.value.message
    # every decoder checks it first: nothing is allocated
    small = {"max_frame_pixels": FRAME, "max_instance_pixels": 10 * FRAME}
    for decode in (
        lambda: frames_for_analysis(bomb, **small),
        lambda: native_frame(bomb, 1, **small),
        lambda: render_frame(bomb, 1, RenderOptions(viewport=(64, 64)), **small),
    ):
        with pytest.raises(TooLarge, match="max_instance_pixels"):
            assert _peak_mb(decode) < 1


def test_the_viewer_decodes_only_the_frame_it_shows(bomb):
    data = _bombs.part10(bomb)
    shown = []

    def show() -> None:
        shown.append(read_display_frame(data, 47, "bomb", max_render_pixels=FRAME, **LIMITS))

    peak = _peak_mb(show)
    assert (shown[0].rows, shown[0].columns, len(shown[0].data)) == (2048, 2048, 2 * FRAME)
    # one frame and the float64 temporaries of its packing: about 130 MB (all 48 frames
    # decoded: 400 MB of pixels and 800 MB of float32 values before any packing)
    assert peak < 200, f"{peak:.0f} MB for one frame"


def test_wado_paths_decode_one_frame_at_a_time(bomb):
    one = _peak_mb(lambda: native_frame(bomb, 48, **LIMITS))
    assert one < 40, f"{one:.0f} MB for one native frame"
    rendered = _peak_mb(
        lambda: render_frame(bomb, 48, RenderOptions(viewport=(128, 128)), **LIMITS)
    )
    assert rendered < 120, f"{rendered:.0f} MB to render one frame"


def test_transcoding_checks_the_whole_instance_first(bomb):
    data = _bombs.part10(bomb)
    with pytest.raises(StoredObjectUnreadable) as refused:
        _peak_mb(
            lambda: stored_as_explicit_little(
                data, "bomb", max_frame_pixels=FRAME, max_instance_pixels=10 * FRAME
            )
        )
    assert "too_large" in refused.value.message and "max_instance_pixels" in refused.value.message
    two = _bombs.multiframe_rle(2, 256)
    out = stored_as_explicit_little(_bombs.part10(two), "two", **LIMITS)
    assert b"1.2.840.10008.1.2.1" in out[:1024] and len(out) > 2 * 256 * 256 * 2


def test_the_decode_limits_are_required():
    """A caller that forgets the settings fails, instead of silently using defaults."""
    ds = _bombs.multiframe_rle(2, 256)
    for call in (
        lambda: frames_for_analysis(ds),  # type: ignore[call-arg]
        lambda: native_frame(ds, 1),  # type: ignore[call-arg]
        lambda: check_pixel_data(ds, max_frame_pixels=FRAME),  # type: ignore[call-arg]
    ):
        with pytest.raises(TypeError, match="max_"):
            call()
