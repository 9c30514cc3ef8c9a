"""Input checks that more than one built-in algorithm makes on its images' pixels.

Each returns the reason an image cannot be read ("not analysed: <reason>" for the study
when no image passes), or None when it can.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from radsight.algorithms.contract import ImageInput, NotAnalysable, StudyInput

__all__ = ["grey_frame_problem", "usable_images"]


def usable_images(
    study: StudyInput, check_image: Callable[[ImageInput], str | None]
) -> list[ImageInput]:
    """The study's images that ``check_image`` passes (it returns the reason an image cannot
    be read, or None); none left is :class:`NotAnalysable` with every distinct reason."""
    if not study.images:
        raise NotAnalysable("the study has no images with pixel data")
    reasons, usable = [], []
    for image in study.images:
        reason = check_image(image)
        if reason:
            reasons.append(reason)
        else:
            usable.append(image)
    if not usable:
        raise NotAnalysable("; ".join(dict.fromkeys(reasons)))
    return usable


def grey_frame_problem(
    image: ImageInput, min_side: int, max_saturated: float | None = None
) -> str | None:
    """Why ``image`` is not one usable grey frame: not 2-D, under ``min_side`` pixels on a
    side, values that are not finite, no contrast (blank), or, when ``max_saturated`` is
    given, more than that share of its pixels at the extreme values."""
    uid = image.sop_instance_uid
    pixels = image.pixels
    if pixels.ndim != 2:
        return f"image {uid} is not a single grey frame (shape {pixels.shape})"
    if min(pixels.shape) < min_side:
        return (
            f"image {uid} is too small ({pixels.shape[1]}x{pixels.shape[0]} pixels, "
            f"at least {min_side} needed)"
        )
    # a ~512-px sample: percentiles of a 3328 x 4096 mammogram cost ~0.3 s otherwise
    step = max(1, max(pixels.shape) // 512)
    sample = np.asarray(pixels[::step, ::step], dtype=np.float64)
    if not np.isfinite(sample).all():
        return f"image {uid} has pixel values that are not finite"
    lo, p1, p99, hi = np.percentile(sample, [0, 1, 99, 100])
    if hi - lo == 0 or p99 - p1 <= 1e-6 * max(1.0, abs(hi)):
        return f"image {uid} is blank (no contrast)"
    if max_saturated is not None:
        at_extreme = float(np.mean((sample <= lo) | (sample >= hi)))
        if at_extreme > max_saturated:
            return f"image {uid} is saturated ({at_extreme:.0%} of pixels at the extreme values)"
    return None
